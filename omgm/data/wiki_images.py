"""Entity title -> Wikipedia image files, from the 13 ``wiki_image_url_part_{n}_processed.csv`` files.

Each CSV has a header row and columns, by position: 0 = entity title, 1 = image URL, 2 = ``img_path``
relative to the wiki-image root, 3 = caption. Lookup is by *title*; at most 10 distinct images that exist
on disk are kept per title, in CSV order; the pipeline uses the first.

Sources: the CSV folder (read into memory), or the ``wiki_images`` table of a KB store when the CSVs were
imported with ``kb_import --wiki_img_csv_dir``. Rows with fewer than 3 columns are skipped and counted.
"""
from __future__ import annotations

import csv
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omgm.errors import OmgmError
from omgm.settings import setting

log = logging.getLogger(__name__)
MAX_IMAGES_PER_TITLE = 10
CSV_GLOB = "wiki_image_url_part_*_processed.csv"
_PART = re.compile(r"part_(\d+)_")


class WikiImageError(OmgmError, ValueError):
    """The image CSVs cannot be used (none found, unreadable); the message names the folder or file."""


@dataclass
class CsvStats:
    files: int = 0
    rows: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)


def csv_files(csv_dir: str | Path) -> list[Path]:
    """The image CSVs of a folder, ordered by part number (part_2 before part_10)."""
    d = Path(csv_dir)
    if not d.is_dir():
        raise WikiImageError(f"wiki-image CSV folder not found: {d}")
    files = sorted(d.glob(CSV_GLOB), key=lambda p: int(_PART.search(p.name).group(1)) if _PART.search(p.name) else 0)
    if not files:
        raise WikiImageError(f"{d}: no files named {CSV_GLOB}")
    return files


def iter_csv_records(csv_dir: str | Path, stats: CsvStats | None = None) -> Iterator[tuple[str, str, str]]:
    """Yield ``(title, image_url, img_path)`` in file and row order; malformed rows are counted in ``stats``.

    Columns are read by position (0 title, 1 URL, 2 path), as the authors' code reads them; a header with other
    names is one warning per file, a header of fewer than four columns an error naming the file (a wrong file).
    """
    stats = stats if stats is not None else CsvStats()
    for f in csv_files(csv_dir):
        stats.files += 1
        with f.open(newline="", encoding="utf-8-sig") as fh:
            yield from _records(f, csv.reader(fh), stats)


def _records(f: Path, reader, stats: CsvStats) -> Iterator[tuple[str, str, str]]:
    """The good rows of one CSV (bad ones counted); an undecodable file is one error naming its line."""
    try:
        header = next(reader, None)               # skipped, as the authors' code skips it
        if header is None or len(header) < 4:
            raise WikiImageError(f"{f}: the header {header} has fewer than the layout's 4 columns (title, "
                                 f"image_URL, img_path, caption); a wrong file?")
        if not _header_fits(header):
            log.warning("%s: the header %s is not the expected (title, image_URL, img_path, caption): its columns "
                        "are read by position, as the authors' code reads them", f, header[:4])
        for row in reader:
            stats.rows += 1
            why = "fewer than 3 fields or an empty title/img_path" if len(row) < 3 or not row[0] or not row[2] \
                else ("img_path leaves the image folder (absolute, with '..' or a NUL byte)"
                      if not safe_relative(row[2]) else "")
            if why:
                stats.malformed += 1
                if len(stats.examples) < 5:
                    stats.examples.append(f"{f}, line {reader.line_num}: {why}: {row[:3]}")
                continue
            yield row[0], row[1], row[2]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise WikiImageError(f"{f}, line {reader.line_num}: not a readable UTF-8 CSV ({str(exc)[:100]})") from None


def plain_name(name: str) -> bool:
    """A bare file name (an image id): no path separator, no NUL, not '.' or '..'."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def safe_relative(rel: str) -> bool:
    """A path that stays inside the folder it is joined to: relative, no ``..`` part, no drive, no NUL byte (which
    no file system accepts)."""
    from pathlib import PurePosixPath, PureWindowsPath

    p = PurePosixPath(rel.replace("\\", "/"))
    return bool(rel) and "\0" not in rel and not p.is_absolute() and ".." not in p.parts and not PureWindowsPath(rel).drive


def _header_fits(header: list[str] | None) -> bool:
    """The columns are read by position: check that they are the ones expected there."""
    if header is None or len(header) < 3:
        return False
    names = [h.strip().lower().lstrip("\ufeff") for h in header[:3]]
    return "title" in names[0] and "url" in names[1] and "path" in names[2]


def iter_csv_rows(csv_dir: str | Path, stats: CsvStats | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(title, img_path)`` in file and row order; malformed rows are counted in ``stats``."""
    for title, _, rel in iter_csv_records(csv_dir, stats):
        yield title, rel


