"""Round two of bad inputs and faults (nothing lost, nothing silently wrong): each case failed before its fix."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from omgm import cli
from omgm.data import kb_import
from omgm.data.samples import SampleFileError, read_samples

DEMO_KB = {"https://en.wikipedia.org/wiki/A": {"title": "A", "url": "https://en.wikipedia.org/wiki/A",
                                               "section_titles": ["A"], "section_texts": ["a text"]}}


def _kb_json(path, kb=DEMO_KB):
    path.write_text(json.dumps(kb))
    return path


def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, demo_dir, capsys):
    src = _kb_json(tmp_path / "kb.json")
    before = src.read_bytes()
    assert kb_import.main(["--kb_json", str(src), "--out", str(src), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and src.read_bytes() == before
    sample = tmp_path / "test.csv"
    shutil.copy(demo_dir / "test.csv", sample)
    before = sample.read_bytes()
    assert cli.main(["step1", "--sample_file", str(sample), "--knowledge_base", str(tmp_path / "kb.sqlite"),
                     "--faiss_index", str(tmp_path / "x.index"), "--save_result_path", str(sample)]) == 2
    assert "is the input" in capsys.readouterr().err and sample.read_bytes() == before


def test_rename_inat_never_leaves_its_folders(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    (src / "a" / "1.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"keep")
    id2name = tmp_path / "id2name.json"
    id2name.write_text(json.dumps({"1": "a/1.jpg", "../secret": "a/1.jpg", "2": "../secret.jpg"}))
    assert cli.main(["data", "rename-inat", "--id2name", str(id2name), "--src", str(src), "--dst", str(dst),
                     "--mode", "copy", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["unsafe_entry"] == 2 and "2 entries skipped" in out
    assert (tmp_path / "secret.jpg").read_bytes() == b"keep" and sorted(p.name for p in dst.iterdir()) == \
        ["1.jpg", "rename_missing.txt"]
    id2name.write_text("{not json")
    assert cli.main(["data", "rename-inat", "--id2name", str(id2name), "--src", str(src), "--dst", str(dst)]) == 2
    assert "not an id2name file" in capsys.readouterr().err


def test_two_concatenated_kb_objects_are_refused(tmp_path, capsys):
    src = tmp_path / "kb.json"
    src.write_text(json.dumps(DEMO_KB) + json.dumps(DEMO_KB))
    assert kb_import.main(["--kb_json", str(src), "--out", str(tmp_path / "kb.sqlite")]) == 2
    assert "more than one JSON value" in capsys.readouterr().err and not (tmp_path / "kb.sqlite").exists()


def test_duplicate_infoseek_data_ids_are_refused(demo_dir, tmp_path):
    rows = (demo_dir / "infoseek_test.csv").read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join(rows + [rows[1]]) + "\n")
    with pytest.raises(SampleFileError, match=r"data_id .* repeats row 1"):
        read_samples(tmp_path / "dup.csv")


def test_a_store_path_with_hash_and_question_marks_opens(tmp_path):
    from omgm.data.kb import open_kb

    out = tmp_path / "my#kb?.sqlite"
    assert kb_import.main(["--kb_json", str(_kb_json(tmp_path / "kb.json")), "--out", str(out)]) == 0
    kb = open_kb(out)
    assert list(kb.urls()) == list(DEMO_KB) and sorted(p.name for p in tmp_path.iterdir()) == ["kb.json", out.name]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_inf_are_refused_by_numeric_flags(value, capsys):
    from omgm.commands import step2

    with pytest.raises(SystemExit) as exc:
        step2.main(["train", f"--learning-rate={value}"])
    assert exc.value.code == 2 and "expected a finite number" in capsys.readouterr().err


def test_an_empty_kb_is_refused_at_import(tmp_path, capsys):
    src = tmp_path / "kb.json"
    src.write_text("{}")
    assert kb_import.main(["--kb_json", str(src), "--out", str(tmp_path / "kb.sqlite")]) == 2
    assert "no entity to import" in capsys.readouterr().err and not (tmp_path / "kb.sqlite").exists()


def test_conflicting_kb_sources_are_refused(tmp_path, capsys):
    jsonl = tmp_path / "kb.jsonl"
    jsonl.write_text(json.dumps({"url": "u", "title": "T", "sections": [{"title": "T", "text": "x"}]}) + "\n")
    src = _kb_json(tmp_path / "kb.json")
    assert kb_import.main(["--kb_json", str(src), "--jsonl", str(jsonl), "--out", str(tmp_path / "a.sqlite")]) == 2
    assert "--jsonl and --kb_json conflict" in capsys.readouterr().err
    assert kb_import.main(["--jsonl", str(jsonl), "--wiki_img_csv_dir", str(tmp_path), "--out",
                           str(tmp_path / "b.sqlite")]) == 2
    assert "--jsonl and --wiki_img_csv_dir conflict" in capsys.readouterr().err


def test_a_jsonl_import_resumed_with_other_images_is_refused(tmp_path, capsys):
    jsonl = tmp_path / "kb.jsonl"
    jsonl.write_text(json.dumps({"url": "u", "title": "T", "sections": [{"title": "T", "text": "x"}]}) + "\n")
    partial = tmp_path / "kb.sqlite.partial"
    con = sqlite3.connect(partial)                       # what a killed import left, made with --images_dir a/
    con.executescript(kb_import.SCHEMA)
    kb_import._set_meta(con, format=kb_import.STORE_FORMAT, version=kb_import.STORE_VERSION,
                        source=kb_import._source_id(jsonl), count=0, offset=0, complete=0,
                        import_images_dir=str((tmp_path / "a").resolve()))
    con.commit()
    con.close()
    assert kb_import.main(["--jsonl", str(jsonl), "--images_dir", str(tmp_path / "b"), "--out",
                           str(tmp_path / "kb.sqlite")]) == 2
    assert "unfinished import made with --images_dir" in capsys.readouterr().err


def test_an_empty_question_is_refused(demo_dir, capsys):
    assert cli.main(["ask", "--config", "configs/demo.yaml", "--image", str(demo_dir / "images/inat/inat0000.jpg"),
                     "--question", "  "]) == 2
    assert "--question is empty" in capsys.readouterr().err


def test_a_missing_open_clip_checkpoint_is_one_line(tmp_path, capsys):
    from omgm.errors import OmgmError
    from omgm.retrieval.base import RetrieverSpec
    from omgm.retrieval.registry import build_retriever

    with pytest.raises(OmgmError, match="open_clip checkpoint not found"):
        build_retriever(RetrieverSpec("omgm-tiny-eva", retriever_pretrained=str(tmp_path / "no" / "tiny.pt"),
                                      device="cpu"))


def _step3_args(env, models, out, retrieval=None):
    return ["--test_file", str(env.demo / "test.csv"),
            "--retrieval_results_file", str(retrieval or env.dir / "test_step1.json"),
            "--knowledge_base_path", str(env.dir / "kb.sqlite"), "--output_file", str(out),
            "--answer_generator", str(models.llm), "--section_reranker", str(models.cross),
            "--context_tokenizer", str(models.llm), "--device", "cpu", "--max_new_tokens", "3", "--limit", "4",
            "--window", "2", "--no_progress"]


def test_answers_survive_a_failed_final_write(step2_env, tiny_step3_models, tmp_path, monkeypatch, capsys):
    from omgm.commands import step3
    from omgm.generate.generators.base import Generator

    out = tmp_path / "ans.json"
    real = step3.write_json_atomic
    with monkeypatch.context() as m:
        m.setattr(step3, "write_json_atomic", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
        assert step3.main(_step3_args(step2_env, tiny_step3_models, out)) == 2
    assert "the disk is full" in capsys.readouterr().err
    partial = tmp_path / "ans.json.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 5 and not out.exists()      # header + 4 answers kept
    calls = []
    monkeypatch.setattr(Generator, "generate", lambda self, reqs, batch_size=1: calls.append(reqs) or [])
    monkeypatch.setattr(step3, "write_json_atomic", real)
    assert step3.main(_step3_args(step2_env, tiny_step3_models, out)) == 0
    assert calls == [] and len(json.loads(out.read_text())["records"]) == 4 and not partial.exists()


def test_nan_section_scores_are_refused_when_read(step2_env, tiny_step3_models, tmp_path, capsys):
    from omgm.commands import step3

    data = json.loads((step2_env.dir / "test_step1.json").read_text())
    results = data.get("results", data)
    sid = next(iter(results))
    results[sid]["sec_sim"] = [[float("nan")] for _ in results[sid]["retrieved_entities"]]
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(data))                    # json writes NaN as a bare NaN token
    assert step3.main(_step3_args(step2_env, tiny_step3_models, tmp_path / "a.json", bad)) == 2
    assert f"sample {sid!r}: sec_sim[0] holds nan, not a finite number" in capsys.readouterr().err


def test_result_files_of_another_split_are_refused_by_evaluate_report_and_mining(step2_env, tmp_path, capsys):
    from omgm.data.results import write_retrieval
    from omgm.data.samples import samples_fingerprint

    train = read_samples(step2_env.demo / "train.csv")
    data = json.loads((step2_env.dir / "test_step1.json").read_text())
    results = data.get("results", data)
    made = tmp_path / "train_made.json"               # a step-1 file made for the train split, same E-VQA ids
    write_retrieval(made, results, "step1", meta={"samples_hash": samples_fingerprint(train),
                                                  "sample_file": str(step2_env.demo / "train.csv")})
    test_csv = str(step2_env.demo / "test.csv")
    assert cli.main(["evaluate", str(made), "--sample_file", test_csv, "--out", str(tmp_path / "e.json")]) == 2
    assert "was made for other samples" in capsys.readouterr().err
    assert cli.main(["report", "--sample_file", test_csv, "--step1", str(made), "--out",
                     str(tmp_path / "r.html")]) == 2
    assert "was made for other samples" in capsys.readouterr().err
    test_made = tmp_path / "test_made.json"
    write_retrieval(test_made, results, "step1",
                    meta={"samples_hash": samples_fingerprint(read_samples(test_csv))})
    assert cli.main(["data", "mine-negatives", "--train_file", str(step2_env.demo / "train.csv"), "--step1_result",
                     str(test_made), "--knowledge_base", str(step2_env.dir / "kb.sqlite"),
                     "--wiki_img_path_prefix", str(step2_env.demo / "wiki_images"),
                     "--out", str(tmp_path / "neg.json")]) == 2
    assert "was made for other samples" in capsys.readouterr().err and not (tmp_path / "neg.json").exists()
    assert cli.main(["evaluate", str(test_made), "--sample_file", test_csv, "--out", str(tmp_path / "e.json")]) == 0
    assert "recall" in json.dumps(json.loads((tmp_path / "e.json").read_text())).lower()   # --out: where asked


def test_an_image_index_whose_rows_leave_the_kb_is_refused(demo_image_index, demo_dir, tmp_path, capsys):
    import numpy as np

    from omgm.commands import step1

    w = demo_image_index
    for name in ("img.index", "img.index.manifest.json"):
        shutil.copy(w.dir / name, tmp_path / name)
    rows = np.load(w.dir / "img.index.ids.npy")
    rows[3] = -1
    np.save(tmp_path / "img.index.ids.npy", rows)
    assert step1.main(w.args + ["--sample_file", str(demo_dir / "test.csv"), "--faiss_index", str(tmp_path / "img.index"),
                              "--save_result_path", str(tmp_path / "s1.json"), "--inat_dir",
                              str(demo_dir / "images/inat"), "--gld_dir", str(demo_dir / "images/gld")]) == 2
    err = capsys.readouterr().err
    assert "img.index.ids.npy: item 3 is row -1, outside the knowledge base" in err and not (tmp_path / "s1.json").exists()


def test_an_llm_index_build_does_not_reuse_lead_summaries(demo_dir, tiny_clip_ckpt, tiny_llm, tmp_path, capsys):
    from omgm.commands import build_index

    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(tmp_path / "kb.sqlite")]) == 0
    args = ["--knowledge_base", str(tmp_path / "kb.sqlite"), "--retriever_vit", "omgm-tiny-eva",
            "--retriever_pretrained", str(tiny_clip_ckpt), "--device", "cpu", "--no_progress",
            "--summary_file", str(tmp_path / "s.jsonl")]
    assert build_index.main(args + ["--faiss_index", str(tmp_path / "lead.index")]) == 0
    assert build_index.main(args + ["--faiss_index", str(tmp_path / "llm.index"), "--summarizer", "llm",
                                    "--summary_model", str(tiny_llm)]) == 2
    assert "summaries written by 'lead'" in capsys.readouterr().err and not (tmp_path / "llm.index").exists()


def test_non_utf8_json_and_nul_bytes_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    assert cli.main(["evaluate", str(bad), "--dataset", "evqa"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert cli.main(["evaluate", "a\x00b.json", "--dataset", "evqa"]) == 2
    assert "holds a NUL byte" in capsys.readouterr().err


def test_an_index_with_more_clusters_than_vectors_is_one_line(demo_dir, tiny_clip_ckpt, tmp_path, capsys):
    from omgm.commands import build_index

    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(tmp_path / "kb.sqlite")]) == 0
    assert build_index.main(["--knowledge_base", str(tmp_path / "kb.sqlite"), "--retriever_vit", "omgm-tiny-eva",
                             "--retriever_pretrained", str(tiny_clip_ckpt), "--device", "cpu", "--no_progress",
                             "--faiss_index", str(tmp_path / "ivf.index"), "--index_factory", "IVF4096,Flat"]) == 2
    assert "cannot be trained on 40 vectors" in capsys.readouterr().err


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    from omgm.commands import evaluate

    monkeypatch.setattr(evaluate, "read_json", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(["evaluate", "x.json", "--dataset", "evqa"]) == 130
    assert "interrupted: finished work is kept" in capsys.readouterr().err


def test_a_full_disk_leaves_no_index_without_its_manifest(demo_dir, tiny_clip_ckpt, tmp_path, monkeypatch, capsys):
    import faiss

    from omgm.commands import build_index
    from omgm.retrieval import index as index_mod

    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(tmp_path / "kb.sqlite")]) == 0
    args = ["--knowledge_base", str(tmp_path / "kb.sqlite"), "--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained",
            str(tiny_clip_ckpt), "--device", "cpu", "--no_progress", "--faiss_index", str(tmp_path / "s.index")]

    def full(index, path):
        raise OSError(28, "No space left on device", path)

    with monkeypatch.context() as m:
        m.setattr(faiss, "write_index", full)
        assert build_index.main(args) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert not (tmp_path / "s.index").exists() and not (tmp_path / "s.index.manifest.json").exists()
    assert build_index.main(args) == 0
    manifest = json.loads((tmp_path / "s.index.manifest.json").read_text())
    assert manifest["index_bytes"] == (tmp_path / "s.index").stat().st_size
    manifest["dim"] = "64"
    (tmp_path / "s.index.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(index_mod.IndexMismatchError, match="wrong type: dim"):
        index_mod.load_index(tmp_path / "s.index")
    manifest["dim"], manifest["index_bytes"] = 64, 12
    (tmp_path / "s.index.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(index_mod.IndexMismatchError, match="from different builds"):
        index_mod.load_index(tmp_path / "s.index")


def test_an_sft_file_without_a_prompt_is_one_line(tmp_path):
    from omgm.finetune import data
    from omgm.finetune.data import SftDataError, read_sft_file

    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps({"format": data.SFT_FORMAT, "meta": {}}) + "\n" + json.dumps({"answer": "a"}) + "\n")
    with pytest.raises(SftDataError, match="line 2: prompt missing or not a string"):
        read_sft_file(p)
