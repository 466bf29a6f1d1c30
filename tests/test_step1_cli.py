"""Step 1 end to end on the demo data through the real entry points (import -> build index -> search)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from omgm.commands import build_index, step1
from omgm.data import kb_import
from omgm.data.kb import open_kb
from omgm.data.results import read_retrieval
from omgm.data.samples import read_samples
from omgm.metrics.recall import recall_at_k


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_dir, tiny_clip_ckpt):
    w = tmp_path_factory.mktemp("step1")
    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(w / "kb.sqlite"),
                           "--wiki_img_csv_dir", str(demo_dir / "wiki_image_csv")]) == 0
    common = ["--knowledge_base", str(w / "kb.sqlite"), "--retriever_vit", "omgm-tiny-eva",
              "--retriever_pretrained", str(tiny_clip_ckpt), "--device", "cpu"]
    assert build_index.main(common + ["--faiss_index", str(w / "s.index"), "--summarizer", "lead",
                                      "--no_progress", "--batch_size", "16"]) == 0
    return w, common


def _step1_args(w: Path, demo: Path, common: list[str], out: str, sample_file: str = "test.csv") -> list[str]:
    return common + ["--sample_file", str(demo / sample_file), "--faiss_index", str(w / "s.index"),
                     "--save_result_path", str(w / out), "--inat_dir", str(demo / "images/inat"),
                     "--gld_dir", str(demo / "images/gld"), "--infoseek_dir", str(demo / "images/infoseek"),
                     "--top_ks", "1,5,10,20", "--retrieval_top_k", "20", "--no_progress", "--num_workers", "0"]


def test_build_index_writes_index_manifest_and_summaries(built):
    w, _ = built
    man = json.loads((w / "s.index.manifest.json").read_text())
    assert man["count"] == 40 and man["dim"] == 64 and man["texts"]["summarizer"] == "lead"
    assert man["kb_url_order_hash"] == open_kb(w / "kb.sqlite").url_order_hash()
    assert len((w / "s.index.summaries.jsonl").read_text().splitlines()) == 40


def test_step1_end_to_end(built, demo_dir, capsys):
    w, common = built
    assert step1.main(_step1_args(w, demo_dir, common, "r.json")) == 0
    res = read_retrieval(w / "r.json")
    samples = read_samples(demo_dir / "test.csv")
    assert res.stage == "step1" and set(res.results) == {s.sample_id for s in samples}
    kb = open_kb(w / "kb.sqlite")
    for entry in res.results.values():
        sims = entry["retrieval_similarities"]
        assert len(entry["retrieved_entities"]) == 20 and sims == sorted(sims, reverse=True)
        assert all(kb.get(e["url"]).title == e["title"] for e in entry["retrieved_entities"])
    summary = json.loads((w / "r.summary.json").read_text())
    expect = recall_at_k({k: res.urls(k) for k in res.results}, {s.sample_id: s.wikipedia_url for s in samples},
                         [1, 5, 10, 20])
    assert summary["recall"] == expect.as_dict()["recall"] and summary["total"] == 80
    assert summary["recall"]["R@20"] >= summary["recall"]["R@1"]
    assert "R@1" in capsys.readouterr().out


def test_step1_infoseek_split_and_bare_output(built, demo_dir):
    w, common = built
    assert step1.main(_step1_args(w, demo_dir, common, "info.json", "infoseek_test.csv") + ["--bare_output"]) == 0
    data = json.loads((w / "info.json").read_text())
    assert "format" not in data and all(k.startswith("infoseek_val_") for k in data)


def test_index_of_another_kb_is_refused(built, demo_dir, tmp_path, capsys):
    w, common = built
    kb = json.loads((demo_dir / "kb.json").read_text())
    urls = list(kb)
    urls[0], urls[1] = urls[1], urls[0]                       # same entities, other order
    (tmp_path / "kb.json").write_text(json.dumps({u: kb[u] for u in urls}))
    args = _step1_args(w, demo_dir, common, "x.json")
    args[args.index("--knowledge_base") + 1] = str(tmp_path / "kb.json")
    assert step1.main(args) == 2
    assert "field 'kb_url_order_hash' differs" in capsys.readouterr().err


def test_bare_index_without_manifest(built, demo_dir, tmp_path, capsys):
    w, common = built
    shutil.copy(w / "s.index", tmp_path / "summary_llama3.index")
    args = _step1_args(w, demo_dir, common, "bare.json")
    args[args.index("--faiss_index") + 1] = str(tmp_path / "summary_llama3.index")
    assert step1.main(args) == 0
    assert "no manifest found" in capsys.readouterr().err


def test_missing_query_images_stop_or_are_counted(built, demo_copy, capsys):
    w, common = built
    for name in ("inat0020.jpg", "inat0130.jpg"):
        (demo_copy / "images/inat" / name).unlink()
    (demo_copy / "images/inat/inat0230.jpg").write_bytes(b"not a jpeg")
    args = _step1_args(w, demo_copy, common, "m.json")
    assert step1.main(args) == 2
    assert re.search(r"2 of 80 query images are missing .*row 1 \(E-VQA_0\)", capsys.readouterr().err)
    assert step1.main(args + ["--missing_images", "skip"]) == 0
    summary = json.loads((w / "m.summary.json").read_text())
    assert summary["skipped"]["missing_query_images"] == 2 and summary["skipped"]["undecodable_query_images"] == 1
    assert summary["total"] == 80 and summary["missing_rankings"] == 3
    assert len(read_retrieval(w / "m.json").results) == 77
    assert "cannot decode image" in capsys.readouterr().out
