"""Stage 4: the distillation losses, CKA, the student, and the script (1 and 2 processes, resume,
synthetic data, the saved model folder)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from condense import condense_script_text, distill_script_text
from distiller.cka import CentroidMemory, linear_cka
from distiller.losses import KD_LOSSES, KDContext, resolve_pairs, uniform_pairs
from distiller.student import build_student, pca_basis
from tests.conftest import SMOKE, torchrun
from utils.config_schema import DistillConfig, NetworkConfig
from utils.model import ClassifierOutput, build_classifier, freeze
from utils.training import label_loss

B, L, H, C, HEADS, LAYERS = 4, 6, 32, 3, 2, 2


def outputs(seed: int) -> ClassifierOutput:
    g = torch.Generator().manual_seed(seed)
    hidden = tuple(torch.randn(B, L, H, generator=g) for _ in range(LAYERS + 1))
    att = tuple(torch.randn(B, HEADS, L, L, generator=g).softmax(-1) for _ in range(LAYERS))
    return ClassifierOutput(torch.randn(B, C, generator=g), None, att, hidden)


def context(student: ClassifierOutput, teacher: ClassifierOutput, s_model, t_model,
            same_memory: bool) -> KDContext:
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0
    centroids = torch.randn(5, H, generator=torch.Generator().manual_seed(9))
    memory = CentroidMemory(centroids, H)
    memory.student.copy_(centroids if same_memory else centroids.flip(0))
    memory.seen.fill_(1)
    return KDContext(student, teacher, torch.tensor([0, 1, 2, 0]), mask, False, s_model,
                     t_model, torch.nn.ModuleDict(), memory, trajectory_logits=teacher.logits)


def loss(name: str, ctx: KDContext, pairs) -> torch.Tensor:
    """A registered loss with its default options."""
    return KD_LOSSES.get(name)(ctx, pairs, KD_LOSSES.options(name))


@pytest.fixture(scope="module")
def models():
    net = NetworkConfig(model_path="random", random_layers=LAYERS, random_hidden=H,
                        random_heads=HEADS)
    torch.manual_seed(0)
    a = build_classifier(net, C, vocab_size=50)
    b = build_classifier(net, C, vocab_size=50)
    return a, b


BUILTIN = ["attn_kl", "attn_mse", "cka_global", "cka_intra", "cka_local", "classifier_match",
           "hidden_cos", "hidden_mse", "label_ce", "layer_weight_match", "logit_kd", "trajectory_kd"]


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - {"label_ce"}))
def test_every_loss_is_zero_for_identical_inputs_and_positive_otherwise(name, models):
    a, b = models
    pairs = uniform_pairs(LAYERS, LAYERS) if KD_LOSSES.entry(name).trait("uses_layer_map") else []
    same = loss(name, context(outputs(1), outputs(1), a, a, True), pairs)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-5)
    other = loss(name, context(outputs(2), outputs(1), b, a, False), pairs)
    assert float(other.detach()) > 1e-4


def test_label_ce_is_the_label_loss():
    out = outputs(3)
    ctx = context(out, outputs(4), None, None, True)
    torch.testing.assert_close(loss("label_ce", ctx, []), label_loss(out.logits, ctx.labels, False))


def test_cka_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(linear_cka(x, x @ q)) == pytest.approx(1.0, abs=1e-6)          # orthogonal
    assert float(linear_cka(x, 3.7 * x)) == pytest.approx(1.0, abs=1e-6)       # isotropic scale
    y = torch.randn(20, 5, generator=g)                                         # other width
    assert 0.0 < float(linear_cka(x, y)) < 0.9
    assert float(linear_cka(x, y)) == pytest.approx(float(linear_cka(x @ q * 2, y)), abs=1e-6)
    # batched with a mask equals the unbatched CKA of the kept rows
    xb, yb = torch.stack([x, x]), torch.stack([y, y])
    mask = torch.ones(2, 20)
    mask[1, 12:] = 0
    got = linear_cka(xb, yb, mask)
    assert float(got[0]) == pytest.approx(float(linear_cka(x, y)), abs=1e-6)
    assert float(got[1]) == pytest.approx(float(linear_cka(x[:12], y[:12])), abs=1e-6)
    assert torch.isfinite(linear_cka(torch.zeros(4, 3), torch.zeros(4, 3)))     # no 0/0


def test_layer_maps():
    assert uniform_pairs(6, 3) == [(2, 1), (4, 2), (6, 3)]
    assert resolve_pairs([[-1, -1], [0, 0]], 6, 3) == [(6, 3), (0, 0)]
    with pytest.raises(ValueError, match="out of range"):
        resolve_pairs([[7, 1]], 6, 3)


def test_student_from_teacher_layers_and_projection_shapes(models):
    teacher = freeze(models[0])
    d = DistillConfig(student_layers=1, init_from_layers=[1], dropout=0.0)
    student = build_student(teacher, C, d)
    enc = teacher.encoder
    torch.testing.assert_close(student.model.bert.encoder.layer[0].attention.self.query.weight,
                               enc.encoder.layer[1].attention.self.query.weight)
    torch.testing.assert_close(student.model.classifier.weight, teacher.classifier.weight)
    assert student.num_layers == 1 and student.input_proj is None
    small = build_student(teacher, C, dataclasses.replace(d, student_hidden=16, init="scratch"),
                          synthetic_inputs=True)
    assert small.hidden_size == 16 and small.input_proj.weight.shape == (16, H)
    out = small(inputs_embeds=torch.randn(2, L, H), attention_mask=torch.ones(2, L, dtype=torch.long),
                output_hidden_states=True)
    assert out.logits.shape == (2, C) and out.hidden_states[-1].shape == (2, L, 16)
    with pytest.raises(ValueError, match="init=scratch"):
        build_student(teacher, C, dataclasses.replace(d, student_hidden=16))


@pytest.mark.parametrize("backend", ["torch.ao", "torchao"])
def test_int8_backend_keeps_the_students_predictions(models, backend):
    from distiller.report import quantize_int8
    if backend == "torchao":
        pytest.importorskip("torchao")
    teacher = freeze(models[0])
    student = build_student(teacher, C, DistillConfig(student_layers=2, dropout=0.0)).model.eval()
    ids = torch.randint(5, 50, (16, L), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones(16, L, dtype=torch.long)}
    with torch.no_grad():
        ref = student(**batch).logits
    if backend == "torch.ao":
        with pytest.warns(DeprecationWarning, match="torch.ao.quantization is deprecated"):
            q = quantize_int8(student, backend)           # today's default, deprecated by torch
        query = q.bert.encoder.layer[0].attention.self.query
        assert type(query).__name__ == "Linear" and "quantized" in type(query).__module__
    else:
        q = quantize_int8(student, backend)
        assert "Int8" in type(q.bert.encoder.layer[0].attention.self.query.weight).__name__
    with torch.no_grad():
        out = q(**batch).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    assert not torch.equal(out, ref)                      # quantised for real, not a copy
    assert student.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.float32


# ------------------------------------------------------------------------------------ the script

def distill(out: Path, experts: str, *extra: str) -> int:
    return distill_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                     "--set", f"pretrain.expert_dir={experts}",
                                     "--set", f"distill.results_table={out / 'distill.md'}", *extra])


def student_weights(out: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(out / "student" / "model.safetensors"))


# torchao's int8 where installed (the `int8` extra): torch.ao's prints torch's deprecation
INT8 = "torchao" if importlib.util.find_spec("torchao") else "torch.ao"
FSD = ("distill.losses=[{name: logit_kd, weight: 0.5}, {name: label_ce, weight: 0.5}, "
       "{name: cka_intra, weight: 1}, {name: cka_local, weight: 1}, "
       "{name: cka_global, weight: 1, options: {num_centroid: 4}}, "
       "{name: hidden_mse, weight: 1}, {name: attn_kl, weight: 1}]")


def test_distill_end_to_end_and_saved_student_reloads(tmp_path, smoke_experts):
    assert distill(tmp_path, smoke_experts, "--set", FSD, "--set", f"distill.int8_backend={INT8}"
                   ) == 0
    res = json.loads((tmp_path / "distill" / "results.json").read_text())
    assert res["int8_backend"].startswith(INT8)
    assert [r["model"] for r in res["rows"]] == ["teacher", "student", "student (no teacher)",
                                                 "student int8"]
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 and r["params"] > 0
               for r in res["rows"])
    hist = json.loads((tmp_path / "distill" / "history.json").read_text())
    assert {"cka_intra", "cka_global", "attn_kl", "hidden_mse"} <= set(hist[0])
    rows = [ln for ln in (tmp_path / "distill.md").read_text().splitlines() if ln.startswith("| 20")]
    assert len(rows) == 4 and "| student int8 |" in rows[-1]
    # the saved folder is an ordinary HF model: read with its own tokenizer, it scores the test
    # split as the run's student row says (a save of other weights would not)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from utils.config import load_config
    from utils.runtime import load_data
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "student")
    enc = tok(list(data.dataset.test_texts), padding="max_length", truncation=True,
              max_length=cfg.dataset.max_length, return_tensors="pt")
    with torch.no_grad():
        pred = model(**enc).logits.argmax(1)
    student = next(r for r in res["rows"] if r["model"] == "student")
    assert student["accuracy"] == pytest.approx(float((pred == data.test.labels).float().mean()))


def test_gradients_flow_to_the_student_only(models):
    teacher = freeze(build_classifier(NetworkConfig(model_path="random", random_layers=LAYERS,
                                                    random_hidden=H, random_heads=HEADS), C,
                                      vocab_size=50, eager_attention=True))
    student = build_student(teacher, C, DistillConfig(student_layers=1, dropout=0.0),
                            eager_attention=True)
    ids = torch.randint(5, 50, (B, L))
    mask = torch.ones(B, L, dtype=torch.long)
    kw = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True,
          "output_attentions": True}
    with torch.no_grad():
        t_out = teacher(**kw)
    s_out = student(**kw)
    centroids = t_out.hidden_states[-1][:, 0].detach().clone()
    ctx = KDContext(s_out, t_out, torch.tensor([0, 1, 2, 0]), mask, False, student, teacher,
                    torch.nn.ModuleDict(), CentroidMemory(centroids, H), t_out.logits)
    total = sum(loss(name, ctx, [(2, 1)] if KD_LOSSES.entry(name).trait("uses_layer_map") else [])
                for name in BUILTIN)
    total.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    grads = [p.grad for n, p in student.named_parameters() if "pooler" not in n]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_bf16_student_runs_its_forward_in_bf16_and_every_loss_in_fp32():
    """distill.precision bf16: under autocast the student's (and teacher's) linear layers run in
    bf16, every loss term is computed from fp32 copies (values near the fp32 run's), and the
    student's gradients stay fp32."""
    from distiller.distill import DistillModule
    from distiller.losses import build_terms
    from utils.config_schema import KDLossSpec
    from utils.precision import autocast
    net = NetworkConfig(model_path="random", random_layers=LAYERS, random_hidden=H,
                        random_heads=HEADS)
    torch.manual_seed(0)
    teacher = freeze(build_classifier(net, C, vocab_size=50, eager_attention=True))
    student = build_student(teacher, C, DistillConfig(student_layers=1, dropout=0.0),
                            eager_attention=True)
    module = DistillModule(student, torch.nn.ModuleDict(), True, True)
    terms = build_terms([KDLossSpec(n, 1.0) for n in BUILTIN], LAYERS, 1)
    active = [(t, t.pairs, t.weight) for t in terms]
    ids = torch.randint(5, 50, (B, L), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones(B, L, dtype=torch.long)}
    seen = []
    hook = student.model.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))

    def run(bf16: bool):
        student.zero_grad()
        with autocast(torch.device("cpu"), bf16):
            with torch.no_grad():
                t_out = teacher(**inputs, output_hidden_states=True, output_attentions=True)
            centroids = t_out.hidden_states[-1][:, 0].float().clone()
            ctx = KDContext(None, t_out, torch.tensor([0, 1, 2, 0]), inputs["attention_mask"],
                            False, None, teacher, None, CentroidMemory(centroids, H),
                            t_out.logits)
            total, values = module(inputs, ctx, active)
        total.backward()
        return total, values, [p.grad.clone() for p in student.parameters() if p.grad is not None]

    ref_total, ref_values, _ = run(False)
    total, values, grads = run(True)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert total.dtype == values.dtype == torch.float32
    torch.testing.assert_close(values, ref_values, rtol=0.1, atol=0.02)
    assert grads and all(g.dtype == torch.float32 for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.dtype == torch.float32 for p in student.parameters())


