"""Download the Wikipedia images of the 13 wiki-image CSVs into exactly their ``img_path`` layout.

    omgm data download-images --csv_dir wiki_image_csv/ --out wiki_images/ \
        [--workers 8] [--rate 10] [--only_entities step1_results.json] [--limit 1000]

- Concurrent (``--workers``) under one global rate limit (``--rate`` requests/s), with a descriptive
  User-Agent (Wikimedia asks for one with contact details: set ``--user_agent``).
- Retries 429, 5xx, timeouts, dropped connections and truncated bodies with exponential backoff, and honours
  ``Retry-After``. A 4xx other than 429, or bytes that are not an image, fail at once.
- Every file is decoded as an image before it is moved into place (written to ``NAME.part``, then renamed), so
  a file at its final path is complete; a re-run skips finished files and retries the failures.
- Failures (URL, path, reason, attempts) go to ``--failures`` (JSONL); a summary is printed.
- ``--only_entities``: a step-1/2 result file (the titles of its retrieved entities) or a text file of
  titles, to fetch just what a test run needs; ``--limit`` caps the number of files.
"""
from __future__ import annotations

import argparse
import email.utils
import errno
import http.client
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from omgm.config import nonnegative_int, positive_float, positive_int
from omgm.data.results import write_json_atomic
from omgm.data.wiki_images import CsvStats, iter_csv_records
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser
from omgm.io import OutputLock, atomic_write, check_writable

DEFAULT_UA = "omgm-wiki-image-downloader/0.1 (research use; https://github.com/omgm; set --user_agent with your contact)"


class DiskFullError(OmgmError, OSError):
    """No space left: the run stops (retrying cannot help); finished files stay, no partial file is left."""


@dataclass(frozen=True)
class Task:
    title: str
    url: str
    rel: str


@dataclass
class Options:
    out: Path
    workers: int = 8
    rate: float = 10.0
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 120.0
    user_agent: str = DEFAULT_UA


class RateLimiter:
    """At most ``rate`` acquisitions per second across all threads (evenly spaced)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.lock = threading.Lock()
        self.next = time.monotonic()

    def acquire(self) -> None:
        with self.lock:
            now = time.monotonic()
            wait = self.next - now
            self.next = max(now, self.next) + self.interval
        if wait > 0:
            time.sleep(wait)


def only_titles(path: str | Path) -> set[str]:
    """Titles from a step-1/2 result file (its retrieved entities) or from a text file, one per line."""
    p = Path(path)
    if p.suffix == ".json":
        from omgm.data.results import read_retrieval

        rf = read_retrieval(p)
        return {e.get("title", "") for v in rf.results.values() for e in v["retrieved_entities"]} - {""}
    return {line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}


def plan(csv_dir: str | Path, out: Path, titles: set[str] | None = None,
         limit: int | None = None) -> tuple[list[Task], int, CsvStats]:
    """Tasks still to do (distinct paths, not on disk yet), the number already done, and CSV statistics."""
    stats, seen, todo, done = CsvStats(), set(), [], 0
    for title, url, rel in iter_csv_records(csv_dir, stats):
        if rel in seen or (titles is not None and title not in titles):
            continue
        seen.add(rel)
        if (out / rel).is_file():
            done += 1
            continue
        if not url.startswith(("http://", "https://")):
            stats.malformed += 1
            continue
        todo.append(Task(title, url, rel))
        if limit and len(todo) + done >= limit:
            break
    return todo, done, stats


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def save_verified(data: bytes, target: Path) -> None:
    """Check that ``data`` decodes as an image, then write it atomically to ``target``."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as fh:
            fh.write(data)
        os.replace(part, target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"disk full while writing {target}; free space and run again "
                                f"(finished files are kept)") from None
        raise


def _read_within(resp, seconds: float, chunk: int = 1 << 16) -> bytes:
    """The whole body, or TimeoutError once ``seconds`` have passed in total (a server dripping bytes would
    otherwise hold a worker forever: the socket timeout only bounds each read)."""
    start, parts = time.monotonic(), []
    expected = resp.headers.get("Content-Length")
    while True:
        block = resp.read1(chunk)
        if not block:
            data = b"".join(parts)
            if expected and expected.isdigit() and len(data) < int(expected):
                raise http.client.IncompleteRead(data, int(expected) - len(data))
            return data
        parts.append(block)
        if time.monotonic() - start > seconds:
            raise TimeoutError(f"body not complete within {seconds:.0f} s")


