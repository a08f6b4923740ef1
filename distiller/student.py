"""The student: a smaller BERT sequence classifier built from (and initialised by) the teacher,
or (`distill.student_path`) a pretrained encoder of its own with a new head.

The student is a plain Hugging Face sequence classifier (`BertForSequenceClassification`, or the
`student_path` encoder's class: encoder, pooler, head), so a saved student is an ordinary model
folder that `AutoModelForSequenceClassification.from_pretrained` loads and that gives the same
logits. `HFClassifier` wraps any such model with the interface of
`utils.model.TextClassifier` (ids or inputs_embeds in; logits, per-layer [CLS] features, hidden
states and attention maps out), so teacher and student are called alike.

Initialisation (`distill.init`):
- `teacher_layers` (DistilBERT style): the teacher's embeddings, the transformer layers
  `init_from_layers` (evenly spaced by default: 0, 2, 4 for 3 of 6) and its classification head;
  the pooler starts as the identity map (weight I, bias 0; the teacher has no pooler).
- `scratch`: random weights (any hidden size).
- `pca` (TTM's low-dimensional initialisation, for a narrower student): the same teacher layers,
  projected onto the top `student_hidden` principal directions P [H_t, H_s] of the teacher's
  token states on the training data: embeddings E P, square maps P^T W P, feed-forward input
  W P and output P^T W (keeping the 4 H_s intermediate units with the largest projected rows),
  LayerNorm weights averaged through P^2, head W_c P. With the teacher's width it is
  `teacher_layers` in a rotated basis.

- `distill.student_path` instead: a pretrained encoder of its own (e.g. MiniLM under an MPNet
  teacher) with a new head; it reads the text through its own tokenizer (cross-tokenizer KD).

With another hidden size than the teacher's, synthetic `inputs_embeds` (made in the teacher's
embedding space) reach the student through a learnt linear projection `input_proj` that trains with
it; the saved model folder is the student alone (token ids in).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

from utils.config_schema import DistillConfig
from utils.errors import UserError
from utils.model import SDPA_MODEL_TYPES, ClassifierOutput, load_bert_config, resolve_model_path


class HFClassifier(nn.Module):
    """A Hugging Face BERT sequence classifier with `TextClassifier`'s forward interface."""

    def __init__(self, model: nn.Module, input_dim: Optional[int] = None):
        super().__init__()
        self.model = model
        hidden = model.config.hidden_size
        # synthetic inputs_embeds of another hidden size come in through this projection
        self.input_proj = nn.Linear(input_dim, hidden) if input_dim and input_dim != hidden else None
        self.init_layers: Optional[List[int]] = None     # teacher layers it was initialised from

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def classifier(self) -> nn.Linear:
        return self.model.classifier

    def layers(self) -> nn.ModuleList:
        return self.model.base_model.encoder.layer

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None,
                layer_index: Optional[Sequence[int]] = None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> ClassifierOutput:
        if inputs_embeds is not None and self.input_proj is not None:
            inputs_embeds = self.input_proj(inputs_embeds)                  # [B, L, H_s]
        want_hidden = output_hidden_states or layer_index is not None
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds,
                         attention_mask=attention_mask, output_hidden_states=want_hidden,
                         output_attentions=output_attentions, return_dict=True)
        features = None
        if layer_index is not None:
            features = torch.stack([out.hidden_states[i][:, 0] for i in layer_index])  # [K, B, H]
        return ClassifierOutput(out.logits, features,
                                out.attentions if output_attentions else None,
                                out.hidden_states if want_hidden else None)


def default_init_layers(teacher_layers: int, student_layers: int) -> List[int]:
    """Evenly spaced teacher layers, starting at 0: 3 of 6 -> [0, 2, 4]."""
    step = teacher_layers / student_layers
    return [int(i * step) for i in range(student_layers)]


