"""Encyclopedic-VQA accuracy as the official scorer computes it (see docs/faithfulness.md).

A question passes on exact match (EM) after normalisation, else on BEM (an answer-equivalence BERT,
``[CLS] candidate [SEP] reference [SEP] question [SEP]``, pass at p >= 0.5). The reference may list
alternatives separated by ``|`` (the best one counts); ``multi_answer`` references join parts with ``&&`` and
pass when the set IoU with the prediction's parts (split on " and ", " & ", ",") is >= 0.5.

Normalisation: lower-case; newlines/tabs to spaces; a leading ``<extra_id_0> `` dropped; punctuation
(``string.punctuation`` and ‘’´`_) *deleted* (no space inserted); "the answer is", "a", "an", "the" removed as
whole words; per word, number words up to ten -> digits (none/zero -> 0), true/entailment -> yes,
false/contradiction -> no, and apostrophe-less contractions re-expanded; whitespace collapsed. (The
contraction step runs after apostrophes are deleted and maps distinct words to distinct words, so it never
changes a match; we keep it for identical normalised strings.)

The official BEM model lives on TF-Hub; :class:`omgm.metrics.bem.BemScorer` runs a PyTorch port with the
official input. Without one, accuracy is EM only, a lower bound of the official score, and is labelled so.
"""
from __future__ import annotations

import logging
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from omgm.errors import OmgmError
from omgm.metrics.bem import BemScorer, bem_reference
from omgm.metrics.bootstrap import interval

log = logging.getLogger(__name__)
EVQA_QUESTION_TYPES = ("templated", "automatic", "multi_answer", "2_hop")
_PUNCT = set(string.punctuation + "‘’´`_")
_ARTICLES = re.compile(r"\b(the answer is|a|an|the)\b")
_WORD_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
             "seven": "7", "eight": "8", "nine": "9", "ten": "10", "entailment": "yes", "true": "yes",
             "contradiction": "no", "false": "no"}
# "dont" -> "don't": the n't family, and a few more common apostrophe-less forms
_NT = "ain aren can couldn didn doesn don hadn hasn haven isn mightn mustn needn oughtn shan shouldn wasn weren won wouldn"
_CONTRACTIONS = {f"{w}t": f"{w}'t" for w in _NT.split()} | {
    "im": "i'm", "ive": "i've", "youre": "you're", "youve": "you've", "youll": "you'll", "youd": "you'd",
    "theyre": "they're", "theyve": "they've", "theyll": "they'll", "weve": "we've", "thats": "that's",
    "whats": "what's", "whos": "who's", "wheres": "where's", "theres": "there's", "hes": "he's", "itll": "it'll",
    "oclock": "o'clock", "yall": "y'all", "maam": "ma'am", "twas": "'twas"}


class EvaluationError(OmgmError, ValueError):
    """An answer record that cannot be scored (empty reference, unknown question type); names the record."""


