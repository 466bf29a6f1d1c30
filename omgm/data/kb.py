"""The knowledge base: Wikipedia entities keyed by URL, in the order that defines FAISS rows.

Two backends with one interface (:class:`KnowledgeBase`):
- :class:`JsonKnowledgeBase`: the original JSON object ``{url: {title, section_titles, section_texts, ...}}``
  read into memory (fine for the 100k InfoSeek KB and for the demo);
- :class:`SqliteKnowledgeBase`: the store written by ``python -m omgm.data.kb_import`` (the 2M E-VQA KB),
  one row per entity, opened read-only, nothing loaded up front.

Row ``i`` of either is the ``i``-th key of the original JSON, which is FAISS row ``i`` of a summary index.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from omgm.data.jsonstream import iter_object_members
from omgm.errors import OmgmError

KB_HELP = ("the KB: the JSON object keyed by URL, or the SQLite store of omgm kb import (row i = index row i); the "
           "official spellings --knowledge_base_path / --knowledge_base_file are accepted")

SKIPPED_SECTION_MARKERS = ("external links", "references")
SECTION_TEMPLATE = "# Wiki Article: {title}\n## Section Title: {section_title}\n{section_text}"
STORE_FORMAT = "omgm.kb.sqlite"
STORE_VERSION = 1


class KnowledgeBaseError(OmgmError, ValueError):
    """A knowledge base file that cannot be used; the message names the file and the entity."""


class UnknownEntityError(OmgmError, KeyError):
    """A URL that is not in the knowledge base."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def section_document(title: str, section_title: str, section_text: str) -> str:
    """A section as every stage reads it: the article title and section title as headers, then the text."""
    return "# Wiki Article: " + title + "\n" + "## Section Title: " + section_title + "\n" + section_text


@dataclass(frozen=True)
class Section:
    """One kept section of an entity: its index in the entity's section lists, title and text."""
    index: int          # position in the entity's section_titles (the evidence_section_id space)
    title: str
    text: str


@dataclass(frozen=True)
class Entity:
    """One KB article: URL, title, the parallel section title/text lists, and its image URLs."""
    url: str
    title: str
    section_titles: list[str]
    section_texts: list[str]
    image_urls: list[str]
    image_reference_descriptions: list[str]
    image_section_indices: list
    row: int

    @classmethod
    def from_json(cls, url: str, data: dict, row: int, source: str = "") -> "Entity":
        if not isinstance(data, dict):
            raise KnowledgeBaseError(f"{source}: entity {url!r} (row {row}) is a {type(data).__name__}, "
                                     f"expected an object")
        titles = data.get("section_titles") or []
        texts = data.get("section_texts") or []
        for key in ("section_titles", "section_texts", "image_urls", "image_reference_descriptions",
                    "image_section_indices"):
            if not isinstance(data.get(key) or [], list):
                raise KnowledgeBaseError(f"{source}: entity {url!r} (row {row}): {key} is a "
                                         f"{type(data[key]).__name__}, expected a list")
        if len(titles) != len(texts):
            raise KnowledgeBaseError(f"{source}: entity {url!r} (row {row}) has {len(titles)} section titles "
                                     f"but {len(texts)} section texts")
        return cls(url=url, title=data.get("title") or (titles[0] if titles else ""),
                   section_titles=list(titles), section_texts=list(texts),
                   image_urls=list(data.get("image_urls") or []),
                   image_reference_descriptions=list(data.get("image_reference_descriptions") or []),
                   image_section_indices=list(data.get("image_section_indices") or []), row=row)

    def sections(self, skip_references: bool = True) -> list[Section]:
        """Sections in order; by default without those whose title contains "external links" or "references"
        (case-insensitive), as the published reranker does."""
        out = []
        for i, (t, x) in enumerate(zip(self.section_titles, self.section_texts)):
            if skip_references and any(m in (t or "").lower() for m in SKIPPED_SECTION_MARKERS):
                continue
            out.append(Section(i, t or "", x or ""))
        return out

    def section_documents(self) -> list[str]:
        """:func:`section_document` of every kept section, in order (what step 3 ranks and reads)."""
        return [section_document(self.title, s.title, s.text) for s in self.sections()]

    def lead_text(self) -> str:
        """The first section's text (the article's lead), used by the ``lead`` summariser."""
        return self.section_texts[0] if self.section_texts else ""


def check_entity(url: str, data: object, row: int, source: str = "") -> None:
    """An entity's fields that later stages rely on: an object with equally long ``section_titles`` and
    ``section_texts`` lists of strings. Raises :class:`KnowledgeBaseError` naming the file, row and URL."""
    where = f"{source}: entity {url!r} (row {row})"
    if not isinstance(data, dict):
        raise KnowledgeBaseError(f"{where} is a {type(data).__name__}, expected an object")
    titles, texts = data.get("section_titles"), data.get("section_texts")
    for name, value in (("section_titles", titles), ("section_texts", texts)):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise KnowledgeBaseError(f"{where}: '{name}' must be a list of strings, got {type(value).__name__}")
    if len(titles) != len(texts):
        raise KnowledgeBaseError(f"{where} has {len(titles)} section titles but {len(texts)} section texts")


