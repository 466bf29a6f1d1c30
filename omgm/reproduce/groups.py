"""The table groups beyond the headline rows: ``retrieval``, ``ablation`` and ``efficiency``.

Each group is a list of rows ``{group, name, metric, paper, ours, ci95, reason, source}``: ``ours`` is measured by
this run (from the stage summaries it wrote) or None with ``reason`` saying what it would take (a file the
release lacks, a run omgm does not make); ``paper`` is the published figure, with ``source`` naming where it
comes from (the registry's ``tables`` entry of the dataset: data, not code). ``main`` is
:func:`omgm.reproduce.tables.build_tables`'s headline rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omgm.reproduce.plan import ABLATION_KS

GROUPS = ("main", "retrieval", "ablation", "efficiency")
CUTOFFS = ("R@1", "R@5", "R@10", "R@20")


def step2_run(summary: dict | None) -> dict:
    """The first run (first alpha) of a step-2 summary; {} without one."""
    return ((summary or {}).get("runs") or [{}])[0]


def recall_of(run: dict | None) -> tuple[dict, dict]:
    """(recall, ci95) of a step-1 summary or of a step-2 run."""
    return dict((run or {}).get("recall") or {}), dict((run or {}).get("ci95") or {})


def _recall(summaries: Callable[[str], dict | None], stage: str) -> tuple[dict, dict]:
    s = summaries(stage)
    return recall_of(step2_run(s) if "step2" in stage else s)          # step2, ablation_step2_k50, ...


def _metric(cut: str) -> str:
    return "recall@" + cut.split("@")[1]


def retrieval_rows(spec: dict, summaries: Callable[[str], dict | None]) -> list[dict]:
    """R@1/5/10/20 after step 1 and after step 2 (ours), beside the paper's rows for OMGM and its baselines."""
    rows = []
    for stage, label in (("step1", "OMGM step 1 (image -> summary index)"), ("step2", "OMGM after step 2")):
        recall, ci = _recall(summaries, stage)
        paper = next((r for r in spec.get("retrieval", []) if r.get("method") == "OMGM"), {}) if stage == "step2" else {}
        for cut in CUTOFFS:
            rows.append({"group": "retrieval", "name": label, "metric": _metric(cut), "paper": paper.get(_metric(cut)),
                         "ours": recall.get(cut), "ci95": ci.get(cut),
                         "reason": None if cut in recall else f"no {stage} result in this run"})
    for r in spec.get("retrieval", []):
        if r.get("method") == "OMGM":
            continue
        for metric in ("recall@1", "recall@20"):
            rows.append({"group": "retrieval", "name": f"{r['method']} (published, for context)", "metric": metric,
                         "paper": r.get(metric), "ours": None, "ci95": None,
                         "reason": "another method's published figure: omgm does not run it"})
    return rows


def _accuracy(summary: dict | None) -> float | None:
    """A step-3 summary's headline figure: E-VQA accuracy, or InfoSeek's final score."""
    ev = (summary or {}).get("evaluation") or {}
    return ev.get("final_score", ev.get("accuracy"))


def _gain(a: float | None, b: float | None) -> tuple[float | None, None]:
    return (None if a is None or b is None else round(a - b, 2)), None


def _vqa_gain(with_it: dict | None, without: dict | None) -> tuple[float | None, list | None]:
    """A step-3 figure minus another run's on the same questions: the paired bootstrap difference and its interval
    where both summaries keep 0/1 outcomes per question (E-VQA), else the difference of the headline figures."""
    from omgm.metrics.bootstrap import paired

    a, b = (((s or {}).get("evaluation") or {}).get("outcomes") for s in (with_it, without))
    if isinstance(a, dict) and isinstance(b, dict) and a and set(a) == set(b) and \
            all(isinstance(v, (int, float)) for v in [*a.values(), *b.values()]):
        keys = sorted(a)
        got = paired([a[k] for k in keys], [b[k] for k in keys])
        return got["difference"], got["interval"]
    return _gain(_accuracy(with_it), _accuracy(without))


