"""What a condensed set is worth, in a couple of minutes: a few fresh classifiers trained on it
beside as many trained on a random real subset of the same size (the evaluation protocol, same
seeds and steps for both), summarised as a short table. Condensation runs it at the end when
`condense.worth_runs` > 0 (the demo does)."""
from __future__ import annotations

import logging
from typing import List

from evaluation.protocol import Evaluator

logger = logging.getLogger(__name__)


def worth_entries(evaluator: Evaluator, syn: dict, runs: int, source: str = "") -> List[dict]:
    """Collective: results entries of the set and of a random real subset (same ipc), `runs`
    classifiers each; every rank gets both."""
    return [evaluator.synthetic(syn, source, num_eval=runs),
            evaluator.baseline("random", None, num_eval=runs)]


def worth_table(entries: List[dict]) -> str:
    """A few lines of text: each method's accuracy and the set's gain over random."""
    syn, rnd = entries[0], entries[1]
    lines = [f"{'trained on':<34} {'examples':>8}  {'test accuracy':>16}",
             *(f"{label:<34} {e['n_train']:>8}  {100 * e['mean']:>7.2f} ± {100 * e['std']:<6.2f}"
               for label, e in (("the condensed set", syn),
                                (f"a random real subset (ipc {rnd['ipc']})", rnd))),
             f"worth: {100 * (syn['mean'] - rnd['mean']):+.2f} points over the same number of "
             f"random real examples ({syn['num_eval']} classifiers each, {syn['steps']} steps, "
             f"{syn['model']})"]
    return "\n".join(lines)
