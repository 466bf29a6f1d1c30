"""Files on disk, written safely: atomic replacement, JSON Lines that survive a crash, exclusive output locks,
and the published scripts' output convention.

- :func:`atomic_write` yields a temporary path beside the target; on success it is fsynced and renamed over
  the target (readers never see a half-written file); on failure it is removed. Files get the usual
  permissions (``0666 & ~umask``), not ``mkstemp``'s private 0600.
- :func:`read_jsonl` drops an unparsable *last* line (a write torn by a crash) and names any other bad line;
  :func:`append_jsonl` first completes a last line that lacks its newline, so a record is never glued to it.
- :class:`OutputLock` holds ``TARGET.lock`` (with the holder's pid and host) for the length of a job; a second
  writer gets a clear error; a lock whose process is gone is taken over.
- :func:`output_file` applies the published scripts' convention: a flag that names a directory (existing, or
  ending with ``/``) means ``DIR/result.json``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from omgm.bookkeeping import read_bookkeeping
from omgm.errors import OmgmError

log = logging.getLogger(__name__)
RESULT_NAME = "result.json"


class OutputError(OmgmError, OSError):
    """An output that cannot be written, or is being written by another job."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it over ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """JSON (UTF-8, no NaN) written through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, ensure_ascii=False, indent=indent, allow_nan=False)
    return Path(path)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON Lines file; a torn last line is dropped (with a warning), any other bad line is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n >= len(lines) - 1:
                log.warning("%s: dropping a torn last line (an interrupted write)", path)
                continue
            raise OutputError(f"{path}, line {n}: not JSON; the file is damaged") from None
    return out


def append_jsonl(path: str | Path, records: Iterable[dict], sync: bool = True) -> None:
    """Append records, one per line, after completing a last line that lacks its newline; flushed, and synced to
    disk unless ``sync`` is false (for cheap records a reader can recompute: a torn tail is dropped on reading)."""
    path = Path(path)
    with open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        for r in records:
            fh.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def output_file(value: str | Path, name: str = RESULT_NAME) -> Path:
    """``DIR/result.json`` when ``value`` is a directory or ends with a slash, else ``value`` itself."""
    text = str(value)
    p = Path(text)
    return p / name if text.endswith(("/", os.sep)) or p.is_dir() else p


def sibling(path: Path, suffix: str) -> Path:
    """``answers.json`` -> ``answers.summary.json`` (``suffix`` = ``.summary.json``)."""
    return path.with_name(path.stem + suffix)


def check_writable(*paths: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """Fail before any work when an output's folder cannot be created or written, or when an output is one of
    the ``inputs`` (writing it would destroy that input)."""
    ins = {os.path.realpath(i): str(i) for i in inputs if i}
    for p in paths:
        same = ins.get(os.path.realpath(p))
        if same is not None:
            raise OutputError(f"the output {p} is the input {same}: choose another output path")
        folder = Path(p).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from None


def _alive(pid: int) -> bool:
    if pid <= 0:                                   # 0 and negatives name process groups, never a lock's holder
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Exclusive ``TARGET.lock`` for a job writing ``TARGET`` (see the module docstring)."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder and holder["host"] == me["host"] and not _alive(holder["pid"]):
                    log.warning("%s: taking over a stale lock of process %s", self.path, holder["pid"])
                    self.path.unlink(missing_ok=True)
                    continue
                pid, host = (holder["pid"], holder["host"]) if holder else ("?", "?")
                raise OutputError(f"{self.target} is being written by another job (process {pid} on {host}; "
                                  f"lock file {self.path}). Wait for it, or delete the lock file if that job is "
                                  f"gone") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return self
        raise OutputError(f"cannot lock {self.target} ({self.path})")

    def _holder(self) -> dict | None:
        """Who holds the lock; None while its holder is still writing it (an empty file)."""
        try:
            if self.path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        return read_bookkeeping(self.path, {"pid": int, "host": str}, what=f"the output lock of {self.target}",
                                fix="if no job is writing that output, delete the lock file")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def file_sha256(path: str | Path, block: int = 1 << 20, digits: int = 16) -> str:
    """sha256 of a file's bytes, its first ``digits`` hex digits (16: an input's identity in a resume fingerprint;
    64: the whole digest, as the fetch lock records it)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()[:digits]
