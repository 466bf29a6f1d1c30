"""E-VQA and InfoSeek question CSVs -> :class:`Sample` records, and query-image path resolution.

Faithful to the published code (see docs/faithfulness.md):
- evaluation keeps rows whose ``question_type`` is in :data:`SINGLE_HOP_TYPES` (2-hop rows dropped);
- E-VQA sample ids are ``E-VQA_{i}`` with ``i`` the row index *after* filtering; InfoSeek rows carry ``data_id``;
- only the first of the ``|``-separated ``dataset_image_ids`` is the query image.
"""
from __future__ import annotations

import csv
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from omgm.errors import OmgmError
from omgm.settings import setting

SINGLE_HOP_TYPES = frozenset({"automatic", "templated", "multi_answer", "infoseek"})
REQUIRED_COLUMNS = ("question", "answer", "dataset_image_ids", "dataset_name", "question_type", "wikipedia_url")
INFOSEEK_DATASETS = frozenset({"infoseek", "oven"})

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # evidence texts can exceed the 128 KiB default


class SampleFileError(OmgmError, ValueError):
    """A question CSV that cannot be read as E-VQA/InfoSeek rows; the message names file and row."""


class MissingImageError(OmgmError, FileNotFoundError):
    """A query image that is not on disk under any of the paths the dataset allows."""


@dataclass(frozen=True)
class Sample:
    """One question. ``row`` is the 1-based data row in the CSV (header excluded), for error messages."""

    sample_id: str
    question: str
    answer: str
    image_id: str
    dataset_name: str
    question_type: str
    wikipedia_url: str
    wikipedia_title: str = ""
    evidence_section_id: str = ""
    evidence_section_title: str = ""
    source: str = ""
    row: int = 0
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def answers(self) -> list[str]:
        """The ``|``-separated alternatives of the reference answer."""
        return [a for a in self.answer.split("|")]

    @property
    def evidence_section_index(self) -> int | None:
        """``evidence_section_id`` as a section position (CSV values look like ``3`` or ``3.0``); None if absent."""
        try:
            return int(float(self.evidence_section_id))
        except (TypeError, ValueError):
            return None

    @property
    def dataset(self) -> str:
        """``infoseek`` or ``evqa``: which prompts and metric apply."""
        return "infoseek" if self.is_infoseek else "evqa"

    @property
    def is_infoseek(self) -> bool:
        """An InfoSeek question (its images and prompts differ from E-VQA's)."""
        return self.dataset_name.lower() in INFOSEEK_DATASETS or self.question_type == "infoseek"


def read_samples(path: str | Path, single_hop_only: bool = True) -> list[Sample]:
    """Read an E-VQA or InfoSeek CSV (InfoSeek in E-VQA form, with ``data_id``) into samples.

    Raises :class:`SampleFileError` naming the file and row for a missing column, a malformed row, a file that is
    not UTF-8, or a file without any usable row. A UTF-8 byte-order mark is accepted.
    """
    try:
        samples = list(iter_samples(path, single_hop_only))
    except UnicodeDecodeError as exc:
        raise SampleFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    if not samples:
        kept = " of the kept question types (automatic, templated, multi_answer, infoseek)" if single_hop_only else ""
        raise SampleFileError(f"{path}: no question rows{kept}")
    return samples


def iter_samples(path: str | Path, single_hop_only: bool = True) -> Iterator[Sample]:
    """The samples of a CSV one by one (see :func:`read_samples`)."""
    path = Path(path)
    if not path.is_file():
        raise SampleFileError(f"sample file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise SampleFileError(f"{path}: missing column(s) {missing}; found {header}")
        has_data_id = "data_id" in header
        kept, seen_ids = 0, {}
        for row_no, row in enumerate(reader, start=1):
            if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise SampleFileError(f"{path}, row {row_no} (line {reader.line_num}): expected "
                                      f"{len(header)} fields, the row has a different number")
            qtype = row["question_type"].strip()
            if single_hop_only and qtype not in SINGLE_HOP_TYPES:
                continue
            image_ids = [i.strip() for i in row["dataset_image_ids"].split("|") if i.strip()]
            if not image_ids:
                raise SampleFileError(f"{path}, row {row_no}: empty dataset_image_ids")
            if has_data_id and row.get("data_id", "").strip():
                sample_id = row["data_id"].strip()
                if sample_id in seen_ids:
                    raise SampleFileError(f"{path}, row {row_no}: data_id {sample_id!r} repeats row "
                                          f"{seen_ids[sample_id]} (each question needs its own id)")
                seen_ids[sample_id] = row_no
            else:
                sample_id = f"E-VQA_{kept}"
            kept += 1
            yield Sample(
                sample_id=sample_id,
                question=row["question"],
                answer=row["answer"],
                image_id=image_ids[0],
                dataset_name=row["dataset_name"].strip(),
                question_type=qtype,
                wikipedia_url=row["wikipedia_url"].strip(),
                wikipedia_title=(row.get("wikipedia_title") or "").strip(),
                evidence_section_id=(row.get("evidence_section_id") or "").strip(),
                evidence_section_title=(row.get("evidence_section_title") or "").strip(),
                source=str(path),
                row=row_no,
                extra={k: v for k, v in row.items() if k not in REQUIRED_COLUMNS},
            )


@dataclass(frozen=True)
class ImageDirs:
    """Where query images live. E-VQA tries iNaturalist then Google Landmarks; InfoSeek ``.jpg`` then ``.JPEG``."""

    inat_dir: str | None = setting(help="iNaturalist query images, as {inat_dir}/{image_id}.jpg")
    gld_dir: str | None = setting(help="Google Landmarks query images, as {gld_dir}/{image_id}.jpg")
    infoseek_dir: str | None = setting(help="InfoSeek query images, as {infoseek_dir}/{image_id}.jpg or .JPEG")

    def candidates(self, sample: Sample) -> list[Path]:
        """Every path the published code would try for this sample's query image, in order."""
        img = sample.image_id
        if sample.is_infoseek:
            if not self.infoseek_dir:
                return []
            base = Path(self.infoseek_dir)
            return [base / f"{img}.jpg", base / f"{img}.JPEG"]
        return [Path(d) / f"{img}.jpg" for d in (self.inat_dir, self.gld_dir) if d]

    def resolve(self, sample: Sample) -> Path:
        """The first existing candidate path, or :class:`MissingImageError` naming sample, row and tried paths."""
        tried = self.candidates(sample)
        for p in tried:
            if p.is_file():
                return p
        where = ", ".join(str(p) for p in tried) or "no image directory configured for this dataset"
        raise MissingImageError(f"{sample.source}, row {sample.row} ({sample.sample_id}): query image "
                                f"{sample.image_id!r} not found (tried: {where})")


def resolve_images(samples: Iterable[Sample], dirs: ImageDirs) -> tuple[dict[str, Path], list[str]]:
    """Resolve every sample's image; returns ``({sample_id: path}, [messages for missing ones])``."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for s in samples:
        try:
            found[s.sample_id] = dirs.resolve(s)
        except MissingImageError as exc:
            missing.append(str(exc))
    return found, missing


def samples_fingerprint(samples: Iterable[Sample]) -> str:
    """Identity of a sample list (ids, query images, gold URLs). E-VQA ids are positional (``E-VQA_i``), so
    ids alone cannot tell a train-split result file from a test-split one; this can."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.sample_id}\t{s.image_id}\t{s.wikipedia_url}\n".encode("utf-8"))
    return h.hexdigest()[:16]
