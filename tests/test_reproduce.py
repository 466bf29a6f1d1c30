"""``omgm fetch demo`` + ``omgm reproduce demo``: the demo release through exactly the code a GPU user runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from omgm import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    assert cli.main(["fetch", "demo", "--root", str(root), "--no_progress"]) == 0
    return root


def test_fetch_demo_lays_out_and_locks_the_release(demo_root, capsys):
    lock = json.loads((demo_root / "omgm_fetch.lock.json").read_text())["files"]
    assert {"demo/kb.json", "demo/test.csv", "demo/images", "demo/models/model_demo.pth",
            "demo/summary_lead_tiny.index"} <= set(lock)
    assert cli.main(["fetch", "demo", "--root", str(demo_root), "--no_progress"]) == 0     # again: nothing to do
    assert capsys.readouterr().out.count("already there") == 8


def test_reproduce_demo_writes_the_tables_and_resumes(demo_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    shadow = tmp_path / "cwd" / "omgm"            # a clone named omgm in the working directory must never shadow omgm
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the omgm folder in the working directory was imported')")
    monkeypatch.chdir(shadow.parent)
    assert cli.main(["reproduce", "demo", "--root", str(demo_root), "--out", str(out)]) == 0
    tables = json.loads((out / "tables.json").read_text())
    assert tables["format"] == "omgm.tables" and tables["random_weights"] is True
    got = {(r["row"], r["metric"]): r for r in tables["rows"]}
    assert set(got) == {("retrieval", "recall@1"), ("retrieval", "recall@20"), ("vqa", "accuracy")}
    assert all(r["ours"] is not None and r["paper"] is None for r in tables["rows"])
    assert all(r["ci95"][0] <= r["ours"] <= r["ci95"][1] for r in tables["rows"])           # intervals beside each
    assert tables["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 0.95, "over": "questions"}
    assert "EM only" in got[("vqa", "accuracy")]["measured_as"]
    assert any(i["file"].endswith("model_demo.pth") and len(i["sha256"]) == 64 and i["lock"] == "as fetched"
               for i in tables["inputs"] if "file" in i)
    read = {(i["stage"], Path(i["file"]).name) for i in tables["inputs"] if "file" in i}
    assert {("step1", "test.csv"), ("step1", "summary_lead_tiny.index"), ("step2", "result.json"),
            ("step3_vqa", "kb.sqlite")} <= read
    assert all(i["now"] == "as read" for i in tables["inputs"] if "file" in i)
    env = tables["environment"]
    assert env["libraries"]["torch"] and env["python"] and env["accelerator"] and "uncommitted_changes" in env
    facts = {f["stage"]: f for f in tables["stages"]}
    assert facts["step2"]["device"] == "cpu" and facts["step2"]["dtype"] == "float32" and facts["step1"]["seconds"] > 0
    md = (out / "tables.md").read_text()
    assert "RANDOM" in md and "python -m omgm.step2 rerank" in md and (out / "report.html").is_file()
    capsys.readouterr()
    assert tables["groups"] == ["main", "retrieval", "ablation", "efficiency"]
    groups = {(r["group"], r["metric"]): r for r in tables["group_rows"] if r["ours"] is not None}
    assert ("retrieval", "recall@20") in groups and ("efficiency", "end-to-end s/query") in groups
    assert all(r["ours"] is not None or r["reason"] for r in tables["group_rows"])
    assert "## Efficiency" in md and "## Ablation" in md
    assert cli.main(["reproduce", "demo", "--root", str(demo_root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 5                           # resumed: nothing re-run


def test_an_edited_input_gets_its_new_hash_a_flag_and_reruns_what_reads_it(demo_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(demo_root, root, symlinks=True)
    out = tmp_path / "out"
    assert cli.main(["reproduce", "demo", "--root", str(root), "--out", str(out), "--rows", "retrieval"]) == 0
    split = root / "demo" / "test.csv"
    before = _hash_of(out, split)
    split.write_text(split.read_text().replace("In which year", "In what year", 1))
    capsys.readouterr()
    assert cli.main(["reproduce", "demo", "--root", str(root), "--out", str(out), "--rows", "retrieval"]) == 0
    printed = capsys.readouterr().out
    assert "[kb_import] done earlier" in printed and "[step1] ran" in printed and "[step2] ran" in printed
    assert "step1: runs again, its inputs changed since it ran" in printed and str(split) in printed
    after = _hash_of(out, split)
    assert after["sha256"] != before["sha256"] and after["lock"] == "DIFFERS from the fetched file"
    assert "DIFFERS from the fetched file" in (out / "tables.md").read_text()
    other = tmp_path / "other_root"                       # the same files under another --root: the settings changed
    shutil.copytree(root, other, symlinks=True)
    capsys.readouterr()
    assert cli.main(["reproduce", "demo", "--root", str(other), "--out", str(out), "--rows", "retrieval"]) == 0
    printed = capsys.readouterr().out
    assert "[step1] ran" in printed and "step1: runs again, its settings changed: faiss_index" in printed
    assert _hash_of(out, other / "demo" / "test.csv")["sha256"] == after["sha256"]
    _a_setting_reruns_exactly_the_stages_that_read_it(other, out, tmp_path, capsys)


def _a_setting_reruns_exactly_the_stages_that_read_it(root, out, tmp_path, capsys) -> None:
    """Each stage is keyed on the settings its command reads (and the omgm version and its inputs' sha256): a
    setting only step 2 reads reruns step 2, not step 1; --force STAGE reruns that stage."""
    import yaml

    registry = yaml.safe_load((Path(cli.__file__).parent / "fetch" / "registry.yaml").read_text())
    registry["datasets"]["demo"]["settings"]["query_chunk"] = 16
    edited = tmp_path / "registry.yaml"
    edited.write_text(yaml.safe_dump(registry))
    capsys.readouterr()
    again = ["reproduce", "demo", "--root", str(root), "--out", str(out), "--registry", str(edited), "--rows",
             "retrieval"]
    assert cli.main(again) == 0
    printed = capsys.readouterr().out
    assert "[kb_import] done earlier" in printed and "[step1] done earlier" in printed and "[step2] ran" in printed
    assert "step2: runs again, its settings changed: query_chunk" in printed
    state = json.loads((out / "reproduce_state.json").read_text())["stages"]
    assert state["step2"]["settings"]["query_chunk"] == 16 and "query_chunk" not in state["step1"]["settings"]
    assert cli.main([*again, "--force", "report"]) == 0
    printed = capsys.readouterr().out
    assert "[step1] done earlier" in printed and "[report] ran" in printed
    assert cli.main([*again, "--force", "step9"]) == 2
    assert "--force: no stage step9" in capsys.readouterr().err


def _hash_of(out, path) -> dict:
    tables = json.loads((out / "tables.json").read_text())
    return next(i for i in tables["inputs"] if i.get("file") == str(path) and i["stage"] == "step1")


def test_an_input_changed_after_its_stage_read_it_is_flagged(tmp_path):
    from omgm.reproduce.plan import Stage
    from omgm.reproduce.state import RunState
    from omgm.reproduce.tables import inputs_read

    f = tmp_path / "root" / "x.csv"
    f.parent.mkdir()
    f.write_text("a\n")
    state = RunState.load(tmp_path)
    stage = Stage("step1", "omgm.step1", [], tmp_path / "r.json", reads=[str(f), "org/model"])
    state._record(stage, 1.0)
    f.write_text("b\n")
    got = inputs_read([stage], state, {"x.csv": {"sha256": "0" * 64, "size": 2}}, tmp_path / "root")
    assert got[0]["now"] == "CHANGED since the stage read it" and got[0]["lock"] == "DIFFERS from the fetched file"
    assert got[1] == {"stage": "step1", "model": "org/model", "revision": None}


def test_dry_run_and_missing_inputs(demo_root, tmp_path, capsys):
    args = ["reproduce", "demo", "--root", str(demo_root), "--out", str(tmp_path / "o"), "--dry_run"]
    assert cli.main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in plan["stages"]] == ["kb_import", "step1", "step2", "step3_vqa", "report"]
    assert plan["on_disk_bytes"] > 0 and plan["hub_models_missing"] == [] and plan["query_images"]["missing"] == 0
    assert plan["time"]["questions"] > 0 and "paper's per-query times" in plan["time"]["basis"]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert table.startswith("reproduce demo (rows: retrieval, vqa)") and "demo-kb" in table and "present" in table
    assert "GPU hours for" in table and "1. kb_import: python -m omgm.data.kb_import" in table
    assert not (tmp_path / "o").exists()                                  # a dry run writes nothing
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["reproduce", "demo", "--root", str(empty), "--out", str(tmp_path / "o2"),
                     "--rows", "retrieval"]) == 2
    assert "missing" in capsys.readouterr().err


def test_infoseek_rows_show_the_final_score_its_two_parts_and_an_interval(tmp_path):
    from omgm.metrics.infoseek import evaluate_infoseek, load_references
    from omgm.reproduce.tables import measured

    val = [{"data_id": f"q{i}", "answer_eval": ["yes"], "data_split": "val_unseen_question" if i % 2 else
            "val_unseen_entity"} for i in range(40)]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in val))
    (tmp_path / "qt.jsonl").write_text("\n".join(json.dumps({"data_id": r["data_id"], "question_type": "String"})
                                                 for r in val))
    preds = [{"data_id": f"q{i}", "prediction": "yes" if i % 3 else "no"} for i in range(40)]
    ev = evaluate_infoseek(preds, load_references(tmp_path / "val.jsonl", tmp_path / "qt.jsonl"))
    (tmp_path / "step3_vqa").mkdir()
    (tmp_path / "step3_vqa" / "result.summary.json").write_text(json.dumps({"evaluation": ev}))
    got = measured({"generator": "x"}, tmp_path, "vqa")
    assert got.figures == {"accuracy": ev["final_score"]} and ev["final_score"] is not None
    assert got.breakdown == {"final score (harmonic mean)": ev["final_score"],
                             "unseen_question": ev["unseen_question"]["score"],
                             "unseen_entity": ev["unseen_entity"]["score"]}
    low, high = got.intervals["accuracy"]
    assert low < ev["final_score"] < high


def test_table_groups_fill_every_measured_row_and_say_why_the_others_are_empty(tmp_path):
    """retrieval / ablation / efficiency for E-VQA from a run's stage summaries: the figures the run measured are
    filled (with intervals where the summary has them), the others carry a reason; the paper's figures carry their
    source."""
    from omgm.fetch.registry import load_registry
    from omgm.reproduce.groups import GROUPS, group_rows

    summaries = {
        "step1": {"recall": {"R@1": 20.0, "R@5": 35.0, "R@10": 45.0, "R@20": 55.0},
                  "ci95": {"R@1": [18.0, 22.0]}, "seconds_per_query": 0.2},
        "step2": {"runs": [{"recall": {"R@1": 40.0, "R@5": 50.0, "R@10": 54.0, "R@20": 57.0}}],
                  "seconds_per_query": 0.3},
        "step3_llava_ft": {"answers": 10, "seconds": 15.0,
                           "evaluation": {"accuracy": 50.0, "outcomes": {"q0": 1, "q1": 1, "q2": 0, "q3": 0}}},
        "ablation_step2_k50": {"runs": [{"recall": {"R@1": 41.0, "R@20": 60.0}}]},     # --run_ablations' extra runs
        "ablation_step3_on_step1": {"evaluation": {"accuracy": 25.0, "outcomes": {"q0": 1, "q1": 0, "q2": 0, "q3": 0}}},
        "ablation_step3_beta0": {"evaluation": {"accuracy": 49.5}}}       # no outcomes: the headline difference
    spec = load_registry().dataset("evqa")["tables"]
    rows = group_rows(list(GROUPS), spec, tmp_path, lambda p: summaries.get(p.parent.name), "llava_ft", "cpu")
    assert {r["group"] for r in rows} == {"retrieval", "ablation", "efficiency"}
    for r in rows:
        assert (r["ours"] is not None) or r["reason"], r
        assert (r["paper"] is None) or r["source"], r
    got = {(r["group"], r["name"], r["metric"]): r for r in rows}
    assert got[("retrieval", "OMGM step 1 (image -> summary index)", "recall@1")]["ci95"] == [18.0, 22.0]
    assert got[("retrieval", "OMGM after step 2", "recall@20")]["paper"] == 58.7
    assert got[("ablation", "re-ranking gain (step 2 minus step 1)", "recall@1")]["ours"] == 20.0
    ablation = {r["name"].split(" (")[0]: r for r in rows if r["group"] == "ablation"}
    assert ablation["re-ranking range k = 50"]["ours"] == 60.0 and ablation["re-ranking range k = 20"]["ours"] == 57.0
    assert ablation["re-ranking range k = 100"]["ours"] is None                             # not run: how to run it
    assert "--run_ablations" in ablation["re-ranking range k = 100"]["reason"]
    gain = ablation["VQA gain of step 2"]                     # paired over the same questions, with its interval
    assert gain["ours"] == 25.0 and gain["ci95"][0] <= 25.0 <= gain["ci95"][1]
    assert ablation["VQA gain of step 3's fusion"]["ours"] == 0.5 and ablation["VQA gain of step 3's fusion"]["ci95"] is None
    assert ablation["step 1 alone"]["ci95"] == [18.0, 22.0]
    assert "no such mode" in ablation["VQA gain of step 1"]["reason"]
    eff = [r for r in rows if r["group"] == "efficiency" and r["ours"] is not None]
    assert [(r["metric"], r["ours"], r["paper"]) for r in eff] == [("retrieval s/query", 0.5, 0.402),
                                                                   ("end-to-end s/query", 2.0, 2.023)]


def test_run_ablations_adds_the_extra_runs_each_reading_its_own_input(tmp_path):
    """k = 50 / 100: step 1 keeping k entities and step 2 over *that* result; the first step-3 row on the step-1
    results and with --step2_beta 0; all before the report, each into its own folder."""
    from omgm.fetch.registry import load_registry
    from omgm.reproduce.plan import build_plan

    reg, root, out = load_registry(), tmp_path / "root", tmp_path / "out"
    plain = build_plan(reg, "evqa", root, out, rows=["retrieval", "llava_ft"], config=tmp_path / "c.yaml")
    stages = build_plan(reg, "evqa", root, out, rows=["retrieval", "llava_ft"], config=tmp_path / "c.yaml",
                        ablations=True)
    names = [s.name for s in stages]
    assert names == [s.name for s in plain[:-1]] + ["ablation_step1_k50", "ablation_step2_k50", "ablation_step1_k100",
                                                   "ablation_step2_k100", "ablation_step3_on_step1",
                                                   "ablation_step3_beta0", "report"]
    by = {s.name: s for s in stages}
    assert by["ablation_step1_k100"].args[-3:] == ["--retrieval_top_k", "100", "--no_progress"]
    k50 = by["ablation_step2_k50"]
    assert k50.args[k50.args.index("--step1_result") + 1] == str(by["ablation_step1_k50"].output)
    assert str(by["ablation_step1_k50"].output) in k50.reads and str(by["step1"].output) not in k50.reads
    on1 = by["ablation_step3_on_step1"]
    assert on1.args[on1.args.index("--retrieval_results_file") + 1] == str(by["step1"].output)
    assert str(by["step1"].output) in on1.reads and str(by["step2"].output) not in on1.reads
    beta0 = by["ablation_step3_beta0"]
    assert beta0.args[-3:] == ["--step2_beta", "0", "--no_progress"] and beta0.output == out / "ablation_step3_beta0" / \
        "result.json" and beta0.settings == by["step3_llava_ft"].settings
    infoseek = build_plan(reg, "infoseek", root, out, rows=["retrieval", "internvl"], config=tmp_path / "c.yaml",
                          ablations=True)                   # only the runs its ablation rows measure: none
    assert not [s for s in infoseek if s.name.startswith("ablation")]
