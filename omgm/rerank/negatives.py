"""Hard negatives for training the reranker.

The negative file (the authors' format) is keyed by query image id::

    {"<image_id>": {"gt_entity_pos_img": "full/wiki_image_split/.../x.jpg" | null,
                    "top_20": [{"entry": "<url>"}, ...]}}

:func:`mine` writes it from step-1 results on the train split, so any KB can be trained on.

A training example's positive is (ground-truth entity's image, evidence section). Its negative pool is up to
3 other sections of the ground-truth entity (with the same image) plus every section of each step-1 entity
other than the ground truth (with that entity's first image; entities without an image are skipped).
15 are drawn at random; an example with fewer than 15 candidates or no positive image is dropped and counted.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from omgm.data.kb import KnowledgeBase
from omgm.data.results import RetrievalFile, read_json, write_json_atomic
from omgm.data.samples import Sample
from omgm.data.wiki_images import WikiImages
from omgm.errors import OmgmError

TOP_KEY = "top_20"
GT_OTHER_SECTIONS = 3


class NegativeFileError(OmgmError, ValueError):
    """A negative file that does not follow the format; the message names the file and image id."""


@dataclass(frozen=True)
class NegativeEntry:
    pos_img: str | None          # relative to the wiki-image root
    top: tuple[str, ...]         # step-1 entity URLs, best first


@dataclass(frozen=True)
class Candidate:
    url: str
    section_id: int
    image: Path


def read_negative_db(path: str | Path) -> dict[str, NegativeEntry]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise NegativeFileError(f"{path}: expected an object keyed by query image id")
    out = {}
    for key, v in data.items():
        if not isinstance(v, dict) or not isinstance(v.get(TOP_KEY), list):
            raise NegativeFileError(f"{path}, image {key!r}: needs 'gt_entity_pos_img' and a '{TOP_KEY}' list")
        try:
            top = tuple(e["entry"] if isinstance(e, dict) else str(e) for e in v[TOP_KEY])
        except KeyError:
            raise NegativeFileError(f"{path}, image {key!r}: every '{TOP_KEY}' item needs an 'entry' URL") from None
        out[str(key)] = NegativeEntry(v.get("gt_entity_pos_img") or None, top)
    return out


def write_negative_db(path: str | Path, entries: dict[str, NegativeEntry]) -> Path:
    return write_json_atomic(path, {k: {"gt_entity_pos_img": e.pos_img, TOP_KEY: [{"entry": u} for u in e.top]}
                                    for k, e in entries.items()})


def mine(samples: Iterable[Sample], step1: RetrievalFile, kb: KnowledgeBase, wiki: WikiImages,
         *, top_k: int = 20) -> tuple[dict[str, NegativeEntry], Counter]:
    """The negative file's entries from step-1 results of the same samples (keyed by their image ids)."""
    out: dict[str, NegativeEntry] = {}
    counts: Counter = Counter()
    for s in samples:
        if s.sample_id not in step1.results:
            counts["no step-1 result"] += 1
            continue
        if s.image_id in out:
            counts["image already mined (same image, other question)"] += 1
            continue
        pos = None
        if s.wikipedia_url in kb:
            first = wiki.first(kb.get(s.wikipedia_url).title)
            pos = str(first.relative_to(wiki.root)) if first else None
        else:
            counts["gold entity not in KB"] += 1
        counts["no positive image" if pos is None else "with positive image"] += 1
        out[s.image_id] = NegativeEntry(pos, tuple(step1.urls(s.sample_id)[:top_k]))
    return out, counts


class EntityCache:
    """Per-URL (kept section ids, first image) so that pools are cheap to rebuild for every example."""

    def __init__(self, kb: KnowledgeBase | Callable[[], KnowledgeBase], wiki: WikiImages) -> None:
        self._get_kb = kb if callable(kb) and not isinstance(kb, KnowledgeBase) else (lambda: kb)
        self.wiki = wiki
        self._info: dict[str, tuple[tuple[int, ...], Path | None] | None] = {}

    def info(self, url: str) -> tuple[tuple[int, ...], Path | None] | None:
        if url not in self._info:
            kb = self._get_kb()
            if url in kb:
                ent = kb.get(url)
                self._info[url] = (tuple(s.index for s in ent.sections()), self.wiki.first(ent.title))
            else:
                self._info[url] = None
        return self._info[url]


def negative_pool(sample: Sample, entry: NegativeEntry, cache: EntityCache, wiki_root: Path,
                  *, rng: random.Random, counts: Counter | None = None) -> tuple[Candidate | None, list[Candidate]]:
    """The positive candidate (None if the example must be dropped) and the full negative pool."""
    counts = counts if counts is not None else Counter()
    gt = cache.info(sample.wikipedia_url)
    if gt is None:
        counts["gold entity not in KB"] += 1
        return None, []
    if not entry.pos_img or not (wiki_root / entry.pos_img).is_file():
        counts["no positive image"] += 1
        return None, []
    evidence = sample.evidence_section_index
    if evidence is None or evidence not in gt[0]:
        counts["evidence section missing or filtered"] += 1
        return None, []
    pos_img = wiki_root / entry.pos_img
    others = [i for i in gt[0] if i != evidence]
    pool = [Candidate(sample.wikipedia_url, i, pos_img) for i in rng.sample(others, min(GT_OTHER_SECTIONS, len(others)))]
    for url in entry.top:
        if url == sample.wikipedia_url:
            continue
        info = cache.info(url)
        if info is None:
            counts["negative entity not in KB"] += 1
            continue
        if info[1] is None:
            continue
        pool.extend(Candidate(url, i, info[1]) for i in info[0])
    return Candidate(sample.wikipedia_url, evidence, pos_img), pool


def draw(pool: list[Candidate], n: int, rng: random.Random) -> list[Candidate] | None:
    """``n`` distinct negatives at random, or None when the pool is too small (the example is dropped)."""
    return rng.sample(pool, n) if len(pool) >= n else None
