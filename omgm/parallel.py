"""Data parallelism across processes, the torchrun way: every rank runs the same program on its own slice of
the work, writes its own parts atomically, and rank 0 merges them after a barrier into exactly the file one
process writes.

- Under ``torchrun --nproc_per_node N`` (or ``--nnodes`` with a rendezvous) :func:`context` initialises the
  process group (NCCL on GPUs, gloo on CPU) and gives each rank its GPU.
- With ``RANK``/``WORLD_SIZE`` set but no rendezvous (``MASTER_ADDR``), one rank runs *alone*: it does its slice
  and stops without merging; once every part is there, the same command without ``RANK``/``WORLD_SIZE`` (or
  under torchrun) only merges. This is how a rank that died is redone without the others.
- Without either, nothing changes: one rank, world size 1.

Work is split into *units* (row blocks, chunks of samples) numbered 0..n-1; unit ``u`` belongs to rank
``u % world``. Parts are named after their units, and every parts folder records the settings and world size it
was made with: a resume with other settings, or with another world size while parts are missing, is refused,
naming what differs.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omgm.errors import OmgmError

log = logging.getLogger(__name__)


class ParallelError(OmgmError, ValueError):
    """Parts made with other settings or another world size, or a rank touching another rank's part."""


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel job: rank, world size, local rank (its GPU), process group up or
    not."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    distributed: bool = False          # a process group is up (barriers and merging possible)

    @property
    def alone(self) -> bool:
        """One rank of a larger job, run by itself: it does its units and leaves the merge to a later run."""
        return self.world > 1 and not self.distributed

    @property
    def main(self) -> bool:
        """Rank 0: the process that merges and writes."""
        return self.rank == 0

    def owns(self, unit: int) -> bool:
        """Unit ``unit`` is this rank's (``unit % world == rank``)."""
        return unit % self.world == self.rank

    def mine(self, units: Sequence) -> list:
        """This rank's share of ``units``."""
        return [u for i, u in enumerate(units) if self.owns(i)]

    def barrier(self) -> None:
        """Wait for every rank (nothing without a process group)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


_CONTEXT: Context | None = None


def env_place() -> Context:
    """This process's rank, world size and local rank as the launcher's environment gives them, without
    setting up a process group (for code whose framework sets it up, e.g. accelerate)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world > 1 and not 0 <= rank < world:
        raise ParallelError(f"RANK={rank} is not a rank of WORLD_SIZE={world}")
    return Context(rank, world, local)


