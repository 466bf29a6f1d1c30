"""Compare retrievers on the same samples: one recall@k table (JSON) and plot (PNG).

    python -m omgm.compare --config configs/my_paths.yaml --sample_file test.csv \
        --run eva-clip=configs/retrievers/eva_clip.yaml --run vista=configs/retrievers/vista.yaml \
        --run echosight=configs/retrievers/echosight_images.yaml --result paper_step2=out/step2.json \
        --out_dir outputs/compare

Each ``--run NAME=YAML`` runs step 1 with the shared configs plus that YAML (its ``retriever_vit``,
``faiss_index``, ``retriever_pretrained``, ``composed_query``...); each ``--result NAME=FILE`` adds an existing
step-1/2 result file. Recall is computed the same way for all, over the same samples.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omgm import step1
from omgm.config import int_list, setup_logging
from omgm.data.results import read_retrieval, write_json_atomic
from omgm.data.samples import read_samples
from omgm.errors import OmgmError, cli_errors
from omgm.metrics.recall import recall_at_k
from omgm.report import recall_plot


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        if "=" not in v:
            raise OmgmError(f"{flag} takes NAME=PATH, got {v!r}")
        name, path = v.split("=", 1)
        out.append((name, path))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omgm.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], help="shared YAML(s) for every run")
    p.add_argument("--sample_file", required=True)
    p.add_argument("--run", action="append", default=[], help="NAME=retriever YAML (runs step 1)")
    p.add_argument("--result", action="append", default=[], help="NAME=existing step-1/2 result file")
    p.add_argument("--top_ks", type=int_list, default=[1, 5, 10, 20])
    p.add_argument("--out_dir", default="outputs/compare")
    p.add_argument("--step1_args", default="", help="extra flags for every step-1 run, e.g. '--device cpu'")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    a = build_parser().parse_args(argv)
    out = Path(a.out_dir)
    runs = _pairs(a.run, "--run")
    results = _pairs(a.result, "--result")
    if not runs and not results:
        raise OmgmError("give at least one --run or --result")
    for name, cfg in runs:
        if not Path(cfg).is_file():
            raise OmgmError(f"--run {name}: config file not found: {cfg}")
        path = out / f"{name}.step1.json"
        argv1 = [x for c in a.config + [cfg] for x in ("--config", c)] + [
            "--sample_file", a.sample_file, "--save_result_path", str(path), "--no_progress",
            "--top_ks", ",".join(map(str, a.top_ks)), *a.step1_args.split()]
        if step1.main(argv1) != 0:
            raise OmgmError(f"step 1 failed for --run {name} ({cfg})")
        results.append((name, str(path)))
    gold = {s.sample_id: s.wikipedia_url for s in read_samples(a.sample_file)}
    table, curves = {}, {}
    for name, path in results:
        rf = read_retrieval(path)
        rep = recall_at_k({k: rf.urls(k) for k in rf.results}, gold, a.top_ks)
        table[name] = {**rep.as_dict(), "file": path, "retriever": rf.meta.get("retriever"),
                       "index_kind": rf.meta.get("index_kind"), "stage": rf.stage}
        curves[name] = rep.recall
    write_json_atomic(out / "compare.json", {"sample_file": a.sample_file, "runs": table}, indent=2)
    plot = recall_plot(curves, out / "compare.png")
    width = max(len(n) for n in table) + 2
    print(f"{'':{width}}" + "".join(f"{'R@' + str(k):>9}" for k in a.top_ks))
    for name, rec in curves.items():
        print(f"{name:{width}}" + "".join(f"{v:9.2f}" for v in rec.values()))
    print(f"wrote {out / 'compare.json'} and {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
