"""``OUT/tables.json`` and ``OUT/tables.md``: every published row beside ours, with where each input came from."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import omgm
from omgm.bookkeeping import read_bookkeeping
from omgm.fetch.registry import Registry
from omgm.io import sibling, write_json_atomic
from omgm.reproduce.plan import Stage

TABLES_FORMAT, TABLES_VERSION = "omgm.tables", 1
# what the tables read of a stage's *.summary.json (the rest is free-form)
SUMMARY_SHAPE = {"evaluation?": {"*": object}, "runs?": [{"recall?": {"*": object}, "*": object}], "*": object}


def _summary(result: Path) -> dict | None:
    return read_bookkeeping(sibling(result, ".summary.json"), SUMMARY_SHAPE, what="a stage summary",
                            fix="delete it and the stage's result, and run reproduce again")


def measured(row: dict, out: Path, row_name: str) -> tuple[dict[str, float | None], str]:
    """Our figures for one row (from the stage summaries) and how they were measured."""
    if row.get("generator"):
        s = _summary(out / f"step3_{row_name}" / "result.json")
        ev = (s or {}).get("evaluation") or {}
        return {"accuracy": ev.get("accuracy")}, ev.get("metric", "not run")
    s = _summary(out / "step2" / "result.json")
    run = ((s or {}).get("runs") or [{}])[0]
    recall = run.get("recall") or {}
    return ({"recall@1": recall.get("R@1"), "recall@20": recall.get("R@20")},
            f"recall after reranking, alpha {run.get('alpha', '?')}")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(omgm.__file__).parents[1], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_tables(registry: Registry, dataset: str, rows: list[str], out: Path, *, stages: list[Stage],
                 lock_files: dict[str, dict], root: Path) -> dict[str, Any]:
    ds = registry.dataset(dataset)
    inputs = [{"file": str(root / rel), "sha256": e.get("sha256"), "size": e.get("size"), "source": e.get("source")}
              for rel, e in sorted(lock_files.items())]
    table = []
    for name in rows:
        row = ds["rows"][name]
        ours, how = measured(row, out, name)
        paper = row.get("paper") or {}
        for metric, value in ours.items():
            ref = paper.get(metric)
            table.append({"row": name, "label": row["label"], "metric": metric, "paper": ref, "ours": value,
                          "difference": None if ref is None or value is None else round(value - ref, 2),
                          "measured_as": how,
                          "commands": [st.command() for st in stages if name in st.rows or st.name.endswith(name)]})
    return {"format": TABLES_FORMAT, "version": TABLES_VERSION, "dataset": dataset, "omgm_version": omgm.__version__,
            "git_commit": _git_commit(), "random_weights": bool(ds.get("random_weights")), "rows": table,
            "inputs": inputs, "commands": [st.command() for st in stages]}


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_tables(tables: dict[str, Any], out: Path) -> tuple[Path, Path]:
    json_path = write_json_atomic(out / "tables.json", tables, indent=1)
    lines = [f"# {tables['dataset']}: the paper's numbers beside this run", ""]
    if tables["random_weights"]:
        lines += ["**Tiny RANDOM-weight models: these numbers only show that every stage ran.**", ""]
    lines += ["| row | metric | paper | ours | difference | measured as |", "|---|---|---|---|---|---|"]
    for r in tables["rows"]:
        lines.append(f"| {r['label']} | {r['metric']} | {_fmt(r['paper'])} | {_fmt(r['ours'])} | "
                     f"{_fmt(r['difference'])} | {r['measured_as']} |")
    lines += ["", f"omgm {tables['omgm_version']}, commit {tables['git_commit'] or 'unknown'}.", "",
              "## Inputs", "", "| file | sha256 | source |", "|---|---|---|"]
    lines += [f"| {i['file']} | {str(i['sha256'])[:16]}… | {i['source']} |" for i in tables["inputs"]]
    lines += ["", "## Commands, in the order they ran", ""] + [f"    {c}" for c in tables["commands"]]
    md = out / "tables.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(md)
    return json_path, md
