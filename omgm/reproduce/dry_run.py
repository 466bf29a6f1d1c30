"""``omgm reproduce ... --dry_run``: the plan of a reproduction before anything is fetched or run, as a table a
person reads (``--json`` for machines): each released file with its size and status, the disk still to fill, the
hub models and query images still missing, a time estimate, and the stage commands. It writes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omgm.bookkeeping import read_bookkeeping
from omgm.fetch.fetcher import Fetcher
from omgm.fetch.registry import Registry
from omgm.published import PAPER_SECONDS_PER_QUERY
from omgm.reproduce.plan import Stage


def _artifacts(fetcher: Fetcher, dataset: str, rows: list[str]) -> list[dict]:
    out = []
    for a in fetcher.registry.select(dataset, rows):
        done = fetcher.is_done(a) if a.source_kind != "manual" else fetcher.target(a).exists()
        known = fetcher.recorded(a)
        out.append({"name": a.name, "kind": "hub model" if a.source_kind == "hub" else a.kind,
                    "size_bytes": known["size"] if known else a.disk_need, "size_known": bool(known or a.disk_need),
                    "download_bytes": a.download_size, "unpacked_bytes": a.unpacked_size,
                    "status": "present" if done else ("manual" if a.source_kind == "manual" else "missing"),
                    "source": a.describe_source()})
    return out


def _estimate(n: int | None, generator_rows: int, costs: str | None) -> dict:
    if n is None:
        return {"note": "the split is not fetched yet: the number of questions is unknown"}
    if costs:
        number = (int, float)
        got = read_bookkeeping(costs, {"derived": {"retrieval_s_per_query": number, "end_to_end_s_per_query": number,
                                                   "*": object}, "*": object},
                               what="--costs (benchmarks/gpu_suite.py's JSON)", fix="pass the file the GPU suite wrote")
        if got is None:
            from omgm.reproduce.state import ReproduceError

            raise ReproduceError(f"--costs {costs}: file not found")
        retrieval, end_to_end, basis = (got["derived"]["retrieval_s_per_query"],
                                        got["derived"]["end_to_end_s_per_query"], f"measured on your GPU ({costs})")
    else:
        retrieval, end_to_end = PAPER_SECONDS_PER_QUERY["retrieval"], PAPER_SECONDS_PER_QUERY["end_to_end"]
        basis = "the paper's per-query times on the authors' GPU (pass --costs for your GPU's)"
    hours = n * (retrieval + generator_rows * max(0.0, end_to_end - retrieval)) / 3600
    return {"questions": n, "hours": round(hours, 2), "retrieval_s_per_query": retrieval,
            "end_to_end_s_per_query": end_to_end, "basis": basis}


def plan(registry: Registry, dataset: str, root: Path, stages: list[Stage], *, rows: list[str],
         costs: str | None) -> dict[str, Any]:
    """Everything the dry run shows, as data (what ``--json`` prints)."""
    fetcher = Fetcher(registry, root, dataset, create=False)
    arts = _artifacts(fetcher, dataset, rows)
    images = fetcher.query_images()                         # the split, read once: questions and missing images
    n = images["questions"] if images else None
    generators = sum(1 for r in rows if registry.dataset(dataset)["rows"][r].get("generator"))
    missing = [a for a in arts if a["status"] == "missing"]
    return {"dataset": dataset, "rows": rows, "root": str(root), "artifacts": arts,
            "to_download_bytes": sum(a["size_bytes"] or 0 for a in missing),
            "to_download_unknown_size": [a["name"] for a in missing if not a["size_known"]],
            "on_disk_bytes": sum(e.get("size", 0) for e in fetcher.lock.files.values()),
            "hub_models_missing": [a["name"] for a in missing if a["kind"] == "hub model"],
            "query_images": images and {"questions": n, "missing": len(images["missing"])},
            "time": _estimate(n, generators, costs),
            "stages": [{"stage": s.name, "command": s.command(),
                        "missing_inputs": [str(p) for p in s.missing()]} for s in stages]}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} B"


def render(p: dict[str, Any]) -> str:
    """The plan as text: a table of files, then the totals, the estimate and the stages."""
    lines = [f"reproduce {p['dataset']} (rows: {', '.join(p['rows'])}) from {p['root']}", "",
             f"{'file':<30} {'kind':<12} {'size':>11}  status"]
    lines += [f"{a['name']:<30} {a['kind']:<12} {_size(a['size_bytes']):>11}  {a['status']}" for a in p["artifacts"]]
    unknown = p["to_download_unknown_size"]
    lines += ["", f"still to download: {_size(p['to_download_bytes'])}"
              + (f" + {len(unknown)} files of unknown size ({', '.join(unknown[:4])}{'...' if len(unknown) > 4 else ''})"
                 if unknown else ""), f"fetched so far: {_size(p['on_disk_bytes'])}",
              "hub models missing: " + (", ".join(p["hub_models_missing"]) or "none")]
    qi = p["query_images"]
    lines.append("query images: split not fetched yet" if qi is None else
                 f"query images: {qi['questions'] - qi['missing']} of {qi['questions']} on disk, {qi['missing']} missing")
    t = p["time"]
    lines.append(f"time: {t['note']}" if "note" in t else
                 f"time: ~{t['hours']} GPU hours for {t['questions']} questions, at {t['basis']}")
    lines += ["", "stages:"]
    for i, s in enumerate(p["stages"], 1):
        gap = f"   [missing: {', '.join(s['missing_inputs'])}]" if s["missing_inputs"] else ""
        lines.append(f"{i}. {s['stage']}: {s['command']}{gap}")
    return "\n".join(lines)


def as_json(p: dict[str, Any]) -> str:
    return json.dumps(p, indent=1)
