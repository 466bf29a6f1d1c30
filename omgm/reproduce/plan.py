"""The plan of a reproduction: which stage commands the chosen published rows need, with the published settings.

Settings come from the registry's dataset entry (``omgm/fetch/registry.yaml``): paths relative to ``--root`` in
the layout ``omgm fetch`` writes, hub ids for the hub models. Every stage is the same entry point a user runs
by hand (``python -m omgm.step1 ...``), so each one resumes on its own; the plan only orders them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omgm.fetch.registry import Registry

SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []       # python -P: no working directory on sys.path


@dataclass
class Stage:
    name: str
    module: str
    args: list[str]
    output: Path                                  # the file whose existence (with the state) means done
    rows: tuple[str, ...] = ()
    needs: list[Path] = field(default_factory=list)
    reuse_output: bool = False                    # an output outside OUT that is only ever written complete
    reads: list[str] = field(default_factory=list)   # files and models whose identity the tables record
    settings: dict[str, Any] = field(default_factory=dict)  # the config settings its command reads: part of its key

    def missing(self) -> list[Path]:
        """The inputs the stage needs that are not on disk."""
        return [p for p in self.needs if not p.exists()]

    def argv(self) -> list[str]:
        """The stage as a subprocess. ``-P``: the working directory is not put on ``sys.path``, so a folder named
        ``omgm`` there (a clone, say) is never imported in place of the installed package."""
        return [sys.executable, *SAFE_PATH, "-m", self.module, *self.args]

    def command(self) -> str:
        return " ".join(["python", "-m", self.module, *self.args])


def build_plan(registry: Registry, dataset: str, root: Path, out: Path, *, rows: list[str], config: Path,
               extra: dict[str, list[str]] | None = None, ablations: bool = False) -> list[Stage]:
    """Stages for ``rows``: KB import, step 1, step 2 (rerank), step 3 per generator row, then the report; with
    ``ablations``, the extra runs of the ablation table before the report (:func:`ablation_stages`)."""
    ds = registry.dataset(dataset)
    s = registry.settings(dataset, root)
    cfg, nop = ["--config", str(config)], ["--no_progress"]
    retrieval_rows = tuple(rows)
    step1, step2 = out / "step1" / "result.json", out / "step2" / "result.json"

    def reads(*keys: str) -> list[str]:
        return [s[k] for k in keys if s.get(k) is not None]

    stages = [
        Stage("kb_import", "omgm.data.kb_import", ["--kb_json", s["kb_json"], "--out", s["knowledge_base"], *cfg, *nop],
              Path(s["knowledge_base"]), retrieval_rows, [Path(s["kb_json"])], reuse_output=True,
              reads=reads("kb_json", "wiki_img_csv_dir")),     # the store depends on these files alone
        Stage("step1", "omgm.step1", [*cfg, "--save_result_path", str(out / "step1") + "/", *nop],
              step1, retrieval_rows, [Path(s["faiss_index"])],
              reads=reads("sample_file", "knowledge_base", "faiss_index", "retriever_pretrained", "retriever_path")),
        Stage("step2", "omgm.step2", ["rerank", *cfg, "--step1_result", str(step1),
                                      "--save_result_path", str(out / "step2") + "/", *nop],
              step2, retrieval_rows, [Path(s["reranker_ckpt_path"])],
              reads=[*reads("sample_file", "knowledge_base"), str(step1),
                     *reads("reranker_ckpt_path", "reranker_model_name", "tokenizer")]),
    ]
    answers = []
    for row in rows:
        gen = ds["rows"][row].get("generator")
        if not gen:
            continue
        g = {k: registry.resolve(v, root) for k, v in ds["generators"][gen].items()}
        flags = [x for k, v in g.items() for x in (f"--{k}", str(v))]
        flags += [x for k in ("bem_model", "infoseek_val", "infoseek_qtype") if k in s for x in (f"--{k}", s[k])]
        target = out / f"step3_{row}"
        needs = [Path(g["llm_checkpoint"])] if str(g.get("llm_checkpoint", "")).startswith(str(root)) else []
        models = [str(v) for k, v in g.items() if k != "answer_generator" or str(v).startswith(str(root))]
        stages.append(Stage(f"step3_{row}", "omgm.step3", [*cfg, "--retrieval_results_file", str(step2),
                                                           "--output_file", str(target) + "/", *flags,
                                                           *(extra or {}).get(row, []), *nop],
                            target / "result.json", (row,), needs,
                            reads=[*reads("sample_file", "knowledge_base"), str(step2), *models,
                                   *reads("section_reranker", "bem_model", "infoseek_val", "infoseek_qtype")]))
        answers.append(target / "result.json")
    report = ["--step1", str(out / "step1" / "result.json"), "--step2", str(out / "step2" / "result.json")]
    if answers:
        report += ["--answers", str(answers[0])]
    stages.append(Stage("report", "omgm", ["report", *cfg, *report, "--out", str(out / "report.html")],
                        out / "report.html", retrieval_rows,
                        reads=[str(step1), str(step2), *map(str, answers[:1])]))
    if ablations:
        measures = {r.get("measured_by") for r in (ds.get("tables") or {}).get("ablation", [])}
        stages[-1:-1] = ablation_stages(stages, out, next((s for s in stages if s.name.startswith("step3")), None),
                                        measures)
    config_values = config_for(registry, dataset, root)
    for stage in stages:
        stage.settings = settings_read(stage, config_values)
    return stages


ABLATION_KS = (50, 100)                          # the re-ranking range k beyond the published 20


def _variant(stage: Stage, name: str, out: Path, swap: dict[str, str], more: list[str]) -> Stage:
    """``stage`` run again into ``OUT/name/``: the flags in ``swap`` take new values (and the files it reads with
    them), ``more`` is added."""
    args, renamed = list(stage.args), {}
    for flag, value in swap.items():
        i = args.index(flag) + 1
        renamed[args[i]], args[i] = value, value
    target = out / name
    args[args.index("--save_result_path" if "--save_result_path" in args else "--output_file") + 1] = str(target) + "/"
    return Stage(name, stage.module, [*args[:-1], *more, args[-1]], target / "result.json", (), list(stage.needs),
                 reads=[renamed.get(r, r) for r in stage.reads])


def ablation_stages(stages: list[Stage], out: Path, first_answer: Stage | None, measures: set) -> list[Stage]:
    """The extra runs that the dataset's ablation rows measure (``measures``: their ``measured_by``): step 1
    keeping k = 50 / 100 entities and step 2 re-ranking them (``k50``, ``k100``); and, with a step-3 row, its
    generator on the step-1 results (``vqa_gain_step2``) and with ``--step2_beta 0`` (``vqa_gain_step3``)."""
    by_name = {s.name: s for s in stages}
    extra = []
    for k in (k for k in ABLATION_KS if f"k{k}" in measures):
        s1 = _variant(by_name["step1"], f"ablation_step1_k{k}", out, {}, ["--retrieval_top_k", str(k)])
        extra += [s1, _variant(by_name["step2"], f"ablation_step2_k{k}", out, {"--step1_result": str(s1.output)}, [])]
    if first_answer is not None and "vqa_gain_step2" in measures:
        extra.append(_variant(first_answer, "ablation_step3_on_step1", out,
                              {"--retrieval_results_file": str(by_name["step1"].output)}, []))
    if first_answer is not None and "vqa_gain_step3" in measures:
        extra.append(_variant(first_answer, "ablation_step3_beta0", out, {}, ["--step2_beta", "0"]))
    return extra


# a stage's module -> where its command's argument parser is (what it reads from the config file)
_PARSERS = {"omgm.data.kb_import": ("omgm.data.kb_import", "build_parser"),
            "omgm.step1": ("omgm.commands.step1", "build_parser"),
            "omgm.step2": ("omgm.commands.step2", "rerank_parser"),
            "omgm.step3": ("omgm.commands.step3", "build_parser"),
            "omgm": ("omgm.commands.report", "build_parser")}


def _parser(stage: Stage):
    import importlib

    module, name = _PARSERS[stage.module]
    return getattr(importlib.import_module(module), name)()


def settings_read(stage: Stage, values: dict[str, Any]) -> dict[str, Any]:
    """The config settings ``stage``'s command reads (its flags' names): a change to one of them reruns the stage,
    a change to a setting only other stages read does not."""
    dests = {a.dest for a in _parser(stage)._actions}
    return {k: values[k] for k in sorted(values) if k in dests}


def config_for(registry: Registry, dataset: str, root: Path) -> dict[str, Any]:
    """The config file every stage reads: the dataset's settings, and its split as each stage's sample file."""
    s = registry.settings(dataset, root)
    for key in ("test_file",):
        s.setdefault(key, s["sample_file"])
    return s
