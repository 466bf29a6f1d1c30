import json
import os

from omgm.prep import check_data, rename_inat


def test_rename_inat_links_by_id_resumes_and_counts_missing(tmp_path):
    src = tmp_path / "release"
    (src / "val/00001_Animalia").mkdir(parents=True)
    (src / "val/00001_Animalia/a.jpg").write_bytes(b"A")
    (src / "val/00001_Animalia/b.jpg").write_bytes(b"B")
    id2name = {"111": "val/00001_Animalia/a.jpg", "222": "val/00001_Animalia/b.jpg", "333": "val/nope.jpg"}
    (tmp_path / "val_id2name.json").write_text(json.dumps(id2name))
    dst = tmp_path / "inat"
    assert rename_inat.main(["--id2name", str(tmp_path / "val_id2name.json"), "--src", str(src), "--dst", str(dst),
                             "--no_progress"]) == 0
    assert (dst / "111.jpg").read_bytes() == b"A" and os.path.islink(dst / "111.jpg")
    assert "333" in (dst / "rename_missing.txt").read_text()
    counts = rename_inat.rename(rename_inat.read_id2name(tmp_path / "val_id2name.json"), src, dst, "copy", progress=False)
    assert counts == {"placed": 0, "already_there": 2, "missing_source": 1, "unsafe_entry": 0}
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([["444", "val/00001_Animalia/b.jpg"]]))
    assert rename_inat.rename(rename_inat.read_id2name(pairs), src, tmp_path / "c", "copy", progress=False)["placed"] == 1
    assert not os.path.islink(tmp_path / "c/444.jpg")


def test_check_data_reports_what_is_missing(step2_env, demo_copy, tmp_path, capsys):
    (demo_copy / "images/inat/inat0020.jpg").unlink()
    args = ["--knowledge_base", str(step2_env.dir / "kb.sqlite"), "--wiki_img_path_prefix", str(demo_copy / "wiki_images"),
            "--wiki_img_csv_dir", str(demo_copy / "wiki_image_csv"), "--inat_dir", str(demo_copy / "images/inat"),
            "--gld_dir", str(demo_copy / "images/gld"), "--splits", str(demo_copy / "test.csv"),
            str(tmp_path / "nope.csv"), "--out", str(tmp_path / "check.json")]
    assert check_data.main(args) == 1
    rep = json.loads((tmp_path / "check.json").read_text())
    split = rep["splits"][str(demo_copy / "test.csv")]
    assert split["rows"] == 85 and split["query_images_missing"] == 2     # that image serves a 2-hop row too
    assert split["gold_without_wiki_image"] == 1 and split["gold_not_in_kb"] == 0
    assert rep["splits"][str(tmp_path / "nope.csv")] == {"error": "file not found"}
    assert "missing query image: row 1 (E-VQA_0): inat0020" in capsys.readouterr().out
