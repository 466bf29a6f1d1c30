"""The GPU proof script in its small CPU mode, so it cannot rot before a GPU window opens."""
from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import gpu_correctness, gpu_suite


def test_throughput_parts_run_small_on_cpu(capsys, tmp_path):
    out = tmp_path / "suite.json"
    rc = gpu_suite.main(["--device", "cpu", "--small", "--repeats", "1", "--out", str(out),
                         "--parts", "reranker,vision,text,generator,search"])
    printed = json.loads(capsys.readouterr().out)
    assert rc == 0 and json.loads(out.read_text()) == printed
    parts = printed["parts"]
    assert set(parts) == {"reranker", "vision", "text", "generator", "search"}
    assert parts["reranker"]["sections_per_s"] > 0 and parts["vision"]["images_per_s"] > 0
    gen = parts["generator"]
    assert gen["batched_shared_prefix"]["prompts_per_s"] > 0 and gen["speedup"] > 0
    assert parts["search"]["backend"].startswith("torch matmul") and parts["search"]["fp16"]["queries_per_s"] > 0
    assert printed["derived"]["retrieval_s_per_query"] > 0 and "tiny models" in printed["derived"]["note"]
    assert "vllm" in printed["skipped"] and "deepspeed" in printed["skipped"]     # reasons, never figures


def test_unknown_part_is_refused():
    with pytest.raises(SystemExit) as exc:
        gpu_suite.main(["--device", "cpu", "--small", "--parts", "nope"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_every_stage_cli_runs_and_the_comparison_catches_a_difference(tmp_path):
    shared = tmp_path / "shared"
    gpu_correctness.prepare(shared)
    run = gpu_correctness.run_chain(shared, tmp_path / "cpu", "cpu")
    assert [c["rc"] for c in run["commands"]] == [0] * 9        # index, step 1 x2, negatives, step 2 x2, step 3 x3
    same = gpu_correctness.compare(tmp_path / "cpu", tmp_path / "cpu")
    assert same["ok"] and same["measured"]["step3_same_answer"] == 1.0
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "cpu", other)
    answers = json.loads((other / "answers.json").read_text())
    for r in answers["records"]:
        r["prediction"] += " changed"
    (other / "answers.json").write_text(json.dumps(answers))
    diff = gpu_correctness.compare(tmp_path / "cpu", other)
    assert not diff["ok"] and not diff["checks"]["step3_same_answer"] and diff["checks"]["step1_same_top20"]
