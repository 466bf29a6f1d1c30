"""Step 2b engine: score every section of every step-1 entity against the query (hybrid granularity).

Results equal scoring each (section, image) pair on its own (:func:`naive_section_scores`, the reference),
but the work is shared:
- the ViT runs once per unique wiki image (all sections of an entity share its first image, and entities
  recur across queries);
- an entity's sections go through the Q-Former together, sorted by length to limit padding; each entity is
  encoded on its own, so its tokens are the same whichever entities share a run, a cache or a process;
- candidate tokens are kept in an in-memory LRU and, optionally, on disk keyed by (model hash, entity), so
  repeated runs and alpha sweeps do not recompute them.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from omgm.data.images import ImageLoadError, load_image
from omgm.data.kb import Entity, KnowledgeBase
from omgm.data.wiki_images import WikiImages
from omgm.rerank.disk_cache import DiskCache
from omgm.rerank.inputs import CANDIDATE_TEMPLATE, candidate_text, tokenize
from omgm.rerank.model import IT2ITReranker, late_interaction, normalise_tokens

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class EntityTokens:
    section_ids: list[int]
    tokens: torch.Tensor | None     # [n_sections, Q, D], per-token normalised; None: no image/sections
    reason: str = ""                # why there are no tokens


def model_hash(model: IT2ITReranker, extra: str = "") -> str:
    """sha256 of every parameter's bytes and the config: the identity of candidate tokens in a disk cache."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{model.config.to_dict()}|{CANDIDATE_TEMPLATE}|{extra}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class CandidateEncoder:
    """Each candidate entity's section tokens (its wiki image with every section), kept in memory (least recently
    used dropped past ``memory_bytes``) and, with ``cache_dir``, on disk under the model's hash."""

    def __init__(self, model: IT2ITReranker, tokenizer, kb: KnowledgeBase, wiki: WikiImages, transform,
                 device: torch.device | str = "cpu", batch_size: int = 64, cache_dir: str | Path | None = None,
                 memory_bytes: float = 4e9, pad_to_max: bool = False, disk_bytes: float | None = None) -> None:
        self.model, self.tok, self.kb, self.wiki, self.transform = model, tokenizer, kb, wiki, transform
        self.device, self.batch_size, self.pad_to_max = torch.device(device), batch_size, pad_to_max
        self.memory: OrderedDict[str, EntityTokens] = OrderedDict()
        self.memory_bytes, self.held_bytes = memory_bytes, 0   # fp32 tokens: ~98 KB per section at BLIP-2 size
        self.cache_dir = Path(cache_dir) / model_hash(model, f"pad={pad_to_max}") if cache_dir else None
        self.disk = DiskCache(Path(cache_dir), disk_bytes) if cache_dir else None     # bounded, least recently used
        self.counts: Counter = Counter()

    # -- cache -------------------------------------------------------------------------------------------
    def _look_up(self, url: str) -> tuple[Entity | None, Path | None, str | None, Path | None]:
        """One read of the entity and one look at its image: ``(entity, image, reason it cannot be encoded, disk
        cache path)``. The cache entry is keyed on what the tokens are computed from: the URL, the entity's text
        and its image file (path, size, modification time), so an entry made from an old KB text or a missing image
        is never reused."""
        import json

        if url not in self.kb:
            ent, image, reason, source = None, None, "entity not in KB", [url, None]
        else:
            ent = self.kb.get(url)
            image, reason = self.wiki.locate(ent.title)
            st = image.stat() if image is not None and self.cache_dir else None
            source = [url, ent.title, ent.section_titles, ent.section_texts,
                      [str(image), st.st_size, st.st_mtime_ns] if st is not None else reason]
            reason = "no sections" if not ent.sections() else reason
        if not self.cache_dir:
            return ent, image, reason, None
        d = hashlib.sha1(json.dumps(source).encode()).hexdigest()
        return ent, image, reason, self.cache_dir / d[:2] / f"{d}.pt"

    @staticmethod
    def _size(et: EntityTokens) -> int:
        return 0 if et.tokens is None else et.tokens.numel() * et.tokens.element_size()

    def _remember(self, url: str, et: EntityTokens) -> None:
        if url in self.memory:
            self.held_bytes -= self._size(self.memory.pop(url))
        self.memory[url] = et
        self.held_bytes += self._size(et)
        while self.held_bytes > self.memory_bytes and len(self.memory) > 1:
            self.held_bytes -= self._size(self.memory.popitem(last=False)[1])

    def _from_disk(self, url: str, path: Path | None) -> EntityTokens | None:
        obj = self.disk.load(path) if path is not None else None
        if obj is None:
            return None
        et = EntityTokens(obj["section_ids"], obj["tokens"].float() if obj["tokens"] is not None else None,
                          obj["reason"])
        self._remember(url, et)
        self.counts["disk hits"] += 1
        return et

    def _store(self, url: str, et: EntityTokens, path: Path | None) -> None:
        self._remember(url, et)
        if path is not None:
            self.disk.save(path, {"section_ids": et.section_ids, "reason": et.reason,
                                  "tokens": et.tokens.half() if et.tokens is not None else None})

    # -- encoding ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, urls: Sequence[str]) -> dict[str, EntityTokens]:
        """Tokens for each URL (computed for those not cached)."""
        out: dict[str, EntityTokens] = {}
        todo: list[tuple[str, object, Path, Path | None]] = []
        for url in dict.fromkeys(urls):
            if url in self.memory:
                self.memory.move_to_end(url)
                self.counts["memory hits"] += 1
                out[url] = self.memory[url]
                continue
            ent, image, reason, path = self._look_up(url)
            cached = self._from_disk(url, path)
            if cached is not None:
                out[url] = cached
            elif ent is None:                        # not in the KB: nothing to remember
                out[url] = EntityTokens([], None, reason)
                self.counts[reason] += 1
            elif reason:
                self.counts[reason] += 1
                out[url] = EntityTokens([], None, reason)
                self._store(url, out[url], path)
            else:
                todo.append((url, ent, image, path))
        out.update(self._encode_new(todo))
        return out

    def _encode_new(self, todo: list[tuple[str, object, Path, Path | None]]) -> dict[str, EntityTokens]:
        """Each entity on its own (its image, then its sections in length-sorted batches): the tokens do not
        depend on which other entities are encoded in the same run, cached, or handled by another process."""
        result: dict[str, EntityTokens] = {}
        feats: dict[Path, torch.Tensor | str] = {}
        for url, ent, img, path in todo:
            if img not in feats:
                feats[img] = self._image_feature(img)
            if isinstance(feats[img], str):
                self.counts["wiki image undecodable"] += 1
                result[url] = EntityTokens([], None, f"wiki image undecodable: {feats[img]}")
            else:
                secs = ent.sections()
                texts = [candidate_text(ent.title, s.title, s.text) for s in secs]
                tokens = self._text_tokens(texts, [0] * len(texts), feats[img])
                result[url] = EntityTokens([s.index for s in secs], torch.stack(tokens))
                self.counts["entities encoded"] += 1
            self._store(url, result[url], path)
        self.counts["images encoded"] += sum(not isinstance(f, str) for f in feats.values())
        return result

    def _image_feature(self, path: Path) -> torch.Tensor | str:
        """ViT tokens ``[1, T, D]`` of one image, or why it cannot be read."""
        try:
            pix = self.transform(load_image(path)).unsqueeze(0)
        except ImageLoadError as exc:
            return str(exc)
        return self.model.vision_features(pix.to(self.device))

    def _text_tokens(self, texts: list[str], img_idx: list[int], feats: torch.Tensor) -> list[torch.Tensor]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[torch.Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            ids, mask = tokenize(self.tok, [texts[i] for i in chunk], self.model.config.max_text_length,
                                 self.pad_to_max, device=self.device)
            idx = torch.tensor([img_idx[i] for i in chunk], device=feats.device)
            tok = normalise_tokens(self.model.encode(feats[idx], ids, mask)).float().cpu()
            for i, t in zip(chunk, tok):
                out[i] = t
        return out  # type: ignore[return-value]


@torch.no_grad()
def encode_queries(model: IT2ITReranker, tokenizer, pixels: torch.Tensor, questions: Sequence[str],
                   *, query_norm: str = "faithful", device: torch.device | str = "cpu", pad_to_max: bool = False) -> torch.Tensor:
    ids, mask = tokenize(tokenizer, questions, model.config.max_text_length, pad_to_max, device=device)
    q = model.encode(model.vision_features(pixels.to(device)), ids, mask)
    return normalise_tokens(q, query_norm).float().cpu()


def entity_scores(q: torch.Tensor, et: EntityTokens) -> list[float]:
    """Per-section step-2 scores of one query ``[Q, D]`` against one entity ([] when it has no tokens)."""
    return question_scores(q, [et])[0]


def question_scores(q: torch.Tensor, ets: Sequence[EntityTokens]) -> list[list[float]]:
    """Per-section scores of one query ``[Q, D]`` against each of its candidates, in one call: every candidate's
    sections are stacked into one ``[S, Q, D]`` tensor, scored together and split back by candidate (a candidate
    without tokens gets ``[]``). Equal to :func:`late_interaction` on each candidate alone."""
    parts = [et.tokens for et in ets if et.tokens is not None and len(et.section_ids)]
    if not parts:
        return [[] for _ in ets]
    flat = late_interaction(q.unsqueeze(0), torch.cat(parts) if len(parts) > 1 else parts[0])[0].tolist()
    out, at = [], 0
    for et in ets:
        n = len(et.section_ids) if et.tokens is not None else 0
        out.append(flat[at:at + n])
        at += n
    return out


@torch.no_grad()
def naive_section_scores(model: IT2ITReranker, tokenizer, q: torch.Tensor, entity, *, image: Path, transform,
                         device: torch.device | str = "cpu") -> list[float]:
    """The reference: one ViT + Q-Former call per (section, image) pair, no sharing, no batching."""
    out = []
    for s in entity.sections():
        pix = transform(load_image(image)).unsqueeze(0).to(device)
        ids, mask = tokenize(tokenizer, [candidate_text(entity.title, s.title, s.text)], model.config.max_text_length,
                             True, device=device)
        c = normalise_tokens(model.encode(model.vision_features(pix), ids, mask)).float().cpu()
        out.append(float(late_interaction(q.unsqueeze(0), c)[0, 0]))
    return out
