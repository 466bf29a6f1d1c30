"""The download root's bookkeeping: who is fetching into it, and what was fetched.

- :class:`RootLock`: one ``omgm fetch`` per root at a time (an advisory ``flock`` on ``ROOT/.omgm_fetch.busy``,
  released by the kernel when its process dies, so it is never stale). A second fetch waits up to ``wait``
  seconds, then refuses with one line naming the holder. While it is held, every ``.part`` file under the root
  belongs to the holder.
- :class:`Lock`: ``ROOT/omgm_fetch.lock.json``, the size and sha256 of each file at its first complete download
  and the source that served it; later copies are checked against it. Read through the bookkeeping reader
  (a damaged file is one line), written atomically with its own format and version.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from omgm.bookkeeping import read_bookkeeping
from omgm.errors import OmgmError
from omgm.io import file_sha256, write_json_atomic

LOCK_NAME = "omgm_fetch.lock.json"
LOCK_FORMAT, LOCK_VERSION = "omgm.fetch_lock", 1
BUSY_NAME = ".omgm_fetch.busy"
_ENTRY = {"size": int, "sha256": str, "source?": str, "files?": int}
_SHAPE = {"format?": str, "version": int, "files": {"*": _ENTRY}}


class FetchError(OmgmError, OSError):
    """A file that cannot be fetched, or that differs from the recorded copy; the message names it."""


def prepare_root(root: Path) -> Path:
    """``root``, made where missing; a one-line error where it names a file."""
    if root.exists() and not root.is_dir():
        raise FetchError(f"--root {root} is a file, not a folder: choose a folder for the downloads")
    root.mkdir(parents=True, exist_ok=True)
    return root


class RootLock:
    """Exclusive use of a download root by one ``omgm fetch`` (see the module doc)."""

    def __init__(self, root: Path, wait: float = 0.0) -> None:
        self.path, self.wait, self.fd = root / BUSY_NAME, wait, None

    def __enter__(self) -> "RootLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
                    os.close(fd)
                    raise FetchError(f"{self.path.parent} is in use by another omgm fetch ({holder}); wait for it "
                                     f"to finish, or pass --wait SECONDS to queue behind it") from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}"
                  .encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)                    # closing releases the flock
            self.fd = None


class Lock:
    """``ROOT/omgm_fetch.lock.json``: size, sha256 and source of each file at its first complete download."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME
        data = read_bookkeeping(self.path, _SHAPE, what="the fetch lock",
                                fix="delete it (or the damaged entry) to record the files anew at the next fetch")
        if data and data["version"] > LOCK_VERSION:
            raise FetchError(f"{self.path}: lock format version {data['version']} is newer than this omgm "
                             f"understands ({LOCK_VERSION}); upgrade omgm")
        self.files: dict[str, dict] = data["files"] if data else {}

    def check_and_record(self, rel: str, path: Path, source: str, *, announced: int | None = None,
                         published: str | None = None) -> dict:
        """Compare ``path`` with the recorded copy of ``rel`` (refusing a different one), or record it. A file
        whose size is not what its source ``announced``, or whose sha256 is not the one its publisher gives
        (``published``), is refused before anything is recorded."""
        entry = {**digest(path), "source": source}
        if announced is not None and entry["size"] != announced:
            raise FetchError(f"{rel}: {entry['size']} bytes arrived where the source announced {announced}: "
                             f"refused and not recorded; run the fetch again")
        if published is not None and entry["sha256"] != published:
            raise FetchError(f"{rel} has sha256 {entry['sha256'][:16]}..., not the {published[:16]}... its publisher "
                             f"gives: a damaged or changed download, not recorded (delete it and fetch again)")
        known = self.files.get(rel)
        if known and (known["size"], known["sha256"]) != (entry["size"], entry["sha256"]):
            raise FetchError(f"{rel}: the downloaded file differs from the copy recorded in {self.path} "
                             f"({entry['size']} bytes, sha256 {entry['sha256'][:12]}... vs {known['size']} bytes, "
                             f"{known['sha256'][:12]}...): refused. If the release really changed, remove its "
                             f"entry from the lock file")
        if not known:
            self.files[rel] = entry
            write_json_atomic(self.path, {"format": LOCK_FORMAT, "version": LOCK_VERSION, "files": self.files},
                              indent=1)
        return entry

    def status(self, rel: str, path: Path, verify: bool = False) -> str:
        """present / verified / changed / missing (``verify`` hashes the file; otherwise size only)."""
        if not path.exists():
            return "missing"
        known = self.files.get(rel)
        if not known:
            return "present (not in the lock)"
        if not verify:
            same = path.is_dir() or path.stat().st_size == known["size"]
            return "present (size matches the lock)" if same else "changed"
        return "verified" if digest(path)["sha256"] == known["sha256"] else "changed"


def digest(path: Path) -> dict:
    """Size and sha256 of a file; of a folder, the total size and the sha256 of its (path, sha256) list."""
    if path.is_file():
        return {"size": path.stat().st_size, "sha256": file_sha256(path, digits=64)}
    import hashlib

    files = sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f, digits=64)}\n".encode())
    return {"size": sum(f.stat().st_size for f in files), "sha256": h.hexdigest(), "files": len(files)}

