"""Bootstrap confidence intervals over questions, and a paired bootstrap test between two runs.

Every figure a table reports is a statistic of per-question outcomes (a hit at k, an answer judged correct, or
InfoSeek's harmonic mean of two split accuracies). :func:`interval` resamples the questions with replacement
(``resamples`` times, a fixed ``seed``: the same interval every run) and gives the percentile interval.
:func:`paired` resamples the same questions for two runs at once, so "ours vs theirs" is a difference with an
interval and a two-sided p-value, not two numbers side by side.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

RESAMPLES, SEED, LEVEL = 1000, 0, 0.95
_CHUNK = 100                                   # resamples drawn at once (memory: CHUNK x questions indices)


def without_outcomes(report: dict) -> dict:
    """A report (or a summary holding one under ``evaluation``) without its per-question outcomes, for printing:
    the files keep them."""
    out = {k: v for k, v in report.items() if k != "outcomes"}
    if isinstance(out.get("evaluation"), dict):
        out["evaluation"] = without_outcomes(out["evaluation"])
    return out


def mean_percent(outcomes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The statistic of most figures: the mean outcome x 100, for each row of resampled indices."""
    return outcomes[idx].mean(axis=1) * 100.0


def _resampled(n: int, statistic: Callable[[np.ndarray], np.ndarray], resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        out.append(statistic(idx))
    return np.concatenate(out)


def interval(outcomes: Sequence[float] | np.ndarray, *, statistic=mean_percent, resamples: int = RESAMPLES,
             seed: int = SEED, level: float = LEVEL) -> list[float] | None:
    """``[low, high]``: the percentile bootstrap interval of ``statistic`` over questions (None without any)."""
    x = np.asarray(outcomes, dtype=float)
    if len(x) == 0:
        return None
    stats = _resampled(len(x), lambda idx: statistic(x, idx), resamples, seed)
    tail = (1 - level) / 2 * 100
    return [round(float(np.percentile(stats, tail)), 2), round(float(np.percentile(stats, 100 - tail)), 2)]


def paired(a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED,
           level: float = LEVEL) -> dict:
    """``a`` minus ``b`` on the same questions (same order): the difference of the mean outcomes x 100, its
    interval, and the two-sided bootstrap p-value of "no difference"."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"a paired test needs the same questions in both runs ({len(x)} vs {len(y)})")
    d = x - y
    stats = _resampled(len(d), lambda idx: mean_percent(d, idx), resamples, seed)
    tail = (1 - level) / 2 * 100
    p = min(1.0, 2 * min(float((stats <= 0).mean()), float((stats >= 0).mean())))
    return {"difference": round(float(d.mean() * 100), 2),
            "interval": [round(float(np.percentile(stats, tail)), 2), round(float(np.percentile(stats, 100 - tail)), 2)],
            "p_value": round(p, 4), "questions": len(d), "resamples": resamples, "seed": seed, "level": level}
