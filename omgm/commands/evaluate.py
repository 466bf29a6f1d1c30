"""Score a result file: answers (step 3) with the dataset's metric, or retrieval (step 1/2) with recall@k.

    python -m omgm evaluate answers.json --dataset evqa [--bem_model bem/]
    python -m omgm evaluate answers.json --dataset infoseek --infoseek_val infoseek_val.jsonl \
        --infoseek_qtype infoseek_val_qtype.jsonl
    python -m omgm evaluate step2.json --sample_file test.csv --top_ks 1,5,10,20

Prints the scores and writes them to ``FILE.eval.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omgm.config import int_list, parse_with_config, setup_logging
from omgm.data.results import (
    RETRIEVAL_FORMAT,
    check_answers_made_for,
    check_made_for,
    read_json,
    read_retrieval,
    write_json_atomic,
)
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser
from omgm.io import check_writable
from omgm.metrics.bootstrap import without_outcomes
from omgm.metrics.evaluate import evaluate, evaluate_records, read_answers_file
from omgm.metrics.recall import RANKING_METRICS
from omgm.published import TOP_KS


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("evaluate", __doc__)
    p.add_argument("result_file")
    p.add_argument("--dataset", choices=["evqa", "infoseek"], default=None, help="for answer files")
    p.add_argument("--bem_model", default=None)
    p.add_argument("--infoseek_val", default=None)
    p.add_argument("--infoseek_qtype", default=None)
    p.add_argument("--sample_file", default=None, help="for retrieval files: the CSV with the gold URLs")
    p.add_argument("--top_ks", type=int_list, default=list(TOP_KS))
    p.add_argument("--metrics", default="recall", type=_metric_names,
                   help="for retrieval files, comma-separated: " + "; ".join(
                       f"{k}: {m.help}" for k, m in RANKING_METRICS.items()))
    p.add_argument("--out", default=None, help="where the scores go (default: RESULT_FILE with .eval.json)")
    return p


def _metric_names(text: str) -> list[str]:
    names = [t for t in text.replace(",", " ").split() if t]
    unknown = [n for n in names if n not in RANKING_METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(unknown) or repr(text)}: use "
                                         f"{', '.join(RANKING_METRICS)}")
    return names


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    data = read_json(args.result_file)
    is_retrieval = isinstance(data, dict) and (data.get("format") == RETRIEVAL_FORMAT or any(
        isinstance(v, dict) and "retrieved_entities" in v for v in data.values()))
    if is_retrieval:
        from omgm.data.samples import read_samples

        if not args.sample_file:
            raise OmgmError("a retrieval file needs --sample_file (the gold URLs)")
        rf = read_retrieval(args.result_file)
        samples = read_samples(args.sample_file)
        check_made_for(rf, samples, args.sample_file)
        result = evaluate({s.sample_id: s.wikipedia_url for s in samples}, rf.ranking(),
                          args.top_ks, args.metrics).as_dict()
    else:
        records, meta = read_answers_file(args.result_file)
        if args.sample_file:
            from omgm.data.samples import read_samples

            check_answers_made_for(args.result_file, meta, records, read_samples(args.sample_file), sample_file=args.sample_file)
        dataset = args.dataset or (data.get("meta", {}).get("dataset") if isinstance(data, dict) else None)
        if dataset is None:
            raise OmgmError("say --dataset evqa or --dataset infoseek")
        result = evaluate_records(records, dataset, args.bem_model, args.infoseek_val, infoseek_qtype=args.infoseek_qtype)
    out = Path(args.out) if args.out else Path(args.result_file).with_suffix(".eval.json")
    check_writable(out, inputs=[args.result_file, args.sample_file])
    write_json_atomic(out, result, indent=2)
    print(json.dumps(without_outcomes(result), indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