def test_interrupted_run_equals_uninterrupted(tmp_path, smoke_experts):
    """Kill after the step-3 checkpoint (simulated: delete later checkpoints and the student),
    re-run: bit-identical student."""
    import shutil
    common = ["--set", "distill.baseline=false", "--set", "distill.quantize=false"]
    full = tmp_path / "full"
    assert distill(full, smoke_experts, *common) == 0
    ref = student_weights(full)
    for d in (full / "kd" / "checkpoints").glob("iter_*"):
        if d.name != "iter_000003":
            shutil.rmtree(d)
    shutil.rmtree(full / "student")
    assert distill(full, smoke_experts, *common) == 0
    assert "resumed from" in (full / "print.log").read_text()
    got = student_weights(full)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # a run of other settings into the folder is refused before its teacher's experts are trained
    other = tmp_path / "other_experts"
    assert distill(full, str(other), *common, "--set", "distill.lr=0.5") == 2
    assert "was made with other settings" in (full / "print.log").read_text()
    assert not other.exists() or not list(other.rglob("*.safetensors"))
    assert all(torch.equal(ref[k], v) for k, v in student_weights(full).items())


def test_two_ranks_equal_one_process(tmp_path, smoke_experts):
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--set", "distill.dropout=0.0", "--set", "distill.baseline=false",
              "--set", "distill.quantize=false", "--set", f"distill.results_table={tmp_path}/t.md"]
    torchrun("condense/distill_script_text.py", [*common, "--output_dir", str(tmp_path / "two")])
    assert distill_script_text.main([*common, "--output_dir", str(tmp_path / "one")]) == 0
    a, b = student_weights(tmp_path / "two"), student_weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_two_ranks_equal_one_process_with_projections_memory_and_layer_schedule(tmp_path,
                                                                               smoke_experts):
    """DDP over the student and the learnt projections, a projection unused while its layer is
    still off (find_unused_parameters), and cka_global's memory fed the whole global batch."""
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--set", "distill.dropout=0.0", "--set", "distill.baseline=false",
              "--set", "distill.quantize=false", "--set", f"distill.results_table={tmp_path}/t.md",
              "--set", "distill.student_layers=2", "--set", "distill.student_hidden=16",
              "--set", "distill.init=scratch", "--set", "distill.progressive=layerwise",
              "--set", "distill.losses=[{name: logit_kd}, {name: hidden_mse, options: {layers: "
              "[[1, 1], [2, 2]]}}, {name: cka_global, options: {num_centroid: 4}}]"]
    torchrun("condense/distill_script_text.py", [*common, "--output_dir", str(tmp_path / "two")])
    assert distill_script_text.main([*common, "--output_dir", str(tmp_path / "one")]) == 0
    a, b = student_weights(tmp_path / "two"), student_weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    from utils.checkpoint import load_latest
    ca, cb = (load_latest(tmp_path / d / "kd")[1] for d in ("two", "one"))
    assert ca["step"] == cb["step"] == 6
    assert {k for k in ca["module"] if k.startswith("projections.")} == \
        {"projections.t1_s1.weight", "projections.t1_s1.bias", "projections.t2_s2.weight",
         "projections.t2_s2.bias"}
    for k in ca["module"]:
        torch.testing.assert_close(ca["module"][k], cb["module"][k], atol=1e-5, rtol=1e-4)
    for k in ca["memory"]:
        torch.testing.assert_close(ca["memory"][k], cb["memory"][k], atol=1e-5, rtol=1e-4)


