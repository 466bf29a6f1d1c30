"""Your own knowledge base as JSON Lines, one entity per line, read into the same store as the E-VQA KB::

    {"url": "https://example.org/Eiffel_Tower", "title": "Eiffel Tower",
     "sections": [{"title": "Eiffel Tower", "text": "The Eiffel Tower is ..."}, {"title": "History", "text": "..."}],
     "images": ["eiffel/1.jpg", "https://upload.wikimedia.org/.../Tower.jpg"]}

``url`` is the entity's identity (unique); ``title`` is what images are looked up by; ``sections`` are read
in order (the first is the lead); ``images`` are files relative to ``--images_dir`` (or absolute), or URLs.
A URL is recorded with a target file ``url_images/<sha1>.<ext>`` under the images folder and listed in
``OUT.images/wiki_image_url_part_1_processed.csv`` (the wiki-image CSV layout), so that
``omgm data download-images --csv_dir OUT.images --out IMAGES_DIR`` fetches them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Iterator

from omgm.data.kb import KnowledgeBaseError

URL_IMAGE_DIR = "url_images"


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def image_target(ref: str, images_dir: Path | None) -> str:
    """Where an image of the JSONL lives, relative to the images folder when it can be."""
    if _is_url(ref):
        ext = PurePosixPath(ref.split("?")[0]).suffix.lower() or ".jpg"
        return f"{URL_IMAGE_DIR}/{hashlib.sha1(ref.encode()).hexdigest()}{ext if len(ext) <= 5 else '.jpg'}"
    p = Path(ref)
    if p.is_absolute() and images_dir is not None:
        try:
            return str(p.resolve().relative_to(images_dir.resolve()))
        except ValueError:
            return str(p)
    return ref


def entity_of(line: dict, n: int, source: Path, images_dir: Path | None) -> tuple[str, dict, list[tuple[str, str]]]:
    """``(url, KB entity dict, [(image ref, img_path)])`` for line ``n``; a malformed line is an error naming it."""
    where = f"{source}, line {n}"
    if not isinstance(line, dict):
        raise KnowledgeBaseError(f"{where}: expected a JSON object, got {type(line).__name__}")
    url, title, sections = line.get("url"), line.get("title"), line.get("sections")
    if not isinstance(url, str) or not url:
        raise KnowledgeBaseError(f"{where}: 'url' must be a non-empty string")
    if not isinstance(title, str) or not title:
        raise KnowledgeBaseError(f"{where} ({url}): 'title' must be a non-empty string")
    if not isinstance(sections, list) or not sections or not all(
            isinstance(s, dict) and isinstance(s.get("title"), str) and isinstance(s.get("text"), str)
            for s in sections):
        raise KnowledgeBaseError(f"{where} ({url}): 'sections' must be a non-empty list of {{title, text}} objects")
    images = line.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise KnowledgeBaseError(f"{where} ({url}): 'images' must be a list of paths or URLs")
    entity = {"title": title, "url": url, "section_titles": [s["title"] for s in sections],
              "section_texts": [s["text"] for s in sections],
              "image_urls": [i for i in images if _is_url(i)], "image_reference_descriptions": [],
              "image_section_indices": []}
    return url, entity, [(i, image_target(i, images_dir)) for i in images]


def iter_jsonl(source: Path, start_byte: int = 0) -> Iterator[tuple[int, dict, int]]:
    """``(line number, parsed line, byte offset after it)`` from ``start_byte``; blank lines are skipped."""
    with source.open("rb") as fh:
        fh.seek(start_byte)
        n = 0
        for raw in iter(fh.readline, b""):
            n += 1
            if raw.strip():
                try:
                    yield n, json.loads(raw), fh.tell()
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise KnowledgeBaseError(f"{source}, line {n} (byte {fh.tell() - len(raw)}): not JSON ({exc})") \
                        from None


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")