def student_config(teacher_config, nclass: int, d: DistillConfig, eager_attention: bool):
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = d.student_layers
    if d.student_hidden is not None and d.student_hidden != teacher_config.hidden_size:
        head_dim = teacher_config.hidden_size // teacher_config.num_attention_heads
        cfg.hidden_size = d.student_hidden
        cfg.num_attention_heads = max(1, d.student_hidden // head_dim)
        if d.student_hidden % cfg.num_attention_heads:
            raise UserError(f"distill.student_hidden = {d.student_hidden} is not a multiple of the "
                            f"teacher's head size {head_dim}; pick a multiple of {head_dim}")
        cfg.intermediate_size = 4 * d.student_hidden
    cfg.num_labels = nclass
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = d.dropout
    cfg.classifier_dropout = d.dropout
    cfg.architectures = ["BertForSequenceClassification"]
    cfg._attn_implementation = "eager" if eager_attention else "sdpa"
    return cfg


@torch.no_grad()
def build_student(teacher, nclass: int, d: DistillConfig, eager_attention: bool = False,
                  seed: int = 0, synthetic_inputs: bool = False,
                  pca_states: Optional[torch.Tensor] = None) -> HFClassifier:
    """A student for `teacher` (a `TextClassifier` or `HFClassifier`), initialised per `d.init`;
    `synthetic_inputs`: it will be fed the teacher-space inputs_embeds of a synthetic set;
    `pca_states` [N, H_t]: the teacher's token states for init 'pca'."""
    from transformers import BertForSequenceClassification

    tcfg = teacher_encoder(teacher).config
    if tcfg.model_type != "bert":
        raise UserError(f"the teacher is a {tcfg.model_type!r} model; a student cut from it is a "
                        f"BERT built from a BERT teacher. Give the student a pretrained encoder of "
                        f"its own: --student_path all-MiniLM-L6-v2 (it reads its own tokens)")
    if d.student_layers > tcfg.num_hidden_layers and d.init != "scratch":
        raise UserError(f"distill.student_layers = {d.student_layers} but the teacher has only "
                        f"{tcfg.num_hidden_layers}; use fewer layers or distill.init=scratch")
    torch.manual_seed(seed)
    model = BertForSequenceClassification(student_config(tcfg, nclass, d, eager_attention))
    student = HFClassifier(model, input_dim=tcfg.hidden_size if synthetic_inputs else None)
    if d.init == "scratch":
        return student
    if d.init == "pca":
        if pca_states is None:
            raise ValueError("init 'pca' needs the teacher's token states (pca_states)")
        chosen = _chosen_layers(tcfg, d)
        init_pca(model, teacher, chosen, pca_basis(pca_states, student.hidden_size))
        student.init_layers = chosen
        return student
    if student.hidden_size != tcfg.hidden_size:
        raise UserError(f"distill.init=teacher_layers needs the teacher's hidden size "
                        f"({tcfg.hidden_size}); with student_hidden={d.student_hidden} use "
                        f"distill.init=scratch")
    chosen = _chosen_layers(tcfg, d)
    enc = teacher_encoder(teacher)
    model.bert.embeddings.load_state_dict(enc.embeddings.state_dict())
    for s, t in enumerate(chosen):
        model.bert.encoder.layer[s].load_state_dict(enc.encoder.layer[t].state_dict())
    model.bert.pooler.dense.weight.copy_(torch.eye(tcfg.hidden_size))
    model.bert.pooler.dense.bias.zero_()
    model.classifier.load_state_dict(teacher.classifier.state_dict())
    student.init_layers = chosen
    return student


def _chosen_layers(tcfg, d: DistillConfig) -> List[int]:
    chosen = list(d.init_from_layers) or default_init_layers(tcfg.num_hidden_layers, d.student_layers)
    if len(chosen) != d.student_layers or not all(0 <= i < tcfg.num_hidden_layers for i in chosen):
        raise UserError(f"distill.init_from_layers = {chosen}: needs {d.student_layers} teacher "
                        f"layers in 0..{tcfg.num_hidden_layers - 1}")
    return chosen


@torch.no_grad()
def pca_basis(states: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k principal directions of token states [N, H_t] as orthonormal columns [H_t, k]."""
    x = states.double() - states.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)                  # vh [min(N, H), H]
    if vh.shape[0] < k:
        raise UserError(f"distill.init=pca: {vh.shape[0]} token states cannot give {k} principal "
                        f"directions; use more training data or distill.init=scratch")
    return vh[:k].T.float().contiguous()


@torch.no_grad()
def init_pca(model: nn.Module, teacher, chosen: Sequence[int], P: torch.Tensor) -> None:
    """Copy the teacher's embeddings, layers `chosen` and head into the narrower `model`
    (a BertForSequenceClassification), projected through P [H_t, H_s]."""
    enc = teacher_encoder(teacher)

    def square(dst: nn.Linear, src: nn.Linear) -> None:                 # H_t -> H_t  =>  H_s -> H_s
        dst.weight.copy_(P.T @ src.weight @ P)
        dst.bias.copy_(P.T @ src.bias)

    def norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
        dst.weight.copy_((P * P).T @ src.weight)                         # weighted mean of gains
        dst.bias.copy_(P.T @ src.bias)

    se, te = model.bert.embeddings, enc.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(se, name).weight.copy_(getattr(te, name).weight @ P)
    norm(se.LayerNorm, te.LayerNorm)
    for s_idx, t_idx in enumerate(chosen):
        sl, tl = model.bert.encoder.layer[s_idx], enc.encoder.layer[t_idx]
        for name in ("query", "key", "value"):
            square(getattr(sl.attention.self, name), getattr(tl.attention.self, name))
        square(sl.attention.output.dense, tl.attention.output.dense)
        norm(sl.attention.output.LayerNorm, tl.attention.output.LayerNorm)
        w_in = tl.intermediate.dense.weight @ P                          # [I_t, H_s]
        keep = w_in.norm(dim=1).topk(sl.intermediate.dense.out_features).indices.sort().values
        sl.intermediate.dense.weight.copy_(w_in[keep])
        sl.intermediate.dense.bias.copy_(tl.intermediate.dense.bias[keep])
        sl.output.dense.weight.copy_(P.T @ tl.output.dense.weight[:, keep])
        sl.output.dense.bias.copy_(P.T @ tl.output.dense.bias)
        norm(sl.output.LayerNorm, tl.output.LayerNorm)
    model.bert.pooler.dense.weight.copy_(torch.eye(P.shape[1]))
    model.bert.pooler.dense.bias.zero_()
    model.classifier.weight.copy_(teacher.classifier.weight @ P)
    model.classifier.bias.copy_(teacher.classifier.bias)


@torch.no_grad()
def teacher_token_states(teacher, sources, batch_size: int, device: torch.device,
                         max_tokens: int = 20000) -> torch.Tensor:
    """Token states (embeddings and every layer, unmasked tokens) of the teacher on the first
    training examples, up to `max_tokens` rows, for init 'pca'  # [N, H_t] (CPU)"""
    rows, total = [], 0
    for idx in sources.in_order(batch_size):
        inputs = sources.inputs(idx, device)
        out = teacher(**inputs, output_hidden_states=True)
        keep = inputs["attention_mask"].bool()
        for h in out.hidden_states:
            rows.append(h[keep].float().cpu())
            total += rows[-1].shape[0]
        if total >= max_tokens:
            break
    return torch.cat(rows)[:max_tokens]


def teacher_encoder(teacher) -> nn.Module:
    """The teacher's encoder (a `TextClassifier`'s, or an HF classifier's base model)."""
    return teacher.model.base_model if isinstance(teacher, HFClassifier) else teacher.encoder


def count_parameters(student: HFClassifier) -> int:
    """Parameters of the deployable student (the saved model; without input_proj)."""
    return sum(p.numel() for p in student.model.parameters())


def save_student(student: HFClassifier, tokenizer, folder: Path) -> Path:
    """A Hugging Face model folder (config.json, model.safetensors, tokenizer files)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    student.model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def _attention(model_type: str, eager_attention: bool) -> str:
    return "sdpa" if model_type in SDPA_MODEL_TYPES and not eager_attention else "eager"


def load_hf_classifier(path: str, eager_attention: bool = False) -> HFClassifier:
    """A BERT or MPNet sequence classifier folder (or hub name) as an `HFClassifier`."""
    from transformers import AutoModelForSequenceClassification

    config = load_bert_config(resolve_model_path(path))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(path),
            attn_implementation=_attention(config.model_type, eager_attention))
    except Exception as exc:  # noqa: BLE001 - turned into advice
        raise UserError(f"cannot load a sequence classifier from {path!r} ({type(exc).__name__}: "
                        f"{exc}); distill.teacher_path must be a Hugging Face BERT or MPNet "
                        f"classifier folder") from None
    return HFClassifier(model)


@torch.no_grad()
def load_pretrained_student(path: str, nclass: int, d: DistillConfig, eager_attention: bool = False,
                            seed: int = 0) -> HFClassifier:
    """`distill.student_path`: a pretrained encoder (alias, folder or hub name) with a new,
    seeded classification head; the student's dropout is `distill.dropout`."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    folder = resolve_model_path(path)
    config = load_bert_config(folder, "distill.student_path")   # a clear line: not BERT / MPNet
    config.num_labels = nclass
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = d.dropout
    config.classifier_dropout = d.dropout
    torch.manual_seed(seed)                     # the new head (and pooler, when absent)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()            # "newly initialized: classifier" is the point
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder, config=config, attn_implementation=_attention(config.model_type, eager_attention),
            output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = [k for k in info.get("missing_keys", ()) if "classifier" not in k and "pooler" not in k]
    if fresh:
        raise UserError(f"distill.student_path {path!r}: its weights leave {len(fresh)} encoder "
                        f"tensors untrained (e.g. {sorted(fresh)[0]}); give a pretrained encoder "
                        f"folder, alias or hub name")
    return HFClassifier(model)
