"""Experts (and any `TextClassifier`) as Hugging Face model folders.

    export_expert(cfg, k, folder)    # expert k's final weights -> folder (config.json,
                                     # model.safetensors, tokenizer files, hf_model.py)

The folder loads with `AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)` anywhere (or without trust_remote_code after `import textcondense`) and
gives the project's logits (utils/hf_model.py says why it is not a stock BertForSequenceClassification).
The experts stage writes one per expert: <expert_set_dir>/expert_<k>/hf/.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from utils.config_schema import Config
from utils.experts import expert_dir, expert_set_dir, load_expert_weights
from utils.hf_model import TextCondenseConfig, TextCondenseForSequenceClassification, register
from utils.model import (
    TextClassifier,
    build_classifier,
    load_bert_config,
    load_tokenizer,
    resolve_model_path,
)

logger = logging.getLogger(__name__)

HF_FOLDER = "hf"
# config keys of the encoder that describe this process, not the model
_RUNTIME_KEYS = ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype",
                 "_attn_implementation_autoset", "_commit_hash")


def to_hf_classifier(classifier: TextClassifier, class_names: Optional[Sequence[str]] = None,
                     multilabel: bool = False) -> TextCondenseForSequenceClassification:
    """The same weights in the Hugging Face class (a copy; eval mode)."""
    register()
    encoder = {k: v for k, v in classifier.encoder.config.to_dict().items()
               if k not in _RUNTIME_KEYS and not k.startswith("_")}
    names = list(class_names) if class_names is not None else [str(i) for i in
                                                               range(classifier.num_labels)]
    config = TextCondenseConfig(
        encoder=encoder, pooling=classifier.pooling, classifier_dropout=classifier.dropout.p,
        num_labels=classifier.num_labels, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification" if multilabel else "single_label_classification")
    model = TextCondenseForSequenceClassification(config)
    model.load_state_dict(classifier.state_dict())
    return model.eval()


def save_hf_folder(model: TextCondenseForSequenceClassification, folder: str | Path,
                   tokenizer=None) -> Path:
    """Write the model (safetensors, config with auto_map, a copy of utils/hf_model.py) and the
    tokenizer into `folder`, replacing it whole (written beside it, then moved into place)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    TextCondenseConfig.register_for_auto_class()
    TextCondenseForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def expert_hf_dir(cfg: Config, k: int) -> Path:
    return expert_dir(expert_set_dir(cfg), k) / HF_FOLDER


def export_expert(cfg: Config, k: int, folder: Optional[str | Path] = None, tokenizer=None,
                  class_names: Optional[Sequence[str]] = None, multilabel: bool = False) -> Path:
    """Expert k's final weights as a Hugging Face folder (default <expert>/hf/); the expert must
    be complete."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.network)
    weights = load_expert_weights(cfg, k, cfg.pretrain.epochs)
    nclass = int(weights["classifier.weight"].shape[0])
    classifier = build_classifier(cfg.network, nclass, pretrained=False,
                                  vocab_size=tokenizer.vocab_size)
    classifier.load_state_dict(weights)
    model = to_hf_classifier(classifier, class_names, multilabel)
    return save_hf_folder(model, folder or expert_hf_dir(cfg, k), tokenizer)


def export_missing(cfg: Config, data) -> list:
    """Rank 0, after the experts are trained: each complete expert's final weights as a Hugging
    Face folder, where there is none yet (`data`: the loaded dataset, utils.runtime.Data).
    Returns the folders written."""
    from utils.experts import read_manifest

    if cfg.network.model_path != "random" and load_bert_config(
            resolve_model_path(cfg.network.model_path)).model_type != "bert":
        logger.info("experts are not exported as Hugging Face folders: the export covers BERT "
                    "encoders only (this run uses %s)", cfg.network.model_path)
        return []
    written = []
    for k in range(cfg.pretrain.num_premodel):
        folder = expert_hf_dir(cfg, k)
        manifest = read_manifest(expert_set_dir(cfg), k) or {}
        if manifest.get("complete") and not (folder / "config.json").is_file():
            written.append(export_expert(cfg, k, folder, data.tokenizer, data.dataset.class_names,
                                         data.dataset.multilabel))
    return written

