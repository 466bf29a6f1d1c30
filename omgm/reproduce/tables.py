"""``OUT/tables.json`` and ``OUT/tables.md``: every published row beside ours, with where each input came from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import omgm
from omgm.bookkeeping import read_bookkeeping
from omgm.fetch.registry import Registry
from omgm.io import sibling, write_json_atomic
from omgm.metrics.bootstrap import LEVEL, RESAMPLES, SEED
from omgm.reproduce.groups import group_rows, recall_of, step2_run
from omgm.reproduce.plan import Stage
from omgm.reproduce.provenance import changed, environment
from omgm.reproduce.state import RunState

TABLES_FORMAT, TABLES_VERSION = "omgm.tables", 3   # 3: rows not run are listed, with why
# what the tables read of a stage's *.summary.json (the rest is free-form)
_OBJ = {"*": object}
SUMMARY_SHAPE = {"evaluation?": {"by_question_type?": _OBJ, "unseen_question?": _OBJ, "unseen_entity?": _OBJ,
                                 "*": object},
                 "runs?": [{"recall?": _OBJ, "ci95?": _OBJ, "*": object}], "*": object}


def _summary(result: Path) -> dict | None:
    return read_bookkeeping(sibling(result, ".summary.json"), SUMMARY_SHAPE, what="a stage summary",
                            fix="delete it and the stage's result, and run reproduce again")


@dataclass
class Measured:
    """Our figures for one row, their 95% bootstrap intervals over questions, how they were measured, and the
    breakdowns the dataset defines."""
    figures: dict[str, float | None]
    intervals: dict[str, list | None]
    how: str
    breakdown: dict[str, Any]


def measured(row: dict, out: Path, row_name: str) -> Measured:
    """Our figures for one row, read from the stage summaries (see :class:`Measured`)."""
    if row.get("generator"):
        s = _summary(out / f"step3_{row_name}" / "result.json")
        ev = (s or {}).get("evaluation") or {}
        if "final_score" in ev:                  # InfoSeek: the harmonic mean of its two splits, as the paper's
            parts = {k: (ev.get(k) or {}).get("score") for k in ("unseen_question", "unseen_entity")}
            return Measured({"accuracy": ev["final_score"]}, {"accuracy": ev.get("ci95")}, ev.get("metric", ""),
                            {"final score (harmonic mean)": ev["final_score"], **parts})
        return Measured({"accuracy": ev.get("accuracy")}, {"accuracy": ev.get("ci95")}, ev.get("metric", "not run"),
                        {f"question type {t}": v.get("accuracy") for t, v in (ev.get("by_question_type") or {}).items()
                         if isinstance(v, dict)})
    run = step2_run(_summary(out / "step2" / "result.json"))
    recall, ci = recall_of(run)
    return Measured({"recall@1": recall.get("R@1"), "recall@20": recall.get("R@20")},
                    {"recall@1": ci.get("R@1"), "recall@20": ci.get("R@20")},
                    f"recall after reranking, alpha {run.get('alpha', '?')}", {})


def inputs_read(stages: list[Stage], state: RunState, lock_files: dict[str, dict], root: Path) -> list[dict]:
    """Every input of every stage as that stage read it, with where it stands: against the fetch lock (the same
    bytes as fetched, other bytes, or not fetched) and now (as read, or changed since)."""
    out = []
    for st in stages:
        done = state.stages.get(st.name)
        for rec in (done or {}).get("inputs", []):
            entry = {"stage": st.name, **{k: v for k, v in rec.items() if k != "mtime_ns"}}
            if "file" in rec:
                rel = Path(rec["file"]).relative_to(root).as_posix() if Path(rec["file"]).is_relative_to(root) else None
                known = lock_files.get(rel) if rel else None
                entry["lock"] = "not fetched" if not known else (
                    "as fetched" if known["sha256"] == rec["sha256"] else "DIFFERS from the fetched file")
                entry["now"] = "CHANGED since the stage read it" if changed([rec], state.hashes) else "as read"
            out.append(entry)
    return out


def stage_facts(stages: list[Stage], state: RunState, out: Path) -> list[dict]:
    """Each stage's command, seconds, and the device and dtype its summary names."""
    facts = []
    for st in stages:
        summary = _summary(st.output) if st.output.suffix == ".json" and st.output.is_relative_to(out) else None
        done = state.stages.get(st.name) or {}
        facts.append({"stage": st.name, "command": st.command(), "seconds": done.get("seconds"),
                      "device": (summary or {}).get("device"), "dtype": (summary or {}).get("dtype")})
    return facts


