"""Regenerate ``assets/demo/``: a tiny, deterministic world in the real E-VQA / InfoSeek file formats.

    python -m utils.make_demo --out assets/demo

Forty made-up entities (species and landmarks), each with a distinctive look (colour + shape) drawn into
its Wikipedia images and, with jitter and noise, into the query images, so that a model trained on the
train split can learn to recognise them. Files:

    kb.json                          {url: {title, url, section_titles, section_texts, image_urls, ...}}
    wiki_image_csv/wiki_image_url_part_{1..13}_processed.csv
    wiki_images/full/wiki_image_split/wiki_entity_image_{n}/*.jpg
    images/inat/{id}.jpg  images/gld/{id}.jpg  images/infoseek/{id}.jpg|.JPEG
    train.csv  test.csv  (E-VQA columns; test has 2-hop rows that evaluation drops)
    infoseek_test.csv (E-VQA form with data_id)
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

EVQA_COLUMNS = ["question", "answer", "dataset_image_ids", "dataset_name", "dataset_category_id", "question_type",
                "wikipedia_url", "wikipedia_title", "evidence", "evidence_section_id", "evidence_section_title",
                "encyclopedic_vqa_split", "question_original", "wikipedia_url_used_in_train"]
COLOURS = {"crimson": (200, 30, 40), "amber": (240, 170, 20), "olive": (110, 120, 30), "teal": (20, 140, 140),
           "azure": (40, 110, 230), "violet": (140, 60, 200), "ivory": (235, 230, 200), "charcoal": (50, 50, 55)}
SHAPES = ["disc", "square", "triangle", "stripes", "ring"]
SPECIES_NOUNS = ["finch", "toad", "beetle", "orchid", "lizard", "moth", "heron", "fern", "snail", "crab", "lily", "wren"]
LANDMARK_NOUNS = ["tower", "bridge", "abbey", "fort", "lighthouse", "gate", "temple", "palace"]
REGIONS = ["Lower Varenia", "the Korsk Highlands", "Eastern Malvo", "the Pell Islands", "Northern Tessaly Bay",
           "the Ardent Coast", "Upper Quill Valley", "the Saffron Delta"]
SIZE = 96


def _entities(rng: random.Random) -> list[dict]:
    ents, used = [], set()
    looks = [(c, s) for c in COLOURS for s in SHAPES]
    rng.shuffle(looks)
    for i in range(40):
        kind = "species" if i < 24 else "landmark"
        colour, shape = looks[i]
        noun = rng.choice(SPECIES_NOUNS if kind == "species" else LANDMARK_NOUNS)
        name = f"{colour.capitalize()} {shape.capitalize()} {noun.capitalize()}"
        while name in used:
            name = f"{name} {rng.choice('ABCDEFG')}"
        used.add(name)
        ents.append({"name": name, "kind": kind, "noun": noun, "colour": colour, "shape": shape,
                     "region": rng.choice(REGIONS), "year": rng.randint(1200, 1990),
                     "number": rng.randint(3, 90), "n_images": 0 if i == 7 else (2 if i % 3 == 0 else 1)})
    return ents


def _url(name: str) -> str:
    return "https://en.wikipedia.org/wiki/" + name.replace(" ", "_")


def _sections(e: dict) -> list[tuple[str, str]]:
    n, c, s, r = e["name"], e["colour"], e["shape"], e["region"]
    if e["kind"] == "species":
        return [
            (n, f"The {n} is a {e['noun']} native to {r}. It is known for its {c} colouring and a {s}-shaped "
                f"marking that makes it easy to recognise."),
            ("Description", f"Adults are {c} with a single {s} pattern on the back. A typical adult measures "
                            f"{e['number']} millimetres."),
            ("Distribution and habitat", f"The {n} lives in {r}, where it prefers damp forest edges."),
            ("Discovery", f"The {n} was first described by naturalists in {e['year']}."),
            ("References", "1. Field guide to imaginary fauna. 2. Demo data generator."),
            ("External links", "Demo KB entry; not a real article."),
        ]
    return [
        (n, f"The {n} is a historic {e['noun']} in {r}. Its {c} facade carries a large {s} emblem."),
        ("History", f"Construction of the {n} was completed in {e['year']} after many years of work."),
        ("Architecture", f"The {n} is {e['number']} metres tall and is painted {c}; a {s} emblem crowns the entrance."),
        ("Tourism", f"Visitors reach the {n} by ferry from the main port of {r}."),
        ("References", "1. Guide to imaginary monuments."),
    ]


def _draw(e: dict, rng: random.Random, clean: bool) -> Image.Image:
    """The entity's look: its shape in its colour; queries add jitter, a tinted background and noise."""
    bg = (245, 245, 240) if clean else tuple(rng.randint(150, 250) for _ in range(3))
    im = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(im)
    col = COLOURS[e["colour"]]
    if not clean:
        col = tuple(max(0, min(255, v + rng.randint(-25, 25))) for v in col)
    j = 0 if clean else rng.randint(-10, 10)
    m = 18 + (0 if clean else rng.randint(-6, 6))
    box = (m + j, m - j, SIZE - m + j, SIZE - m - j)
    shape = e["shape"]
    if shape == "disc":
        d.ellipse(box, fill=col)
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "triangle":
        d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=col)
    elif shape == "stripes":
        for x in range(box[0], box[2], 12):
            d.rectangle((x, box[1], x + 5, box[3]), fill=col)
    else:
        d.ellipse(box, outline=col, width=9)
    if not clean:
        im = im.rotate(rng.uniform(-20, 20), fillcolor=bg).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
        px = im.load()
        for _ in range(300):
            x, y = rng.randrange(SIZE), rng.randrange(SIZE)
            px[x, y] = tuple(rng.randint(0, 255) for _ in range(3))
    return im


