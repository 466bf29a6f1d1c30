"""The supervised fine-tuning set of the step-3 generator: step 3's input for a training question, and its answer.

For each training question whose gold entity is in the KB: the context section of that entity, either as step 3
would choose it (``selected``: the cross-encoder's scores, fused with the step-2 section scores of the gold
entity when a retrieval file holds them) or the gold evidence section (``evidence``); the context cut as the
prompt style cuts it; the prompt exactly as the generator renders it for that style; the first reference
alternative as the target (multi-answer parts joined with ", "). Written as JSONL, one example per line::

    {"id": "E-VQA_3", "prompt": "...", "image": "images/inat/x.jpg", "answer": "1889", "dataset": "evqa",
     "question": "...", "context": "# Wiki Article: ...", "entity": "https://...", "section_id": 2}

Questions that cannot make an example are skipped and counted (``--strict``: refused): gold entity missing or
without sections, no usable evidence section, no query image, an answer that is empty.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from omgm.data.kb import KnowledgeBase
from omgm.data.samples import ImageDirs, MissingImageError, Sample
from omgm.errors import OmgmError
from omgm.generate.generators.base import Generator, GenRequest
from omgm.generate.sections import SectionSelector

SECTION_MODES = ("selected", "evidence")
SFT_FORMAT = "omgm.sft"


class SftDataError(OmgmError, ValueError):
    """A training question that cannot make an example, under ``--strict``."""


@dataclass
class SftSet:
    examples: list[dict]
    skipped: Counter = field(default_factory=Counter)


def target_answer(sample: Sample) -> str:
    """The first reference alternative; multi-answer parts joined with ", "."""
    first = sample.answer.split("|")[0]
    return ", ".join(p.strip() for p in first.split("&&")).strip()


def _section(sample: Sample, kb: KnowledgeBase, mode: str, selector: SectionSelector | None,
             sec_sim: Mapping[str, Sequence[float]]) -> tuple[int, str] | str:
    """``(section id, section text)`` or why there is none."""
    if sample.wikipedia_url not in kb:
        return "gold entity not in the KB"
    ent = kb.get(sample.wikipedia_url)
    secs, docs = ent.sections(), ent.section_documents()
    if not secs:
        return "gold entity has no sections"
    if mode == "evidence":
        idx = sample.evidence_section_index
        pos = next((i for i, s in enumerate(secs) if s.index == idx), None)
        return (secs[pos].index, docs[pos]) if pos is not None else "no usable evidence section"
    choice = selector.select(sample.question, ent, sec_sim.get(sample.sample_id))
    return secs[choice.index].index, docs[choice.index]


def build_sft_set(samples: Sequence[Sample], kb: KnowledgeBase, generator: Generator, cut: Callable,
                  *, mode: str = "selected", selector: SectionSelector | None = None,
                  image_dirs: ImageDirs | None = None, sec_sim: Mapping[str, Sequence[float]] | None = None,
                  strict: bool = False) -> SftSet:
    """Examples for ``samples`` (see the module docstring); ``sec_sim``: sample id -> the gold entity's step-2
    section scores, where a retrieval file has them."""
    if mode not in SECTION_MODES:
        raise SftDataError(f"unknown section mode {mode!r}: {' or '.join(SECTION_MODES)}")
    out = SftSet([])
    for s in samples:
        why, ex = _example(s, kb, generator, cut, mode, selector, image_dirs or ImageDirs(), sec_sim or {})
        if why:
            if strict:
                raise SftDataError(f"{s.source}, row {s.row} ({s.sample_id}): {why} (drop --strict to skip and count)")
            out.skipped[why] += 1
        else:
            out.examples.append(ex)
    return out


def _example(s, kb, generator, cut, mode, selector, dirs, sec_sim) -> tuple[str, dict | None]:
    answer = target_answer(s)
    if not answer or not generator.tokenizer(answer, add_special_tokens=False)["input_ids"]:
        return "answer tokenizes to nothing", None
    got = _section(s, kb, mode, selector, sec_sim)
    if isinstance(got, str):
        return got, None
    section_id, text = got
    image = None
    if generator.needs_image:
        try:
            image = dirs.resolve(s)
        except MissingImageError:
            return "query image missing", None
    context, _ = cut(text)
    prompt = generator.render(GenRequest(s.question, context, s.dataset, image))
    return "", {"id": s.sample_id, "prompt": prompt, "image": str(image) if image else None, "answer": answer,
                "dataset": s.dataset, "question": s.question, "context": context, "entity": s.wikipedia_url,
                "section_id": section_id}


def write_sft_file(path: str | Path, sft: SftSet, meta: dict) -> Path:
    """The set as JSONL: a header line ``{"format": "omgm.sft", "version": 1, "meta"}``, then one example per line."""
    import json

    from omgm.io import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        lines = [json.dumps({"format": SFT_FORMAT, "version": 1, "meta": meta, "skipped": dict(sft.skipped)})]
        lines += [json.dumps(e, ensure_ascii=False) for e in sft.examples]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_sft_file(path: str | Path) -> tuple[list[dict], dict]:
    from omgm.io import read_jsonl

    rows = read_jsonl(path)
    if not rows or rows[0].get("format") != SFT_FORMAT:
        raise SftDataError(f"{path}: not an omgm SFT file (its first line is not a {SFT_FORMAT} header)")
    for n, row in enumerate(rows[1:], start=2):
        bad = [k for k in ("prompt", "answer") if not isinstance(row.get(k), str)]
        if bad:
            raise SftDataError(f"{path}, line {n}: {' and '.join(bad)} missing or not a string")
    return rows[1:], rows[0].get("meta", {})
