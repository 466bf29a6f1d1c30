"""Atomic unpacking of zip / tar archives, and streaming only the wanted members out of a tarball.

An archive is extracted into a hidden folder beside the destination, checked (no member may leave it), then each
top-level entry is moved into place with one rename; a marker file written last says the unpacking finished, so
a killed unpacking is simply done again.
"""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

from omgm.fetch.download import check_free
from omgm.fetch.lock import FetchError
from omgm.io import atomic_write, write_json_atomic


def archive_kind(path: Path) -> str | None:
    """``zip``, ``tar`` or None, from the file's content (not its name)."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        return None
    return None


def marker(dest: Path, name: str) -> Path:
    return dest / f".omgm_unpacked_{name}.json"


def unpack(archive: Path, dest: Path, name: str, kind: str) -> list[str]:
    """Extract ``archive`` into ``dest`` atomically; returns the top-level entries placed.

    An archive holding a single folder (as folders are usually zipped) places that folder's content in ``dest``.
    """
    tmp = dest.parent / f".{dest.name}.unpacking-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                check_free(dest.parent, sum(i.file_size for i in zf.infolist()), f"unpacking {archive.name}")
                _check_members([i.filename for i in zf.infolist()], archive)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                _check_members(tf.getnames(), archive)
                tf.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, FetchError):
            raise
        raise FetchError(f"{archive}: a corrupt or unreadable {kind} archive ({exc}); delete it to download it "
                         f"again") from None
    dest.mkdir(parents=True, exist_ok=True)
    top = list(tmp.iterdir())
    src = top[0] if len(top) == 1 and top[0].is_dir() else tmp     # one folder inside: its content is the artifact
    placed = []
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        entry.replace(target)
        placed.append(entry.name)
    shutil.rmtree(tmp, ignore_errors=True)
    write_json_atomic(marker(dest, name), {"archive": archive.name, "entries": placed})
    return placed


def _check_members(names: list[str], archive: Path) -> None:
    bad = [n for n in names if n.startswith(("/", "\\")) or ".." in Path(n).parts]
    if bad:
        raise FetchError(f"{archive}: members would leave the destination folder: {bad[:3]}")


class HashingReader:
    """A binary stream that computes the md5 of every byte read through it (``count`` of them): a published
    checksum of a file that is read as it downloads and never stored."""

    def __init__(self, raw: BinaryIO) -> None:
        import hashlib

        self.raw, self.md5, self.count = raw, hashlib.md5(usedforsecurity=False), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.md5.update(data)
        self.count += len(data)
        return data

    def hexdigest(self) -> str:
        return self.md5.hexdigest()


def stream_tar_members(fileobj: BinaryIO, wanted: dict[str, list[str]], dest: Path,
                       on_member: Callable[[int], None] | None = None, *,
                       read_to_end: bool = False) -> tuple[int, set[str]]:
    """Read a (compressed) tar stream once and write each wanted member as ``dest/{id}.jpg`` for each of its ids.

    ``wanted`` maps a member name (as in the tar, leading ``./`` ignored) to the ids that use it. Returns the
    number of files written and the member names never seen. The stream is left once every wanted member is
    written, unless ``read_to_end`` (its checksum is being computed: every byte must pass).
    """
    dest.mkdir(parents=True, exist_ok=True)
    remaining, written = dict(wanted), 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tf:
            for member in tf:
                key = member.name[2:] if member.name.startswith("./") else member.name
                ids = remaining.pop(key, None)
                if on_member:
                    on_member(1)
                if not ids or not member.isfile():
                    continue
                data = tf.extractfile(member).read()
                for i in ids:
                    with atomic_write(dest / f"{i}.jpg") as tmp:
                        tmp.write_bytes(data)
                    written += 1
                if not remaining and not read_to_end:
                    break
        if read_to_end:
            while fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FetchError(f"reading the tar stream: {exc} ({written} images written so far; run again to "
                         f"continue)") from None
    return written, set(remaining)


def read_marker(dest: Path, name: str) -> dict | None:
    """The marker of a finished unpacking, None when there is none (the unpacking did not finish)."""
    from omgm.bookkeeping import read_bookkeeping

    return read_bookkeeping(marker(dest, name), {"archive": str, "entries": [str]}, what="an unpacking marker",
                            fix="delete it and fetch again: the archive is unpacked anew")