def _questions(e: dict, url: str, sections: list[tuple[str, str]]) -> list[tuple[str, str, int, str]]:
    """(question, answer, evidence_section_id, question_type) for one entity."""
    idx = {t: i for i, (t, _) in enumerate(sections)}
    if e["kind"] == "species":
        return [(f"Where is this {e['noun']} native to?", e["region"], idx["Distribution and habitat"], "templated"),
                (f"How long is an adult of this {e['noun']} in millimetres?", str(e["number"]), idx["Description"], "automatic"),
                ("In which year was this organism first described?", str(e["year"]), idx["Discovery"], "automatic"),
                ("What colour and marking does this animal have?", f"{e['colour']}&&{e['shape']}", idx["Description"],
                 "multi_answer")]
    return [(f"In which year was this {e['noun']} completed?", str(e["year"]), idx["History"], "templated"),
            ("How tall is this building in metres?", str(e["number"]), idx["Architecture"], "automatic"),
            ("Where is this monument located?", e["region"], idx[e["name"]], "automatic"),
            ("How do visitors reach this place?", "by ferry", idx["Tourism"], "automatic")]


def make_demo(out: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    if out.exists():
        for sub in ("images", "wiki_images", "wiki_image_csv"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    ents = _entities(rng)
    kb, csv_rows, rows = {}, [], {"train": [], "test": [], "infoseek": []}
    for k, e in enumerate(ents):
        url, secs = _url(e["name"]), _sections(e)
        images = []
        for n in range(e["n_images"]):
            rel = f"full/wiki_image_split/wiki_entity_image_{k % 4}/{hashlib.md5(f'{url}{n}'.encode()).hexdigest()}.jpg"
            target = out / "wiki_images" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _draw(e, rng, clean=(n == 0)).save(target, quality=85)
            images.append(rel)
            csv_rows.append((e["name"], f"https://upload.wikimedia.org/demo/{Path(rel).name}", rel, f"{e['name']} photo {n}"))
        if k == 11:  # listed in the CSVs but never downloaded: the pipeline must cope
            csv_rows.append((e["name"], "https://upload.wikimedia.org/demo/missing.jpg",
                             "full/wiki_image_split/wiki_entity_image_9/missing.jpg", "never downloaded"))
        kb[url] = {"title": e["name"], "url": url, "section_titles": [t for t, _ in secs],
                   "section_texts": [x for _, x in secs], "image_urls": [f"https://upload.wikimedia.org/demo/{k}_{n}.jpg"
                                                                      for n in range(e["n_images"])],
                   "image_reference_descriptions": [f"{e['name']}" for _ in range(e["n_images"])],
                   "image_section_indices": [0 for _ in range(e["n_images"])]}
        dataset = "inaturalist" if e["kind"] == "species" else "landmarks"
        for qn, (q, a, sec, qtype) in enumerate(_questions(e, url, secs)):
            split = "train" if qn < 2 else "test"
            for view in range(2 if split == "train" else 1):
                img_id = f"{'inat' if dataset == 'inaturalist' else 'gld'}{k:02d}{qn}{view}"
                img_dir = out / "images" / ("inat" if dataset == "inaturalist" else "gld")
                img_dir.mkdir(parents=True, exist_ok=True)
                _draw(e, rng, clean=False).save(img_dir / f"{img_id}.jpg", quality=85)
                extra = f"{img_id}x|{img_id}y"  # more ids follow the first, as in E-VQA; only the first is used
                rows[split].append({"question": q, "answer": a, "dataset_image_ids": f"{img_id}|{extra}",
                                    "dataset_name": dataset, "dataset_category_id": str(k), "question_type": qtype,
                                    "wikipedia_url": url, "wikipedia_title": e["name"], "evidence": secs[sec][1],
                                    "evidence_section_id": str(sec), "evidence_section_title": secs[sec][0],
                                    "encyclopedic_vqa_split": split, "question_original": q,
                                    "wikipedia_url_used_in_train": "True" if split == "train" else "False"})
        if k % 2 == 0:  # an InfoSeek-style question on every other entity
            img_id = f"oven_{k:05d}"
            ext = "JPEG" if k % 4 == 0 else "jpg"
            (out / "images" / "infoseek").mkdir(parents=True, exist_ok=True)
            _draw(e, rng, clean=False).save(out / "images" / "infoseek" / f"{img_id}.{ext}", format="JPEG", quality=85)
            q, a, sec, _ = _questions(e, url, secs)[0]
            rows["infoseek"].append({"data_id": f"infoseek_val_{k:08d}", "question": q, "answer": a,
                                     "dataset_image_ids": img_id, "dataset_name": "infoseek", "dataset_category_id": "",
                                     "question_type": "infoseek", "wikipedia_url": url, "wikipedia_title": e["name"],
                                     "evidence": secs[sec][1], "evidence_section_id": str(sec),
                                     "evidence_section_title": secs[sec][0], "encyclopedic_vqa_split": "val",
                                     "question_original": q, "wikipedia_url_used_in_train": "False"})
    for i in range(0, 40, 8):  # 2-hop rows, which evaluation drops
        r = dict(rows["test"][i], question="What is the capital of the region this comes from?", question_type="2_hop")
        rows["test"].insert(i + 1, r)
    (out / "kb.json").write_text(json.dumps(kb, indent=1, ensure_ascii=False), encoding="utf-8")
    csv_dir = out / "wiki_image_csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    for part in range(1, 14):
        with (csv_dir / f"wiki_image_url_part_{part}_processed.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["entity_title", "image_URL", "img_path", "caption"])
            w.writerows(r for j, r in enumerate(csv_rows) if j % 13 == part - 1)
    _write_csv(out / "train.csv", EVQA_COLUMNS, rows["train"])
    _write_csv(out / "test.csv", EVQA_COLUMNS, rows["test"])
    _write_csv(out / "infoseek_test.csv", ["data_id"] + EVQA_COLUMNS, rows["infoseek"])
    return {"entities": len(kb), "train": len(rows["train"]), "test": len(rows["test"]),
            "infoseek": len(rows["infoseek"]), "wiki_images": len(csv_rows)}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="assets/demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make_demo(Path(args.out), args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
