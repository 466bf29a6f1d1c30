"""What a KB import tolerates, counts and reports, where the authors' code is lenient and failing would help no user.

- An entity whose ``section_titles`` and ``section_texts`` differ in length is **kept in its row** (FAISS row *i*
  is the *i*-th entity: dropping it would shift every later row) **without sections**: step 2 scores it 0 and
  step 3 leaves it unanswered, as for any entity without sections. Each is counted and the first few named; past
  ``max_skipped`` of them the import stops (a damaged file, not a few odd articles). The default, 100, tolerates
  the odd bad article of a 2M-entity KB; 0 makes the import strict.
- An entity whose own ``url`` field differs from its key is imported under its key (the key is what the index
  rows and the datasets' ``wikipedia_url`` use) and counted.

Counts are kept in the store's meta table, so a resumed import reports the whole file's.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from omgm.data.kb import KnowledgeBaseError, check_entity

MAX_SKIPPED = 100


@dataclass
class Audit:
    max_skipped: int = MAX_SKIPPED
    skipped: int = 0
    url_mismatch: int = 0
    examples: list[str] = field(default_factory=list)

    @classmethod
    def resumed(cls, con: sqlite3.Connection, max_skipped: int = MAX_SKIPPED) -> "Audit":
        meta = dict(con.execute("SELECT key, value FROM meta"))
        return cls(max_skipped, int(meta.get("skipped_entities") or 0), int(meta.get("url_field_mismatches") or 0))

    def entity(self, url: str, value: object, row: int, source: str) -> object:
        """``value`` as it is to be stored (see the module doc); raises on what no reader can use."""
        if isinstance(value, dict) and isinstance(value.get("url"), str) and value["url"] != url:
            self.url_mismatch += 1
            self._example(f"row {row}: key {url!r} but url field {value['url']!r}")
        try:
            check_entity(url, value, row, source)
        except KnowledgeBaseError as exc:
            titles, texts = (value.get("section_titles"), value.get("section_texts")) if isinstance(value, dict) \
                else (None, None)
            if not (isinstance(titles, list) and isinstance(texts, list) and len(titles) != len(texts)):
                raise
            self.skipped += 1
            if self.skipped > self.max_skipped:
                raise KnowledgeBaseError(f"{exc}; that is more than {self.max_skipped} entities with unequal section "
                                         f"lists: a damaged file? (--max_skipped_entities N allows more)") from None
            self._example(f"row {row}: {url!r} kept without sections ({len(titles)} titles, {len(texts)} texts)")
            return {**value, "section_titles": [], "section_texts": [],
                    "omgm_skipped": f"unequal section lists ({len(titles)} titles, {len(texts)} texts)"}
        return value

    def _example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    def save(self) -> dict[str, int]:
        """The counts, for the store's meta table."""
        return {"skipped_entities": self.skipped, "url_field_mismatches": self.url_mismatch}

    def report(self) -> str | None:
        if not (self.skipped or self.url_mismatch):
            return None
        return (f"{self.skipped} entities with unequal section lists kept without sections (step 2 scores them 0); "
                f"{self.url_mismatch} entities whose url field differs from their key (imported under the key)"
                + "".join(f"\n  e.g. {e}" for e in self.examples))
