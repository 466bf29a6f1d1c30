"""EchoSight's image index, composed queries and the retriever comparison, on the demo."""
import json

import numpy as np
import pytest

from omgm.commands import build_index, compare, step1
from omgm.data.results import read_retrieval
from omgm.retrieval.index import build_flat_ip, search_entities


def test_image_hits_aggregate_to_entities_in_first_occurrence_order():
    vecs = np.eye(6, dtype=np.float32)
    ids = np.array([7, 7, 3, 9, 3, 5])                     # vector -> entity row
    q = np.array([[0.9, 0.8, 0.7, 0.1, 0.6, 0.5]], dtype=np.float32)
    rows, sims = search_entities(build_flat_ip(vecs), ids, q, k=3, oversample=1)
    assert rows == [[7, 3, 5]] and sims[0] == pytest.approx([0.9, 0.7, 0.5])   # deeper search after k*1 images
    rows, _ = search_entities(build_flat_ip(vecs), ids, q, k=10)
    assert rows == [[7, 3, 5, 9]]                          # fewer distinct entities than k: all of them


@pytest.fixture(scope="module")
def demo_indexes(demo_image_index, demo_dir, tiny_clip_ckpt):
    w, base = demo_image_index.dir, demo_image_index.args
    assert build_index.main(base + ["--faiss_index", str(w / "sum.index")]) == 0
    shared = w / "shared.yaml"
    shared.write_text(f"knowledge_base: {w / 'kb.sqlite'}\ninat_dir: {demo_dir / 'images/inat'}\n"
                      f"gld_dir: {demo_dir / 'images/gld'}\nretriever_vit: omgm-tiny-eva\n"
                      f"retriever_pretrained: {tiny_clip_ckpt}\ndevice: cpu\nnum_workers: 0\n")
    return w, shared


def test_image_index_through_build_and_step1(demo_indexes, demo_dir):
    w, shared = demo_indexes
    man = json.loads((w / "img.index.manifest.json").read_text())
    ids = np.load(w / "img.index.ids.npy")
    assert man["kind"] == "image" and man["count"] == len(ids) == 53 and len(set(ids.tolist())) == 39
    assert step1.main(["--config", str(shared), "--sample_file", str(demo_dir / "test.csv"), "--faiss_index",
                       str(w / "img.index"), "--save_result_path", str(w / "img.json"), "--no_progress"]) == 0
    res = read_retrieval(w / "img.json")
    assert res.meta["index_kind"] == "image"
    for e in res.results.values():
        urls = [x["url"] for x in e["retrieved_entities"]]
        assert len(urls) == 20 == len(set(urls))                         # distinct entities
        assert e["retrieval_similarities"] == sorted(e["retrieval_similarities"], reverse=True)
    (w / "img.index.ids.npy").rename(w / "ids.bak.npy")
    try:
        assert step1.main(["--config", str(shared), "--sample_file", str(demo_dir / "test.csv"), "--faiss_index",
                           str(w / "img.index"), "--save_result_path", str(w / "x.json"), "--no_progress"]) == 2
    finally:
        (w / "ids.bak.npy").rename(w / "img.index.ids.npy")


def test_composed_query_needs_a_composed_model(demo_indexes, demo_dir, capsys):
    w, shared = demo_indexes
    assert step1.main(["--config", str(shared), "--sample_file", str(demo_dir / "test.csv"), "--faiss_index",
                       str(w / "sum.index"), "--save_result_path", str(w / "c.json"), "--composed_query",
                       "--no_progress"]) == 2
    assert "omgm-tiny-eva has no composed (image + question) encoding" in capsys.readouterr().err


def test_compare_runs_and_results(demo_indexes, demo_dir, capsys):
    w, shared = demo_indexes
    (w / "r_sum.yaml").write_text(f"faiss_index: {w / 'sum.index'}\n")
    (w / "r_img.yaml").write_text(f"faiss_index: {w / 'img.index'}\n")
    assert compare.main(["--config", str(shared), "--sample_file", str(demo_dir / "test.csv"),
                         "--run", f"summary={w / 'r_sum.yaml'}", "--run", f"images={w / 'r_img.yaml'}",
                         "--result", f"img_file={w / 'img.json'}",
                         "--out_dir", str(w / "out")]) == 0
    table = json.loads((w / "out/compare.json").read_text())["runs"]
    assert set(table) == {"summary", "images", "img_file"} and (w / "out/compare.png").is_file()
    assert table["images"]["recall"] == table["img_file"]["recall"]     # same index, same numbers
    assert table["images"]["index_kind"] == "image" and table["summary"]["index_kind"] == "summary"
    out = capsys.readouterr().out
    assert "summary" in out and "R@20" in out
    paired = json.loads((w / "out/compare.json").read_text())["paired"]
    assert set(paired) == {"images vs img_file", "summary vs img_file"}          # each run against the first
    same = paired["images vs img_file"]["R@20"]                                  # the same index: no difference
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p_value"] == 1.0
    other = paired["summary vs img_file"]["R@1"]
    assert other["difference"] == round(table["summary"]["recall"]["R@1"] - table["img_file"]["recall"]["R@1"], 2)
    assert other["interval"][0] <= other["difference"] <= other["interval"][1] and 0 <= other["p_value"] <= 1
    assert "summary vs img_file: R@1" in out and "p=" in out
    assert all(len(v["ci95"]) == len(v["recall"]) for v in table.values())
    assert compare.main(["--sample_file", str(demo_dir / "test.csv"), "--run", "oops"]) == 2
    assert "--run takes NAME=PATH" in capsys.readouterr().err
