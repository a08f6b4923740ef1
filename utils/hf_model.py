"""The project's classifier as a Hugging Face model: `AutoModelForSequenceClassification`
loads an exported expert with the logits the project computes.

The project's `TextClassifier` pools the last layer ([CLS] token or the mean over unmasked
tokens) into dropout + one linear head, without BERT's pooler (a tanh dense layer on [CLS]), so
the stock `BertForSequenceClassification` cannot hold it exactly. This module defines the same
computation as a `PreTrainedModel` (model_type 'textcondense_bert'):

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

An exported folder carries a copy of this file (`auto_map` in its config.json), so it loads
anywhere with `trust_remote_code=True`; after `import textcondense` the classes are registered
with the Auto classes and no remote code is needed. This file imports only torch and
transformers (it is copied into model folders as it is).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "textcondense_bert"


class TextCondenseConfig(PretrainedConfig):
    """A BERT encoder's config (`encoder`, as BertConfig.to_dict()) + the head: `pooling` ('cls'
    or 'mean') and `classifier_dropout`; num_labels / id2label as every HF classifier."""

    model_type = MODEL_TYPE

    def __init__(self, encoder: Optional[dict] = None, pooling: str = "cls",
                 classifier_dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.get("hidden_size", 768))


def pool(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor], pooling: str) -> torch.Tensor:
    """hidden  # [B, L, H] -> [B, H]: the [CLS] state, or the mean over unmasked tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)                    # [B, L, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextCondenseForSequenceClassification(PreTrainedModel):
    """BERT encoder (no pooler) + dropout + linear head on the pooled last layer. Takes
    `input_ids` or `inputs_embeds` (a synthetic set's); `labels`: class indices (cross-entropy),
    label vectors of a multi-label task (problem_type 'multi_label_classification': BCE) or soft
    labels (soft cross-entropy)."""

    config_class = TextCondenseConfig
    base_model_prefix = "encoder"

    def __init__(self, config: TextCondenseConfig):
        super().__init__(config)
        enc = BertConfig(**config.encoder)
        enc._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        self.encoder = BertModel(enc, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(enc.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.encoder.get("initializer_range", 0.02))
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, self.config.encoder.get("initializer_range", 0.02))
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    def forward(self, input_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None,
                output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, **kwargs) -> SequenceClassifierOutput:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, inputs_embeds=inputs_embeds,
                           output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, return_dict=True)
        pooled = pool(out.last_hidden_state, attention_mask, self.config.pooling)   # [B, H]
        logits = self.classifier(self.dropout(pooled))                              # [B, C]
        loss = None
        if labels is not None:
            if labels.dim() == 1:
                loss = nn.functional.cross_entropy(logits, labels.long())
            elif self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            else:                                                # soft labels [B, C]
                target = labels.float().clamp_min(0)
                target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
                loss = -(target * nn.functional.log_softmax(logits, dim=1)).sum(1).mean()
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


def register() -> None:
    """Register the classes with AutoConfig / AutoModelForSequenceClassification (idempotent)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        AutoConfig.register(MODEL_TYPE, TextCondenseConfig)
    except ValueError:
        pass                                                 # already registered
    try:
        AutoModelForSequenceClassification.register(TextCondenseConfig,
                                                    TextCondenseForSequenceClassification)
    except ValueError:
        pass
