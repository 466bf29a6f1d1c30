"""``python -m omgm.data.kb_import``: stream a KB JSON into the SQLite store that :class:`SqliteKnowledgeBase` reads.

- Never holds the whole JSON: members are decoded one at a time (:mod:`omgm.data.jsonstream`).
- Keeps the original key order as ``row`` (= FAISS row of a summary index).
- Resumable: the store is written as ``OUT.partial``, committed every ``--commit_every`` entities together with
  the byte offset reached; a killed import started again continues from there. The finished store is
  renamed into place, so a file at ``OUT`` is always complete.
- A duplicated URL is an error naming both rows. Optionally imports the wiki-image CSVs for title lookups.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from tqdm import tqdm

from omgm.config import ConfigError, nonnegative_int, parse_with_config, positive_int, require
from omgm.data.jsonstream import iter_object_members
from omgm.data.kb import STORE_FORMAT, STORE_VERSION, KnowledgeBaseError, UrlOrderHash
from omgm.data.kb_audit import MAX_SKIPPED, Audit
from omgm.data.kb_jsonl import entity_of, is_jsonl, iter_jsonl
from omgm.data.wiki_images import CsvStats, iter_csv_rows
from omgm.errors import cli_errors
from omgm.help import command_parser
from omgm.io import OutputLock, atomic_write, check_writable

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS entities(row INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, title TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wiki_images(title TEXT NOT NULL, ord INTEGER NOT NULL, img_path TEXT NOT NULL,
                                       PRIMARY KEY(title, ord)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS url_images(title TEXT NOT NULL, url TEXT NOT NULL, img_path TEXT NOT NULL,
                                      PRIMARY KEY(title, url)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS wiki_images_path ON wiki_images(title, img_path);
"""
# one CSV row: numbered after the title's rows so far, dropped when the title has it or has max_per_title already
# (SQLite does the de-duplication: the import's memory does not grow with the rows)
_ADD_IMAGE = ("INSERT OR IGNORE INTO wiki_images(title, ord, img_path) SELECT ?1, COUNT(*), ?2 FROM wiki_images "
              "WHERE title = ?1 HAVING COUNT(*) < ?3")


