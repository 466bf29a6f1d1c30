"""Compare retrievers on the same samples: one recall@k table (JSON) and plot (PNG).

    python -m omgm compare --config configs/my_paths.yaml --sample_file test.csv \
        --run eva-clip=configs/retrievers/eva_clip.yaml --run vista=configs/retrievers/vista.yaml \
        --run echosight=configs/retrievers/echosight_images.yaml --result paper_step2=out/step2.json \
        --out_dir outputs/compare

Each ``--run NAME=YAML`` runs step 1 with the shared configs plus that YAML (its ``retriever_vit``,
``faiss_index``, ``retriever_pretrained``, ``composed_query``...); each ``--result NAME=FILE`` adds an existing
step-1/2 result file. Recall is computed the same way for all, over the same samples, with a 95% bootstrap
interval; every run after the first is compared with the first by a paired bootstrap over the same questions
(the difference of recall@k, its interval and p-value), printed and kept in ``compare.json`` under ``paired``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from omgm.config import config_values, int_list, setup_logging
from omgm.data.results import read_retrieval, write_json_atomic, write_retrieval
from omgm.data.samples import read_samples, samples_fingerprint
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser
from omgm.metrics.bootstrap import paired
from omgm.metrics.evaluate import evaluate
from omgm.metrics.plot import recall_plot
from omgm.pipeline.search import SearchConfig
from omgm.published import TOP_KS
from omgm.settings import check_values, from_values


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        if "=" not in v:
            raise OmgmError(f"{flag} takes NAME=PATH, got {v!r}")
        name, path = v.split("=", 1)
        out.append((name, path))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("compare", __doc__)
    p.add_argument("--config", action="append", default=[], help="shared YAML(s) for every run")
    p.add_argument("--sample_file", required=True)
    p.add_argument("--run", action="append", default=[], help="NAME=retriever YAML (runs step 1)")
    p.add_argument("--result", action="append", default=[], help="NAME=existing step-1/2 result file")
    p.add_argument("--top_ks", type=int_list, default=list(TOP_KS))
    p.add_argument("--out_dir", default="outputs/compare")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a step-1 setting for every run, e.g. --set device=cpu (repeatable)")
    return p


def run_search(name: str, config_files: list[str], overrides: list[str], samples, *, out: Path) -> Path:
    """Step 1 for one ``--run``: its YAML on top of the shared ones, then ``--set`` values."""
    for cfg in config_files:
        if not Path(cfg).is_file():
            raise OmgmError(f"--run {name}: config file not found: {cfg}")
    sets = check_values({k: yaml.safe_load(v) for k, v in _pairs(overrides, "--set")}, SearchConfig, where="--set")
    cfg = from_values(SearchConfig, {**config_values(config_files, []), **sets})
    engine = cfg.build()
    run = engine.run(samples)
    meta = {"sample_file": samples[0].source if samples else "", "samples_hash": samples_fingerprint(samples),
            "retriever": engine.retriever.model_id, "index_kind": engine.kind, "composed_query": cfg.composed_query,
            "faiss_index": cfg.faiss_index, "skipped": run.skipped}
    return write_retrieval(out / f"{name}.step1.json", run.results, "step1", meta)


def paired_tests(positions: dict[str, list], ks: list[int]) -> dict[str, dict]:
    """Every run against the first, on the same questions: the recall@k difference, its 95% interval and p-value
    (paired bootstrap over questions, :func:`omgm.metrics.bootstrap.paired`)."""
    names = list(positions)
    base = names[0] if names else None
    return {f"{n} vs {base}": {f"R@{k}": paired([p is not None and p < k for p in positions[n]],
                                                  [p is not None and p < k for p in positions[base]]) for k in ks}
            for n in names[1:]}


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    a = build_parser().parse_args(argv)
    out = Path(a.out_dir)
    runs = _pairs(a.run, "--run")
    results = _pairs(a.result, "--result")
    if not runs and not results:
        raise OmgmError("give at least one --run or --result")
    samples = read_samples(a.sample_file)
    for name, cfg in runs:
        results.append((name, str(run_search(name, a.config + [cfg], a.overrides, samples, out=out))))
    gold = {s.sample_id: s.wikipedia_url for s in samples}
    table, curves, positions = {}, {}, {}
    for name, path in results:
        rf = read_retrieval(path)
        rep = evaluate(gold, rf.ranking(), a.top_ks)
        table[name] = {**rep.as_dict(), "file": path, "retriever": rf.meta.get("retriever"),
                       "index_kind": rf.meta.get("index_kind"), "stage": rf.stage}
        curves[name], positions[name] = rep.recall, rep.positions
    tests = paired_tests(positions, a.top_ks)
    write_json_atomic(out / "compare.json", {"sample_file": a.sample_file, "runs": table, "paired": tests}, indent=2)
    plot = recall_plot(curves, out / "compare.png")
    width = max(len(n) for n in table) + 2
    print(f"{'':{width}}" + "".join(f"{'R@' + str(k):>9}" for k in a.top_ks))
    for name, rec in curves.items():
        print(f"{name:{width}}" + "".join(f"{v:9.2f}" for v in rec.values()))
    for pair, by_k in tests.items():
        print(f"{pair}: " + "; ".join(f"R@{k.split('@')[1]} {t['difference']:+.2f} [{t['interval'][0]:+.2f}, "
                                      f"{t['interval'][1]:+.2f}] p={t['p_value']:.3f}" for k, t in by_k.items()))
    print(f"wrote {out / 'compare.json'} and {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
