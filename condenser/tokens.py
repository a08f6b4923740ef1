"""Token-level sets (`condense.tokens`): the set is real vocabulary tokens, not free embeddings.

PEZ (Wen et al., NeurIPS 2023, "Hard prompts made easy"): each forward pass sees every position's
nearest vocabulary embedding (cosine, as `utils.text_sets.nearest_tokens` decodes), while the
gradient updates the continuous copy underneath (straight-through). The saved set is the projected
embeddings, exactly rows of the embedding table, so decoding it to text loses nothing: the text
trains another tokenizer's model on what the matching objective saw.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

CHUNK = 4096          # positions per similarity block: [CHUNK, V] floats at a time


def usable_token_ids(tokenizer) -> torch.Tensor:
    """Tokens a projected position may take  # [V] bool: every vocabulary entry except the
    special ones a tokenizer never puts inside a text ([PAD], [UNK], [MASK]; [CLS] and [SEP]
    stay: real sequences start and end with them) and BERT's untrained `[unusedN]` slots."""
    vocab = tokenizer.get_vocab()
    allowed = torch.ones(max(vocab.values()) + 1, dtype=torch.bool)
    keep = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    for i in tokenizer.all_special_ids:
        if i not in keep:
            allowed[i] = False
    for tok, i in vocab.items():
        if tok.startswith("[unused"):
            allowed[i] = False
    return allowed


class TokenProjection:
    """Nearest-token projection onto an embedding table  # table [V, H], allowed [V] bool."""

    def __init__(self, table: torch.Tensor, allowed: torch.Tensor):
        self.table = table.detach()
        self.unit = F.normalize(self.table.float(), dim=-1)                     # [V, H]
        n = self.table.shape[0]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[:min(n, len(allowed))] = allowed[:n]
        self.blocked = (~mask).to(self.table.device)                            # [V]

    @torch.no_grad()
    def ids(self, embeds: torch.Tensor) -> torch.Tensor:
        """The nearest allowed token of each position  # [..., H] -> [...] long"""
        flat = F.normalize(embeds.detach().reshape(-1, embeds.shape[-1]).float(), dim=-1)
        out = [(block @ self.unit.T).masked_fill_(self.blocked, -2.0).argmax(-1)
               for block in flat.split(CHUNK)]
        ids = torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=embeds.device)
        return ids.reshape(embeds.shape[:-1])

    @torch.no_grad()
    def hard(self, embeds: torch.Tensor) -> torch.Tensor:
        """The projected embeddings themselves (rows of the table)  # [..., H]"""
        return self.table[self.ids(embeds)].to(embeds.dtype)

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        """Forward value: the projection; gradient: to `embeds` as if the identity."""
        return self.hard(embeds) + (embeds - embeds.detach())      # value: exactly the tokens


def project_sets(per_class: dict, projection: TokenProjection, classes: Sequence[int]) -> dict:
    """{class: {embeds, ...}} with every class's embeddings replaced by their projection (CPU)."""
    out = {}
    for c in classes:
        d = dict(per_class[c])
        d["embeds"] = projection.hard(d["embeds"].to(projection.table.device)).cpu()
        out[c] = d
    return out