class WikiImages:
    """Title -> existing image paths under ``image_root``."""

    def __init__(self, image_root: str | Path, csv_dir: str | Path | None = None,
                 store: sqlite3.Connection | None = None, max_per_title: int = MAX_IMAGES_PER_TITLE) -> None:
        if csv_dir is None and store is None:
            raise WikiImageError("give the wiki-image CSV folder (--wiki_img_csv_dir) or a KB store with "
                                 "imported image CSVs")
        self.root = Path(image_root)
        self.max = max_per_title
        self.stats = CsvStats()
        self._store = store
        self._by_title: dict[str, list[str]] | None = None
        if store is None:
            self._by_title = {}
            for title, rel in iter_csv_rows(csv_dir, self.stats):
                paths = self._by_title.setdefault(title, [])
                if rel not in paths:
                    paths.append(rel)

    def _candidates(self, title: str) -> list[str]:
        if self._by_title is not None:
            return self._by_title.get(title, [])
        cur = self._store.execute("SELECT img_path FROM wiki_images WHERE title = ? ORDER BY ord", (title,))
        return [r[0] for r in cur]

    def known(self, title: str) -> bool:
        """Whether the CSVs list any image for this title (existing on disk or not)."""
        return bool(self._candidates(title))

    def paths(self, title: str) -> list[Path]:
        """Up to ``max_per_title`` distinct image files for ``title`` that exist on disk, in CSV order."""
        out: list[Path] = []
        for rel in self._candidates(title):
            p = self.root / rel
            if p.is_file():
                out.append(p)
                if len(out) >= self.max:
                    break
        return out

    def locate(self, title: str) -> tuple[Path | None, str]:
        """The first existing image, or None with the reason: the title is not in the CSVs, or its files are
        not on disk."""
        path = self.first(title)
        if path is not None:
            return path, ""
        return None, ("wiki image file missing" if self.known(title) else "title not in the wiki-image CSVs")

    def first(self, title: str) -> Path | None:
        """The first existing image for ``title`` (what the reranker pairs with every section), or None."""
        for rel in self._candidates(title):
            if (self.root / rel).is_file():
                return self.root / rel
        return None


def wiki_images_for(kb, image_root: str | Path | None, csv_dir: str | Path | None = None) -> WikiImages:
    """Title lookup for ``kb``: from the KB store's imported CSVs when it imported this folder (or no folder is
    given), else from the CSV folder."""
    from omgm.data.kb import SqliteKnowledgeBase

    if isinstance(kb, SqliteKnowledgeBase) and "images_dir" in kb.meta:    # imported from JSONL: its own images
        own = kb.meta.get("images_dir") or None
        ignored = (["--wiki_img_csv_dir"] if csv_dir else []) + (
            ["--wiki_img_path_prefix"] if image_root and own and Path(image_root).resolve() != Path(own).resolve() else [])
        if ignored:
            log.warning("%s lists its own images (imported from JSONL): %s from the flags or a config file %s "
                        "ignored", kb.path, " and ".join(ignored), "is" if len(ignored) == 1 else "are")
        root = own or image_root
        if not root:
            raise WikiImageError(f"{kb.path} was imported without --images_dir: pass --wiki_img_path_prefix, the "
                                 f"folder its image paths are relative to")
        return WikiImages(root, store=kb.connection())
    if not image_root:
        raise WikiImageError("no wiki-image root: pass --wiki_img_path_prefix (or set it in the config)")
    stored = isinstance(kb, SqliteKnowledgeBase) and kb.has_wiki_images()
    if csv_dir and not (stored and _imported_from(kb, Path(csv_dir))):
        return WikiImages(image_root, csv_dir=csv_dir)
    if stored:                     # indexed lookups of the candidates only: start-up does not read the CSVs
        return WikiImages(image_root, store=kb.connection())
    raise WikiImageError("no wiki-image CSVs: pass --wiki_img_csv_dir, or use a KB store imported with "
                         "--wiki_img_csv_dir")


def _imported_from(kb, csv_dir: Path) -> bool:
    """Whether ``kb``'s store imported this very CSV folder (and no CSV in it changed since, by modification
    time): then its indexed rows stand for the folder, and reading 13 CSVs at every start is avoided."""
    recorded = kb.meta.get("wiki_image_csv_dir")
    if not recorded or not csv_dir.is_dir() or Path(recorded).resolve() != csv_dir.resolve():
        return False
    made = Path(kb.path).stat().st_mtime
    newer = [f.name for f in csv_files(csv_dir) if f.stat().st_mtime > made]
    if newer:
        log.warning("%s changed after %s imported it (%s): reading the CSVs; import them again to start faster",
                    csv_dir, kb.path, ", ".join(newer[:3]))
    return not newer


@dataclass(frozen=True)
class WikiSource:
    """Where the KB's images are: the root the CSVs' ``img_path`` values are relative to, and the CSV folder (not
    needed when the KB store holds the imported CSVs, or lists its own images)."""

    wiki_img_csv_dir: str | None = setting(help="the folder of the wiki_image_url_part_*_processed.csv files "
                                                "(or import them into the KB store)")
    wiki_img_path_prefix: str | None = setting(help="the wiki-image root: the CSVs' img_path values are relative to it")

    def open(self, kb) -> WikiImages:
        return wiki_images_for(kb, self.wiki_img_path_prefix, self.wiki_img_csv_dir)
