"""The configuration schema: one dataclass per YAML section, every field documented.

(Over 400 lines on purpose: it is declarations only, one field per key with its help text, and it
is the single source of docs/config.md and of the command-line flags; splitting it by section would
scatter the reference without making any part simpler.)

`utils.config` loads YAML files into these classes, checks types, and calls each section's
`check()` for values that are well-typed but impossible. `docs/config.md` is generated from the
`help` metadata here (`python -m utils.config_doc`), so the help text is the reference.

Fields marked `path=True` are file-system paths: a relative path written in a YAML file (or left at
its default) is resolved against the project root, so commands behave the same from the repository
root and from inside `condense/`; a relative path given on the command line is resolved against the
current directory, as any CLI user expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional


def _f(default, help: str, path: bool = False, flag: Optional[str] = None,
       flag_stages: Optional[tuple] = None, **kw):
    """A dataclass field carrying its help text, whether it is a path, and its command-line flag
    (`flag="ipc"` makes `--ipc` set this key in every entry script that reads its section, or only
    in `flag_stages`; `utils.config.make_parser` builds the flags from these fields, so flags,
    keys and help cannot drift apart)."""
    meta = {"help": help, "path": path, "flag": flag, "flag_stages": flag_stages}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


# Settings added after experts and checkpoints were first written, with the value that reproduces
# the older behaviour. While a run keeps that value, the key is left out of the expert fingerprint
# (utils.experts: existing experts keep their folder) and a checkpoint without it resumes
# (utils.checkpoint).
ADDED_LATER = {"network.pooling": "cls", "pretrain.group_by_length": False,
               "condense.update_fraction": 1.0, "distill.student_path": None,
               "pretrain.precision": "fp32", "distill.precision": "fp32"}


def _training_precision(default: str, who: str, flag: str, what: str = "training and scoring"):
    """The `precision` key of a stage that trains classifiers (experts, evaluation classifiers,
    distillation students)."""
    return _f(default, f"Arithmetic of {what} the {who}: 'fp32'; "
              "'bf16' bfloat16 autocast (weights, gradients and optimiser state stay fp32); "
              "'auto' bf16 where the device runs it natively (a CUDA GPU with bf16, a CPU with "
              "avx512_bf16/AMX), else fp32.", flag=flag)


@dataclass
class DatasetConfig:
    name: str = _f("bbc", "Dataset: 'bbc' (packaged BBC News, the offline default), 'sst2' or 'trec' "
                   "(the harvardnlp text formats; set data_dir), a local file or folder "
                   "(csv/tsv/jsonl/parquet), or a Hugging Face hub name such as 'ag_news'.")
    format: Literal["auto", "bbc", "sst", "trec", "table", "hub"] = _f(
        "auto", "How to read `name`/`data_dir`: 'auto' guesses from the name and files.")
    path: Optional[str] = _f(None, "Local data: a csv/tsv/jsonl/json/parquet file (split here with "
                             "test_size) or a folder with train.* and optionally test.* (sst/trec: "
                             "train.txt, test.txt). `name` is then only a display name (folder "
                             "names, tables). Template: config/datasets/custom.yaml.", path=True)
    data_dir: Optional[str] = _f(None, "Older spelling of `path` (kept working); `path` wins when "
                                 "both are set.", path=True)
    nclass: Optional[int] = _f(None, "Number of classes: null (the default) takes it from the "
                               "training data; when given, it must agree with the data.")
    max_length: int = _f(64, "Tokens per sequence (truncation and padding length).")
    pad_to_max_length: bool = _f(False, "Run every batch at max_length positions (the seed's way). "
                                 "Default: each batch is cut to its longest row (dynamic padding; "
                                 "the same outputs up to float rounding, less work on short texts).")
    batch_real: int = _f(32, "Real samples per class drawn at each condensation iteration.")
    is_multilabel: bool = _f(False, "Labels are sets of classes (label vectors); losses use BCE.")
    at_least_one_label: bool = _f(True, "Multi-label: every row has at least one class, so a "
                                  "prediction with no class above the threshold (logit 0) takes "
                                  "its top-scoring class; classifiers trained on a few rows per "
                                  "class otherwise predict no class at all. Rows without a class "
                                  "(train or test) are refused while true; set false for data "
                                  "where a row may have none (the plain threshold; runs saved "
                                  "before this setting existed scored that way).")
    text_column: str = _f("text", "Text column for table/hub data.")
    label_column: str = _f("label", "Label column for table/hub data (an int, a class name, or a "
                           "list of them for multi-label data).")
    test_size: float = _f(0.2, "Fraction of each class held out as test split when the source "
                          "has no test split (fixed, stratified, seeded by split_seed).")
    split_seed: int = _f(0, "Seed of the train/test split for sources without one.")
    dedup: bool = _f(True, "Drop exact duplicate texts before making a split (BBC News has 100 "
                     "duplicated articles that would otherwise sit in both train and test).")
    max_train_per_class: Optional[int] = _f(None, "Keep at most this many training samples per "
                                            "class (first ones after a seeded shuffle); for smoke runs.")
    max_test_per_class: Optional[int] = _f(None, "Keep at most this many test samples per class.")
    cache_dir: str = _f(".cache/tokenized", "Where tokenised datasets are cached.", path=True)

    def check(self):
        if self.nclass is not None and self.nclass < 2:
            yield "nclass", "must be >= 2 (or null: taken from the data)"
        if not 8 <= self.max_length <= 512:
            yield "max_length", "must be between 8 and 512 (BERT position limit)"
        if self.batch_real < 1:
            yield "batch_real", "must be >= 1"
        if not 0.0 < self.test_size < 1.0:
            yield "test_size", "must be in (0, 1)"
        for key in ("max_train_per_class", "max_test_per_class"):
            value = getattr(self, key)
            if value is not None and value < 1:
                yield key, "must be >= 1 or null"


@dataclass
class NetworkConfig:
    MOVED = {"layer_index": "the matched layers are an option of feature matching: "
                            "condense.objectives: [{name: feature_match, options: {layers: [-1]}}, ...]"}

    model_path: str = _f("all-MiniLM-L6-v2", "Encoder: 'all-MiniLM-L6-v2' (the packaged offline "
                         "model), a local folder with a BERT config and weights, a hub name, or "
                         "'random' for a small randomly initialised BERT (tests).", path=True)
    net_type: Literal["bert"] = _f("bert", "Encoder family. Only BERT encoders are supported.")
    dropout: float = _f(0.1, "Dropout before the classification head.")
    pooling: Literal["cls", "mean", "auto"] = _f(
        "cls", "How a sequence becomes one vector, for the classification head, the experts, the "
        "selectors and the matched features alike: 'cls' (the [CLS] state), 'mean' (the mean "
        "over unmasked tokens), 'auto' (the model folder's sentence-transformers pooling config, "
        "1_Pooling/config.json: mean for all-MiniLM-L6-v2; cls when there is none).",
        flag="pooling")
    random_layers: int = _f(2, "Layers of the 'random' test model.")
    random_hidden: int = _f(32, "Hidden size of the 'random' test model.")
    random_heads: int = _f(2, "Attention heads of the 'random' test model.")
    random_intermediate: int = _f(64, "Feed-forward size of the 'random' test model.")
    tokenizer_path: Optional[str] = _f(None, "Tokenizer to use when model_path has none ('random' "
                                       "uses the packaged MiniLM tokenizer by default).", path=True)

    def check(self):
        if not 0.0 <= self.dropout < 1.0:
            yield "dropout", "must be in [0, 1)"
        for key in ("random_layers", "random_hidden", "random_heads", "random_intermediate"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.random_hidden % self.random_heads:
            yield "random_hidden", "must be divisible by random_heads"


@dataclass
class PretrainConfig:
    num_premodel: int = _f(3, "Number of expert classifiers (one seed each).", flag="num_premodel")
    epochs: int = _f(2, "Fine-tuning epochs per expert; weights are kept after every epoch.",
                     flag="epochs")
    lr: float = _f(5e-5, "AdamW learning rate.")
    batch_size: int = _f(32, "Training batch size.")
    eval_batch_size: int = _f(128, "Batch size for test-accuracy evaluation.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    warmup_ratio: float = _f(0.1, "Fraction of steps with linear warm-up (then linear decay).")
    seed: int = _f(0, "Expert i is trained with seed `seed + i`.")
    group_by_length: bool = _f(
        False, "Batches of rows of similar length (Hugging Face Trainer's group_by_length: each "
        "seeded shuffle is cut into chunks of 50 batches, sorted by length within a chunk, and "
        "the batches then shuffled), so dynamic padding trims more on short-text data.",
        flag="group_by_length")
    precision: Literal["fp32", "bf16", "auto"] = _training_precision("fp32", "experts",
                                                                     "expert_precision")
    expert_dir: str = _f("pretrained_models", "Root folder of expert checkpoints.", path=True)

    def check(self):
        for key in ("num_premodel", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.lr <= 0:
            yield "lr", "must be > 0"
        if not 0.0 <= self.warmup_ratio < 1.0:
            yield "warmup_ratio", "must be in [0, 1)"


@dataclass
class OptimizationConfig:
    MOVED = {k: f"an option of feature matching now: condense.objectives: [{{name: feature_match, "
                f"options: {{sampling_net: true, {k}: ...}}}}, ...]"
             for k in ("sampling_lr", "sampling_step_every")}

    optimizer: Literal["sgd", "adam", "adamw"] = _f("adam", "Optimiser of the synthetic embeddings.")
    lr_img: float = _f(0.1, "Learning rate of the synthetic embeddings (SGD); Adam/AdamW use "
                       "lr_img * lr_scale_adam.")
    mom_img: float = _f(0.5, "SGD momentum.")
    lr_scale_adam: float = _f(0.1, "Multiplier of lr_img for Adam/AdamW.")
    weight_decay: float = _f(0.0, "Weight decay of the synthetic embeddings.")
    scheduler: Literal["plateau", "none"] = _f("plateau", "Learning-rate schedule: reduce on a "
                                               "plateau of the total loss, or none.")
    plateau_patience: int = _f(50, "Iterations without improvement before the rate is reduced.")
    plateau_factor: float = _f(0.5, "Factor of each reduction.")
    min_lr: float = _f(1e-5, "Lower bound of the learning rate.")

    def check(self):
        if self.lr_img <= 0:
            yield "lr_img", "must be > 0"
        if not 0.0 < self.plateau_factor < 1.0:
            yield "plateau_factor", "must be in (0, 1)"


@dataclass
class ObjectiveSpec:
    name: str = _f("feature_match", "A registered objective: 'feature_match', 'calibration', "
                   "'trajectory', or one registered with condenser.objectives.register_objective.")
    weight: float = _f(1.0, "Weight of the term in the condensation loss.")
    options: dict = _f({}, "The term's own options (docs/config.md lists each objective's), e.g. "
                       "{metric: mmd, metric_options: {kernel: rbf, sigma: 0.5}} for "
                       "feature_match, {steps: 1, every: 4} for calibration.")

    def check(self):
        if not self.name:
            yield "name", "must name an objective"
        if self.weight < 0:
            yield "weight", "must be >= 0"

    def resolve(self, where: str) -> None:
        """Name and options checked against the objective registry (once condenser is imported;
        otherwise when the terms are built); `options` becomes the term's options dataclass."""
        from utils.registry import published

        objectives, metrics = published("objective"), published("distribution metric")
        if objectives is None:
            return
        if self.name not in objectives and metrics is not None and self.name in metrics:
            from utils.errors import UserError
            raise UserError(f"{where}: {self.name!r} is a distribution metric, not an objective: "
                            f"use {{name: feature_match, options: {{metric: {self.name}}}}}")
        objectives.entry(self.name, where)
        self.options = objectives.options(self.name, self.options, f"{where}.options")


