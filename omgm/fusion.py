"""Score fusion rules by name: how step 2b combines an entity's step-1 score with its step-2 section scores, and
how step 3 combines a section's step-2 score with the cross-encoder's.

The published rule is ``weighted``: ``w * a + (1 - w) * b``, with ``w`` the weight of the first score (step 2b:
``alpha * s1 + (1 - alpha) * max(sections)``, alpha 0.9; step 3: ``beta * sec_sim + (1 - beta) * q2s``, beta 0.2).
A new rule is a function ``(a, b, weight) -> fused`` and a row in :data:`FUSIONS`; ``--fusion NAME`` picks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


def weighted(a: float, b: float, weight: float) -> float:
    """The published rule: ``weight * a + (1 - weight) * b``."""
    return weight * a + (1 - weight) * b


@dataclass(frozen=True)
class Fusion:
    """One fusion rule (see the module docstring)."""

    name: str = "weighted"
    combine: Callable[[float, float, float], float] = weighted
    help: str = "w * a + (1 - w) * b (the paper's)"

    def order(self, s1: Sequence[float], sec_sims: Sequence[Sequence[float]], alpha: float
              ) -> list[tuple[int, float, float]]:
        """Step 2b: ``(original position, fused, s2)`` sorted by fused score (stable); s2 is the best section's
        score, 0 for an entity without sections."""
        rows = []
        for i, (a, secs) in enumerate(zip(s1, sec_sims)):
            s2 = max(secs) if secs else 0.0
            rows.append((i, self.combine(a, s2, alpha), s2))
        return sorted(rows, key=lambda r: -r[1])

    def pairs(self, first: Sequence[float], second: Sequence[float], weight: float) -> list[float]:
        """Step 3: the fused score of each section (``first``: step 2's, weighted by ``weight``)."""
        return [self.combine(a, b, weight) for a, b in zip(first, second)]


FUSIONS: dict[str, Fusion] = {"weighted": Fusion()}