def fetch(task: Task, opt: Options, limiter: RateLimiter) -> tuple[bool, str, int]:
    """Download one file with retries; returns (ok, reason, attempts)."""
    reason = ""
    for attempt in range(1, opt.retries + 2):
        wait = None
        limiter.acquire()
        try:
            req = urllib.request.Request(task.url, headers={"User-Agent": opt.user_agent})
            with urllib.request.urlopen(req, timeout=opt.timeout) as resp:
                data = _read_within(resp, opt.timeout)
            try:
                save_verified(data, opt.out / task.rel)
            except DiskFullError:
                raise
            except Image.DecompressionBombError:
                return False, "decompression bomb (more pixels than Pillow's safety limit)", attempt
            except OSError as exc:
                if exc.errno is not None:             # the file system's answer; an undecodable image has none
                    return False, f"cannot write: {exc.strerror}", attempt
                return False, f"not an image ({len(data)} bytes)", attempt
            return True, "", attempt
        except (ValueError, http.client.InvalidURL) as exc:     # a URL with control characters, or no scheme
            return False, f"bad URL: {str(exc)[:80]}", attempt
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                return False, reason, attempt
            wait = _retry_after(exc.headers)
        except http.client.IncompleteRead:
            reason = "truncated body"
        except (TimeoutError, socket.timeout):
            reason = "timeout"
        except urllib.error.URLError as exc:
            reason = "timeout" if isinstance(exc.reason, (TimeoutError, socket.timeout)) else f"unreachable: {exc.reason}"
        except (ConnectionError, http.client.HTTPException) as exc:
            reason = f"connection error: {type(exc).__name__}"
        if attempt <= opt.retries:
            time.sleep(min(opt.max_backoff, wait if wait is not None else opt.backoff * 2 ** (attempt - 1)))
    return False, reason, opt.retries + 1


def _write_failures(path: Path, failures: list[dict]) -> None:
    """The failure manifest; if even that cannot be written (disk full), say so without hiding the first error."""
    try:
        with atomic_write(path) as tmp:
            tmp.write_text("".join(json.dumps(f) + "\n" for f in failures), encoding="utf-8")
    except OSError as exc:
        print(f"warning: could not write the failure manifest {path}: {exc}", file=sys.stderr)


def run(csv_dir: str | Path, opt: Options, titles: set[str] | None = None, limit: int | None = None,
        *, failures_path: Path | None = None, progress: bool = True) -> dict:
    check_writable(opt.out / "download_summary.json", *([failures_path] if failures_path else []))
    with OutputLock(opt.out / "download_summary.json"):      # one downloader per folder
        return _run_locked(csv_dir, opt, titles, limit, failures_path, progress)


def _run_locked(csv_dir, opt: Options, titles, limit, failures_path, progress) -> dict:
    todo, done, stats = plan(csv_dir, opt.out, titles, limit)
    failures_path = failures_path or opt.out / "download_failures.jsonl"
    limiter, counts, failures = RateLimiter(opt.rate), Counter(), []
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="wiki images", unit=" img", disable=not progress, smoothing=0.05)
    try:
        with ThreadPoolExecutor(max_workers=opt.workers) as pool:
            futures = {pool.submit(fetch, t, opt, limiter): t for t in todo}
            for fut in as_completed(futures):
                ok, reason, attempts = fut.result()
                task = futures[fut]
                counts["downloaded" if ok else "failed"] += 1
                counts["retries"] += attempts - 1
                if not ok:
                    failures.append({"url": task.url, "img_path": task.rel, "title": task.title, "reason": reason,
                                     "attempts": attempts})
                bar.update(1)
    except DiskFullError:
        for f in futures:
            f.cancel()
        raise
    finally:
        bar.close()
        _write_failures(failures_path, failures)
    summary = {"planned": len(todo), "already_on_disk": done, "downloaded": counts["downloaded"],
               "failed": counts["failed"], "retries": counts["retries"], "csv_rows": stats.rows,
               "malformed_csv_rows": stats.malformed, "malformed_examples": stats.examples,
               "failure_reasons": dict(Counter(f["reason"] for f in failures)),
               "failures_file": str(failures_path), "seconds": round(time.time() - t0, 1)}
    write_json_atomic(opt.out / "download_summary.json", summary, indent=2)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("data download-images", __doc__)
    p.add_argument("--csv_dir", required=True)
    p.add_argument("--out", required=True, help="wiki-image root: files land at OUT/img_path")
    p.add_argument("--workers", type=positive_int, default=8)
    p.add_argument("--rate", type=positive_float, default=10.0, help="requests per second, all workers together")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="seconds for a whole image (connection, every read, the full body)")
    p.add_argument("--retries", type=nonnegative_int, default=5)
    p.add_argument("--backoff", type=positive_float, default=1.0, help="first retry delay (doubles each time)")
    p.add_argument("--user_agent", default=DEFAULT_UA)
    p.add_argument("--only_entities", default=None, help="step-1/2 result JSON or a text file of titles")
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--failures", default=None, help="failure manifest (default OUT/download_failures.jsonl)")
    p.add_argument("--no_progress", action="store_true")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    opt = Options(Path(a.out), a.workers, a.rate, a.timeout, a.retries, a.backoff, user_agent=a.user_agent)
    titles = only_titles(a.only_entities) if a.only_entities else None
    summary = run(a.csv_dir, opt, titles, a.limit, failures_path=Path(a.failures) if a.failures else None,
                  progress=not a.no_progress)
    print(json.dumps(summary, indent=2))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
