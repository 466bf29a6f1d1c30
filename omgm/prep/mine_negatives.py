"""Mine the reranker's hard-negative file from step-1 results on the training split.

    python -m omgm.step1 --sample_file train.csv ... --save_result_path train_step1.json
    omgm data mine-negatives --train_file train.csv --step1_result train_step1.json \
        --knowledge_base kb.sqlite --wiki_img_csv_dir csv/ --wiki_img_path_prefix wiki_images/ --out negatives.json

Writes the authors' format (keyed by query image id, ``gt_entity_pos_img`` + ``top_20``), so their file and
ours are interchangeable.
"""
from __future__ import annotations

import argparse
import sys

from omgm.config import parse_with_config, positive_int, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import check_made_for, read_retrieval
from omgm.data.samples import read_samples
from omgm.data.wiki_images import wiki_images_for
from omgm.errors import cli_errors
from omgm.help import command_parser
from omgm.rerank.negatives import mine, write_negative_db
from omgm.settings import add_kb_flag


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("data mine-negatives", __doc__)
    p.add_argument("--train_file")
    p.add_argument("--step1_result")
    add_kb_flag(p)
    p.add_argument("--wiki_img_csv_dir", default=None)
    p.add_argument("--wiki_img_path_prefix")
    p.add_argument("--out")
    p.add_argument("--top_k", type=positive_int, default=20, help="step-1 candidates that negatives are drawn from")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "train_file", "step1_result", "knowledge_base", "wiki_img_path_prefix", "out")
    kb = open_kb(args.knowledge_base)
    wiki = wiki_images_for(kb, args.wiki_img_path_prefix, args.wiki_img_csv_dir)
    samples, step1 = read_samples(args.train_file), read_retrieval(args.step1_result)
    check_made_for(step1, samples, args.train_file, kb)
    entries, counts = mine(samples, step1, kb, wiki, top_k=args.top_k)
    write_negative_db(args.out, entries)
    print(f"wrote {len(entries)} entries to {args.out}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
