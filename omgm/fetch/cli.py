"""``omgm fetch DATASET --root DIR``: every released file the dataset's published rows need; resumable, verified.

    omgm fetch evqa --root $DATA                  # E-VQA: the split, the KB, the index, the reranker, the models...
    omgm fetch --list evqa --root $DATA           # each artifact, its rows, source, size and status
    omgm fetch evqa --root $DATA --only evqa-index,reranker
    omgm fetch demo --root /tmp/omgm_demo         # the demo release (this repository's files), same code

Files land under ``--root`` in the layout ``omgm reproduce`` expects. The first complete download of each file is
recorded in ``ROOT/omgm_fetch.lock.json`` (size, sha256; the authors publish none) and later copies are checked
against it. Downloads continue where a killed run stopped. Query images: only those the split references.
One fetch per root at a time: a second one waits ``--wait`` seconds, then refuses, naming the first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omgm.config import nonnegative_float, nonnegative_int, positive_float
from omgm.errors import cli_errors
from omgm.fetch.download import HttpOptions
from omgm.fetch.fetcher import Fetcher
from omgm.fetch.lock import FetchError, RootLock, prepare_root
from omgm.fetch.registry import Artifact, load_registry
from omgm.help import command_parser


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("fetch", __doc__)
    p.add_argument("dataset", help="evqa, infoseek or demo (the registry's datasets)")
    p.add_argument("--root", default=os.environ.get("OMGM_DATA", "omgm_data"),
                   help="where the files go (the layout omgm reproduce reads); default: $OMGM_DATA or ./omgm_data")
    p.add_argument("--list", action="store_true", help="list the artifacts and their status; fetch nothing")
    p.add_argument("--verify", action="store_true", help="with --list: hash every present file against the lock")
    p.add_argument("--rows", default=None, help="comma-separated published rows (default: all; 'train' for "
                                                 "retraining files)")
    p.add_argument("--only", default=None, help="comma-separated artifact names (see --list)")
    p.add_argument("--registry", default=None, help="another registry file with the same schema")
    p.add_argument("--keep_archives", type=int, choices=(0, 1), default=1,
                   help="keep downloaded archives (verified against the lock) after unpacking")
    p.add_argument("--retries", type=nonnegative_int, default=5, help="per file, on 429/5xx/dropped connections")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per connection or read")
    p.add_argument("--wait", type=nonnegative_float, default=0.0,
                   help="seconds to wait for another omgm fetch using the same --root (one fetch per root at a time)")
    p.add_argument("--no_progress", action="store_true")
    return p


def _size(fetcher: Fetcher, a: Artifact) -> str:
    known = fetcher.recorded(a)
    if known:
        return f"{known['size'] / 2**20:,.1f} MiB"
    if not a.download_size:
        return "?"
    unpacked = f", ~{a.unpacked_size / 2**30:,.1f} GiB unpacked" if a.unpacked_size else ""
    return f"~{a.download_size / 2**30:,.1f} GiB download{unpacked}"


def list_artifacts(fetcher: Fetcher, arts: list[Artifact], verify: bool) -> list[dict]:
    rows = []
    for a in arts:
        t = fetcher.target(a)
        status = fetcher.lock.status(a.dest, t, verify) if a.unpack == "none" and a.source_kind != "hub" else \
            ("present" if fetcher.is_done(a) else "missing")
        if a.source_kind == "manual" and not t.exists():
            status = "missing (manual: " + a.source["manual"] + ")"
        rows.append({"name": a.name, "rows": ",".join(a.rows), "source": a.describe_source(),
                     "size": _size(fetcher, a), "dest": str(t), "status": status})
    return rows


def missing_images(fetcher: Fetcher) -> str | None:
    """How many query images the split references that are not on disk, and the rows that need them."""
    found = fetcher.query_images()
    if found is None:
        return None
    n, missing = found["questions"], found["missing"]
    return (f"query images: {n - len(missing)} of {n} on disk; {len(missing)} missing "
            f"(rows affected: {', '.join(fetcher.registry.dataset(fetcher.dataset)['rows'])})"
            + (f"; first: {missing[0]}" if missing else ""))


def fetch_all(fetcher: Fetcher, arts: list[Artifact]) -> int:
    """Fetch each artifact in order, one line each; the number that failed."""
    failed = 0
    for a in arts:
        try:
            print(f"[{a.name}] {fetcher.fetch(a)}", flush=True)
        except FetchError as exc:
            failed += 1
            print(f"[{a.name}] FAILED: {exc}", file=sys.stderr, flush=True)
    return failed


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = load_registry(args.registry)
    http = HttpOptions(retries=args.retries, timeout=args.timeout, progress=not args.no_progress)
    arts = registry.select(args.dataset, args.rows.split(",") if args.rows else None,
                           args.only.split(",") if args.only else None)
    root = Path(args.root)

    def fetcher(create: bool) -> Fetcher:
        return Fetcher(registry, root, args.dataset, http=http, keep_archives=bool(args.keep_archives), create=create)

    if args.list:
        for r in list_artifacts(fetcher(False), arts, args.verify):
            print(f"{r['name']:<28} {r['size']:>12}  {r['status']:<34} rows={r['rows']}\n"
                  f"{'':<28} {r['source']} -> {r['dest']}")
        return 0
    with RootLock(prepare_root(root), wait=args.wait):
        f = fetcher(True)                      # reads the lock file as the fetch before us left it
        failed = fetch_all(f, arts)
    note = missing_images(f)
    if note:
        print(note)
    print(json.dumps({"dataset": args.dataset, "root": str(root), "artifacts": len(arts), "failed": failed,
                      "lock": str(f.lock.path)}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
