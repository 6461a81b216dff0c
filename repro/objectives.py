"""How the pre-training objective changes the downstream text (Figure 3c).

Span Corruption + Sentinel: T5.1.1 only ever produced targets that start with a sentinel, so
the downstream targets are given one too. The official prompt-tuning repo prefixes the targets
only; seqio's variant also appends the sentinel to the inputs. Evaluation strips it
(``repro.evaluate.strip_sentinel``) before scoring.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from repro.tasks.base import Example

SENTINEL = "<extra_id_0>"
PLACEMENTS = ("targets", "inputs_and_targets")


def add_sentinel(examples: Sequence[Example], placement: str = "targets") -> list[Example]:
    """Targets ``"<extra_id_0> " + target``; with ``inputs_and_targets`` also ``input + " <extra_id_0>"``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"sentinel placement {placement!r}; allowed: {', '.join(PLACEMENTS)}")
    out = []
    for ex in examples:
        inputs = f"{ex.inputs} {SENTINEL}" if placement == "inputs_and_targets" else ex.inputs
        out.append(dataclasses.replace(ex, inputs=inputs, targets=f"{SENTINEL} {ex.targets}"))
    return out