def test_synthetic_and_both_with_a_smaller_student(tmp_path, smoke_experts):
    cond = tmp_path / "cond"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(cond), "--set",
                                      f"pretrain.expert_dir={smoke_experts}"]) == 0
    syn = str(cond / "distilled_data" / "syn_data_6.pth")
    for data, precision in (("synthetic", "fp32"), ("both", "bf16")):
        out = tmp_path / data
        assert distill(out, smoke_experts, "--load_path", syn, "--set", f"distill.data={data}",
                       "--student_precision", precision,
                       "--set", "distill.student_hidden=16", "--set", "distill.init=scratch",
                       "--set", f"distill.int8_backend={INT8}",
                       "--set", "distill.losses=[{name: logit_kd}, {name: hidden_mse}]") == 0
        hist = json.loads((out / "distill" / "history.json").read_text())
        assert len(hist) == 6 and all(h["hidden_mse"] > 0 for h in hist)
    # a set given without --data would be ignored by the default (real data): refused instead
    assert distill(tmp_path / "ignored", smoke_experts, "--load_path", syn) == 2
    assert "distill.data is 'real', which would not use it" in \
        (tmp_path / "ignored" / "print.log").read_text()
    # each trained on the rows it was given: the set's 10 sequences, or those and the real ones
    from utils.config import load_config
    from utils.runtime import load_data
    n_real = len(load_data(load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])).train)
    assert "data synthetic (10 examples)" in (tmp_path / "synthetic" / "print.log").read_text()
    assert f"data both ({10 + n_real} examples)" in (tmp_path / "both" / "print.log").read_text()
    assert "distill: steps 1-6, bf16 autocast" in (tmp_path / "both" / "print.log").read_text()
    a, b = student_weights(tmp_path / "synthetic"), student_weights(tmp_path / "both")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_exit_2(tmp_path, smoke_experts, capsys):
    with pytest.raises(SystemExit) as exc:          # a config error: refused before any work
        distill(tmp_path / "a", smoke_experts, "--set", "distill.losses=[{name: nope}]")
    assert exc.value.code == 2 and not (tmp_path / "a").exists()
    assert "command line: distill.losses[0]: unknown distillation loss 'nope'; registered: " \
           "attn_kl, attn_mse" in capsys.readouterr().err
    assert distill(tmp_path / "b", smoke_experts, "--set", "distill.data=synthetic") == 2
    assert "needs a synthetic set" in (tmp_path / "b" / "print.log").read_text()
    assert distill(tmp_path / "c", smoke_experts, "--set", "distill.student_layers=5") == 2
    assert "teacher has only 2" in (tmp_path / "c" / "print.log").read_text()