class UrlOrderHash:
    """sha256 over the URLs in KB order, one per line: the KB's identity in an index manifest."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, url: str) -> None:
        self._h.update(url.encode("utf-8") + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    @classmethod
    def of(cls, urls: Iterable[str]) -> str:
        h = cls()
        for u in urls:
            h.update(u)
        return h.hexdigest()


class KnowledgeBase:
    """Common interface; see the module docstring."""

    path: Path

    def __len__(self) -> int:
        raise NotImplementedError

    def url_at(self, row: int) -> str:
        """The URL of KB row ``row`` (row i = index row i)."""
        raise NotImplementedError

    def urls(self) -> Iterator[str]:
        """Every URL, in row order."""
        raise NotImplementedError

    def _lookup(self, url: str) -> Entity | None:
        raise NotImplementedError

    def entities(self, start: int = 0) -> Iterator[Entity]:
        """Every entity from row ``start`` on, in row order."""
        raise NotImplementedError

    def url_order_hash(self) -> str:
        """The identity of the KB's row order (what an index manifest and a result file record)."""
        raise NotImplementedError

    def __contains__(self, url: str) -> bool:
        return self._lookup(url) is not None

    def get(self, url: str) -> Entity:
        """The entity at ``url``, or :class:`UnknownEntityError` naming the KB."""
        ent = self._lookup(url)
        if ent is None:
            raise UnknownEntityError(f"entity {url!r} is not in the knowledge base {self.path}")
        return ent

    def at(self, row: int) -> Entity:
        """The entity of row ``row``."""
        return self.get(self.url_at(row))

    def url_title_at(self, row: int) -> tuple[str, str]:
        """``(url, title)`` of row ``row``, without decoding the whole entity where the backend allows."""
        ent = self.at(row)
        return ent.url, ent.title


class JsonKnowledgeBase(KnowledgeBase):
    """The original KB JSON, loaded into memory (streamed member by member; duplicate URLs are an error)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise KnowledgeBaseError(f"knowledge base not found: {self.path}")
        self._data: dict[str, dict] = {}
        for row, (url, value, _) in enumerate(iter_object_members(self.path)):
            if url in self._data:
                first = list(self._data).index(url)
                raise KnowledgeBaseError(f"{self.path}: duplicate URL {url!r} at rows {first} and {row}; "
                                         f"row order would not match a FAISS index")
            self._data[url] = value
        self._urls = list(self._data)
        self._rows = {u: i for i, u in enumerate(self._urls)}

    def __len__(self) -> int:
        return len(self._urls)

    def url_at(self, row: int) -> str:
        return self._urls[row]

    def urls(self) -> Iterator[str]:
        return iter(self._urls)

    def _lookup(self, url: str) -> Entity | None:
        data = self._data.get(url)
        return None if data is None else Entity.from_json(url, data, self._rows[url], str(self.path))

    def entities(self, start: int = 0) -> Iterator[Entity]:
        for row in range(start, len(self._urls)):
            yield self.at(row)

    def url_order_hash(self) -> str:
        return UrlOrderHash.of(self._urls)


class SqliteKnowledgeBase(KnowledgeBase):
    """The SQLite store written by :mod:`omgm.data.kb_import`; read-only, lazy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise KnowledgeBaseError(f"knowledge base store not found: {self.path}")
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"      # '#', '?' are URI syntax
        self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            self.meta = dict(self._con.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise KnowledgeBaseError(f"{self.path}: not an omgm knowledge-base store ({exc})") from None
        if self.meta.get("format") != STORE_FORMAT:
            raise KnowledgeBaseError(f"{self.path}: not an omgm knowledge-base store (format="
                                     f"{self.meta.get('format')!r})")
        if self.meta.get("complete") != "1":
            raise KnowledgeBaseError(f"{self.path}: the import did not finish; run the import again to resume it")
        self._len = int(self.meta["count"])
        self._lookup = lru_cache(maxsize=4096)(self._lookup_uncached)  # type: ignore[method-assign]

    def __len__(self) -> int:
        return self._len

    def url_at(self, row: int) -> str:
        r = self._con.execute("SELECT url FROM entities WHERE row = ?", (row,)).fetchone()
        if r is None:
            raise IndexError(f"row {row} out of range for {self.path} ({self._len} entities)")
        return r[0]

    def urls(self) -> Iterator[str]:
        for (u,) in self._con.execute("SELECT url FROM entities ORDER BY row"):
            yield u

    def url_title_at(self, row: int) -> tuple[str, str]:
        r = self._con.execute("SELECT url, title FROM entities WHERE row = ?", (row,)).fetchone()
        if r is None:
            raise IndexError(f"row {row} out of range for {self.path} ({self._len} entities)")
        return r[0], r[1] or ""

    def _lookup_uncached(self, url: str) -> Entity | None:
        r = self._con.execute("SELECT row, data FROM entities WHERE url = ?", (url,)).fetchone()
        return None if r is None else Entity.from_json(url, json.loads(r[1]), r[0], str(self.path))

    def entities(self, start: int = 0) -> Iterator[Entity]:
        cur = self._con.execute("SELECT row, url, data FROM entities WHERE row >= ? ORDER BY row", (start,))
        for row, url, data in cur:
            yield Entity.from_json(url, json.loads(data), row, str(self.path))

    def url_order_hash(self) -> str:
        return self.meta["url_order_hash"]

    def has_wiki_images(self) -> bool:
        return self.meta.get("wiki_images") == "1"

    def connection(self) -> sqlite3.Connection:
        return self._con


def open_kb(path: str | Path) -> KnowledgeBase:
    """Open a KB by file type: ``.json`` -> in memory, anything else -> SQLite store."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return JsonKnowledgeBase(p)
    return SqliteKnowledgeBase(p)