def ablation_rows(spec: dict, summaries: Callable[[str], dict | None], answer_stage: str | None = None) -> list[dict]:
    """The ablations this run measures — step 1 alone vs after step 2 and the gain of re-ranking; with
    ``reproduce --run_ablations``, the re-ranking range k = 50 / 100 and the VQA gains of steps 2 and 3 — and the
    others with the command or data each would need. Recall rows carry their run's interval; a VQA gain, the
    paired bootstrap interval of the difference over the same questions."""
    measured: dict[str, tuple[float | None, list | None]] = {}
    for stage, key in (("step1", "step1"), ("step2", "step2"),
                       *((f"ablation_step2_k{k}", f"k{k}") for k in ABLATION_KS)):
        recall, ci = _recall(summaries, stage)
        for cut in ("R@1", "R@20"):
            measured[f"{key}:{_metric(cut)}"] = (recall.get(cut), ci.get(cut))
    measured["rerank_gain:recall@1"] = _gain(measured["step2:recall@1"][0], measured["step1:recall@1"][0])
    answers = summaries(answer_stage) if answer_stage else None
    measured["vqa_gain_step2:accuracy"] = _vqa_gain(answers, summaries("ablation_step3_on_step1"))
    measured["vqa_gain_step3:accuracy"] = _vqa_gain(answers, summaries("ablation_step3_beta0"))
    rows = []
    for r in spec.get("ablation", []):
        ours, ci = measured.get(f"{r['measured_by']}:{r['metric']}", (None, None)) if r.get("measured_by") else (None, None)
        rows.append({"group": "ablation", "name": r["name"], "metric": r["metric"], "paper": r.get("paper"),
                     "ours": ours, "ci95": ci if ours is not None else None,
                     "reason": None if ours is not None else (r.get("needs") or "not measured in this run")})
    return rows


def efficiency_rows(spec: dict, summaries: Callable[[str], dict | None], answer_stage: str | None,
                    accelerator: str) -> list[dict]:
    """Seconds per query measured by this run (retrieval: steps 1 + 2; end to end: + step 3), on this hardware,
    beside the paper's figures (measured on the authors' GPU)."""
    per_query = {}
    for stage in ("step1", "step2"):
        s = summaries(stage) or {}
        per_query[stage] = s.get("seconds_per_query")
    answers = summaries(answer_stage) if answer_stage else None
    if answers and answers.get("answers") and answers.get("seconds") is not None:
        per_query["step3"] = round(answers["seconds"] / answers["answers"], 4)
    retrieval = None if None in (per_query.get("step1"), per_query.get("step2")) \
        else round(per_query["step1"] + per_query["step2"], 4)
    end_to_end = None if retrieval is None or per_query.get("step3") is None else round(retrieval + per_query["step3"], 4)
    omgm = next((r for r in spec.get("efficiency", []) if r.get("method") == "OMGM"), {})
    where = "CPU only" if accelerator.startswith("none") else accelerator
    rows = [{"group": "efficiency", "name": f"OMGM, this run on {where}", "metric": "retrieval s/query",
             "paper": omgm.get("retrieval_s"), "ours": retrieval, "ci95": None,
             "reason": None if retrieval is not None else "steps 1 and 2 did not both run"},
            {"group": "efficiency", "name": f"OMGM, this run on {where}", "metric": "end-to-end s/query",
             "paper": omgm.get("inference_s"), "ours": end_to_end, "ci95": None,
             "reason": None if end_to_end is not None else "no step-3 row ran"}]
    for r in spec.get("efficiency", []):
        if r.get("method") != "OMGM":
            for metric, key in (("retrieval s/query", "retrieval_s"), ("end-to-end s/query", "inference_s"),
                                ("VQA accuracy, setting not stated", "vqa_unclear")):
                if r.get(key) is not None:
                    rows.append({"group": "efficiency", "name": f"{r['method']} (published, for context)",
                                 "metric": metric, "paper": r[key], "ours": None, "ci95": None,
                                 "reason": "another method's published figure: omgm does not run it"})
    return rows


def group_rows(groups: list[str], spec: dict, out: Path, read_summary: Callable[[Path], dict | None],
               answer_row: str | None, accelerator: str) -> list[dict[str, Any]]:
    """Every row of the chosen groups (``main`` excluded: the headline rows are built apart)."""
    def summaries(stage: str) -> dict | None:
        return read_summary(out / stage / "result.json")

    rows: list[dict] = []
    if "retrieval" in groups:
        rows += retrieval_rows(spec, summaries)
    answer_stage = f"step3_{answer_row}" if answer_row else None
    if "ablation" in groups:
        rows += ablation_rows(spec, summaries, answer_stage)
    if "efficiency" in groups:
        rows += efficiency_rows(spec, summaries, answer_stage, accelerator)
    source = spec.get("source")
    for r in rows:
        r["source"] = source if r["paper"] is not None else None
    return rows
