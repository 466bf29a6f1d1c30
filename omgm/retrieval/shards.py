"""Resumable, sharded text encoding: ``work_dir/shard_{start:09d}_{end:09d}.npy`` per block of rows.

A shard is written atomically when its block is done, so a killed run loses at most one shard of work
and a re-run skips the shards already on disk. ``work_dir/shards.json`` records the model and row count:
shards of another model or KB are refused rather than mixed.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from omgm.data.results import read_json, write_json_atomic
from omgm.errors import OmgmError
from omgm.io import atomic_write


class ShardError(OmgmError, ValueError):
    """Shards on disk that belong to another model or KB."""


def shard_path(work_dir: Path, start: int, end: int) -> Path:
    return work_dir / f"shard_{start:09d}_{end:09d}.npy"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def _check_or_write_info(work_dir: Path, info: dict) -> None:
    path = work_dir / "shards.json"
    if path.is_file():
        old = read_json(path)
        if old != info:
            diff = [k for k in info if old.get(k) != info[k]]
            raise ShardError(f"{work_dir} holds shards made with different {diff} ({old}); use another "
                             f"--work_dir or delete it")
    else:
        write_json_atomic(path, info, indent=2)


def encode_sharded(texts_from: Callable[[int], Iterator[str]], n: int, encode: Callable[[Sequence[str]], np.ndarray],
                   work_dir: str | Path, *, info: dict, shard_size: int = 50_000, batch_size: int = 256,
                   progress: bool = True, ctx=None) -> list[Path] | None:
    """Encode ``n`` texts (``texts_from(start)`` yields them from row ``start``) into shards; return their paths.

    Under torchrun (``ctx``) shard ``i`` is encoded by rank ``i % world``; after a barrier rank 0 gets every
    shard's path, the other ranks (and a rank run alone) None.
    """
    from omgm.parallel import Context

    ctx = ctx or Context()
    work_dir = Path(work_dir)
    ranges = shard_ranges(n, shard_size)
    if ctx.main or ctx.alone:
        work_dir.mkdir(parents=True, exist_ok=True)
        _check_or_write_info(work_dir, {**info, "count": n, "shard_size": shard_size})
    ctx.barrier()
    if not (ctx.main or ctx.alone):
        _check_or_write_info(work_dir, {**info, "count": n, "shard_size": shard_size})
    todo = [(s, e) for i, (s, e) in enumerate(ranges) if ctx.owns(i) and not shard_path(work_dir, s, e).is_file()]
    bar = tqdm(total=n, initial=n - sum(e - s for s, e in todo), desc="encode", unit=" texts", disable=not progress)
    stream, at = (texts_from(todo[0][0]), todo[0][0]) if todo else (iter(()), 0)
    for start, end in todo:                  # one pass over the texts, skipping the shards already done
        for _ in itertools.islice(stream, start - at):
            pass
        texts, at = itertools.islice(stream, end - start), end
        parts = [encode(batch) for batch in _batches(texts, batch_size, bar)]
        block = np.concatenate(parts).astype(np.float32, copy=False)
        if len(block) != end - start:
            raise ShardError(f"expected {end - start} texts for rows {start}..{end - 1}, got {len(block)}")
        target = shard_path(work_dir, start, end)
        with atomic_write(target, suffix=".npy") as tmp:
            np.save(tmp, block)
    bar.close()
    ctx.barrier()
    if ctx.alone or not ctx.main:
        return None
    missing = [shard_path(work_dir, s, e) for s, e in ranges if not shard_path(work_dir, s, e).is_file()]
    if missing:
        raise ShardError(f"{work_dir}: {len(missing)} shards are missing (e.g. {missing[0].name}); run the ranks "
                         f"that made them again")
    return [shard_path(work_dir, s, e) for s, e in ranges]


def _batches(items: Iterable[str], size: int, bar) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
        bar.update(len(batch))
