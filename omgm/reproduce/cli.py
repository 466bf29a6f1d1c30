"""``omgm reproduce DATASET --root DIR --out OUT``: the paper's rows from the files ``omgm fetch`` laid out.

    omgm reproduce evqa --root $DATA --out $OUT            # KB import, steps 1-3, metrics, report, tables
    omgm reproduce evqa --root $DATA --out $OUT --dry_run  # the plan: commands, files, disk, GPU time
    omgm reproduce evqa --root $DATA --out $OUT --rows retrieval,internvl

Each stage is the published command (the same entry points, the published settings); a killed reproduction
continues in the stage it was in. Writes ``OUT/tables.json`` and ``OUT/tables.md`` (every chosen row beside the
paper's number, with the sha256 of every input and the command lines) and ``OUT/report.html``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from omgm.errors import cli_errors
from omgm.fetch.lock import Lock
from omgm.fetch.registry import load_registry
from omgm.help import command_parser
from omgm.io import OutputLock
from omgm.reproduce import dry_run
from omgm.reproduce.groups import GROUPS
from omgm.reproduce.plan import build_plan, config_for
from omgm.reproduce.state import ReproduceError, RunState
from omgm.reproduce.tables import build_tables, write_tables


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("reproduce", __doc__)
    p.add_argument("dataset", help="evqa, infoseek or demo")
    p.add_argument("--root", required=True, help="the folder omgm fetch filled")
    p.add_argument("--out", required=True, help="results, report and tables")
    p.add_argument("--rows", default=None, help="comma-separated published rows (default: every row whose files "
                                                 "are present)")
    p.add_argument("--dry_run", action="store_true", help="print the plan (files, disk, missing models and images, "
                                                          "time, commands) and write nothing")
    p.add_argument("--json", action="store_true", help="with --dry_run: the plan as JSON")
    p.add_argument("--costs", default=None, help="a benchmarks/gpu_suite.py JSON: per-query GPU costs for --dry_run")
    p.add_argument("--registry", default=None)
    p.add_argument("--tables", default=",".join(GROUPS), help="table groups to write: main (the published rows), "
                                                              "retrieval (R@1-20 after steps 1 and 2, beside the "
                                                              "baselines), ablation, efficiency (seconds per query "
                                                              "on this hardware)")
    p.add_argument("--run_ablations", action="store_true", help="also make the ablation table's extra runs: step 1 "
                                                                   "keeping 50 and 100 entities and step 2 over them; "
                                                                   "the first step-3 row on the step-1 results and with "
                                                                   "--step2_beta 0 (two more passes of the generator)")
    p.add_argument("--force", default="", help="comma-separated stages to run again even when done (kb_import, "
                                               "step1, step2, step3_ROW, report); later stages rerun where their "
                                               "inputs then differ")
    return p


def note_wiki_entities(step1: Path, target: Path, dataset: str, root: Path) -> None:
    """The candidates' titles, for ``omgm fetch DATASET --only wiki-images`` (step 2 scores their images)."""
    from omgm.prep.download_wiki_images import only_titles

    titles = sorted(only_titles(step1))
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text(encoding="utf-8").split("\n")[:-1] != titles:
        target.write_text("".join(t + "\n" for t in titles), encoding="utf-8")
        print(f"wrote the {len(titles)} step-1 candidate titles to {target}: entities without their images get step-2 "
              f"score 0; `omgm fetch {dataset} --root {root} --only wiki-images` downloads the missing ones")


def available_rows(registry, dataset: str, root: Path, out: Path, *, config: Path) -> tuple[list[str], dict[str, str]]:
    """The published rows whose generators are on disk, and why each other row is not run."""
    rows, skipped = [], {}
    for row in registry.rows(dataset):
        stages = build_plan(registry, dataset, root, out, rows=[row], config=config)
        absent = [p for s in stages if s.name.startswith("step3") for p in s.missing()]
        if not absent:
            rows.append(row)
            continue
        manual = [a.source["manual"] for a in registry.artifacts.values()
                  if a.source_kind == "manual" and any(p == root / a.dest for p in absent)]
        skipped[row] = f"its generator is not there ({', '.join(map(str, absent))})" + \
            "".join(f": {' '.join(m.split())}" for m in manual)
        print(f"row {row}: skipped, {skipped[row]}")
    return rows, skipped


def chosen_rows(args, registry, root: Path, out: Path, config: Path) -> tuple[list[str], dict[str, str]]:
    """``--rows`` (checked), or every published row whose generator is there (and why each other one is not)."""
    if not args.rows:
        return (registry.rows(args.dataset), {}) if args.dry_run else \
            available_rows(registry, args.dataset, root, out, config=config)
    rows = args.rows.split(",")
    unknown = set(rows) - set(registry.rows(args.dataset))
    if unknown:
        raise ReproduceError(f"--rows: {args.dataset} has no row {', '.join(sorted(unknown))} "
                             f"(rows: {', '.join(registry.rows(args.dataset))})")
    return rows, {}


def checked_choices(args, stages) -> tuple[tuple[str, ...], set[str]]:
    """``--tables`` and ``--force``, each refused with one line when it names what is not there."""
    groups = tuple(g for g in args.tables.split(",") if g)
    if not groups or set(groups) - set(GROUPS):
        raise ReproduceError(f"--tables: choose among {', '.join(GROUPS)} (got {args.tables!r})")
    force = {s for s in args.force.split(",") if s}
    unknown = force - {s.name for s in stages}
    if unknown:
        raise ReproduceError(f"--force: no stage {', '.join(sorted(unknown))} in this plan "
                             f"({', '.join(s.name for s in stages)})")
    return groups, force


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = load_registry(args.registry)
    root, out = Path(args.root).resolve(), Path(args.out).resolve()
    for flag, folder in (("--root", root), ("--out", out)):
        if folder.exists() and not folder.is_dir():
            raise ReproduceError(f"{flag} {folder} is a file, not a folder")
    config = out / "reproduce_config.yaml"
    if not args.dry_run:                                # a dry run writes nothing
        out.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(config_for(registry, args.dataset, root), sort_keys=True))
    rows, skipped = chosen_rows(args, registry, root, out, config)
    stages = build_plan(registry, args.dataset, root, out, rows=rows, config=config, ablations=args.run_ablations)
    if args.dry_run:
        found = dry_run.plan(registry, args.dataset, root, stages, rows=rows, costs=args.costs)
        print(dry_run.as_json(found) if args.json else dry_run.render(found))
        return 0
    groups, force = checked_choices(args, stages)
    hub_cache = root / "models" / "hub_cache"
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "OMGM_CONFIG": ""}
    with OutputLock(out / "tables.json"):
        state = RunState.load(out, hub_cache)
        for stage in stages:
            print(f"[{stage.name}] {state.run(stage, env, force=stage.name in force)}", flush=True)
            if stage.name == "step1":
                note_wiki_entities(stage.output, root / args.dataset / "wiki_entities.txt", args.dataset, root)
        tables = build_tables(registry, args.dataset, rows, out, stages=stages, state=state,
                              lock_files=Lock(root).files, root=root, groups=groups, skipped=skipped)
        paths = write_tables(tables, out)
    print(paths[1].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
