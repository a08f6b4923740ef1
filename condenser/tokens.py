"""Token-level sets (`condense.tokens`): the set is real vocabulary tokens, not free embeddings.

PEZ (Wen et al., NeurIPS 2023, "Hard prompts made easy"): each forward pass sees every position's
nearest vocabulary embedding (cosine, as `utils.text_sets.nearest_tokens` decodes), while the
gradient updates the continuous copy underneath (straight-through). The saved set is the projected
embeddings, exactly rows of the embedding table, laid out as a tokenizer lays out a text, so
decoding it to text loses no embedding move: the text trains another tokenizer's model on what
the matching objective saw.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

CHUNK = 4096          # positions per similarity block: [CHUNK, V] floats at a time


def usable_token_ids(tokenizer) -> torch.Tensor:
    """Tokens a projected position inside a sequence may take  # [V] bool: every vocabulary entry
    except the special ones ([PAD], [UNK], [MASK], [CLS], [SEP]: the last two are placed where a
    tokenizer puts them, see `TokenProjection`) and BERT's untrained `[unusedN]` slots."""
    vocab = tokenizer.get_vocab()
    allowed = torch.ones(max(vocab.values()) + 1, dtype=torch.bool)
    allowed[list(tokenizer.all_special_ids)] = False
    for tok, i in vocab.items():
        if tok.startswith("[unused"):
            allowed[i] = False
    return allowed


class TokenProjection:
    """Nearest-token projection onto an embedding table  # table [V, H], allowed [V] bool.

    A projected sequence is laid out as the tokenizer lays out a text: [CLS] first, [SEP] at its
    last attended position, and between them the nearest allowed token of each position; so the
    set decoded to text (special tokens dropped) and tokenised again is the sequence it trained
    on, up to the tokenizer's own round trip (WordPiece may split a detokenised word otherwise).
    """

    def __init__(self, table: torch.Tensor, allowed: torch.Tensor, cls_id: int, sep_id: int):
        self.table = table.detach()
        self.unit = F.normalize(self.table.float(), dim=-1)                     # [V, H]
        n = self.table.shape[0]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[:min(n, len(allowed))] = allowed[:n]
        self.blocked = (~mask).to(self.table.device)                            # [V]
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)

    @torch.no_grad()
    def ids(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The token of each position  # embeds [N, L, H], mask [N, L] -> [N, L] long"""
        flat = F.normalize(embeds.detach().reshape(-1, embeds.shape[-1]).float(), dim=-1)
        out = [(block @ self.unit.T).masked_fill_(self.blocked, -2.0).argmax(-1)
               for block in flat.split(CHUNK)]
        ids = torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=embeds.device)
        ids = ids.reshape(embeds.shape[:-1]).clone()
        ids[:, 0] = self.cls_id
        m = mask.to(ids.device).long()
        last = (m * torch.arange(m.shape[1], device=ids.device)).argmax(1)       # [N]
        rows = torch.nonzero(m.sum(1) > 1).flatten()
        ids[rows, last[rows]] = self.sep_id
        return ids

    @torch.no_grad()
    def hard(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The projected embeddings themselves (rows of the table)  # [N, L, H]"""
        return self.table[self.ids(embeds, mask)].to(embeds.dtype)

    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Forward value: exactly the projection; gradient: to `embeds` as if the identity."""
        return self.hard(embeds, mask) + (embeds - embeds.detach())


def project_sets(per_class: dict, projection: TokenProjection, classes: Sequence[int]) -> dict:
    """{class: {embeds, mask, ...}} with every class's embeddings replaced by their projection (CPU)."""
    out = {}
    dev = projection.table.device
    for c in classes:
        d = dict(per_class[c])
        d["embeds"] = projection.hard(d["embeds"].to(dev), d["mask"].to(dev)).cpu()
        out[c] = d
    return out
