"""When the condensation loop logs, saves and evaluates (`condense.log_every`, `save_every`,
`eval_it`; with `evaluate.select_by: val` every evaluated iteration is also saved, so the best
one can be named)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet

from utils.config_schema import Config


@dataclass(frozen=True)
class Schedule:
    niter: int
    log_every: int
    save_every: int
    eval_it: FrozenSet[int]
    save_evaluated: bool        # select_by 'val': evaluated iterations are saved too

    @classmethod
    def of(cls, cfg: Config) -> "Schedule":
        c = cfg.condense
        return cls(c.niter, c.log_every, c.save_every, frozenset(c.eval_it),
                   cfg.evaluate.select_by == "val")

    def log(self, it: int) -> bool:
        return it % self.log_every == 0 or it == self.niter

    def evaluate(self, it: int) -> bool:
        """After iteration `it` (0: the starting set, before the first iteration)."""
        return it in self.eval_it

    def save(self, it: int) -> bool:
        return (it % self.save_every == 0 or it == self.niter
                or (self.save_evaluated and self.evaluate(it)))
