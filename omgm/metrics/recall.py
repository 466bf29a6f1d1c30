"""Entity recall@k: a sample is a hit at k when its ``wikipedia_url`` is among the first k retrieved URLs.

Averaged over every sample given in ``gold`` (the kept rows); a sample without a ranking (skipped, e.g. a
missing query image) counts as a miss, and is reported in ``missing``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence


@dataclass
class RecallReport:
    recall: dict[int, float]          # k -> percentage (0..100)
    total: int                        # samples in the denominator
    missing: int = 0                  # samples with no ranking (counted as misses)
    hits: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"recall": {f"R@{k}": round(v, 2) for k, v in self.recall.items()}, "total": self.total,
                "missing_rankings": self.missing, "hits": {f"R@{k}": h for k, h in self.hits.items()}}

    def table(self, title: str = "recall") -> str:
        ks = list(self.recall)
        head = " | ".join(f"R@{k:<4}" for k in ks)
        vals = " | ".join(f"{self.recall[k]:6.2f}" for k in ks)
        note = f"  ({self.missing} samples had no ranking; counted as misses)" if self.missing else ""
        return f"{title} over {self.total} samples{note}\n{head}\n{vals}"


def recall_at_k(rankings: Mapping[str, Sequence[str]], gold: Mapping[str, str], ks: Sequence[int]) -> RecallReport:
    """``rankings``: sample id -> ranked URLs; ``gold``: sample id -> ground-truth URL."""
    if not gold:
        raise ValueError("recall over zero samples: no ground truth given")
    hits = {k: 0 for k in ks}
    missing = 0
    for sid, url in gold.items():
        ranked = rankings.get(sid)
        if ranked is None:
            missing += 1
            continue
        try:
            pos = list(ranked).index(url)
        except ValueError:
            continue
        for k in ks:
            if pos < k:
                hits[k] += 1
    n = len(gold)
    return RecallReport(recall={k: 100.0 * hits[k] / n for k in ks}, total=n, missing=missing, hits=hits)
