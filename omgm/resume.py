"""Resumable jobs that write one record per finished item: ``OUTPUT.partial.jsonl``.

The first line is a header with the settings that produced the records (inputs' fingerprints and every
setting that changes a result); a job started again with other settings is refused, naming what differs,
instead of mixing answers of two configurations. ``restart=True`` discards the partial file.
"""
from __future__ import annotations

import json
from pathlib import Path

from omgm.errors import OmgmError
from omgm.io import append_jsonl, read_jsonl

PARTIAL_VERSION = 1


class ResumeError(OmgmError, ValueError):
    """A partial file written with other settings, or not a partial file at all."""


def settings_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> str:
    """``"key: old then, new now; ..."`` for the (first four) settings that differ; empty when none does."""
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff[:4])


def _plain(value):
    return json.loads(json.dumps(value, default=str))


class PartialRecords:
    """See the module docstring. ``open()`` returns the finished records by ``key``."""

    def __init__(self, path: str | Path, settings: dict, key: str = "data_id", what: str = "step 3") -> None:
        self.path, self.settings, self.key, self.what = Path(path), _plain(settings), key, what

    def open(self, restart: bool = False) -> dict[str, dict]:
        if restart:
            self.path.unlink(missing_ok=True)
        rows = read_jsonl(self.path)
        if not rows:
            self.path.unlink(missing_ok=True)
            append_jsonl(self.path, [{"omgm_partial": PARTIAL_VERSION, "job": self.what, "settings": self.settings}])
            return {}
        head = rows[0]
        if not isinstance(head, dict) or head.get("omgm_partial") != PARTIAL_VERSION \
                or not isinstance(head.get("settings"), dict):
            raise ResumeError(f"{self.path} is not a partial file of this omgm version; pass --restart to discard it")
        old = head["settings"]
        what = settings_diff(old, self.settings)
        if what:
            raise ResumeError(f"{self.path} holds {len(rows) - 1} answers made with other settings ({what}); "
                              f"run again with the same settings to resume, or pass --restart to discard them")
        bad = [r for r in rows[1:] if not isinstance(r, dict) or not isinstance(r.get(self.key), (str, int))]
        if bad:
            raise ResumeError(f"{self.path} holds {len(bad)} records that are not objects with a {self.key!r} (e.g. "
                              f"{str(bad[0])[:60]}): the file is damaged; pass --restart to discard it")
        return {r[self.key]: r for r in rows[1:]}

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.path, records)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
