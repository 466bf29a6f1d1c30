"""Write a synthetic knowledge-base JSON of any size (for benchmarks and memory tests), streamed to disk.

    python -m utils.synthetic_kb --out /tmp/kb.json --entities 100000
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDS = ("alpha beta gamma delta river mountain species bird temple bridge north south ancient modern colour "
         "stone forest island coast village museum").split()


def write_synthetic_kb(path: str | Path, n: int, sections: int = 5, words: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("{")
        for i in range(n):
            url = f"https://en.wikipedia.org/wiki/Entity_{i}"
            titles = [f"Entity {i}"] + [f"Section {j}" for j in range(1, sections)]
            ent = {"title": f"Entity {i}", "url": url, "section_titles": titles,
                   "section_texts": [" ".join(rng.choices(WORDS, k=words)) for _ in titles],
                   "image_urls": [f"https://upload.wikimedia.org/{i}.jpg"], "image_reference_descriptions": [""],
                   "image_section_indices": [0]}
            fh.write(("," if i else "") + json.dumps(url) + ":" + json.dumps(ent, ensure_ascii=False))
        fh.write("}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--sections", type=int, default=5)
    p.add_argument("--words", type=int, default=60)
    a = p.parse_args(argv)
    print(write_synthetic_kb(a.out, a.entities, a.sections, a.words))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