def normalize(text: str) -> str:
    text = str(text).lower().replace("\n", " ").replace("\t", " ").strip()
    if text.startswith("<extra_id_0> "):
        text = text.replace("<extra_id_0> ", "")
    text = "".join(c for c in text if c not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    words = [_CONTRACTIONS.get(_WORD_MAP.get(w, w), _WORD_MAP.get(w, w)) for w in text.split()]
    return " ".join(words)


def single_answer_match(reference: str, candidate: str) -> bool:
    ref = normalize(reference)
    if not ref:
        raise EvaluationError(f"reference answer {reference!r} is empty after normalisation")
    return ref == normalize(candidate)


def multi_answer_match(reference: str, candidate: str, threshold: float = 0.5) -> bool:
    refs = {r for r in (normalize(x) for x in reference.split("&&")) if r}
    if not refs:
        raise EvaluationError(f"multi-answer reference {reference!r} is empty after normalisation")
    cands = {c for c in (normalize(x) for x in candidate.replace(" and ", ",").replace(" & ", ",").split(",")) if c}
    return len(refs & cands) / len(refs | cands) >= threshold


def exact_match(reference: str, candidate: str, question_type: str) -> bool:
    if question_type == "multi_answer":
        return multi_answer_match(reference, candidate)
    return single_answer_match(reference, candidate)


def score_answer(question: str, reference: str, candidate: str, question_type: str,
                 *, bem: "BemScorer | None" = None) -> tuple[bool, str]:
    """``(passed, how)`` over the ``|`` alternatives: EM first, then BEM if given. ``how``: em, bem or miss.

    Every alternative is checked, as the official scorer does: one that normalises to nothing is an error even
    when another alternative matches.
    """
    passed, how = score_answers([(question, reference, candidate, question_type)], bem)
    return passed[0], how[0]


def score_answers(items: list[tuple[str, str, str, str]], bem: "BemScorer | None" = None
                  ) -> tuple[list[bool], list[str]]:
    """:func:`score_answer` for many ``(question, reference, candidate, question_type)``; BEM runs in batches.

    ``how`` is ``em``, ``bem``, ``miss``, or ``bem_too_long`` for an answer that failed exact match and whose BEM
    input exceeded 512 ids for an alternative (the official scorer raises there; here that alternative does not
    pass)."""
    passed, how, pending = [], [], []
    for n, (question, reference, candidate, qtype) in enumerate(items):
        if qtype not in EVQA_QUESTION_TYPES:
            raise EvaluationError(f"question type {qtype!r} is not an E-VQA type {EVQA_QUESTION_TYPES}")
        if not reference or not reference.strip("|"):
            raise EvaluationError("empty reference answer")
        alternatives = reference.split("|")
        em = [exact_match(ref, candidate, qtype) for ref in alternatives]   # all of them: each is validated
        passed.append(any(em))
        how.append("em" if any(em) else "miss")
        if not any(em) and bem is not None:
            pending += [(n, (question, bem_reference(ref, qtype), candidate)) for ref in alternatives]
    if pending:
        for (n, _), ok in zip(pending, bem.equivalent([t for _, t in pending])):
            if ok and not passed[n]:
                passed[n], how[n] = True, "bem"
            elif ok is None and not passed[n]:
                how[n] = "bem_too_long"
    return passed, how


@dataclass
class EvqaReport:
    accuracy: float
    total: int
    metric: str
    by_type: dict[str, dict] = field(default_factory=dict)
    passed_by: dict[str, int] = field(default_factory=dict)
    empty_predictions: int = 0
    bem_too_long: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)      # data_id -> 1 correct / 0 (bootstrap intervals)

    def as_dict(self) -> dict:
        return {"dataset": "evqa", "accuracy": self.accuracy, "total": self.total, "metric": self.metric,
                "ci95": interval(list(self.outcomes.values())), "by_question_type": self.by_type,
                "passed_by": self.passed_by, "empty_predictions": self.empty_predictions,
                "bem_inputs_over_512": self.bem_too_long, "outcomes": self.outcomes}


def evaluate_evqa(records: Iterable[dict], bem: BemScorer | None = None) -> EvqaReport:
    """Records need ``question``, ``gt_answer``, ``prediction``, ``question_type`` (and ``data_id`` for messages)."""
    records = list(records)
    for i, r in enumerate(records):           # validate first, naming the record
        wrong = [k for k in ("question", "gt_answer", "prediction", "question_type")
                 if r.get(k) is not None and not isinstance(r[k], str)]
        if wrong:
            raise EvaluationError(f"record {r.get('data_id', i)!r}: {wrong[0]} is a {type(r[wrong[0]]).__name__}, "
                                  f"expected text")
        try:
            score_answers([(r["question"], r["gt_answer"], r.get("prediction") or "", r["question_type"])])
        except EvaluationError as exc:
            raise EvaluationError(f"record {r.get('data_id', i)!r}: {exc}") from None
        except KeyError as exc:
            raise EvaluationError(f"record {r.get('data_id', i)!r}: missing field {exc}") from None
    passed, ways = score_answers([(r["question"], r["gt_answer"], r.get("prediction") or "", r["question_type"])
                                  for r in records], bem)
    hits: dict[str, list[int]] = defaultdict(list)
    for r, ok in zip(records, passed):
        hits[r["question_type"]].append(int(ok))
    how = Counter(ways)
    empty = sum(not (r.get("prediction") or "").strip() for r in records)
    allhits = [h for v in hits.values() for h in v]
    if not allhits:
        raise EvaluationError("no record to evaluate")
    if how.get("bem_too_long"):
        log.warning("%d answers failed exact match and have a BEM input over 512 ids: the official scorer stops "
                    "there; they are scored as not equivalent (bem_inputs_over_512)", how["bem_too_long"])
    metric = bem.name + " after exact match" if bem else "EM only (lower bound of the official score)"
    return EvqaReport(accuracy=round(100.0 * sum(allhits) / len(allhits), 2), total=len(allhits), metric=metric,
                      by_type={t: {"accuracy": round(100.0 * sum(v) / len(v), 2), "count": len(v)}
                               for t, v in sorted(hits.items())},
                      passed_by=dict(how), empty_predictions=empty, bem_too_long=how.get("bem_too_long", 0),
                      outcomes={str(r.get("data_id", i)): int(ok) for i, (r, ok) in enumerate(zip(records, passed))})
