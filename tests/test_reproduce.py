"""``omgm fetch demo`` + ``omgm reproduce demo``: the demo release through exactly the code a GPU user runs."""
from __future__ import annotations

import json

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


def test_reproduce_demo_writes_the_tables_and_resumes(demo_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["reproduce", "demo", "--root", str(demo_root), "--out", str(out)]) == 0
    tables = json.loads((out / "tables.json").read_text())
    assert tables["format"] == "omgm.tables" and tables["random_weights"] is True
    got = {(r["row"], r["metric"]): r for r in tables["rows"]}
    assert set(got) == {("retrieval", "recall@1"), ("retrieval", "recall@20"), ("vqa", "accuracy")}
    assert all(r["ours"] is not None and r["paper"] is None for r in tables["rows"])
    assert "EM only" in got[("vqa", "accuracy")]["measured_as"]
    assert any(i["file"].endswith("model_demo.pth") and len(i["sha256"]) == 64 for i in tables["inputs"])
    md = (out / "tables.md").read_text()
    assert "RANDOM" in md and "python -m omgm.step2 rerank" in md and (out / "report.html").is_file()
    capsys.readouterr()
    assert cli.main(["reproduce", "demo", "--root", str(demo_root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 5                           # resumed: nothing re-run


def test_dry_run_and_missing_inputs(demo_root, tmp_path, capsys):
    assert cli.main(["reproduce", "demo", "--root", str(demo_root), "--out", str(tmp_path / "o"), "--dry_run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in plan["stages"]] == ["kb_import", "step1", "step2", "step3_vqa", "report"]
    assert plan["fetched_bytes_on_disk"] > 0 and "gpu_suite" in plan["gpu_time"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["reproduce", "demo", "--root", str(empty), "--out", str(tmp_path / "o2"),
                     "--rows", "retrieval"]) == 2
    assert "missing" in capsys.readouterr().err
