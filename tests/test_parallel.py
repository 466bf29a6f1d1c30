"""Data parallelism under torchrun (2 processes, gloo, CPU): every stage's merged output equals one process's;
a killed rank is redone without losing the others' work; parts of other settings or world sizes are refused."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from launch import _env, single, torchrun
from launch import ok as _ok

from omgm.parallel import Context, Parallel, ParallelError, part_owner_check, run_units, units_of

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def world(step2_env, tiny_clip_ckpt, tiny_step3_models, bert_tokenizer, tmp_path_factory):
    import torch

    from omgm.rerank.convert import save_ours
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    w = tmp_path_factory.mktemp("par")
    torch.manual_seed(0)
    save_ours(IT2ITReranker(IT2ITConfig.tiny(len(bert_tokenizer))), w / "reranker.pth")
    d, kb = step2_env.demo, str(step2_env.dir / "kb.sqlite")
    imgs = ["--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld")]
    clip = ["--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained", str(tiny_clip_ckpt), "--device", "cpu"]
    return {"w": w, "d": d, "kb": kb, "imgs": imgs, "clip": clip, "tok": str(step2_env.tok_dir),
            "test_step1": str(step2_env.dir / "test_step1.json"), "m": tiny_step3_models}


def _index_args(world) -> list[str]:
    return ["--knowledge_base", world["kb"], *world["clip"], "--summarizer", "lead", "--shard_size", "7",
            "--batch_size", "4", "--summary_batch_size", "4", "--no_progress"]


@pytest.fixture(scope="module")
def one_index(world):
    """The index one process builds (each test that needs it gets it, whichever runs first)."""
    _ok(single("omgm index build", _index_args(world) + ["--faiss_index", str(world["w"] / "one/s.index")]))
    return world["w"] / "one/s.index"


def test_index_build_summaries_and_vectors_are_identical(world, one_index):
    import faiss

    w = world["w"]
    _ok(torchrun("omgm index build", _index_args(world) + ["--faiss_index", str(w / "two/s.index")]))
    a, b = (faiss.read_index(str(w / f"{x}/s.index")) for x in ("one", "two"))
    assert a.ntotal == b.ntotal == 40 and np.array_equal(a.reconstruct_n(0, 40), b.reconstruct_n(0, 40))
    assert (w / "one/s.index.summaries.jsonl").read_text() == (w / "two/s.index.summaries.jsonl").read_text()
    assert not (w / "two/s.index.summaries.jsonl.parts").exists()


def test_step1_step2_step3_merged_outputs_equal_one_process(world, one_index):
    w = world["w"]
    s1 = ["--sample_file", str(world["d"] / "test.csv"), "--knowledge_base", world["kb"], "--faiss_index",
          str(one_index), *world["clip"], *world["imgs"], "--search_batch_size", "16", "--num_workers", "0",
          "--no_progress"]
    _ok(single("omgm.step1", s1 + ["--save_result_path", str(w / "s1_one.json")]))
    _ok(torchrun("omgm.step1", s1 + ["--save_result_path", str(w / "s1_two.json")]))
    one, two = (json.loads((w / f"s1_{x}.json").read_text()) for x in ("one", "two"))
    assert one["results"] == two["results"] and len(one["results"]) == 80 and not (w / "s1_two.json.parts").exists()

    s2 = ["rerank", "--sample_file", str(world["d"] / "test.csv"), "--step1_result", str(w / "s1_one.json"),
          "--knowledge_base_path", world["kb"], "--reranker_ckpt_path", str(w / "reranker.pth"), "--tokenizer",
          world["tok"], "--wiki_img_path_prefix", str(world["d"] / "wiki_images"), *world["imgs"],
          "--query_chunk", "8", "--batch_size", "4", "--device", "cpu", "--no_progress"]
    _ok(single("omgm.step2", s2 + ["--save_result_path", str(w / "s2_one.json")]))
    _ok(torchrun("omgm.step2", s2 + ["--save_result_path", str(w / "s2_two.json")]))
    one, two = (json.loads((w / f"s2_{x}.json").read_text()) for x in ("one", "two"))
    assert one["results"] == two["results"] and "sec_sim" in next(iter(one["results"].values()))
    alone = s2 + ["--save_result_path", str(w / "s2_alone.json")]      # each rank run alone, then one merge
    _ok(single("omgm.step2", alone, RANK="1", WORLD_SIZE="2"))
    _ok(single("omgm.step2", alone, RANK="0", WORLD_SIZE="2"))
    _ok(single("omgm.step2", alone))
    assert json.loads((w / "s2_alone.json").read_text())["results"] == one["results"]

    _ok(single("omgm.step3", _s3(world, w / "s2_one.json", w / "a_one.json")))
    _ok(torchrun("omgm.step3", _s3(world, w / "s2_one.json", w / "a_two.json")))
    one, two = (json.loads((w / f"a_{x}.json").read_text()) for x in ("one", "two"))
    assert one["records"] == two["records"] and len(one["records"]) == 16


def _s3(world, retrieval, out, limit=16, window=4):
    m = world["m"]
    return ["--test_file", str(world["d"] / "test.csv"), "--retrieval_results_file", str(retrieval),
            "--knowledge_base_path", world["kb"], "--output_file", str(out), "--answer_generator", str(m.llm),
            "--section_reranker", str(m.cross), "--context_tokenizer", str(m.llm), "--device", "cpu",
            "--max_new_tokens", "3", "--limit", str(limit), "--window", str(window), "--no_progress"]


def test_a_killed_rank_is_redone_alone_and_the_rest_kept(world):
    w = world["w"]
    args = _s3(world, world["test_step1"], w / "k.json", limit=24, window=2)
    _ok(single("omgm.step3", _s3(world, world["test_step1"], w / "k_one.json", limit=24, window=2)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "omgm.step3",
           *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = w / "k.json.parts"
    deadline = time.time() + 240
    while time.time() < deadline and not any(parts.glob("unit_2_4.json")):      # rank 1's first unit
        time.sleep(0.05)
    victim = next(p for p in psutil.Process(proc.pid).children(recursive=True)
                  if p.environ().get("RANK") == "1" and "omgm.step3" in " ".join(p.cmdline()))
    victim.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) != 0 and not (w / "k.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("unit_*.json")}
    assert "unit_2_4.json" in kept and len(kept) < 12
    refused = single("omgm.step3", args)                          # one process may not resume a 2-process job
    assert refused.returncode == 2 and "world_size: 2 then, 1 now" in refused.stderr
    _ok(single("omgm.step3", args, RANK="1", WORLD_SIZE="2"))     # the dead rank, alone: no merge
    assert not (w / "k.json").exists()
    _ok(single("omgm.step3", args, RANK="0", WORLD_SIZE="2"))     # rank 0 finishes its part too
    assert all(parts.joinpath(n).stat().st_mtime_ns == t for n, t in kept.items())   # finished units not redone
    _ok(single("omgm.step3", args))                               # every part is there: only the merge
    assert not parts.exists()
    one, two = (json.loads((w / x).read_text()) for x in ("k_one.json", "k.json"))
    assert one["records"] == two["records"]


def test_parts_of_other_settings_are_refused(tmp_path):
    ctx = Context()
    run_units(Parallel(ctx, tmp_path / "p", {"model": "a"}), units_of(4, 2), lambda a, b: {"n": b - a})
    with pytest.raises(ParallelError, match="model: 'a' then, 'b' now"):
        run_units(Parallel(ctx, tmp_path / "p", {"model": "b"}), units_of(6, 2), lambda a, b: {"n": b - a})
    with pytest.raises(ParallelError, match="rank 0 of 2 would write .* which belongs to rank 1"):
        part_owner_check(tmp_path / "p" / "unit_2_4.json", 1, Context(0, 2, 0, True))
