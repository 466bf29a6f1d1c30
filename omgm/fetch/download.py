"""Resumable, verified downloads: HTTP(S) with Range resume and retries, Google Drive's confirmation page, files.

A download writes ``TARGET.part`` and continues it after a kill (``Range: bytes=N-``; a server that ignores the
range restarts it). Retries on 429 / 5xx / dropped or truncated bodies, with ``Retry-After`` or exponential
back-off, within a total deadline. Google Drive answers large files with an HTML page first: the real link is
read from it by gdown's parser. The finished file is checked by :class:`omgm.fetch.lock.Lock` before it replaces ``TARGET``.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from omgm.fetch.lock import FetchError

log = logging.getLogger(__name__)
GDRIVE_BASE_ENV = "OMGM_GDRIVE_BASE"          # tests point Drive ids at a local server
GDRIVE_BASE = "https://drive.google.com/uc"
CHUNK = 1 << 18                                # 256 KiB: a dropped connection loses at most this


def gdrive_url(file_id: str) -> str:
    return f"{os.environ.get(GDRIVE_BASE_ENV, GDRIVE_BASE)}?export=download&id={file_id}"


@dataclass
class HttpOptions:
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0                    # per connection / read
    deadline: float = 24 * 3600.0            # total seconds for one file
    progress: bool = True


def check_free(folder: Path, need: int | None, what: str) -> None:
    """Refuse before writing when the disk cannot hold ``need`` more bytes (plus 1 % slack)."""
    if not need:
        return
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need * 1.01 > free:
        raise FetchError(f"{what}: needs {need / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free: "
                         f"free some space or choose another --root")


def http_download(url: str, part: Path, *, gdrive: bool = False, opt: HttpOptions | None = None,
                  size_hint: int | None = None) -> int | None:
    """Download ``url`` into ``part`` (appending to what is there); when complete, return the size the server
    announced for the whole file (None where it announced none; ``size_hint`` is only an estimate)."""
    import requests
    from tqdm import tqdm

    opt = opt or HttpOptions()
    start, attempt, pages = time.monotonic(), 0, 0
    session = requests.Session()
    part.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if time.monotonic() - start > opt.deadline:
            raise FetchError(f"{url}: not complete after {opt.deadline:.0f} s (deadline)")
        have = part.stat().st_size if part.exists() else 0
        try:
            resp = session.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True,
                               timeout=opt.timeout)
        except requests.RequestException as exc:
            attempt = _retry_or_raise(url, attempt, opt, f"{type(exc).__name__}")
            continue
        with resp:
            if resp.status_code == 416 and have:                  # nothing left: the part is complete
                whole = resp.headers.get("Content-Range", "").rpartition("/")[2]
                return int(whole) if whole.isdigit() else None
            if resp.status_code == 429 or resp.status_code >= 500:
                attempt = _retry_or_raise(url, attempt, opt, f"HTTP {resp.status_code}", resp.headers.get("Retry-After"))
                continue
            if resp.status_code >= 400:
                raise FetchError(f"{url}: HTTP {resp.status_code} ({resp.reason}); is the release still there?")
            if gdrive and _is_confirmation(resp):
                pages += 1
                if pages > 3:
                    raise FetchError(f"{url}: Google Drive keeps answering with a web page instead of the file "
                                     f"(a quota or permission page?); try again later or download it by hand")
                url = _confirmed_url(url, resp.text)
                continue
            if have and resp.status_code != 206:                 # range ignored: start again
                have = 0
            length = resp.headers.get("Content-Length")
            announced = have + int(length) if length and length.isdigit() else None
            total = announced or size_hint
            check_free(part.parent, (total - have) if total else None, url)
            try:
                _stream(resp, part, have, total, opt.progress and tqdm)
            except (requests.RequestException, ConnectionError) as exc:
                attempt = _retry_or_raise(url, attempt, opt, f"connection dropped ({type(exc).__name__})")
                continue
            if announced and part.stat().st_size < announced:
                attempt = _retry_or_raise(url, attempt, opt,
                                          f"truncated body ({part.stat().st_size} of {announced} bytes)")
                continue
            return announced


def _stream(resp, part: Path, have: int, total: int | None, bar_cls) -> None:
    bar = bar_cls(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[:40]) if bar_cls else None
    try:
        with part.open("ab" if have else "wb") as fh:
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
                if bar:
                    bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == 28:
            raise FetchError(f"{part}: the disk is full ({part.stat().st_size} bytes kept; the download "
                             f"continues from there once space is freed)") from None
        raise
    finally:
        if bar:
            bar.close()


def _retry_or_raise(url: str, attempt: int, opt: HttpOptions, why: str, retry_after: str | None = None) -> int:
    if attempt >= opt.retries:
        raise FetchError(f"{url}: {why}, still after {opt.retries} retries")
    wait = float(retry_after) if retry_after and retry_after.isdigit() else opt.backoff * 2 ** attempt
    log.warning("%s: %s; retrying in %.1f s (%d/%d)", url, why, wait, attempt + 1, opt.retries)
    time.sleep(min(wait, 300.0))
    return attempt + 1


def _is_confirmation(resp) -> bool:
    return resp.headers.get("Content-Type", "").startswith("text/html") and \
        "Content-Disposition" not in resp.headers


def _confirmed_url(url: str, html: str) -> str:
    from gdown.download import get_url_from_gdrive_confirmation
    from gdown.exceptions import FileURLRetrievalError

    try:
        return get_url_from_gdrive_confirmation(html)
    except FileURLRetrievalError as exc:
        raise FetchError(f"{url}: Google Drive did not give a download link: {str(exc)[:300]}") from None


def copy_local(src: Path, part: Path, *, inside: Path) -> Path:
    """A repository file or folder copied to ``part`` (a folder is copied whole); ``src`` must resolve to a place
    ``inside`` that folder (a link out of the repository is refused)."""
    if not src.resolve().is_relative_to(inside.resolve()):
        raise FetchError(f"{src}: resolves outside {inside}; a repository source must stay in the repository")
    if not src.exists():
        raise FetchError(f"{src}: not found (the repository's demo release is incomplete)")
    if part.exists():
        shutil.rmtree(part) if part.is_dir() else part.unlink()
    part.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, part) if src.is_dir() else shutil.copyfile(src, part)
    return part
