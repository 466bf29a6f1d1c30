"""Exact match of the generator on SFT examples (before and after fine-tuning): the datasets' own normalisation."""
from __future__ import annotations

from typing import Mapping, Sequence

from omgm.generate.generators.base import GenRequest


def exact_match_rate(generator, examples: Sequence[dict], gold: Mapping) -> float:
    """Percentage of ``examples`` whose generated answer matches the sample's reference exactly (normalised)."""
    from omgm.metrics.evqa import EvaluationError, score_answers
    from omgm.metrics.infoseek import matches_alias

    reqs = [GenRequest(e["question"], e["context"], e["dataset"], e.get("image")) for e in examples]
    answers = generator.generate(reqs, batch_size=8)
    hits = 0
    for e, a in zip(examples, answers):
        s = gold[e["id"]]
        if s.is_infoseek:
            hits += matches_alias(a, s.answer.split("|"))
            continue
        try:
            hits += score_answers([(s.question, s.answer, a, s.question_type)])[0][0]
        except EvaluationError:
            pass
    return 100.0 * hits / max(1, len(examples))