def context() -> Context:
    """This process's place in the job (initialising the process group under torchrun, once)."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    place = env_place()
    rank, world, local = place.rank, place.world, place.local_rank
    distributed = world > 1 and bool(os.environ.get("MASTER_ADDR"))
    if distributed:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            dist.init_process_group(backend)
    _CONTEXT = Context(rank, world, local, distributed)
    if world > 1:
        log.info("rank %d of %d%s", rank, world, " (alone: no merge)" if _CONTEXT.alone else "")
    return _CONTEXT


def device_for(ctx: Context, device: str | None) -> str | None:
    """Each rank's own GPU under torchrun when the device is left to choose."""
    import torch

    if ctx.world > 1 and device in (None, "auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    return device


def reset() -> None:
    """Forget the cached context (tests that change the environment)."""
    global _CONTEXT
    _CONTEXT = None


def _compare_or_write(manifest: Path, wanted: dict, write: bool, any_world: bool = False) -> None:
    from omgm.bookkeeping import read_bookkeeping
    from omgm.io import write_json_atomic
    from omgm.resume import settings_diff

    if not manifest.is_file():
        if write:
            write_json_atomic(manifest, wanted, indent=2)
            return
        raise ParallelError(f"{manifest} is missing: rank 0 did not prepare {manifest.parent}")
    old = read_bookkeeping(manifest, {"*": object}, what="the settings of a parts folder",
                           fix=f"delete {manifest.parent} to start again")
    what = settings_diff(old, wanted, ("world_size",) if any_world else ())
    if what:
        raise ParallelError(f"{manifest.parent} holds parts made with other settings ({what}); use the same "
                            f"settings and world size to resume, or delete {manifest.parent}")


def prepare_parts(folder: Path, settings: dict, ctx: Context, complete: bool = False) -> None:
    """Record (rank 0, or a rank run alone) or check (every rank) the settings and world size of a parts folder.
    When every part is already there (``complete``), only the merge remains and any world size may do it."""
    manifest = folder / "parts.json"
    wanted = {**settings, "world_size": ctx.world}
    if ctx.main or ctx.alone:
        folder.mkdir(parents=True, exist_ok=True)
        _compare_or_write(manifest, wanted, write=True, any_world=complete)
    ctx.barrier()
    if not (ctx.main or ctx.alone):
        _compare_or_write(manifest, wanted, write=False, any_world=complete)


def part_owner_check(path: Path, unit: int, ctx: Context) -> None:
    """Refuse to touch a part that another rank owns (only possible when the world size changed)."""
    if not ctx.owns(unit):
        raise ParallelError(f"rank {ctx.rank} of {ctx.world} would write {path}, which belongs to rank "
                            f"{unit % ctx.world}")


def units_of(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` blocks of ``size`` over ``range(n)``: the units a job is split into."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def parts_folder(out: str | Path) -> Path:
    """The folder where a job writing ``out`` keeps its parts until the merge: ``OUT.parts``."""
    return Path(out).with_name(Path(out).name + ".parts")


def parts_in_use(ctx: Context, folder: str | Path) -> bool:
    """Work goes through the parts folder: under torchrun, for a rank run alone, or to finish (or merge) what a
    multi-process run left there."""
    return ctx.world > 1 or Path(folder).is_dir()


@dataclass(frozen=True)
class Parallel:
    """How a stage spreads its units: this process's place, the parts folder beside its output, and the settings
    every part must have been made with."""

    ctx: Context
    folder: Path
    settings: dict

    @property
    def active(self) -> bool:
        """See :func:`parts_in_use`."""
        return parts_in_use(self.ctx, self.folder)


def run_units(parallel: Parallel, units: Sequence[tuple[int, int]], work, progress: bool = False,
              *, desc: str = "units") -> list[dict] | None:
    """Run ``work(start, end) -> dict`` on this rank's units, each saved as ``folder/unit_{start}_{end}.json``
    (skipped when already there: a restarted rank does only what is missing); after a barrier, rank 0 gets every
    unit's result in unit order, other ranks (and a rank run alone) get None."""
    from tqdm import tqdm

    from omgm.data.results import read_json
    from omgm.io import write_json_atomic

    ctx, folder, settings = parallel.ctx, Path(parallel.folder), parallel.settings
    done = {u for u in units if (folder / f"unit_{u[0]}_{u[1]}.json").is_file()}
    prepare_parts(folder, settings, ctx, complete=len(done) == len(units))
    mine = [(i, u) for i, u in enumerate(units) if ctx.owns(i)]
    todo = [(i, u) for i, u in mine if not (folder / f"unit_{u[0]}_{u[1]}.json").is_file()]
    for i, (start, end) in tqdm(todo, desc=f"{desc} (rank {ctx.rank})", disable=not progress):
        part_owner_check(folder / f"unit_{start}_{end}.json", i, ctx)
        write_json_atomic(folder / f"unit_{start}_{end}.json", work(start, end))
    ctx.barrier()
    if ctx.alone:
        log.warning("rank %d of %d done (alone): run the job again without RANK/WORLD_SIZE, or under torchrun, "
                    "to merge the parts in %s", ctx.rank, ctx.world, folder)
        return None
    if not ctx.main:
        return None
    missing = [u for u in units if not (folder / f"unit_{u[0]}_{u[1]}.json").is_file()]
    if missing:
        raise ParallelError(f"{folder}: {len(missing)} units were not done (e.g. {missing[0]}); run the missing "
                            f"ranks again")
    return [read_json(folder / f"unit_{s}_{e}.json") for s, e in units]


def remove_parts(folder: Path) -> None:
    """Delete a parts folder once its merge is written (rank 0)."""
    import shutil

    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
