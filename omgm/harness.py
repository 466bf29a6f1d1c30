"""One run harness for the stages that write a result file (steps 1, 2b and 3).

:class:`StageRun` does the bookkeeping every such stage needs, once: the output path (a folder means
``FOLDER/result.json``, as the official scripts), the check that the outputs can be written and are none of the
inputs (before any model loads), the output lock (one writer per file; a stale lock is taken over), the parts
folder and settings fingerprint of a data-parallel or resumed run (:class:`omgm.parallel.Parallel`), the
``*.summary.json`` beside the result (stage, seconds, processes added) and the removal of the parts once the
result is written. A stage's entry point is then parse -> build -> run -> write::

    with StageRun("step1", args.save_result_path, inputs=[...]) as run:
        results = engine.search(..., parallel=run.parallel(settings))
        if results is None:            # another rank merges
            return 0
        write(run.out, results)
        run.finish({...})
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable

from omgm.io import OutputLock, check_writable, output_file, sibling, write_json_atomic
from omgm.parallel import Context, Parallel, context, device_for, parts_folder, parts_in_use, remove_parts


class StageRun:
    """See the module docstring. ``out``: the result path; ``summary_path``: its ``*.summary.json``."""

    def __init__(self, stage: str, out: str | Path, *, inputs: Iterable[str | Path | None] = (),
                 ctx: Context | None = None) -> None:
        self.stage, self.out, self.ctx, self.t0 = stage, output_file(out), ctx or context(), time.time()
        self.summary_path = sibling(self.out, ".summary.json")
        self.parts = parts_folder(self.out)
        self._stack = ExitStack()
        self.facts: dict[str, str] = {}                  # device and dtype the stage ran with, for its summary
        check_writable(self.out, self.summary_path, inputs=inputs)

    def __enter__(self) -> "StageRun":
        if self.ctx.main:
            self._stack.enter_context(OutputLock(self.out))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def device(self, device: str | None) -> str | None:
        """This rank's device: its own GPU under torchrun when the device is left to choose (the summary names
        the device it resolves to)."""
        from omgm.devices import resolve_device

        device = device_for(self.ctx, device)
        self.facts["device"] = str(resolve_device(device))
        return device

    def uses(self, model) -> None:
        """Name the dtype of the stage's main model (its first parameter's) in the summary."""
        first = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        if first is not None:
            self.facts["dtype"] = str(first.dtype).replace("torch.", "")

    @property
    def uses_parts(self) -> bool:
        """See :func:`omgm.parallel.parts_in_use`."""
        return parts_in_use(self.ctx, self.parts)

    def parallel(self, settings: dict | Callable[[], dict] | None = None) -> Parallel:
        """The parts folder of this run, with the settings every part must have been made with (a callable is
        only called when parts are used: some fingerprints hash a model)."""
        if callable(settings):
            settings = settings() if self.uses_parts else {}
        return Parallel(self.ctx, self.parts, settings or {})

    @property
    def seconds(self) -> float:
        """Seconds since the run started."""
        return time.time() - self.t0

    def finish(self, summary: dict) -> dict:
        """Write ``*.summary.json`` (with the stage, seconds and processes) and drop the parts; returns it."""
        summary = {"stage": self.stage, **summary, **self.facts, "seconds": round(self.seconds, 2),
                   "processes": self.ctx.world}
        write_json_atomic(self.summary_path, summary, indent=2)
        remove_parts(self.parts)
        return summary