# --------------------------------------------------------------- PCA init, layer-by-layer schedule

def test_pca_init_projects_the_teacher_onto_its_principal_directions(models):
    teacher = freeze(models[0])
    ids = torch.randint(5, 50, (16, L))
    mask = torch.ones(16, L, dtype=torch.long)
    out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    states = torch.cat([h.reshape(-1, H) for h in out.hidden_states])          # [N, H]
    P = pca_basis(states, 16)
    assert P.shape == (H, 16)
    torch.testing.assert_close(P.T @ P, torch.eye(16), atol=1e-5, rtol=0)      # orthonormal
    # the basis keeps more of the states' variance than a random 16-dim subspace
    x = states - states.mean(0)
    rand = torch.linalg.qr(torch.randn(H, 16, generator=torch.Generator().manual_seed(0)))[0]
    assert (x @ P).pow(2).sum() > (x @ rand).pow(2).sum()
    d = DistillConfig(student_layers=1, init_from_layers=[1], student_hidden=16, init="pca",
                      dropout=0.0)
    student = build_student(teacher, C, d, pca_states=states)
    enc, s = teacher.encoder, student.model.bert
    torch.testing.assert_close(s.embeddings.word_embeddings.weight,
                               enc.embeddings.word_embeddings.weight @ P)
    q_t, q_s = enc.encoder.layer[1].attention.self.query, s.encoder.layer[0].attention.self.query
    torch.testing.assert_close(q_s.weight, P.T @ q_t.weight @ P)
    torch.testing.assert_close(student.model.classifier.weight, teacher.classifier.weight @ P)
    assert student.init_layers == [1] and s.encoder.layer[0].intermediate.dense.out_features == 64
    logits = student.eval()(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (16, C) and torch.isfinite(logits).all()


def test_layerwise_schedule_switches_layers_on_bottom_up(tmp_path, smoke_experts):
    out = tmp_path / "lw"
    assert distill(out, smoke_experts, "--set", "distill.student_layers=2", "--set",
                   "distill.progressive=layerwise", "--set", "distill.progressive_fraction=0.5",
                   "--set", "distill.baseline=false", "--set", "distill.quantize=false",
                   "--set", "distill.losses=[{name: logit_kd}, {name: hidden_mse, options: "
                   "{layers: [[1, 1], [2, 2]]}}, {name: cka_intra, options: {layers: [[2, 2]]}}]"
                   ) == 0
    hist = json.loads((out / "distill" / "history.json").read_text())
    # 6 steps, 2 layers over the first 3: layer 1 at steps 1-2, layer 2 from step 3
    assert [h["cka_intra"] == 0.0 for h in hist] == [True, True, False, False, False, False]
    assert all(h["hidden_mse"] > 0 and h["logit_kd"] > 0 for h in hist)
    assert "distill.init=pca" not in (out / "print.log").read_text()
    pca = tmp_path / "pca"
    assert distill(pca, smoke_experts, "--set", "distill.student_hidden=16", "--set",
                   "distill.init=pca", "--set", "distill.baseline=false", "--set",
                   "distill.quantize=false") == 0
    assert (pca / "student" / "model.safetensors").is_file()


# --------------------------------------------------------------- a student of another tokenizer

@pytest.fixture(scope="module")
def own_tokenizer_student(tmp_path_factory) -> str:
    """A tiny random BERT folder with a WordPiece tokenizer of its own (400 pieces learnt from the
    smoke data: other ids than the teacher's MiniLM vocabulary) and another width (16 vs 32)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from utils.config import load_config
    from utils.data import load_text_dataset
    folder = tmp_path_factory.mktemp("own_tok_student")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(load_text_dataset(load_config(SMOKE).dataset).train_texts,
                           vocab_size=400, min_frequency=1)
    wp.save_model(str(folder))
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(folder)
    return str(folder)


def test_student_of_another_tokenizer_reads_its_own_tokens_the_teacher_its_own(
        tmp_path, smoke_experts, own_tokenizer_student):
    from distiller.distill import Distiller
    from utils.config import load_config
    from utils.distributed import DistEnv
    from utils.runtime import load_data
    from utils.training import Examples
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts),
                              ("distill.student_path", own_tokenizer_student)])
    data = load_data(cfg)
    read = distill_script_text.readings(cfg, data)
    text = read.student
    assert read.own_tokens and text.tokenizer.vocab_size < 500
    assert read.teacher.tokenizer is data.tokenizer                    # the expert: the network's
    assert len(text.train) == len(data.train) and not torch.equal(
        text.train.input_ids[:, :8], data.train.input_ids[:, :8])
    assert torch.equal(text.train.labels, data.train.labels)          # the same rows, in order
    teacher, _ = distill_script_text.load_teacher(cfg, DistEnv(), data, False)
    student = distill_script_text.load_pretrained_student(own_tokenizer_student, 5, cfg.distill)
    assert student.hidden_size == 16 and student.model.config.num_labels == 5
    sources = distill_script_text.make_sources("real", text.train, None)
    t_sources = distill_script_text.make_sources("real", Examples.of(data.train), None)
    d = Distiller(cfg, DistEnv(), teacher, student, sources, False, cfg.distill.losses,
                  tmp_path / "kd", teacher_sources=t_sources)
    train = Examples.of(data.train)
    with torch.no_grad():                       # the cache is the teacher on the teacher's tokens
        ref = teacher(**train.inputs(torch.arange(len(train)), torch.device("cpu"))).logits
    torch.testing.assert_close(d.cache, ref, atol=1e-5, rtol=1e-4)


def test_distill_into_a_student_of_another_tokenizer_two_ranks_equal_one_process(
        tmp_path, smoke_experts, own_tokenizer_student):
    """Cross-tokenizer KD end to end under torchrun: logit KD plus [CLS]-level CKA (the teacher
    runs on every batch, on its own tokens of the rows), the saved student is its own model with
    its own tokenizer, and 2 ranks train the same student as 1 process."""
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--student_path", own_tokenizer_student, "--set", "distill.dropout=0.0",
              "--set", "distill.quantize=false", "--set", f"distill.results_table={tmp_path}/t.md",
              "--set", "distill.losses=[{name: logit_kd, weight: 0.5}, {name: label_ce, weight: "
              "0.5}, {name: cka_local, weight: 1}]"]
    torchrun("condense/distill_script_text.py", [*common, "--output_dir", str(tmp_path / "two")])
    assert distill_script_text.main([*common, "--set", "distill.baseline=false",
                                     "--output_dir", str(tmp_path / "one")]) == 0
    a, b = student_weights(tmp_path / "two"), student_weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    res = json.loads((tmp_path / "two" / "distill" / "results.json").read_text())
    rows = {r["model"]: r for r in res["rows"]}
    assert res["student"] == Path(own_tokenizer_student).name
    assert rows["student"]["params"] == rows["student (no teacher)"]["params"] < \
        rows["teacher"]["params"]
    hist = json.loads((tmp_path / "two" / "distill" / "history.json").read_text())
    assert len(hist) == 6 and all(h["cka_local"] > 0 and h["logit_kd"] >= 0 for h in hist)
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(tmp_path / "two" / "student").vocab_size == \
        AutoTokenizer.from_pretrained(own_tokenizer_student).vocab_size
    # the teacher row is the teacher on its own tokens of the test split
    from utils.config import load_config
    from utils.distributed import DistEnv
    from utils.runtime import load_data
    from utils.training import Examples
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    teacher, _ = distill_script_text.load_teacher(cfg, DistEnv(), data, False)
    test = Examples.of(data.test)
    with torch.no_grad():
        pred = teacher(**test.inputs(torch.arange(len(test)), torch.device("cpu"))).logits.argmax(1)
    assert rows["teacher"]["accuracy"] == pytest.approx(float((pred == data.test.labels).float().mean()))
    # that student as a teacher folder: it and a student cut from it read its own tokens
    folder = tmp_path / "two" / "student"
    out = tmp_path / "from_folder"
    assert distill(out, smoke_experts, "--teacher_path", str(folder), "--set",
                   "distill.baseline=false", "--set", "distill.quantize=false") == 0
    from transformers import AutoModelForSequenceClassification
    own = AutoTokenizer.from_pretrained(folder)
    enc = own(list(data.dataset.test_texts), padding="max_length", truncation=True,
              max_length=cfg.dataset.max_length, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        pred = model(**enc).logits.argmax(1)
    got = json.loads((out / "distill" / "results.json").read_text())["rows"]
    assert got[0]["accuracy"] == pytest.approx(float((pred == data.test.labels).float().mean()))
    assert AutoTokenizer.from_pretrained(out / "student").vocab_size == own.vocab_size
    assert distill(tmp_path / "refused", smoke_experts, "--teacher_path", str(folder),
                   "--set", "distill.data=synthetic", "--load_path", "unused.pth") == 2
    assert "reads other token ids than network.model_path" in \
        (tmp_path / "refused" / "print.log").read_text()


def test_a_student_of_another_tokenizer_refuses_token_level_losses_and_synthetic_data(
        tmp_path, smoke_experts, own_tokenizer_student):
    assert distill(tmp_path / "a", smoke_experts, "--student_path", own_tokenizer_student,
                   "--set", "distill.losses=[{name: logit_kd}, {name: hidden_mse}]") == 2
    log = (tmp_path / "a" / "print.log").read_text()
    assert "['hidden_mse'] compare teacher and student token by token" in log
    assert distill(tmp_path / "b", smoke_experts, "--student_path", own_tokenizer_student,
                   "--set", "distill.data=synthetic") == 2
    assert "distill.student_path trains on real text" in (tmp_path / "b" / "print.log").read_text()
    assert distill(tmp_path / "c", smoke_experts, "--student_path", own_tokenizer_student,
                   "--set", "distill.losses=[{name: logit_kd}, {name: classifier_match}]") == 2
    assert "['classifier_match'] match the student's weights" in \
        (tmp_path / "c" / "print.log").read_text()
    assert not any((tmp_path / x / "student").exists() for x in "abc")
    # a folder whose weights do not cover its encoder (a layer more in its config than saved)
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(own_tokenizer_student, partial)
    conf = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**conf, "num_hidden_layers": 2}))
    assert distill(tmp_path / "d", smoke_experts, "--student_path", str(partial)) == 2
    assert "encoder tensors untrained (e.g. bert.encoder.layer.1." in \
        (tmp_path / "d" / "print.log").read_text()


def test_a_teacher_of_another_family_needs_a_student_of_its_own(tmp_path, smoke_experts):
    """A (tiny, random) MPNet classifier folder as the teacher: a student cut from it is refused
    with the way on (--student_path), not a Python error."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetForSequenceClassification
    folder = tmp_path / "mpnet"
    torch.manual_seed(0)
    from utils.model import PACKAGED_MODEL_ALIASES, resolve_model_path
    tok = AutoTokenizer.from_pretrained(resolve_model_path(PACKAGED_MODEL_ALIASES[0]))
    MPNetForSequenceClassification(MPNetConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=5)).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert distill(tmp_path / "out", smoke_experts, "--teacher_path", str(folder)) == 2
    assert "the teacher is a 'mpnet' model; a student cut from it is a BERT" in \
        (tmp_path / "out" / "print.log").read_text()
