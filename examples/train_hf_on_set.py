"""Train a stock Hugging Face classifier on a condensed set with the Hugging Face `Trainer`.

    pip install 'textcondense[hf]'          # accelerate, which the Trainer needs
    python examples/train_hf_on_set.py \
        --load_path results/condense/bbc/ipc1/demo/distilled_data/syn_data_100.pth \
        --config_path demo --steps 100 --lr 1e-4 --seed 0

A set holds `inputs_embeds`: word embeddings of the encoder it was condensed with (the set's
meta `model_path`, e.g. all-MiniLM-L6-v2). So the model is that encoder loaded as a stock
`AutoModelForSequenceClassification` (BERT's pooler + a fresh linear head) and trained on the
embeddings as on token ids; BERT adds the position embeddings inside. `--config_path` names the
config whose dataset's test split scores the model (tokenised with the model's tokenizer, as any
real text would be); without it only training runs. The trained model is saved with
`save_pretrained` in --out/model and the scores in --out/scores.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)

import textcondense as tc


def load_stock_model(model_path: str, class_names: Sequence[str]):
    """A stock sequence classifier of `model_path` with a fresh head for `class_names`."""
    names = list(class_names)
    return AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(names),
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def train(model, train_dataset, out_dir: str, steps: int, lr: float, batch_size: int, seed: int,
          weight_decay: float = 0.01) -> list:
    """The Trainer with its defaults (AdamW, linear decay, no warm-up, gradients clipped to 1)
    for `steps` steps; returns the Trainer's log history (the training losses)."""
    args = TrainingArguments(
        output_dir=out_dir, max_steps=steps, learning_rate=lr, weight_decay=weight_decay,
        per_device_train_batch_size=min(batch_size, len(train_dataset)), seed=seed, data_seed=seed,
        logging_steps=max(1, steps // 10), save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
    trainer.train()
    return trainer.state.log_history


@torch.no_grad()
def accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int,
             batch_size: int = 64) -> float:
    """Accuracy of `model` on raw texts (tokenised like any real input)."""
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), truncation=True, padding="max_length",
                        max_length=max_length, return_tensors="pt").to(device)
        preds.append(model(**enc).logits.argmax(-1).cpu())
    return float((torch.cat(preds).numpy() == np.asarray(labels)).mean())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load_path", "--set", dest="load_path", required=True,
                   help="syn_data_<iter>.pth or its .safetensors copy (as the stages' --load_path; "
                        "--set is its old name)")
    p.add_argument("--model", default=None, help="encoder folder or name (default: the set's "
                   "meta model_path)")
    p.add_argument("--config_path", default=None, help="config whose test split scores the model")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="hf_on_set", help="output folder")
    a = p.parse_args(argv)

    syn = tc.load_synset(a.load_path)
    meta = syn["meta"]
    print(tc.synset_summary(syn))
    name = a.model or meta["model_path"]
    if name == "random":
        raise SystemExit("the set was condensed with the 'random' test encoder: give --model FOLDER")
    model_dir = tc.resolve_model_path(name)
    set_seed(a.seed)
    model = load_stock_model(model_dir, meta["class_names"])
    history = train(model, tc.to_hf_dataset(syn), a.out, a.steps, a.lr, a.batch_size, a.seed)
    losses = [h["loss"] for h in history if "loss" in h]
    scores = {"set": a.load_path, "model": name, "steps": a.steps, "lr": a.lr, "seed": a.seed,
              "train_loss_first": losses[0] if losses else None,
              "train_loss_last": losses[-1] if losses else None}
    if a.config_path:
        data = tc.load_text_dataset(tc.load_config(a.config_path).dataset)
        if list(data.class_names) != list(meta["class_names"]):
            raise SystemExit(f"the set's classes {meta['class_names']} are not the dataset's "
                             f"{data.class_names}")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        scores["test_accuracy"] = accuracy(model, tokenizer, data.test_texts, data.test_labels,
                                           int(meta["max_length"]))
        scores["test_rows"] = len(data.test_texts)
    out = Path(a.out)
    model.save_pretrained(out / "model")
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
