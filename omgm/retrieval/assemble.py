"""A FAISS index from embedding shards in bounded memory: the index and one shard, never all vectors twice.

- Exact (``IndexFlatIP``): its storage is sized once to the final count, then each shard (read memory-mapped) is
  copied into its place: the bytes ``add()`` would write, without ``add()``'s doubling growth (whose last
  reallocation holds the old and the new copy at once: 16.7 GB for the 9.8 GB of a 2M x 1280 index). Peak: the
  index (the vectors' size) plus one shard.
- Approximate (an ``index_factory`` string): trained on a seeded sample of at most ``train_size`` vectors,
  then filled shard by shard. Its recall@k against exact search is measured on ``n_queries`` database vectors,
  the exact neighbours computed shard by shard (no second full index). Peak: the index plus one shard.

``keep`` (optional, per shard) selects the rows that go in (the image index drops undecodable images).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np

from omgm.errors import OmgmError
from omgm.retrieval.index import apply_search_params, search

TRAIN_SIZE = 200_000          # vectors an approximate index is trained on (FAISS: 30-256 per IVF cluster is enough)
CHUNK = 16_384                # database rows scored at once when computing the exact neighbours for recall


def _rows(shard: Path, keep: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    x = np.load(shard, mmap_mode="r")
    if keep is not None:
        x = x[keep(x)]
    return np.ascontiguousarray(x, dtype=np.float32)


def _sample(shards: Sequence[Path], size: int, keep, seed: int) -> np.ndarray:
    """``size`` rows drawn uniformly (seeded) across the shards, in row order."""
    counts = _counts(shards, keep)
    total = sum(counts)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    out, start = [], 0
    for s, n in zip(shards, counts):
        local = picked[(picked >= start) & (picked < start + n)] - start
        if len(local):
            out.append(_rows(s, keep)[local])
        start += n
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _counts(shards: Sequence[Path], keep) -> list[int]:
    maps = (np.load(s, mmap_mode="r") for s in shards)     # counted on the memory maps: nothing copied
    return [int(keep(x).sum()) if keep else int(x.shape[0]) for x in maps]


def fill_flat(shards: Sequence[Path], dim: int, keep=None) -> faiss.IndexFlatIP:
    """An ``IndexFlatIP`` of every shard's rows in order, its storage allocated once (see the module doc)."""
    # each shard's filter computed once; no memory map is held beyond its use (its pages would count as resident)
    masks = [keep(np.load(s, mmap_mode="r")) if keep is not None else None for s in shards]
    counts = [int(m.sum()) if m is not None else int(np.load(s, mmap_mode="r").shape[0]) for s, m in zip(shards, masks)]
    total, width = sum(counts), dim * np.dtype(np.float32).itemsize
    index = faiss.IndexFlatIP(dim)
    index.codes.resize(total * width)
    if total:
        view = faiss.rev_swig_ptr(index.codes.data(), total * width).view(np.float32).reshape(total, dim)
        at = 0
        for s, m, n in zip(shards, masks, counts):
            x = np.load(s, mmap_mode="r")
            rows = x[m] if m is not None else x
            if rows.shape != (n, dim):
                raise OmgmError(f"{s}: {rows.shape} rows, expected ({n}, {dim})")
            view[at:at + n] = rows
            at += n
    index.ntotal = total
    return index


def add_shards(index: faiss.Index, shards: Sequence[Path], keep=None) -> faiss.Index:
    for s in shards:
        index.add(_rows(s, keep))
    return index


def exact_neighbours(shards: Sequence[Path], queries: np.ndarray, k: int, keep=None) -> np.ndarray:
    """Row ids of the exact top-``k`` inner products, shard by shard and in chunks (a running top-k)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    offset = 0
    for s in shards:
        x = _rows(s, keep)
        for a in range(0, len(x), CHUNK):
            scores = queries @ x[a:a + CHUNK].T
            ids = np.broadcast_to(np.arange(offset + a, offset + a + scores.shape[1]), scores.shape)
            all_s, all_i = np.hstack([best_s, scores]), np.hstack([best_i, ids])
            top = np.argpartition(-all_s, k - 1, axis=1)[:, :k] if all_s.shape[1] > k else \
                np.broadcast_to(np.arange(all_s.shape[1]), all_s.shape)
            best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
        offset += len(x)
    return best_i


def build_from_shards(shards: Sequence[Path], dim: int, factory: str | None, *, search_params: str | None = None,
                      recall_queries: int = 1000, recall_k: int = 20, train_size: int = TRAIN_SIZE,
                      keep=None, seed: int = 0) -> tuple[faiss.Index, dict]:
    """The index over the shards' rows and what was measured about it (see the module doc)."""
    if not factory or factory in ("Flat", "IndexFlatIP"):
        return fill_flat(shards, dim, keep), {"index_type": "IndexFlatIP"}
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise OmgmError(f"--index_factory {factory!r}: {str(exc).splitlines()[0]}") from None
    if not index.is_trained:
        sample = _sample(shards, train_size, keep, seed)
        try:
            index.train(sample)
        except RuntimeError as exc:
            why = str(exc).split("Error: ")[-1].splitlines()[0]
            raise OmgmError(f"--index_factory {factory!r} cannot be trained on {len(sample)} vectors ({why}); "
                            f"choose fewer clusters, or Flat for a small KB") from None
        del sample                           # before the index fills: the sample and the index never add up
    add_shards(index, shards, keep)
    apply_search_params(index, search_params)
    queries = _sample(shards, recall_queries, keep, seed)
    k = min(recall_k, index.ntotal)
    exact = exact_neighbours(shards, queries, k, keep)
    _, approx = search(index, queries, k)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return index, {"index_type": factory, "search_params": search_params or "", "train_vectors": min(train_size,
                   index.ntotal), "recall_vs_flat": {f"R@{recall_k}": round(hits / (len(queries) * k), 4)},
                   "recall_queries": len(queries)}
