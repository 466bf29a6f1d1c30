"""The dress rehearsal of the first real run: ``omgm fetch`` then ``omgm reproduce`` for E-VQA and InfoSeek against
the whole release in miniature, served on 127.0.0.1 in its real layouts, with tiny RANDOM-weight models.

    python -m utils.rehearsal OUT                  # both datasets (bash scripts/rehearse.sh OUT)
    python -m utils.rehearsal OUT --datasets infoseek --questions 8

Writes ``OUT/evqa/tables.json|md`` and ``OUT/infoseek/tables.json|md`` (what ``omgm reproduce`` writes),
``OUT/rehearsal.json`` (wall times, which source served each file, the rows of each table group) and keeps the
fetched root in ``OUT/root`` and the release in ``OUT/release``. As a user meets them: InfoSeek's KB on Drive answers
with the quota page, so its Dropbox mirror serves it; InfoSeek's query images are placed by hand; the wiki images
are fetched after step 1 names the candidates, then step 2 runs again (``--force step2``). Every figure comes from
random weights: the rehearsal proves that every file lands where the code reads it and every row is computed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omgm.config import quiet_libraries
from utils.rehearsal import release as rel
from utils.rehearsal.server import Release, Server

PRIMARY_DOWN = {"infoseek-kb": "quota"}         # artifact -> the fault its first source answers with


def omgm(args: list[str], env: dict[str, str], log: Path) -> float:
    """One ``omgm`` command in its own process (as a user runs it), its output appended to ``log``."""
    start = time.monotonic()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ omgm {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "omgm", *args], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"omgm {' '.join(args[:2])} failed (exit {proc.returncode}): see {log}")
    return round(time.monotonic() - start, 1)


def rehearse(dataset: str, out: Path, registry: Path, env: dict[str, str], log: Path, quick: bool = False) -> dict:
    """fetch (the rows, then ``--rows train``), reproduce, fetch the candidates' wiki images, reproduce again
    (``--force step2``); ``quick``: one fetch of the rows and one reproduce, the wiki images fetched in between
    from the step-1 candidates that a first step 1 names."""
    root, result = out / "root", out / dataset
    common = ["--root", str(root), "--registry", str(registry), "--no_progress"]
    times = {}
    if dataset == "infoseek":
        rel.place_manual(root)
    times["fetch"] = omgm(["fetch", dataset, *common], env, log)
    repro = ["reproduce", dataset, "--root", str(root), "--registry", str(registry), "--out", str(result),
             "--run_ablations"]
    offline = {**env, "HF_HUB_OFFLINE": "1"}          # every stage finds the hub models in the root's cache alone
    if not quick:
        times["fetch_train"] = omgm(["fetch", dataset, "--rows", "train", *common], env, log)
        times["reproduce"] = omgm(repro, offline, log)
    else:                                              # the candidates' titles, as reproduce would write them
        (root / dataset).mkdir(parents=True, exist_ok=True)
        titles = sorted(e["title"] for e in json.loads((rel.DEMO / "kb.json").read_text(encoding="utf-8")).values())
        (root / dataset / "wiki_entities.txt").write_text("".join(t + "\n" for t in titles), encoding="utf-8")
    times["fetch_wiki_images"] = omgm(["fetch", dataset, "--only", "wiki-images", *common], env, log)
    times["reproduce_with_images"] = omgm([*repro, *([] if quick else ["--force", "step2"])], offline, log)
    lock = json.loads((root / "omgm_fetch.lock.json").read_text(encoding="utf-8"))["files"]
    tables = json.loads((result / "tables.json").read_text(encoding="utf-8"))
    return {"seconds": times, "served_by": {k: v.get("source") for k, v in sorted(lock.items())},
            "rows": {"main": [f"{r['label']}: {r['metric']}" for r in tables["rows"]],
                     **{g: [f"{r['name']}: {r['metric']}" for r in tables["group_rows"] if r["group"] == g]
                        for g in tables["groups"] if g != "main"}},
            "empty": [r.get("name") or r.get("label") for r in tables["rows"] + tables["group_rows"]
                      if r.get("ours") is None]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--datasets", default=",".join(rel.DATASETS))
    p.add_argument("--questions", type=int, default=None, help="the first N E-VQA test questions (default: all)")
    p.add_argument("--quick", action="store_true", help="one reproduce per dataset (the wiki images of every KB "
                                                        "entity fetched first) and no --rows train fetch")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    quiet_libraries()                   # tiny RANDOM models by design: said once, in the docstring and the tables
    start = time.monotonic()
    server = Server(Release())
    with server:
        registry = rel.build(out / "release", server, questions=args.questions)
        for name, fault in PRIMARY_DOWN.items():
            server.release.faults[f"drive:{_drive_id(registry, name)}"] = [fault]
        env = {**os.environ, **server.env(), "OMGM_CONFIG": "", "WANDB_MODE": "disabled"}
        report = {"built_s": round(time.monotonic() - start, 1), "datasets": {}}
        for dataset in args.datasets.split(","):
            report["datasets"][dataset] = rehearse(dataset, out, registry, env, out / "rehearsal.log", args.quick)
    report["wall_s"] = round(time.monotonic() - start, 1)
    report["requests"] = dict(sorted(server.release.seen.items()))
    (out / "rehearsal.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "requests"}, indent=2))
    return 0


def _drive_id(registry: Path, name: str) -> str:
    import yaml

    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    return next(a["source"]["gdrive"] for a in data["artifacts"] if a["name"] == name)


if __name__ == "__main__":
    sys.exit(main())
