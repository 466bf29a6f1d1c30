"""Training examples for the reranker: (query image + question) vs (positive + 15 hard negatives).

Eligibility (negative entry, query image, positive image, evidence section, pool >= ``neg_num``) is checked
once up front, so drops are counted before training starts. Negatives are drawn per example from an RNG
seeded by (seed, epoch, index): the same example gets the same negatives after a resume.
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from omgm.data.images import ImageLoadError, load_image
from omgm.data.kb import KnowledgeBase, open_kb
from omgm.data.samples import ImageDirs, MissingImageError, Sample
from omgm.data.wiki_images import WikiImages
from omgm.rerank.inputs import candidate_text, tokenize
from omgm.rerank.negatives import Candidate, EntityCache, NegativeEntry, draw, negative_pool

log = logging.getLogger(__name__)


class RerankTrainSet(Dataset):
    def __init__(self, samples: Sequence[Sample], negatives: dict[str, NegativeEntry], kb_path: str | Path,
                 wiki: WikiImages, image_dirs: ImageDirs, transform, neg_num: int = 15, seed: int = 0) -> None:
        self.kb_path, self.wiki, self.transform = str(kb_path), wiki, transform
        self.neg_num, self.seed, self.epoch = neg_num, seed, 0
        self._kb: tuple[int, KnowledgeBase] | None = None
        self.cache = EntityCache(self.kb, wiki)
        self.drops: Counter = Counter()
        self.examples: list[tuple[Sample, NegativeEntry, Path]] = []
        for s in samples:
            entry = negatives.get(s.image_id)
            if entry is None:
                self.drops["no entry in the negative file"] += 1
                continue
            try:
                qimg = image_dirs.resolve(s)
            except MissingImageError:
                self.drops["query image missing"] += 1
                continue
            pos, pool = negative_pool(s, entry, self.cache, wiki.root, rng=random.Random(0), counts=self.drops)
            if pos is None:
                continue
            if len(pool) < neg_num:
                self.drops[f"fewer than {neg_num} negatives"] += 1
                continue
            self.examples.append((s, entry, qimg))
        self.order = list(range(len(self.examples)))

    def kb(self) -> KnowledgeBase:
        """The KB, reopened in each DataLoader worker (an SQLite connection must not cross a fork)."""
        if self._kb is None or self._kb[0] != os.getpid():
            self._kb = (os.getpid(), open_kb(self.kb_path))
        return self._kb[1]

    def shuffle_for_epoch(self, epoch: int) -> None:
        """A fixed shuffle per epoch (so a resumed run sees the same order). Not named ``set_epoch``: accelerate
        calls that itself with its own iteration count, which restarts at 0 in a resumed run."""
        self.epoch = epoch
        self.order = list(range(len(self.examples)))
        random.Random(f"{self.seed}-order-{epoch}").shuffle(self.order)

    def __len__(self) -> int:
        return len(self.examples)

    def _text(self, c: Candidate) -> str:
        ent = self.kb().get(c.url)
        return candidate_text(ent.title, ent.section_titles[c.section_id], ent.section_texts[c.section_id])

    def __getitem__(self, i: int) -> dict:
        sample, entry, qimg = self.examples[self.order[i]]
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.order[i]}")
        pos, pool = negative_pool(sample, entry, self.cache, self.wiki.root, rng=rng)
        cands = [pos] + draw(pool, self.neg_num, rng)
        paths = list(dict.fromkeys(c.image for c in cands))
        try:
            pix = [self.transform(load_image(p)) for p in [qimg] + paths]
        except ImageLoadError as exc:
            log.warning("skipping example %s: %s", sample.sample_id, exc)
            return {"error": f"{sample.sample_id}: {exc}"}
        return {"qpix": pix[0], "question": sample.question, "cand_pix": pix[1:], "cand_paths": paths,
                "cand_img": [paths.index(c.image) for c in cands], "cand_texts": [self._text(c) for c in cands]}


class Collate:
    """Stack a batch; candidate images are de-duplicated across the batch; texts are tokenized here."""

    def __init__(self, tokenizer, max_length: int = 512) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: list[dict]) -> dict:
        errors = [it["error"] for it in items if "error" in it]
        items = [it for it in items if "error" not in it]
        if not items:
            return {"errors": errors, "size": 0}
        uniq: dict[str, int] = {}
        pix, idx = [], []
        for it in items:
            row = []
            for k in it["cand_img"]:
                path = str(it["cand_paths"][k])
                if path not in uniq:
                    uniq[path] = len(pix)
                    pix.append(it["cand_pix"][k])
                row.append(uniq[path])
            idx.append(row)
        q_ids, q_mask = tokenize(self.tokenizer, [it["question"] for it in items], self.max_length)
        c_ids, c_mask = tokenize(self.tokenizer, [t for it in items for t in it["cand_texts"]], self.max_length)
        return {"qpix": torch.stack([it["qpix"] for it in items]), "q_ids": q_ids, "q_mask": q_mask,
                "cpix": torch.stack(pix), "cand_img": torch.tensor(idx), "c_ids": c_ids, "c_mask": c_mask,
                "errors": errors, "size": len(items)}
