"""``OUT/reproduce_state.json``: which stages finished, on which inputs, in how many seconds; and running a stage.

A stage counts as done when its key is the same — its command, the config settings it reads, the omgm version —
its output exists, and every input it recorded is still as it found it (:func:`omgm.reproduce.provenance.changed`,
by sha256). Stages read each other's results, so a change reruns the stage it touches and those downstream of
it whose inputs then differ, and says so; a setting only other stages read reruns nothing here. ``--force
STAGE`` reruns a stage regardless. A state file of an older omgm (no input records) makes every stage run once.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from omgm import __version__
from omgm.bookkeeping import read_bookkeeping
from omgm.errors import OmgmError
from omgm.io import write_json_atomic
from omgm.reproduce.plan import Stage
from omgm.reproduce.provenance import Hashes, changed, inputs_of

STATE = "reproduce_state.json"
STATE_FORMAT, STATE_VERSION = "omgm.reproduce_state", 2
_SHAPE = {"format?": str, "version?": int,
          "stages?": {"*": {"command": str, "inputs": [{"*": object}], "seconds": (int, float),
                            "settings?": {"*": object}, "omgm?": str}},
          "hashes?": {"*": {"size": int, "mtime_ns": int, "sha256": str}}, "*": object}


class ReproduceError(OmgmError, RuntimeError):
    """A stage that failed or an input that is missing; the message names it."""


@dataclass
class RunState:
    path: Path
    stages: dict[str, dict] = field(default_factory=dict)
    hashes: Hashes = field(default_factory=Hashes)
    hub_cache: Path | None = None

    @classmethod
    def load(cls, out: Path, hub_cache: Path | None = None) -> "RunState":
        path = out / STATE
        data = read_bookkeeping(path, _SHAPE, what="reproduce's record of finished stages",
                                fix="delete it: the stages run again (each continues its own finished work)") or {}
        return cls(path, dict(data.get("stages") or {}), Hashes(dict(data.get("hashes") or {})), hub_cache)

    def save(self) -> None:
        write_json_atomic(self.path, {"format": STATE_FORMAT, "version": STATE_VERSION, "stages": self.stages,
                                      "hashes": self.hashes.cache}, indent=1)

    def why_again(self, stage: Stage) -> str | None:
        """None when ``stage`` is done on the inputs it recorded; else why it runs (again)."""
        done = self.stages.get(stage.name)
        if not done or done["command"] != stage.command() or not stage.output.exists():
            return "not done" if not done else "its command or output changed"
        if done.get("omgm") != __version__:
            return f"omgm changed ({done.get('omgm') or 'unknown'} -> {__version__})"
        old = done.get("settings") or {}
        moved = sorted(k for k in {*old, *stage.settings} if old.get(k) != stage.settings.get(k))
        if moved:
            return f"its settings changed: {', '.join(moved[:5])}"
        moved = changed(done["inputs"], self.hashes)
        return f"its inputs changed since it ran: {', '.join(moved[:3])}" if moved else None

    def run(self, stage: Stage, env: dict, force: bool = False) -> str:
        """Run ``stage`` unless it is done (see the module doc) or ``force``; the line to print."""
        why = "--force" if force else self.why_again(stage)
        if why is None:
            return "done earlier"
        if stage.reuse_output and stage.output.exists():
            if why.startswith(("its inputs changed", "--force")):
                raise ReproduceError(f"stage {stage.name}: {why}, but {stage.output} was made from the old ones: "
                                     f"delete it to import again")
            self._record(stage, 0.0)                 # a store made before or elsewhere: written complete, reused
            return "done earlier (the KB store is only ever written complete)"
        missing = stage.missing()
        if missing:
            raise ReproduceError(f"stage {stage.name}: missing {', '.join(map(str, missing))} (omgm fetch first)")
        if why != "not done":
            print(f"== {stage.name}: runs again, {why}", flush=True)
        print(f"== {stage.name}: {stage.command()}", flush=True)
        inputs, t0 = inputs_of(stage.reads, self.hashes, self.hub_cache), time.time()
        proc = subprocess.run(stage.argv(), env=env)
        if proc.returncode != 0 or not stage.output.exists():
            raise ReproduceError(f"stage {stage.name} failed (exit {proc.returncode}); fix the cause and run the same "
                                 f"command again: it continues where it stopped")
        self._record(stage, time.time() - t0, inputs)
        return "ran"

    def _record(self, stage: Stage, seconds: float, inputs: list[dict] | None = None) -> None:
        if inputs is None:
            inputs = inputs_of(stage.reads, self.hashes, self.hub_cache)
        self.stages[stage.name] = {"command": stage.command(), "inputs": inputs, "seconds": round(seconds, 2),
                                   "settings": stage.settings, "omgm": __version__}
        self.save()