def _moved(term: str, option: str, value: str = "...") -> str:
    return f"use condense.objectives: [..., {{name: {term}, options: {{{option}: {value}}}}}]"


@dataclass
class CondenseConfig:
    # Keys that became options of the component that uses them (refused, naming the new place).
    MOVED = {
        **{k: _moved("feature_match", k) for k in ("num_freqs", "freq_scale", "loss_scale",
                                                    "real_cache", "sampling_net")},
        "dis_metrics": _moved("feature_match", "metric", "mmd"),
        "alpha_for_loss": _moved("feature_match", "metric_options", "{alpha: 0.5}"),
        "beta_for_loss": _moved("feature_match", "metric_options", "{beta: 0.5}"),
        "iter_calib": _moved("calibration", "steps", "N") + " (leave calibration out for 0)",
        "calib_every": _moved("calibration", "every", "N"),
        "calib_weight": "use condense.objectives: [..., {name: calibration, weight: W}]",
        "trajectory_weight": "use condense.objectives: [{name: feature_match}, "
                             "{name: trajectory, weight: W}, {name: calibration}]",
        **{k: _moved("trajectory", k) for k in ("syn_steps", "expert_epochs", "max_start_epoch",
                                                 "lr_teacher", "lr_lr", "subset_strategy",
                                                 "subset_ratio", "unroll")},
        **{k: f"use condense.init_options: {{{k}: ...}} (options of init mask_fill)"
           for k in ("mask_ratio", "mask_strategy", "fill_strategy", "fill_candidates")},
        "latent_dim": "use condense.init_options: {latent_dim: ...} (an option of init manifold)",
    }

    method: Optional[Literal["ncfm", "trajectory", "combined"]] = _f(
        None, "A preset of terms: 'ncfm' = [feature_match, calibration], 'trajectory' = "
        "[trajectory, calibration], 'combined' = [feature_match, trajectory, calibration]. Each "
        "term has weight 1 and default options unless `objectives` lists a term of that name: "
        "then it takes that entry's weight and options (other listed terms are left out). Null: "
        "`objectives` as written, or the ncfm preset when that is empty.")
    objectives: List[ObjectiveSpec] = _f([], "Terms of the condensation loss, [{name, weight, "
                                         "options}, ...], e.g. [{name: feature_match, options: "
                                         "{metric: mmd}}, {name: calibration, weight: 0.5}]. "
                                         "Empty: the `method` preset.")
    ipc: int = _f(10, "Synthetic sequences per class.", flag="ipc")
    niter: int = _f(500, "Optimisation iterations (0: the start is saved as the set, a "
                         "selection-only run).", flag="niter")
    init: str = _f(
        "random", flag="init",
        help="Initialisation (a registered init; its options: init_options): 'random' real "
        "samples of the class, 'noise' Gaussian matched to the embedding statistics, 'mix' each "
        "sequence packed with `factor` real snippets, 'mask_fill' real samples with a fraction of "
        "tokens replaced, 'manifold' the real samples nearest to k-means centres in a PCA space, "
        "'herding' the samples the herding baseline picks, 'kmeans' the real samples nearest to "
        "k-means centres of the expert features (the kmeans baseline's picks; both on features "
        "of expert evaluate.feature_expert), 'generated' new texts from a small LM prompted with "
        "real examples (make models), 'best_real' the one of init_options.candidates (random, "
        "herding) whose real subset scores best on the validation slice (evaluate.select_by val), "
        "'load' a saved synthetic set (load_path).")
    init_options: dict = _f({}, "Options of `init` (docs/config.md lists each init's), e.g. "
                            "{mask_ratio: 0.15, mask_strategy: important} for mask_fill, "
                            "{latent_dim: 16} for manifold.")
    factor: int = _f(1, "Real snippets packed into one synthetic sequence (init 'mix').")
    decode_type: Literal["single", "multi"] = _f(
        "single", "'multi' decodes each packed sequence into `factor` training examples (one per "
        "snippet); 'single' uses the whole sequence as one example.")
    tokens: bool = _f(False, "Token-level set (PEZ, Wen et al. 2023): every forward pass sees "
                      "each position's nearest vocabulary token, the gradient updates the "
                      "continuous copy, and the saved set is those tokens ([CLS] first, [SEP] "
                      "last, as a tokenizer writes a text), so its text export (tc.export_text) "
                      "keeps what was trained, up to the tokenizer's own round trip.",
                      flag="tokens")
    update_fraction: float = _f(
        1.0, "Fraction of each class's sequences the optimisation moves (SelMatch, Lee et al. "
        "2024): the last f x ipc of each class, halves rounded up (at least one), learn what the others "
        "lack, the first ones stay exactly as they started (with init herding: herding's first, "
        "most representative picks stay real samples; with learn_labels their labels still "
        "learn). 1: every sequence moves.", flag="update_fraction")
    load_path: Optional[str] = _f(None, "Saved synthetic set (syn_data_<iter>.pth): the start of "
                                  "init 'load', or the set that evaluation/distillation reads.",
                                  path=True, flag="load_path")
    interp_range: List[float] = _f([0.0, 1.0], "Range of the interpolation factor between an "
                                   "expert's initial and final weights (model_interval).")
    learn_labels: bool = _f(False, "Learn a soft label per synthetic sequence (softmax of learnt "
                            "logits, Adam with label_lr), trained by the objectives whose loss "
                            "uses the labels (trajectory matching's unrolled student); the set "
                            "then carries [N, C] soft labels. Single-label tasks.",
                            flag="learn_labels")
    label_init: Literal["onehot", "expert"] = _f(
        "onehot", "learn_labels: start from a smoothed one-hot (0.9 on the class) or from the "
        "final logits of expert evaluate.feature_expert on the initial sequences.")
    label_lr: float = _f(0.01, "learn_labels: Adam learning rate of the label logits.")
    lam_grid: int = _f(0, "Draw the interpolation factor from this many evenly spaced values "
                       "of interp_range (ends included) instead of uniformly; 0: uniformly. The "
                       "real-feature cache keeps one table per value (8 is a good start).")
    precision: Literal["fp32", "bf16_real", "bf16", "auto"] = _f(
        "fp32", "Feature matching arithmetic: 'fp32'; 'auto' bf16 where the device runs it "
        "natively (a CUDA GPU with bf16, a CPU with avx512_bf16/AMX), else fp32; 'bf16_real' the "
        "real side's no-grad forward "
        "under bfloat16 autocast; 'bf16' the synthetic forward/backward too, calibration "
        "included (features and logits are compared in fp32). CPUs with avx512_bf16/AMX and "
        "CUDA GPUs run it faster.",
        flag="precision")
    save_every: int = _f(100, "Save the synthetic set and a resumable checkpoint every N "
                         "iterations (and at the end).")
    log_every: int = _f(10, "Log losses every N iterations.")
    debug_classes: int = _f(2, "--debug: condense only this many classes.")
    debug_niter: int = _f(6, "--debug: number of iterations.")
    on_nonfinite: Literal["stop", "skip"] = _f(
        "stop", "When a loss or the synthetic data becomes NaN/Inf (all ranks agree): 'stop' ends "
        "the run with an error, keeping the last good saved set; 'skip' undoes that iteration's "
        "update and goes on. A non-finite set is never saved.")
    worth_runs: int = _f(0, "After the last iteration, train this many fresh classifiers on the "
                         "set and as many on a random real subset of the same size (evaluation "
                         "protocol, same seeds) and log what the set is worth (worth.json); 0: "
                         "skip. The demo uses 2 (one per rank).")
    eval_it: List[int] = _f([], "Iterations after which the synthetic set is evaluated (the "
                            "`evaluate` protocol) during condensation (0: the starting set, before "
                            "the first iteration); results are logged and "
                            "appended to <output_dir>/eval_curve.json (drawn: images/eval_curve.png). "
                            "With evaluate.select_by "
                            "'val', the validation slice of the training split is also left out "
                            "of the condensation's real data, the set is saved at each of these "
                            "iterations, and the one with the best validation accuracy is named "
                            "in best_iteration.json (the test split chooses nothing; with 0 "
                            "listed, a run whose updates do not help on validation keeps its "
                            "start).")

    def check(self):
        for key in ("ipc", "factor", "save_every", "log_every", "debug_classes", "debug_niter"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.niter < 0:
            yield "niter", "must be >= 0 (0: the start is the set, e.g. init generated or kmeans)"
        late = [i for i in self.eval_it if not 0 <= i <= self.niter]
        if late:
            yield "eval_it", f"{late} outside [0, niter={self.niter}]: never evaluated"
        if len(self.interp_range) != 2 or not 0.0 <= self.interp_range[0] <= self.interp_range[1] <= 1.0:
            yield "interp_range", "must be [low, high] with 0 <= low <= high <= 1"
        if self.init == "load" and not self.load_path:
            yield "load_path", "init 'load' needs load_path (--load_path FILE)"
        if self.label_lr <= 0:
            yield "label_lr", "must be > 0"
        if not 0.0 < self.update_fraction <= 1.0:
            yield "update_fraction", "must be in (0, 1] (1: every sequence moves)"
        if self.lam_grid == 1 or self.lam_grid < 0:
            yield "lam_grid", "must be 0 (uniform) or >= 2"
        if self.worth_runs < 0:
            yield "worth_runs", "must be >= 0"
        if self.decode_type == "multi" and self.factor < 2:
            yield "decode_type", "'multi' needs factor >= 2"

    def resolve(self, where) -> None:
        """`init` and `init_options` checked against the init registry (once condenser is
        imported; otherwise when the set is initialised); `where(key)` names key and file."""
        from utils.registry import published

        inits = published("init")
        if inits is not None:
            inits.entry(self.init, where("init"))
            self.init_options = inits.options(self.init, self.init_options, where("init_options"))


@dataclass
class EvaluateConfig:
    num_eval: int = _f(5, "Fresh classifiers trained per method (different seeds).", flag="num_eval")
    steps: int = _f(100, "Training steps of each evaluation classifier on a condensed or selected "
                    "set (batches drawn by cycling over seeded shuffles of the set).")
    batch_size: int = _f(16, "Training batch size of the evaluation classifiers (capped at the set "
                         "size).")
    lr: float = _f(1e-4, "AdamW learning rate of the evaluation classifiers (constant; gradients "
                   "clipped to norm 1).")
    weight_decay: float = _f(0.01, "AdamW weight decay of the evaluation classifiers.")
    head_lr: Optional[float] = _f(None, "AdamW learning rate of the new classification head of "
                                  "each evaluation classifier (the encoder keeps `lr`); null: "
                                  "`lr`. A fresh head over a pretrained encoder learns slowly at "
                                  "the encoder's rate when there are many classes (multi-label).")
    eval_every: Optional[int] = _f(None, "Also evaluate every N steps for an accuracy-vs-step curve "
                                   "(on `curve_rows` test rows); null: test accuracy once, at the "
                                   "last step (cheapest). select_by 'val' needs it.")
    curve_rows: Optional[int] = _f(512, "Test rows (a fixed, seeded subsample) used for the curve "
                                   "points before the last step; null: the whole test split. The "
                                   "reported step is always scored on the whole test split (with "
                                   "select_by 'val', every evaluated step is).")
    full_epochs: float = _f(2.0, "Epochs of the 'full' baseline over all training data (steps = "
                            "ceil(epochs x rows / batch_size)): trained as long as the experts "
                            "(pretrain.epochs' default), so 'gap to full' is measured against a "
                            "converged model. Same optimiser, batch size and evaluation as "
                            "every method.")
    full_steps: Optional[int] = _f(None, "Exactly this many steps for the 'full' baseline instead "
                                   "of full_epochs (null: full_epochs decides).")
    select_by: Literal["last", "val"] = _f(
        "last", "Which step's model is reported: 'last' the final step; 'val' the evaluated step "
        "with the best accuracy (micro-F1 for multi-label) on a validation part of the training "
        "split (never the test set).")
    val_fraction: float = _f(0.1, "select_by 'val': fraction of each training class held out as "
                             "validation (stratified, seeded by run.seed); these samples are also "
                             "excluded from the baselines' selection pools.")
    eval_model_path: Optional[str] = _f(
        None, flag="eval_model_path",
        help="Encoder of the evaluation classifiers (cross-architecture check): a local model "
        "folder, an alias such as 'all-MiniLM-L6-v2', or 'random' (the small test BERT). It must "
        "have the synthetic set's hidden size. Null: network.model_path.")
    projection: Literal["pca", "tsne"] = _f("pca", "2-D projection of the expert features in "
                                            "eval/projection.png.")
    results_table: str = _f("results/results.md", "Markdown table to which every evaluation "
                            "appends one row per method (created with a header if missing).",
                            path=True)
    feature_expert: int = _f(0, "Expert whose final weights give the pooled features for "
                             "herding (baseline and condense.init herding), k-center, the "
                             "projection plot, and the labels of label_mode expert_soft.")
    label_mode: Literal["hard", "expert_soft"] = _f(
        "hard", flag="label_mode",
        help="Labels every method trains on: 'hard' the labels the set carries (class indices; "
        "soft vectors when a synthetic set stores them); 'expert_soft' the softened predictions "
        "of expert `feature_expert` (final weights) on each training example, for the synthetic "
        "set and every baseline alike (DD-Ranking: soft labels alone can explain a gain, so "
        "compare soft with soft).")
    label_temperature: float = _f(1.0, "label_mode expert_soft: temperature T of the expert's "
                                  "softmax (sigmoid for multi-label), softmax(logits / T).")
    attention_weight: float = _f(
        0.0, "Attention labels: when > 0, every method (the synthetic set and every baseline "
        "alike) also trains toward the attention maps of expert `feature_expert` (final weights) "
        "on its own training examples: loss = label loss + attention_weight x KL(expert || model) "
        "of the attention probabilities of `attention_layers`, averaged over layers, heads and "
        "unmasked query tokens (Maekawa et al. 2023's attention labels, taken from the expert "
        "rather than learnt). Results name the protocol in `labels` (e.g. 'hard+attn1'). The maps are "
        "held in float16: examples x layers x heads x max_length^2 x 2 bytes (for 'full', the "
        "whole training split). 0: off.")
    attention_layers: List[int] = _f([-1], "attention_weight > 0: the transformer layers whose "
                                     "attention maps are labels (0 = first, -1 = last).")
    eval_batch_size: int = _f(128, "Batch size for test/validation evaluation and feature "
                              "extraction.")
    precision: Literal["fp32", "bf16", "auto"] = _training_precision(
        "fp32", "evaluation classifiers (every method and 'full' alike)", "eval_precision")

    def check(self):
        for key in ("num_eval", "steps", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        for key in ("eval_every", "curve_rows", "full_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                yield key, "must be >= 1 or null"
        if self.full_epochs <= 0:
            yield "full_epochs", "must be > 0"
        if self.select_by == "val" and self.eval_every is None:
            yield "select_by", "'val' chooses among evaluated steps: set evaluate.eval_every"
        if self.lr <= 0:
            yield "lr", "must be > 0"
        if self.weight_decay < 0:
            yield "weight_decay", "must be >= 0"
        if self.head_lr is not None and self.head_lr <= 0:
            yield "head_lr", "must be > 0 or null"
        if not 0.0 < self.val_fraction < 1.0:
            yield "val_fraction", "must be in (0, 1)"
        if self.feature_expert < 0:
            yield "feature_expert", "must be >= 0"
        if self.label_temperature <= 0:
            yield "label_temperature", "must be > 0"
        if self.attention_weight < 0:
            yield "attention_weight", "must be >= 0 (0 turns attention labels off)"
        if self.attention_weight > 0 and not self.attention_layers:
            yield "attention_layers", "must list at least one layer (e.g. [-1]) when attention_weight > 0"
        if self.eval_model_path is not None and not self.eval_model_path.strip():
            yield "eval_model_path", "must be a model path or alias, or null"


@dataclass
class KDLossSpec:
    name: str = _f("logit_kd", "A registered distillation loss (distiller/losses.py: logit_kd, "
                   "label_ce, hidden_mse, hidden_cos, attn_mse, attn_kl, classifier_match, "
                   "layer_weight_match, cka_intra, cka_local, cka_global, trajectory_kd, or one "
                   "registered with distiller.losses.register_kd_loss).")
    weight: float = _f(1.0, "Weight of the loss in the sum (FSD's gamma for the CKA losses).")
    options: dict = field(default_factory=dict, metadata={"path": False, "flag": None, "help": (
        "The loss's own options (docs/config.md lists each loss's): `layers` (the teacher -> "
        "student layer map) of the layer losses, `temperature` of logit_kd / trajectory_kd, "
        "`num_centroid` of cka_global, `trajectory_points` of trajectory_kd.")})

    # old spellings, refused with their new place
    MOVED = {"layers": "the layer map is an option of the loss now: "
                       "{name: hidden_mse, options: {layers: [[6, 3]]}}"}

    def check(self):
        if not self.name:
            yield "name", "must name a loss"
        if self.weight < 0:
            yield "weight", "must be >= 0"

    def resolve(self, where: str) -> None:
        """The name and options checked against the loss registry (once distiller is imported;
        otherwise when the losses are built)."""
        from utils.config import ConfigError
        from utils.errors import UserError
        from utils.registry import published

        registry = published("distillation loss")
        if registry is None:
            return
        try:
            registry.entry(self.name, where)
        except UserError as exc:
            raise ConfigError(str(exc)) from None
        registry.options(self.name, self.options, f"{where}.options")


@dataclass
class DistillConfig:
    # keys that became options of the loss that uses them, refused with their new place
    MOVED = {"temperature": "an option of logit_kd / trajectory_kd now: distill.losses: "
                            "[{name: logit_kd, weight: 0.5, options: {temperature: 2.0}}, ...]",
             "num_centroid": "an option of cka_global now: distill.losses: "
                             "[{name: cka_global, options: {num_centroid: 16}}, ...]",
             "trajectory_points": "an option of trajectory_kd now: distill.losses: "
                                  "[{name: trajectory_kd, options: {trajectory_points: [1, 2]}}]"}

    data: Literal["real", "synthetic", "both"] = _f(
        "real", "What the student trains on: the real training split, a synthetic set "
        "(condense.load_path / --load_path), or both (alternating batches).", flag="data")
    teacher_expert: int = _f(0, "The teacher: expert k of stage 1 (final weights), trained first if "
                             "missing.", flag="teacher_expert")
    teacher_path: Optional[str] = _f(None, "Instead of an expert: a Hugging Face BERT or MPNet "
                                     "sequence classifier folder (e.g. a student saved by this "
                                     "stage).",
                                     path=True, flag="teacher_path")
    student_path: Optional[str] = _f(
        None, "Instead of a student cut from the teacher: a pretrained encoder to start it from "
        "(e.g. 'all-MiniLM-L6-v2' under an MPNet teacher; an alias, folder or hub name), with a new "
        "classification head. It reads the text with its own tokenizer and the teacher with the "
        "teacher's (cross-tokenizer KD on real data: logit losses and [CLS]-level CKA; token-level "
        "losses need one tokenizer). student_layers, student_hidden and init do not apply.",
        path=True, flag="student_path")
    student_layers: int = _f(3, "Transformer layers of the student.", flag="student_layers")
    student_hidden: Optional[int] = _f(None, "Hidden size of the student (null: the teacher's). A "
                                       "smaller one needs init 'scratch'; hidden-state losses then "
                                       "go through learnt projections and synthetic inputs_embeds "
                                       "through a learnt input projection.")
    init: Literal["teacher_layers", "scratch", "pca"] = _f(
        "teacher_layers", "Student initialisation: 'teacher_layers' the teacher's embeddings, "
        "the layers `init_from_layers` and its head (DistilBERT style); 'scratch' random weights; "
        "'pca' (TTM) the same teacher weights projected onto the top student_hidden principal "
        "directions of the teacher's token states on the training data (for a narrower student).")
    init_from_layers: List[int] = _f([], "Teacher layers (0-based) copied into the student's "
                                     "layers; empty: evenly spaced (0, 2, 4 for 3 of 6).")
    losses: List[KDLossSpec] = _f(
        [KDLossSpec("logit_kd", 0.5), KDLossSpec("label_ce", 0.5)],
        "The loss mix: [{name, weight, options}, ...] (Hinton KD: logit_kd with weight alpha and "
        "label_ce with 1 - alpha; logit_kd's temperature defaults to 2).")
    steps: int = _f(300, "Optimiser steps of the student.", flag="steps")
    batch_size: int = _f(32, "Global batch size (split over ranks; a multiple of the world size "
                         "makes 2 ranks equal 1 process).")
    lr: float = _f(1e-4, "AdamW learning rate (linear warm-up, then linear decay).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    warmup_ratio: float = _f(0.1, "Fraction of steps of learning-rate warm-up.")
    feature_warmup: float = _f(0.0, "Progressive schedule: every loss except logit_kd/label_ce "
                               "ramps linearly from 0 to its weight over this fraction of steps.")
    progressive: Literal["none", "layerwise"] = _f(
        "none", "Progressive schedule of the layer losses (hidden, attention, CKA, layer "
        "weights): 'layerwise' switches on the mapped student layers one at a time, bottom up, "
        "over the first `progressive_fraction` of the steps (embeddings always on); 'none' all "
        "from the start. Combines with feature_warmup.")
    progressive_fraction: float = _f(0.5, "progressive 'layerwise': fraction of the steps over "
                                     "which the layers are switched on.")
    dropout: float = _f(0.1, "Dropout of the student (hidden, attention, head).")
    precision: Literal["fp32", "bf16", "auto"] = _training_precision(
        "fp32", "student (and the teacher's forward passes; the loss terms are computed in fp32, "
        "the report scores and times every model in fp32)", "student_precision", "training")
    save_every: int = _f(100, "Checkpoint every N steps (and at the end); re-running resumes.")
    baseline: bool = _f(True, "Also train the same student without a teacher (label_ce only, same "
                        "steps, seeds and data) for the report.")
    quantize: bool = _f(True, "Report the student after dynamic int8 quantisation of its Linear "
                        "layers (accuracy, size, latency; CPU only).")
    int8_backend: Literal["torch.ao", "torchao"] = _f(
        "torch.ao", "Dynamic int8 of that row: 'torch.ao' (quantize_dynamic: fast on x86 CPUs, "
        "deprecated by torch 2.13) or 'torchao' (Int8DynamicActivationInt8Weight, its successor; "
        "`pip install textcondense[int8]`; in eager mode on these CPUs about 30x slower than "
        "torch.ao, benchmarks/results/perf/int8_torchao.json).")
    latency_batch: int = _f(32, "Batch size of the CPU latency measurement.")
    latency_repeats: int = _f(10, "Timed forward passes per latency figure (median reported).")
    eval_batch_size: int = _f(128, "Batch size for test evaluation and the teacher's cached logits.")
    results_table: str = _f("results/distill.md", "Markdown table to which every run appends its "
                            "rows (teacher, student, no-teacher student, int8).", path=True)

    def check(self):
        for key in ("student_layers", "steps", "batch_size", "save_every",
                    "latency_batch", "latency_repeats", "eval_batch_size"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.teacher_expert < 0:
            yield "teacher_expert", "must be >= 0"
        if self.student_hidden is not None and self.student_hidden < 8:
            yield "student_hidden", "must be >= 8 or null"
        if self.lr <= 0:
            yield "lr", "must be > 0"
        if not 0.0 <= self.feature_warmup <= 1.0:
            yield "feature_warmup", "must be in [0, 1]"
        if not 0.0 < self.progressive_fraction <= 1.0:
            yield "progressive_fraction", "must be in (0, 1]"
        if not 0.0 <= self.dropout < 1.0:
            yield "dropout", "must be in [0, 1)"
        if not self.losses:
            yield "losses", "needs at least one loss"


@dataclass
class RunConfig:
    seed: int = _f(0, "Seed of python, numpy and torch (and of the condensation's sampling).",
                   flag="seed")
    output_dir: Optional[str] = _f(None, "Output folder; default results/<stage>/<dataset>/ipc<ipc>/"
                                   "<run_name> (stage 1: the root of the expert folders, "
                                   "the same as and above pretrain.expert_dir; both on the "
                                   "command line is refused).",
                                   path=True, flag="output_dir")
    run_name: str = _f("default", "Name of the run folder under the default output_dir.")
    debug: bool = _f(False, "Few classes, few iterations, frequent logs (stage 2, condense, "
                     "only; the other stages ignore it).", flag="debug",
                     flag_stages=("condense",))
    tf32: bool = _f(True, "Allow TF32 matmuls (CUDA only; ignored on CPU).", flag="tf32")
    gpu: Optional[str] = _f(None, "Visible CUDA devices, e.g. '0,1' (harmless on CPU).", flag="gpu")
    collective_timeout_s: float = _f(1800.0, "Seconds a rank waits in a collective for the others "
                                     "before failing (a crashed peer never leaves it hanging).")
    resume: Literal["auto", "never"] = _f("auto", "'auto': re-running into an output folder resumes "
                                          "its newest loadable checkpoint (refused when the "
                                          "settings that shape the state differ); 'never': start "
                                          "afresh, moving the earlier run's outputs (checkpoints, "
                                          "sets, args.log, histories) to <name>.old-<time>.")
    log_level: Literal["debug", "info", "warning"] = _f("info", "Log level of rank 0 (other ranks "
                                                        "log warnings only).")
    report_to: List[Literal["tensorboard", "none"]] = _f(
        [], flag="report_to",
        help="Experiment trackers that receive the losses, learning rates and evaluation "
        "accuracies (Hugging Face's `report_to`): 'tensorboard' writes event files to "
        "<output_dir>/tensorboard/ (rank 0; needs the optional extra: pip install "
        "'textcondense[tensorboard]'); [] or 'none': off.")

    def check(self):
        if "none" in self.report_to and len(self.report_to) > 1:
            yield "report_to", "'none' cannot be combined with a tracker"


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)