def build_tables(registry: Registry, dataset: str, rows: list[str], out: Path, *, stages: list[Stage],
                 state: RunState, lock_files: dict[str, dict], root: Path,
                 groups: tuple[str, ...] = ("main",), skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """The tables of ``rows`` (run) and of ``skipped`` (published rows not run: row -> why), in registry order."""
    ds = registry.dataset(dataset)
    table = []
    for name in [r for r in ds["rows"] if r in rows or r in (skipped or {})]:
        row = ds["rows"][name]
        if name not in rows:
            table += [{"row": name, "label": row["label"], "metric": metric, "paper": ref, "ours": None, "ci95": None,
                       "breakdown": {}, "difference": None, "measured_as": "not run", "reason": skipped[name],
                       "commands": []} for metric, ref in (row.get("paper") or {}).items()]
            continue
        got = measured(row, out, name)
        paper = row.get("paper") or {}
        for metric, value in got.figures.items():
            ref = paper.get(metric)
            table.append({"row": name, "label": row["label"], "metric": metric, "paper": ref, "ours": value,
                          "ci95": got.intervals.get(metric), "breakdown": got.breakdown,
                          "difference": None if ref is None or value is None else round(value - ref, 2),
                          "measured_as": got.how, "reason": None if value is not None else "not measured",
                          "commands": [st.command() for st in stages if name in st.rows or st.name.endswith(name)]})
    env = environment()
    answer_row = next((n for n in rows if ds["rows"][n].get("generator")), None)
    more = group_rows(list(groups), ds.get("tables") or {}, out, _summary, answer_row, env["accelerator"])
    return {"format": TABLES_FORMAT, "version": TABLES_VERSION, "dataset": dataset, "omgm_version": omgm.__version__,
            "git_commit": env["git_commit"], "random_weights": bool(ds.get("random_weights")),
            "groups": list(groups), "rows": table if "main" in groups else [], "group_rows": more,
            "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": LEVEL, "over": "questions"},
            "inputs": inputs_read(stages, state, lock_files, root), "stages": stage_facts(stages, state, out),
            "environment": env, "commands": [st.command() for st in stages]}


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _group_lines(tables: dict[str, Any]) -> list[str]:
    """One section per table group beyond ``main``: paper, ours, and why a figure is missing."""
    lines = []
    for group in [g for g in tables.get("groups", []) if g != "main"]:
        rows = [r for r in tables.get("group_rows", []) if r["group"] == group]
        lines += ["", f"## {group.capitalize()}", "", "| row | metric | paper | ours | why no figure |",
                  "|---|---|---|---|---|"]
        for r in rows:
            ci = f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r.get("ci95") else ""
            lines.append(f"| {r['name']} | {r['metric']} | {_fmt(r['paper'])} | {_fmt(r['ours'])}{ci} | "
                         f"{r['reason'] or ''} |")
        sources = {r["source"] for r in rows if r.get("source")}
        lines += [f"\nPaper figures: {s}." for s in sorted(sources)]
    return lines


def write_tables(tables: dict[str, Any], out: Path) -> tuple[Path, Path]:
    json_path = write_json_atomic(out / "tables.json", tables, indent=1)
    lines = [f"# {tables['dataset']}: the paper's numbers beside this run", ""]
    if tables["random_weights"]:
        lines += ["**Tiny RANDOM-weight models: these numbers only show that every stage ran.**", ""]
    b = tables["bootstrap"]
    lines += [f"| row | metric | paper | ours [{b['level']:.0%} interval] | difference | measured as | why no figure |",
              "|---|---|---|---|---|---|---|"]
    for r in tables["rows"]:
        ci = f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r.get("ci95") else ""
        lines.append(f"| {r['label']} | {r['metric']} | {_fmt(r['paper'])} | {_fmt(r['ours'])}{ci} | "
                     f"{_fmt(r['difference'])} | {r['measured_as']} | {r.get('reason') or ''} |")
    lines += ["", f"Intervals: percentile bootstrap over questions, {b['resamples']} resamples, seed {b['seed']}."]
    lines += _group_lines(tables)
    parts = {r["label"]: r["breakdown"] for r in tables["rows"] if r.get("breakdown")}
    if parts:
        lines += ["", "## Breakdowns", ""] + [f"- {label}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in bd.items())
                                              for label, bd in parts.items()]
    env = tables["environment"]
    dirty = {True: ", with uncommitted changes", False: "", None: ""}[env["uncommitted_changes"]]
    lines += ["", f"omgm {tables['omgm_version']}, commit {env['git_commit'] or 'unknown'}{dirty}; Python "
              f"{env['python']}; {', '.join(f'{k} {v}' for k, v in env['libraries'].items())}; accelerator: "
              f"{env['accelerator']}; {env['cpus']} CPUs.", "",
              "## Inputs, as each stage read them", "",
              "| stage | file or model | sha256 or revision | fetch lock | now |", "|---|---|---|---|---|"]
    for i in tables["inputs"]:
        ident = f"{str(i['sha256'])[:16]}…" if "sha256" in i else (i.get("revision") or "not in the hub cache")
        lines.append(f"| {i['stage']} | {i.get('file') or i.get('model')} | {ident} | {i.get('lock', '')} | "
                     f"{i.get('now', '')} |")
    lines += ["", "## Stages, in the order they ran", "", "| stage | seconds | device | dtype | command |",
              "|---|---|---|---|---|"]
    lines += [f"| {f['stage']} | {_fmt(f['seconds'])} | {f['device'] or '—'} | {f['dtype'] or '—'} | `{f['command']}` |"
              for f in tables["stages"]]
    md = out / "tables.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(md)
    return json_path, md
