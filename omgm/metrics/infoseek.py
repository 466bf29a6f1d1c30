"""InfoSeek accuracy with the official rules (see docs/faithfulness.md).

- String and time answers: SQuAD normalisation (lower-case, punctuation deleted, articles removed,
  whitespace collapsed) and exact match against any alias. (No +/-1 year for time, whatever its docstring says.)
- Numerical answers: the gold range is the reference's ``answer_eval[0]["range"]`` (a single value would
  mean +/-10%). The prediction's first two numbers (commas dropped, "9-10" read as a range) form a range when
  ascending, else its first number is a point; a point passes inside the range (ends included), a range
  passes inside it or with IoU >= 0.5. No number at all reads as [0, 0].
- Split score = mean x 100 rounded to 2 decimals, over the predictions whose ``data_id`` is a reference of
  that split (``data_split`` ending in ``unseen_question`` or not); final = harmonic mean of the two rounded
  split scores. Predictions with unknown ids are ignored; references without a prediction are not counted.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from omgm.metrics.evqa import EvaluationError

_NUMBER = re.compile(r"[-+]?[.]?[\d]+(?:,\d\d\d)*[\.]?\d*(?:[eE][-+]?\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(c for c in str(text).lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def parse_number_answer(text: str) -> float | list[float]:
    """A point or an ascending ``[low, high]`` from free text (hyphens after a digit separate a range)."""
    spaced = "".join(" - " if c == "-" and i >= 1 and text[i - 1].isdigit() else c for i, c in enumerate(text))
    values = []
    for n in _NUMBER.findall(spaced):
        n = n.replace(",", "").strip(".")
        values.append(float(n.split(".")[0] if n.count(".") > 1 else n))
    values = values[:2]
    if len(values) == 2:
        return values if values[0] <= values[1] else values[0]
    return values[0] if values else [0.0, 0.0]


def range_iou(a: list[float], b: list[float]) -> float:
    lo1, hi1, lo2, hi2 = min(a), max(a), min(b), max(b)
    overlap = max(0.0, min(hi1, hi2) - max(lo1, lo2))
    union = (hi1 - lo1 + 1e-12) + (hi2 - lo2 + 1e-12) - overlap
    return overlap / union if union else 0.0


def numerical_match(prediction: float | list[float], gold: float | list[float], tolerance: float = 0.1) -> bool:
    if not isinstance(gold, list):
        gold = [gold * (1 - tolerance), gold * (1 + tolerance)]
    if not isinstance(prediction, list):
        return gold[0] <= prediction <= gold[1]
    if all(gold[0] <= p <= gold[1] for p in prediction):
        return True
    return range_iou(prediction, gold) >= 0.5 - 1e-12


@dataclass(frozen=True)
class InfoseekReference:
    data_id: str
    question_type: str            # string | time | numerical (any other type is scored as a string)
    answers: tuple                # aliases, or the numerical (low, high)
    split: str                    # "unseen_question" | "unseen_entity"


def _jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"InfoSeek reference file not found: {path}")
    rows, n = [], 0
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    rows.append(json.loads(line))
                    if not isinstance(rows[-1], dict):
                        raise EvaluationError(f"{path}, line {n}: not a JSON object")
    except (ValueError, RecursionError) as exc:           # JSON and UTF-8 errors are ValueErrors
        raise EvaluationError(f"{path}, line {n}: not JSON ({type(exc).__name__})") from None
    return rows


def load_references(val_jsonl: str | Path, qtype_jsonl: str | Path) -> dict[str, InfoseekReference]:
    """``infoseek_val.jsonl`` (answers, ``answer_eval``, ``data_split``) + ``infoseek_val_qtype.jsonl``."""
    qtypes = {_id(r, qtype_jsonl): r.get("question_type") for r in _jsonl(qtype_jsonl)}
    refs = {}
    for r in _jsonl(val_jsonl):
        did = _id(r, val_jsonl)
        if did not in qtypes:
            raise EvaluationError(f"{qtype_jsonl}: no question type for {did!r} of {val_jsonl}")
        try:
            refs[did] = _reference(did, str(qtypes[did]).lower(), r)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise EvaluationError(f"{val_jsonl}, {did!r}: its answer_eval does not fit its question type "
                                  f"{qtypes[did]!r} ({type(exc).__name__}: {str(exc)[:60]})") from None
    return refs


def _id(record: dict, path) -> str:
    did = record.get("data_id")
    if not isinstance(did, str):
        raise EvaluationError(f"{path}: a record's data_id is {json.dumps(did)[:40]}, not a string id")
    return did


def _reference(did, qtype: str, r: dict) -> InfoseekReference:
    ev = r.get("answer_eval")
    if qtype == "numerical":
        rng = (ev[0] if isinstance(ev, list) else ev)["range"]
        answers = tuple(float(x) for x in rng[:2])
        if not answers:
            raise ValueError("an empty range")
    else:
        answers = tuple(str(a) for a in (ev if isinstance(ev, list) else [ev]))
    split = "unseen_question" if str(r.get("data_split", "")).endswith("unseen_question") else "unseen_entity"
    return InfoseekReference(did, qtype, answers, split)


def matches_alias(prediction: str | None, aliases) -> bool:
    """The string/time rule: exact match with any alias after SQuAD normalisation."""
    target = normalize(prediction or "")
    return any(target == normalize(a) for a in aliases)


def score_prediction(prediction: str, ref: InfoseekReference) -> bool:
    if ref.question_type == "numerical":
        return numerical_match(parse_number_answer(prediction or ""), list(ref.answers))
    return matches_alias(prediction, ref.answers)


def evaluate_infoseek(predictions: Iterable[dict], refs: dict[str, InfoseekReference]) -> dict:
    """Official InfoSeek scores for records with ``data_id`` and ``prediction``."""
    per_split: dict[str, dict[str, list[int]]] = {"unseen_question": {}, "unseen_entity": {}}
    outcomes: dict[str, list] = {}                 # data_id -> [split, 1 correct / 0] (bootstrap intervals)
    ignored = empty = 0
    for p in predictions:
        ref = refs.get(str(p.get("data_id")))
        if ref is None:
            ignored += 1
            continue
        empty += not (p.get("prediction") or "").strip()
        kind = ref.question_type if ref.question_type in ("time", "numerical") else "string"
        ok = int(score_prediction(p.get("prediction") or "", ref))
        per_split[ref.split].setdefault(kind, []).append(ok)
        outcomes[str(p.get("data_id"))] = [ref.split, ok]
    splits = {}
    for name, kinds in per_split.items():
        allv = [v for vs in kinds.values() for v in vs]
        splits[name] = {"score": round(100.0 * sum(allv) / len(allv), 2) if allv else 0.0, "count": len(allv),
                        **{f"score_{k}": round(100.0 * sum(v) / len(v), 2) for k, v in sorted(kinds.items())}}
    a, b = (splits[s]["score"] or 1e-12 for s in ("unseen_question", "unseen_entity"))
    final = round(2.0 / (1.0 / a + 1.0 / b), 2)
    return {"dataset": "infoseek", "final_score": final, "ci95": final_score_interval(outcomes),
            "unseen_question": splits["unseen_question"], "unseen_entity": splits["unseen_entity"],
            "ignored_unknown_ids": ignored, "empty_predictions": empty,
            "metric": "official InfoSeek rules (harmonic mean of unseen-question and unseen-entity accuracy)",
            "outcomes": outcomes}


def final_score_interval(outcomes: dict[str, list]) -> list[float] | None:
    """The bootstrap interval of the final score: questions resampled, both splits' accuracies and their harmonic
    mean recomputed on each resample."""
    from omgm.metrics.bootstrap import interval

    if not outcomes:
        return None
    unseen_q = np.array([s == "unseen_question" for s, _ in outcomes.values()], dtype=float)
    ok = np.array([v for _, v in outcomes.values()], dtype=float)

    def harmonic(_, idx):
        q, hit = unseen_q[idx], ok[idx]
        a = np.maximum((hit * q).sum(1) / np.maximum(q.sum(1), 1), 1e-12) * 100
        b = np.maximum((hit * (1 - q)).sum(1) / np.maximum((1 - q).sum(1), 1), 1e-12) * 100
        return 2 / (1 / a + 1 / b)

    return interval(ok, statistic=harmonic)
