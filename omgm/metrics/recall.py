"""Ranking metrics at cut-offs k, over every sample given in ``gold`` (the kept rows); a sample without a ranking
(skipped, e.g. a missing query image) counts as a miss, and is reported in ``missing``.

- recall@k (the paper's): a sample is a hit at k when its ``wikipedia_url`` is among the first k retrieved URLs;
- MRR@k: the mean of 1/rank of the gold URL within the first k (0 beyond), times 100.

:data:`RANKING_METRICS` lists them by name; :func:`omgm.metrics.evaluate.evaluate` computes those asked for.
A new metric is a function ``(positions, ks) -> {k: value}`` here and a row in that table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence


@dataclass
class RecallReport:
    """Recall@k (and the other ranking metrics asked for) over a set of samples."""
    recall: dict[int, float]          # k -> percentage (0..100)
    total: int                        # samples in the denominator
    missing: int = 0                  # samples with no ranking (counted as misses)
    hits: dict[int, int] = field(default_factory=dict)
    others: dict[str, dict[int, float]] = field(default_factory=dict)   # further metrics asked for, by name
    positions: list[int | None] = field(default_factory=list)          # each sample's gold position (intervals)

    def as_dict(self) -> dict:
        """The report as written into summaries and ``*.eval.json``, with the 95% bootstrap interval of each
        recall@k over the samples (:mod:`omgm.metrics.bootstrap`)."""
        from omgm.metrics.bootstrap import interval

        extra = {name: {f"{RANKING_METRICS[name].label}@{k}": round(v, 2) for k, v in values.items()}
                 for name, values in self.others.items()}
        ci = {f"R@{k}": interval([p is not None and p < k for p in self.positions]) for k in self.recall} \
            if self.positions else {}
        return {"recall": {f"R@{k}": round(v, 2) for k, v in self.recall.items()}, "ci95": ci, **extra,
                "total": self.total, "missing_rankings": self.missing,
                "hits": {f"R@{k}": h for k, h in self.hits.items()}}

    def table(self, title: str = "recall") -> str:
        """The recall row as printed by steps 1 and 2."""
        ks = list(self.recall)
        head = " | ".join(f"R@{k:<4}" for k in ks)
        vals = " | ".join(f"{self.recall[k]:6.2f}" for k in ks)
        note = f"  ({self.missing} samples had no ranking; counted as misses)" if self.missing else ""
        return f"{title} over {self.total} samples{note}\n{head}\n{vals}"


def cutoffs_within(ks: Sequence[int], results: Mapping[str, Mapping]) -> tuple[list[int], list[int]]:
    """``(kept, dropped)``: the cut-offs no longer than the longest candidate list of ``results`` (a step-1/2
    results mapping), and those beyond it (with a knowledge base smaller than k, recall at k says nothing)."""
    longest = max((len(e.get("retrieved_entities") or []) for e in results.values()), default=0)
    return [k for k in ks if k <= longest], [k for k in ks if k > longest]


def gold_positions(rankings: Mapping[str, Sequence[str]], gold: Mapping[str, str]) -> tuple[list[int | None], int]:
    """The 0-based position of each gold URL in its sample's ranking (None: not ranked), and how many samples
    have no ranking at all."""
    if not gold:
        raise ValueError("recall over zero samples: no ground truth given")
    positions: list[int | None] = []
    missing = 0
    for sid, url in gold.items():
        ranked = rankings.get(sid)
        missing += ranked is None
        ranked = list(ranked or ())
        positions.append(ranked.index(url) if url in ranked else None)
    return positions, missing


def _recall(positions: Sequence[int | None], ks: Sequence[int]) -> dict[int, float]:
    return {k: 100.0 * sum(p is not None and p < k for p in positions) / len(positions) for k in ks}


def _mrr(positions: Sequence[int | None], ks: Sequence[int]) -> dict[int, float]:
    return {k: 100.0 * sum(1.0 / (p + 1) for p in positions if p is not None and p < k) / len(positions) for k in ks}


@dataclass(frozen=True)
class RankingMetric:
    """A ranking metric: its function, its label in reports (``R``, ``MRR``) and its help."""
    compute: Callable[[Sequence[int | None], Sequence[int]], dict[int, float]]
    label: str                        # the key prefix in reports: R@10, MRR@10
    help: str


RANKING_METRICS: dict[str, RankingMetric] = {
    "recall": RankingMetric(_recall, "R", "percentage of samples whose gold entity is in the top k (the paper's)"),
    "mrr": RankingMetric(_mrr, "MRR", "mean reciprocal rank of the gold entity within the top k, times 100"),
}


def recall_at_k(rankings: Mapping[str, Sequence[str]], gold: Mapping[str, str], ks: Sequence[int],
                metrics: Sequence[str] = ("recall",)) -> RecallReport:
    """``rankings``: sample id -> ranked URLs; ``gold``: sample id -> ground-truth URL. Recall always; the other
    ``metrics`` (names of :data:`RANKING_METRICS`) in ``others``."""
    unknown = [m for m in metrics if m not in RANKING_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}: use {', '.join(RANKING_METRICS)}")
    positions, missing = gold_positions(rankings, gold)
    hits = {k: sum(p is not None and p < k for p in positions) for k in ks}
    others = {m: RANKING_METRICS[m].compute(positions, ks) for m in metrics if m != "recall"}
    return RecallReport(recall=_recall(positions, ks), total=len(gold), missing=missing, hits=hits, others=others,
                        positions=positions)
