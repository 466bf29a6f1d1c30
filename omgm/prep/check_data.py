"""Before a long GPU run: what is missing? Query images, KB entities, wiki images, per split.

    omgm data check --config configs/my_paths.yaml --config configs/evqa.yaml \
        [--splits test.csv train.csv] [--step1_result step1.json] [--out data_check.json]

For each split CSV: rows kept, query images not found (iNat/GLD/InfoSeek rules), gold URLs not in the KB,
gold entities without a wiki image on disk (title absent from the CSVs, or file missing). With
``--step1_result``: how many of its retrieved entities have no image (they get step-2 score 0). Also the KB
size and, when ``--faiss_index`` is set, whether the index fits the KB. Exit status 1 when something is missing.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from omgm.config import parse_with_config, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import read_retrieval, write_json_atomic
from omgm.data.samples import ImageDirs, read_samples
from omgm.data.wiki_images import wiki_images_for
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser
from omgm.settings import add_kb_flag


def image_state(kb, wiki, url: str) -> str:
    if url not in kb:
        return "entity not in KB"
    return wiki.locate(kb.get(url).title)[1] or "ok"


def check_split(path: str, kb, wiki, dirs: ImageDirs, *, examples: int = 3) -> dict:
    samples = read_samples(path, single_hop_only=False)
    q_missing = [s for s in samples if not any(p.is_file() for p in dirs.candidates(s))]
    golds = {s.wikipedia_url for s in samples}
    states = Counter(image_state(kb, wiki, u) if wiki else ("ok" if u in kb else "entity not in KB") for u in golds)
    return {"rows": len(samples), "query_images_missing": len(q_missing),
            "query_image_examples": [f"row {s.row} ({s.sample_id}): {s.image_id}" for s in q_missing[:examples]],
            "gold_entities": len(golds), "gold_not_in_kb": states.get("entity not in KB", 0),
            "gold_without_wiki_image": sum(n for k, n in states.items() if k not in ("ok", "entity not in KB")),
            "gold_image_states": dict(states)}


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("data check", __doc__)
    p.add_argument("--splits", nargs="*", default=None, help="CSV files (default: train_file, test_file, sample_file)")
    p.add_argument("--train_file", default=None)
    p.add_argument("--test_file", default=None)
    p.add_argument("--sample_file", default=None)
    add_kb_flag(p)
    p.add_argument("--wiki_img_csv_dir", default=None)
    p.add_argument("--wiki_img_path_prefix", default=None)
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--faiss_index", default=None)
    p.add_argument("--step1_result", default=None)
    p.add_argument("--out", default=None, help="write the report as JSON too")
    return p


def build_report(a, kb, wiki, dirs) -> tuple[dict, int]:
    """Everything checked, and how many kinds of missing data were found."""
    splits = a.splits or [f for f in dict.fromkeys((a.train_file, a.test_file, a.sample_file)) if f]
    report = {"knowledge_base": {"path": str(a.knowledge_base), "entities": len(kb)}, "splits": {}}
    for path in splits:
        report["splits"][str(path)] = check_split(path, kb, wiki, dirs) if Path(path).is_file() else {"error": "file not found"}
    if a.faiss_index:
        import faiss

        n = faiss.read_index(str(a.faiss_index)).ntotal if Path(a.faiss_index).is_file() else None
        report["faiss_index"] = {"path": str(a.faiss_index), "vectors": n, "fits_kb": n == len(kb)}
    if a.step1_result and wiki:
        rf = read_retrieval(a.step1_result)
        urls = {e["url"] for v in rf.results.values() for e in v["retrieved_entities"]}
        report["step1_entities"] = {"entities": len(urls), "image_states": dict(Counter(image_state(kb, wiki, u) for u in urls))}
    bad = sum(s.get("query_images_missing", 0) + s.get("gold_not_in_kb", 0) + s.get("gold_without_wiki_image", 0)
              + ("error" in s) for s in report["splits"].values())
    bad += report.get("faiss_index", {}).get("fits_kb") is False
    return report, bad


def print_report(report: dict, bad: int) -> None:
    kb = report["knowledge_base"]
    print(f"knowledge base: {kb['entities']} entities ({kb['path']})")
    print(f"{'split':40} {'rows':>7} {'no query img':>13} {'gold not in KB':>15} {'gold no wiki img':>17}")
    for path, s in report["splits"].items():
        if "error" in s:
            print(f"{path[-40:]:40} {s['error']}")
            continue
        print(f"{path[-40:]:40} {s['rows']:>7} {s['query_images_missing']:>13} {s['gold_not_in_kb']:>15} "
              f"{s['gold_without_wiki_image']:>17}")
        for e in s["query_image_examples"]:
            print(f"    missing query image: {e}")
    if "faiss_index" in report:
        f = report["faiss_index"]
        print(f"index {f['path']}: {f['vectors']} vectors, fits the KB: {f['fits_kb']}")
    if "step1_entities" in report:
        print(f"step-1 entities: {report['step1_entities']}")
    print("everything needed is present" if not bad else f"{bad} kinds of missing data found (see above)")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    a = parse_with_config(build_parser(), argv)
    if not a.knowledge_base:
        raise OmgmError("--knowledge_base (or the config's knowledge_base) is needed")
    kb = open_kb(a.knowledge_base)
    wiki = wiki_images_for(kb, a.wiki_img_path_prefix, a.wiki_img_csv_dir) if a.wiki_img_path_prefix else None
    if wiki is None:
        print("wiki images not checked: set --wiki_img_path_prefix", file=sys.stderr)
    report, bad = build_report(a, kb, wiki, ImageDirs(a.inat_dir, a.gld_dir, a.infoseek_dir))
    print_report(report, bad)
    if a.out:
        write_json_atomic(a.out, report, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
