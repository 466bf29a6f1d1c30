"""Synthetic releases in the real file formats, E-VQA-shaped or InfoSeek-shaped, for ``full_scale.py``.

A release: the KB JSON (``{url: {title, url, section_titles, section_texts, image_urls, ...}}``, 8 sections per
entity, section lengths drawn from 150-1,250 characters, mean ~700: about 7 KB per entity as in the real 14 GB
E-VQA KB), four wiki-image CSVs (one row per entity, paths into 64 small JPEGs that entities share), 64 query
images, and the test CSV in the dataset's columns with three cuts: every question, the first ``q0`` and one.
Written streaming: the writer's memory does not grow with the size.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGES = 64
WORDS = ("river valley northern species adult known forest coast island century built church tower bridge "
         "region native colour marking records museum habitat described population breeding range winter summer "
         "stone roof garden village district county famous early later people small large several").split()
EVQA_COLUMNS = ["question", "answer", "dataset_image_ids", "dataset_name", "dataset_category_id", "question_type",
                "wikipedia_url", "wikipedia_title", "evidence", "evidence_section_id", "evidence_section_title",
                "encyclopedic_vqa_split", "question_original", "wikipedia_url_used_in_train"]


@dataclass(frozen=True)
class Shape:
    """A dataset's size at scale 1 and how its questions name their images."""
    name: str
    entities: int
    questions: int
    dataset_name: str          # inaturalist (E-VQA test) / infoseek
    image_prefix: str          # query image ids: inat00001 / oven_00001
    sections: int = 8


SHAPES = {"evqa": Shape("evqa", 2_000_000, 5_750, "inaturalist", "inat"),
          "infoseek": Shape("infoseek", 100_000, 70_000, "infoseek", "oven_")}


def _texts(rng: random.Random, n: int = 512) -> list[str]:
    out = []
    for _ in range(n):
        target = rng.randint(150, 1250)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < target:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words).capitalize() + ".")
    return out


def _image(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), ((k * 37) % 256, (k * 91) % 256, (k * 53) % 256)).save(path)


def title_of(i: int) -> str:
    return f"Entity {i:07d} {WORDS[i % len(WORDS)]}"


def url_of(i: int) -> str:
    return "https://en.wikipedia.org/wiki/" + title_of(i).replace(" ", "_")


def write_kb(path: Path, shape: Shape, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = _texts(rng)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("{")
        for i in range(n):
            title = title_of(i)
            texts = [f"{title} is a {WORDS[(i + s) % len(WORDS)]}. " + pool[(i * 7 + s * 13) % len(pool)]
                     for s in range(shape.sections)]
            entity = {"title": title, "url": url_of(i), "section_titles": [title] + [f"Section {s}" for s in
                                                                                    range(1, shape.sections)],
                      "section_texts": texts, "image_urls": [f"https://upload.wikimedia.org/synthetic/{i}.jpg"],
                      "image_reference_descriptions": [title], "image_section_indices": [0]}
            fh.write(("," if i else "") + json.dumps(url_of(i)) + ":" + json.dumps(entity))
        fh.write("}")


def write_wiki_images(folder: Path, prefix: Path, n: int, files: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(IMAGES):
        _image(prefix / f"full/wiki_image_split/wiki_entity_image_{k % 4}/img{k:02d}.jpg", k)
    writers, handles = [], []
    for f in range(files):
        fh = (folder / f"wiki_image_url_part_{f + 1}_processed.csv").open("w", newline="", encoding="utf-8")
        handles.append(fh)
        writers.append(csv.writer(fh))
        writers[-1].writerow(["entity_title", "image_URL", "img_path", "caption"])
    for i in range(n):
        k = i % IMAGES
        writers[i % files].writerow([title_of(i), f"https://upload.wikimedia.org/synthetic/{i}.jpg",
                                     f"full/wiki_image_split/wiki_entity_image_{k % 4}/img{k:02d}.jpg", title_of(i)])
    for fh in handles:
        fh.close()


def write_questions(folder: Path, shape: Shape, n_entities: int, n_questions: int, q0: int,
                    seed: int = 0) -> dict[str, Path]:
    """The test CSV (every question), its first ``q0`` rows and its first row, and the query images."""
    rng = random.Random(seed + 1)
    for k in range(IMAGES):
        _image(folder / "images" / f"{shape.image_prefix}{k:05d}.jpg", 100 + k)
    columns = (["data_id"] if shape.name == "infoseek" else []) + EVQA_COLUMNS
    paths = {"all": folder / "test.csv", "q0": folder / "test_q0.csv", "one": folder / "test_one.csv"}
    handles = {k: p.open("w", newline="", encoding="utf-8") for k, p in paths.items()}
    writers = {k: csv.DictWriter(fh, columns) for k, fh in handles.items()}
    for w in writers.values():
        w.writeheader()
    for q in range(n_questions):
        i = rng.randrange(n_entities)
        row = {"question": f"What is this {WORDS[q % len(WORDS)]} known for?", "answer": WORDS[i % len(WORDS)],
               "dataset_image_ids": f"{shape.image_prefix}{q % IMAGES:05d}", "dataset_name": shape.dataset_name,
               "dataset_category_id": "0", "question_type": "automatic" if shape.name == "evqa" else "infoseek",
               "wikipedia_url": url_of(i), "wikipedia_title": title_of(i), "evidence": "", "evidence_section_id": "1",
               "evidence_section_title": "Section 1", "encyclopedic_vqa_split": "test",
               "question_original": "", "wikipedia_url_used_in_train": "False"}
        if shape.name == "infoseek":
            row["data_id"] = f"infoseek_val_{q:08d}"
        for key, limit in (("all", n_questions), ("q0", q0), ("one", 1)):
            if q < limit:
                writers[key].writerow(row)
    for fh in handles.values():
        fh.close()
    return paths


def write_release(folder: Path, shape: Shape, n_entities: int, n_questions: int, q0: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    write_kb(folder / "kb.json", shape, n_entities)
    write_wiki_images(folder / "wiki_image_csv", folder / "wiki_images", n_entities)
    paths = write_questions(folder, shape, n_entities, n_questions, q0)
    return {"kb_json": folder / "kb.json", "csv_dir": folder / "wiki_image_csv",
            "wiki_prefix": folder / "wiki_images", "images": folder / "images", **paths}
