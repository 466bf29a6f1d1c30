"""One place that scores result files: answers with the dataset's metric, rankings with recall@k.

- :func:`evaluate` (BEIR's habit: gold + run + cut-offs): recall@k (and the other ranking metrics asked for) of a
  run ``{sample_id: [url, ...]}``.
- :func:`evaluate_records`: answer records with E-VQA's or InfoSeek's official metric.
- :func:`read_answers`: an answers file (omgm's ``omgm.answers`` header, or the published bare list).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from omgm.data.results import ResultFileError, read_json
from omgm.errors import OmgmError
from omgm.metrics import infoseek as infoseek_metric
from omgm.metrics.evqa import EvaluationError, evaluate_evqa
from omgm.metrics.recall import RecallReport, recall_at_k
from omgm.published import TOP_KS

ANSWERS_FORMAT = "omgm.answers"
ANSWERS_VERSION = 2


def evaluate(gold: Mapping[str, str], run: Mapping[str, Sequence], ks: Sequence[int] = TOP_KS,
             metrics: Sequence[str] = ("recall",)) -> RecallReport:
    """Recall@k (and every other metric of ``metrics``, see :data:`omgm.metrics.recall.RANKING_METRICS`) of ``run``,
    sample id -> ranked URLs (one form: :func:`omgm.data.results.ranking` makes it from step-1/2 results), against
    ``gold`` (id -> URL)."""
    for sid, ranked in run.items():
        if isinstance(ranked, (str, Mapping)) or not all(isinstance(u, str) for u in ranked):
            raise TypeError(f"evaluate() takes {{sample_id: [url, ...]}}; sample {sid!r} has {type(ranked).__name__} "
                            f"(step-1/2 results: omgm.data.results.ranking(results))")
        break
    return recall_at_k(dict(run), gold, ks, metrics)


def read_answers_file(path: str | Path) -> tuple[list[dict], dict]:
    """``(records, meta)`` of an answers file; the published bare list has no meta."""
    data, meta = read_json(path), {}
    if isinstance(data, dict) and data.get("format") == ANSWERS_FORMAT:
        data, meta = data.get("records"), data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ResultFileError(f"{path}: 'meta' must be an object, got {type(meta).__name__}")
    if not isinstance(data, list) or not all(isinstance(r, dict) and "data_id" in r for r in data):
        raise ResultFileError(f"{path}: expected answer records (a list of objects with data_id and prediction)")
    return data, meta


def read_answers(path: str | Path) -> list[dict]:
    """The records of an answers file."""
    return read_answers_file(path)[0]


def _approximate_infoseek(records: list[dict]) -> dict:
    hits = [infoseek_metric.matches_alias(r.get("prediction"), str(r["gt_answer"]).split("|")) for r in records]
    return {"dataset": "infoseek", "accuracy": round(100.0 * sum(hits) / max(1, len(hits)), 2), "total": len(hits),
            "metric": "approximate: string exact match against the CSV answers, NOT the official InfoSeek score "
                      "(give --infoseek_val and --infoseek_qtype for that)"}


def evaluate_records(records: list[dict], dataset: str, bem_model: str | None = None,
                     infoseek_val: str | None = None, *, infoseek_qtype: str | None = None,
                     device: str | None = None) -> dict:
    """The metric of ``dataset`` over answer records (see :mod:`omgm.metrics.evqa`, :mod:`omgm.metrics.infoseek`)."""
    if dataset == "evqa":
        from omgm.metrics.bem import BemScorer

        return evaluate_evqa(records, BemScorer(bem_model, device) if bem_model else None).as_dict()
    if dataset != "infoseek":
        raise OmgmError(f"unknown dataset {dataset!r}: evqa or infoseek")
    if not (infoseek_val and infoseek_qtype):
        return _approximate_infoseek(records)
    refs = infoseek_metric.load_references(infoseek_val, infoseek_qtype)
    result = infoseek_metric.evaluate_infoseek(records, refs)
    if result["ignored_unknown_ids"] == len(records):
        raise EvaluationError(f"no answer's data_id is in {infoseek_val}: answers of another dataset or split?")
    return result