def _source_id(path: Path) -> str:
    st = path.stat()
    return json.dumps({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _set_meta(con: sqlite3.Connection, **kv: object) -> None:
    con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [(k, str(v)) for k, v in kv.items()])


def _open_partial(partial: Path, source: Path, images_dir: str | Path | None = None
                  ) -> tuple[sqlite3.Connection, int, int]:
    """Open (or create) the partial store; return it with the resume (row, byte offset). A partial import made
    with another source file or another ``--images_dir`` is refused (its rows hold the other paths)."""
    images = str(Path(images_dir).resolve()) if images_dir else ""
    con = sqlite3.connect(partial)
    con.executescript(SCHEMA)
    # a rollback journal, not WAL: a bulk load appends new pages, which a rollback journal does not copy, while WAL
    # writes every page twice (log, then checkpoint): 2.0x the store's size written vs ~1.0x (benchmarks/full_scale.py)
    con.execute("PRAGMA journal_mode=TRUNCATE")
    con.execute("PRAGMA synchronous=NORMAL")
    meta = dict(con.execute("SELECT key, value FROM meta"))
    if not meta:
        _set_meta(con, format=STORE_FORMAT, version=STORE_VERSION, source=_source_id(source),
                  count=0, offset=0, complete=0, import_images_dir=images)
        con.commit()
        return con, 0, 0
    if meta.get("source") != _source_id(source):
        con.close()
        raise KnowledgeBaseError(f"{partial} is an unfinished import of a different file ({meta.get('source')}); "
                                 f"delete it or pass --overwrite")
    if meta.get("import_images_dir", images) != images:
        con.close()
        raise KnowledgeBaseError(f"{partial} is an unfinished import made with --images_dir "
                                 f"{meta.get('import_images_dir') or '(none)'}, not {images or '(none)'}: resume with "
                                 f"the same folder, or pass --overwrite to start again")
    return con, int(meta["count"]), int(meta["offset"])


def _insert_batch(con: sqlite3.Connection, batch: list[tuple], offset: int, source: Path) -> None:
    try:
        con.executemany("INSERT INTO entities(row, url, title, data) VALUES (?, ?, ?, ?)", batch)
    except sqlite3.IntegrityError:
        con.rollback()
        for row, url, _, _ in batch:
            hit = con.execute("SELECT row FROM entities WHERE url = ?", (url,)).fetchone()
            rows = sorted(({hit[0]} if hit else set()) | {r for r, u, _, _ in batch if u == url})
            if len(rows) > 1:
                raise KnowledgeBaseError(f"{source}: duplicate URL {url!r} at rows {rows[0]} and {rows[1]}; "
                                         f"row order would not match a FAISS index") from None
        raise
    _set_meta(con, count=batch[-1][0] + 1, offset=offset)
    con.commit()


def _members(source: Path, start_byte: int, images_dir: Path | None, con: sqlite3.Connection):
    """``(url, entity, byte offset)`` from a KB JSON, or from a JSONL of your own entities (whose images go to
    the ``wiki_images`` table as they are read)."""
    if not is_jsonl(source):
        yield from iter_object_members(source, start_byte=start_byte)
        return
    for n, line, end in iter_jsonl(source, start_byte):
        url, entity, images = entity_of(line, n, source, images_dir)
        con.execute("DELETE FROM wiki_images WHERE title = ?", (entity["title"],))
        con.executemany("INSERT OR IGNORE INTO wiki_images VALUES (?, ?, ?)",
                        [(entity["title"], i, rel) for i, (_, rel) in enumerate(images)])
        con.executemany("INSERT OR IGNORE INTO url_images VALUES (?, ?, ?)",
                        [(entity["title"], ref, rel) for ref, rel in images if ref != rel])
        yield url, entity, end


def import_entities(source: Path, con: sqlite3.Connection, start_row: int, start_byte: int,
                    *, commit_every: int = 2000, progress: bool = True, images_dir: Path | None = None,
                    audit: Audit | None = None) -> int:
    """Append entities from ``source`` starting at ``start_byte``; returns the entity count. ``audit`` counts
    (and mends) the entities the import tolerates (:mod:`omgm.data.kb_audit`)."""
    audit = audit or Audit.resumed(con)
    size = source.stat().st_size
    bar = tqdm(total=size, initial=start_byte, unit="B", unit_scale=True, desc=f"import {source.name}",
               disable=not progress)
    row, last, batch = start_row, start_byte, []
    for url, value, end in _members(source, start_byte, images_dir, con):
        value = audit.entity(url, value, row, str(source))
        title = value.get("title") or ((value.get("section_titles") or [""])[0])
        batch.append((row, url, title, json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
        row += 1
        if len(batch) >= commit_every:
            _set_meta(con, **audit.save())
            _insert_batch(con, batch, end, source)
            bar.update(end - last)
            last, batch = end, []
    if batch:
        _set_meta(con, **audit.save())
        _insert_batch(con, batch, end, source)
        bar.update(end - last)
    bar.close()
    if audit.report():
        print(audit.report(), file=sys.stderr)
    return row


def import_wiki_images(con: sqlite3.Connection, csv_dir: Path, max_per_title: int | None = None,
                       progress: bool = True) -> CsvStats:
    """Replace the ``wiki_images`` table with the CSVs' ``(title, img_path)`` rows, de-duplicated per title (every
    distinct path by default, as reading the CSVs keeps them: the first existing ones are chosen at lookup)."""
    cap = max_per_title or 1 << 62
    stats = CsvStats()
    con.execute("DELETE FROM wiki_images")
    batch = []
    for title, rel in tqdm(iter_csv_rows(csv_dir, stats), desc="import wiki-image CSVs", unit=" rows",
                           disable=not progress):
        batch.append((title, rel, cap))
        if len(batch) >= 50000:
            con.executemany(_ADD_IMAGE, batch)
            batch = []
    con.executemany(_ADD_IMAGE, batch)
    _set_meta(con, wiki_images=1, wiki_image_csv_dir=str(Path(csv_dir).resolve()), wiki_image_rows=stats.rows,
              wiki_image_malformed=stats.malformed)
    con.commit()
    return stats


def run_import(knowledge_base: str | Path, out: str | Path, wiki_img_csv_dir: str | Path | None = None,
               overwrite: bool = False, *, commit_every: int = 2000, progress: bool = True,
               images_dir: str | Path | None = None, max_skipped: int = MAX_SKIPPED) -> Path:
    """Import a KB JSON (or a JSONL of your own entities, see :mod:`omgm.data.kb_jsonl`) into ``out``."""
    source, out = Path(knowledge_base), Path(out)
    if not source.is_file():
        raise KnowledgeBaseError(f"knowledge base file not found: {source}")
    if is_jsonl(source) and wiki_img_csv_dir:
        raise KnowledgeBaseError("a JSONL knowledge base lists its own images: --wiki_img_csv_dir does not apply")
    check_writable(out, inputs=[source, images_dir])
    if out.exists() and not overwrite:
        raise KnowledgeBaseError(f"{out} exists; pass --overwrite to replace it")
    with OutputLock(out):
        return _import_locked(source, out, wiki_img_csv_dir, overwrite, commit_every, progress, images_dir,
                              max_skipped)


def _import_locked(source: Path, out: Path, wiki_img_csv_dir, overwrite: bool, commit_every: int, progress: bool,
                   images_dir, max_skipped: int) -> Path:
    partial = out.with_name(out.name + ".partial")
    if overwrite:
        for p in (partial, *(Path(f"{partial}-{x}") for x in ("wal", "shm", "journal"))):
            p.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    con, row, offset = _open_partial(partial, source, images_dir)
    try:
        if row:
            print(f"resuming import of {source} at entity {row} (byte {offset})", file=sys.stderr)
        count = import_entities(source, con, row, offset, commit_every=commit_every, progress=progress,
                                images_dir=Path(images_dir) if images_dir else None,
                                audit=Audit.resumed(con, max_skipped))
        if count == 0:
            raise KnowledgeBaseError(f"{source}: no entity to import (an empty knowledge base)")
        if is_jsonl(source):
            _set_meta(con, images_dir=str(Path(images_dir).resolve()) if images_dir else "")
            _finish_jsonl_images(con, out)
        elif wiki_img_csv_dir:
            stats = import_wiki_images(con, Path(wiki_img_csv_dir), progress=progress)
            print(f"wiki-image CSVs: {stats.files} files, {stats.rows} rows, {stats.malformed} malformed rows "
                  f"skipped" + "".join(f"\n  e.g. {e}" for e in stats.examples), file=sys.stderr)
        url_hash = UrlOrderHash.of(u for (u,) in con.execute("SELECT url FROM entities ORDER BY row"))
        _set_meta(con, count=count, url_order_hash=url_hash, complete=1,
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        con.commit()
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()
    os.replace(partial, out)
    print(f"imported {count} entities from {source} into {out}", file=sys.stderr)
    return out


def _finish_jsonl_images(con: sqlite3.Connection, out: Path) -> None:
    """Mark the store as carrying its own image list; write the URL images as a wiki-image CSV to download."""
    import csv

    _set_meta(con, wiki_images=1, wiki_image_csv_dir="")
    root = Path(dict(con.execute("SELECT key, value FROM meta")).get("images_dir") or ".")
    urls = {p for (p,) in con.execute("SELECT img_path FROM url_images")}
    local = [(t, p) for t, p in con.execute("SELECT title, img_path FROM wiki_images") if p not in urls]
    absent = [(t, p) for t, p in local if not (root / p).is_file()]
    if absent:
        print(f"{len(absent)} of {len(local)} listed local images do not exist under {root} (their entities get "
              f"step-2 score 0 unless another of their images exists), e.g. "
              + "; ".join(f"{t}: {p}" for t, p in absent[:3]), file=sys.stderr)
        _set_meta(con, missing_local_images=len(absent))
    rows = list(con.execute("SELECT title, url, img_path FROM url_images ORDER BY title, url"))
    if rows:
        folder = out.with_name(out.name + ".images")
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "wiki_image_url_part_1_processed.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["title", "image_URL", "img_path", "caption"])
            w.writerows([(t, u, p, "") for t, u, p in rows])
        print(f"{len(rows)} images are URLs: fetch them with `omgm data download-images --csv_dir {folder} "
              f"--out IMAGES_DIR` (IMAGES_DIR = your --images_dir)", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("kb import", __doc__)
    p.add_argument("--kb_json", help="the KB JSON ({url: {title, section_titles, ...}})")
    p.add_argument("--jsonl", default=None, help="or your own KB: one entity per line {url, title, sections, images}")
    p.add_argument("--images_dir", default=None, help="--jsonl: the folder its image paths are relative to")
    p.add_argument("--out", help="the SQLite store to write (e.g. encyclopedic_kb_wiki.sqlite)")
    p.add_argument("--wiki_img_csv_dir", default=None, help="also import the wiki_image_url_part_*_processed.csv files")
    p.add_argument("--commit_every", type=positive_int, default=2000)
    p.add_argument("--max_skipped_entities", type=nonnegative_int, default=MAX_SKIPPED,
                   help="entities with unequal section lists kept without sections before the import stops "
                        "(0: strict)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_with_config(build_parser(), argv)
    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.jsonl:
        for flag in ("--kb_json", "--wiki_img_csv_dir"):
            dest = flag[2:]
            if flag in given:
                raise ConfigError(f"--jsonl and {flag} conflict: a JSONL knowledge base is imported with its own "
                                  f"images; give one of them")
            if getattr(args, dest):
                log.warning("%s %s (from a config file or OMGM_%s) is ignored: --jsonl is imported instead",
                            flag, getattr(args, dest), dest.upper())
        args.kb_json = args.jsonl
    require(args, "kb_json", "out")
    run_import(args.kb_json, args.out, None if args.jsonl else args.wiki_img_csv_dir, args.overwrite,
               commit_every=args.commit_every, progress=not args.no_progress, images_dir=args.images_dir,
               max_skipped=args.max_skipped_entities)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
