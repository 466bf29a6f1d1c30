"""Bad input and faults through the real CLIs: each is refused with exit status 2 and a message that names the
file, row, flag or setting, or is skipped and counted; nothing is silently wrong."""
import csv
import json
import os
import shutil

import pytest

from omgm.commands import build_index, report, step1, step2, step3
from omgm.data import kb_import
from omgm.data.results import write_retrieval
from omgm.io import OutputLock


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.fixture(scope="module")
def s3(step2_env, tiny_step3_models, tmp_path_factory):
    """Step-3 arguments on the demo (a step-1 file as retrieval input), first 6 samples."""
    w, d, m = tmp_path_factory.mktemp("bad3"), step2_env.demo, tiny_step3_models

    def args(out="ans.json", extra=()):
        return ["--test_file", str(d / "test.csv"), "--retrieval_results_file", str(step2_env.dir / "test_step1.json"),
                "--knowledge_base_path", str(step2_env.dir / "kb.sqlite"), "--output_file", str(w / out),
                "--answer_generator", str(m.llm), "--section_reranker", str(m.cross), "--context_tokenizer", str(m.llm),
                "--device", "cpu", "--max_new_tokens", "3", "--limit", "6", "--window", "2", "--no_progress", *extra]
    return w, args


def test_step3_resumed_with_other_settings_is_refused(s3, monkeypatch, capsys):
    from omgm.resume import PartialRecords

    w, args = s3
    with monkeypatch.context() as m:                       # leave the partial file, as a killed run does
        m.setattr(PartialRecords, "remove", lambda self: None)
        assert step3.main(args("r.json")) == 0
    assert step3.main(args("r.json", ["--step2_beta", "0.5"])) == 2
    err = capsys.readouterr().err
    assert "made with other settings (step2_beta: 0.2 then, 0.5 now)" in err and "--restart" in err
    assert step3.main(args("r.json", ["--max_new_tokens", "5"])) == 2
    assert "max_new_tokens: 3 then, 5 now" in capsys.readouterr().err
    assert step3.main(args("r.json", ["--step2_beta", "0.5", "--restart"])) == 0
    data = json.loads((w / "r.json").read_text())
    assert data["meta"]["step2_beta"] == 0.5 and len(data["records"]) == 6
    assert json.loads((w / "r.summary.json").read_text())["answers"] == 6       # counts every answer


def test_sec_sim_of_the_wrong_length_names_sample_and_file(s3, step2_env, tmp_path, capsys):
    w, args = s3
    from omgm.data.results import read_retrieval

    res = read_retrieval(step2_env.dir / "test_step1.json").results
    for e in res.values():
        e["sec_sim"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]] + [[]] * (len(e["retrieved_entities"]) - 1)
    write_retrieval(tmp_path / "bad_s2.json", res, "step2", {"samples_hash": json.loads(
        (step2_env.dir / "test_step1.json").read_text())["meta"]["samples_hash"]})
    a = args("m.json")
    a[a.index("--retrieval_results_file") + 1] = str(tmp_path / "bad_s2.json")
    assert step3.main(a) == 2
    err = capsys.readouterr().err
    assert "bad_s2.json, sample E-VQA_0: 9 step-2 section scores for" in err


@pytest.mark.parametrize("flags, message", [
    (["--step1_alpha", "1.5"], "--step1_alpha: expected weights between 0 and 1"),
    (["--step1_alpha", "-2"], "--step1_alpha: expected weights between 0 and 1"),
    (["--top_ks=-1"], "--top_ks: expected cut-offs of at least 1"),
    (["--batch_size", "0"], "--batch_size: 0 is out of range"),
])
def test_numeric_flags_are_range_checked(step2_env, flags, message, capsys):
    args = ["rerank", "--sample_file", "x.csv", "--step1_result", "x.json", "--knowledge_base_path", "kb",
            "--save_result_path", "o.json", *flags]
    with pytest.raises(SystemExit) as e:
        step2.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_numeric_values_in_config_files_are_checked_too(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("retrieval_top_k: 0\n")
    assert step1.main(["--config", str(tmp_path / "c.yaml"), "--sample_file", "x", "--knowledge_base", "x",
                       "--faiss_index", "x", "--save_result_path", str(tmp_path / "o.json")]) == 2
    assert "config value retrieval_top_k: 0 is out of range" in capsys.readouterr().err


def test_top_ks_beyond_the_candidates_is_refused(step2_env, tmp_path, capsys):
    d = step2_env.demo
    assert step2.main(["rerank", "--sample_file", str(d / "test.csv"), "--step1_result",
                       str(step2_env.dir / "test_step1.json"), "--knowledge_base_path", str(step2_env.dir / "kb.sqlite"),
                       "--save_result_path", str(tmp_path / "o.json"), "--top_ks", "1,50", "--device", "cpu"]) == 2
    assert "--top_ks 50 exceeds" in capsys.readouterr().err


def test_wiki_image_csv_without_its_url_column_is_refused(demo_copy, tmp_path, capsys):
    f = demo_copy / "wiki_image_csv" / "wiki_image_url_part_1_processed.csv"
    rows = list(csv.reader(f.open()))
    with f.open("w", newline="") as fh:
        csv.writer(fh).writerows([[r[0], r[2], r[3]] for r in rows])          # image_URL column dropped
    assert kb_import.main(["--kb_json", str(demo_copy / "kb.json"), "--out", str(tmp_path / "kb.sqlite"),
                           "--wiki_img_csv_dir", str(demo_copy / "wiki_image_csv")]) == 2
    err = capsys.readouterr().err
    assert "wiki_image_url_part_1_processed.csv: the header" in err and "fewer than the layout's 4 columns" in err


def test_wiki_image_csv_columns_are_read_by_position_under_another_header(demo_copy, tmp_path, caplog):
    from omgm.data.kb import open_kb
    from omgm.data.wiki_images import wiki_images_for

    f = demo_copy / "wiki_image_csv" / "wiki_image_url_part_1_processed.csv"
    rows = list(csv.reader(f.open()))
    with f.open("w", newline="") as fh:
        csv.writer(fh).writerows([["a", "b", "c", "d"], *rows[1:]])            # the header names differ
    with caplog.at_level("WARNING"):
        assert kb_import.main(["--kb_json", str(demo_copy / "kb.json"), "--out", str(tmp_path / "kb.sqlite"),
                               "--wiki_img_csv_dir", str(demo_copy / "wiki_image_csv"), "--no_progress"]) == 0
    assert caplog.text.count("are read by position") == 1
    wiki = wiki_images_for(open_kb(tmp_path / "kb.sqlite"), demo_copy / "wiki_images", None)
    assert wiki.first(rows[1][0]) == demo_copy / "wiki_images" / rows[1][2]


def test_unequal_section_lists_are_kept_without_sections_and_counted(tmp_path, capsys):
    from omgm.data.kb import open_kb

    kb = {"https://a": {"title": "A", "url": "https://a", "section_titles": ["A"], "section_texts": ["a"]},
          "https://b": {"title": "B", "section_titles": ["B", "C"], "section_texts": ["b"]},
          "https://c": {"title": "C", "url": "https://elsewhere", "section_titles": ["C"], "section_texts": ["c"]}}
    (tmp_path / "kb.json").write_text(json.dumps(kb))
    assert kb_import.main(["--kb_json", str(tmp_path / "kb.json"), "--out", str(tmp_path / "kb.sqlite"),
                           "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert "1 entities with unequal section lists kept without sections" in err
    assert "1 entities whose url field differs from their key" in err and "https://elsewhere" in err
    store = open_kb(tmp_path / "kb.sqlite")
    assert list(store.urls()) == ["https://a", "https://b", "https://c"]          # rows keep the index order
    assert store.get("https://b").sections() == [] and len(store.get("https://c").sections()) == 1
    assert kb_import.main(["--kb_json", str(tmp_path / "kb.json"), "--out", str(tmp_path / "strict.sqlite"),
                           "--no_progress", "--max_skipped_entities", "0"]) == 2
    assert "more than 0 entities with unequal section lists" in capsys.readouterr().err


def test_malformed_csv_rows_are_counted_and_shown(demo_copy, tmp_path, capsys):
    f = demo_copy / "wiki_image_csv" / "wiki_image_url_part_2_processed.csv"
    f.write_text(f.read_text() + "Only a title\nT,http://x/y.jpg,../outside.jpg,c\n")
    assert kb_import.main(["--kb_json", str(demo_copy / "kb.json"), "--out", str(tmp_path / "kb.sqlite"),
                           "--wiki_img_csv_dir", str(demo_copy / "wiki_image_csv")]) == 0
    err = capsys.readouterr().err
    assert "2 malformed rows skipped" in err and "leaves the image folder" in err


@pytest.mark.parametrize("entity, message", [
    ({"title": "X", "section_titles": ["X"]}, "'section_texts' must be a list of strings, got NoneType"),
    ({"title": "X", "section_titles": ["X", "Y"], "section_texts": ["x"]}, "has 2 section titles but 1 section texts"),
])
def test_kb_entities_are_validated_at_import(tmp_path, entity, message, capsys):
    kb = {"https://a": {"title": "A", "section_titles": ["A"], "section_texts": ["a"]}, "https://b": entity}
    (tmp_path / "kb.json").write_text(json.dumps(kb))
    assert kb_import.main(["--kb_json", str(tmp_path / "kb.json"), "--out", str(tmp_path / "kb.sqlite"),
                           "--max_skipped_entities", "0"]) == 2                       # strict: nothing tolerated
    err = capsys.readouterr().err
    assert "entity 'https://b' (row 1)" in err and message in err


def test_outputs_respect_the_umask(tmp_path):
    write_retrieval(tmp_path / "r.json", {}, "step1")
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_two_writers_of_one_output_and_stale_locks(step2_env, tmp_path, capsys):
    out = tmp_path / "kb.sqlite"
    with OutputLock(out):                                       # another job holds the store
        assert kb_import.main(["--kb_json", str(step2_env.demo / "kb.json"), "--out", str(out)]) == 2
        assert "is being written by another job" in capsys.readouterr().err
    (tmp_path / "kb.sqlite.lock").write_text(json.dumps({"pid": 999999999, "host": os.uname().nodename}))
    assert kb_import.main(["--kb_json", str(step2_env.demo / "kb.json"), "--out", str(out)]) == 0   # stale: taken over
    idx = tmp_path / "i.index"
    with OutputLock(idx):
        assert build_index.main(["--knowledge_base", str(out), "--faiss_index", str(idx), "--retriever_vit",
                                 "omgm-tiny-eva", "--device", "cpu", "--no_progress"]) == 2
    assert "is being written by another job" in capsys.readouterr().err


def test_unwritable_outputs_fail_before_any_work(step2_env, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert kb_import.main(["--kb_json", str(step2_env.demo / "kb.json"), "--out",
                           str(tmp_path / "afile" / "kb.sqlite")]) == 2
    assert f"cannot write {tmp_path / 'afile' / 'kb.sqlite'}" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("question,answer,dataset_image_ids,dataset_name,question_type,wikipedia_url\n", "no question rows"),
    ("question,answer\n".encode() + b"\xff\xfe bad", "not UTF-8 text"),
])
def test_sample_files_that_cannot_be_used(tmp_path, content, message, capsys):
    f = tmp_path / "s.csv"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert step1.main(["--sample_file", str(f), "--knowledge_base", "x", "--faiss_index", "x",
                       "--save_result_path", str(tmp_path / "o.json")]) == 2
    assert message in capsys.readouterr().err


def test_a_csv_with_a_byte_order_mark_is_accepted(demo_dir, tmp_path):
    from omgm.data.samples import read_samples

    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbf" + (demo_dir / "test.csv").read_bytes())
    assert len(read_samples(f)) == len(read_samples(demo_dir / "test.csv"))


def test_missing_index_and_offline_model_are_one_line(step2_env, tmp_path, capsys, monkeypatch):
    d = step2_env.demo
    base = ["--sample_file", str(d / "test.csv"), "--knowledge_base", str(step2_env.dir / "kb.sqlite"),
            "--save_result_path", str(tmp_path / "o.json"), "--device", "cpu", "--inat_dir", str(d / "images/inat"),
            "--gld_dir", str(d / "images/gld")]
    assert step1.main(base + ["--faiss_index", str(tmp_path / "none.index"), "--retriever_vit", "hf-clip",
                              "--retriever_path", "some-org/some-clip"]) == 2
    err = capsys.readouterr().err
    assert "'some-org/some-clip' is not a local folder and is not in the Hugging Face cache" in err
    assert err.count("\n") == 1


def _rerank_with_checkpoint(env, tmp_path, payload: bytes) -> int:
    (tmp_path / "model_1.pth").write_bytes(payload)
    d = env.demo
    return step2.main(["rerank", "--sample_file", str(d / "test.csv"), "--step1_result", str(env.dir / "test_step1.json"),
                       "--knowledge_base_path", str(env.dir / "kb.sqlite"), "--reranker_ckpt_path",
                       str(tmp_path / "model_1.pth"), "--save_result_path", str(tmp_path / "o.json"), "--device", "cpu"])


@pytest.mark.parametrize("payload", [os.urandom(256), b"PK\x03\x04truncated"])
def test_a_damaged_checkpoint_does_not_suggest_trusting_it(step2_env, tmp_path, payload, capsys):
    assert _rerank_with_checkpoint(step2_env, tmp_path, payload) == 2
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint, or a damaged/truncated one" in err and "--trust_checkpoint" not in err


def test_a_planted_pickle_is_refused_in_one_line_without_running(step2_env, tmp_path, capsys):
    import pickle

    class Planted:
        def __reduce__(self):
            return (os.system, ("echo planted > " + str(tmp_path / "ran"),))

    assert _rerank_with_checkpoint(step2_env, tmp_path, pickle.dumps({"x": Planted()})) == 2
    err = capsys.readouterr().err
    assert "holds pickled objects besides tensors" in err and "Traceback" not in err and not (tmp_path / "ran").exists()


def test_report_links_survive_odd_folder_names_and_say_what_made_them(step2_env, tmp_path):
    d = tmp_path / "data #1?"
    shutil.copytree(step2_env.demo / "images", d / "images")
    from omgm.data.results import read_retrieval

    s1 = read_retrieval(step2_env.dir / "test_step1.json").results
    s2 = {k: {**v, "step2_scores": list(v["retrieval_similarities"])} for k, v in s1.items()}   # alpha 0: s2 = fused
    write_retrieval(tmp_path / "s2.json", s2, "step2", {"alpha": 0.0, "query_norm": "faithful"})
    out = tmp_path / "r.html"
    assert report.main(["--sample_file", str(step2_env.demo / "test.csv"), "--step2", str(tmp_path / "s2.json"),
                        "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"), "--out", str(out),
                        "--limit", "3"]) == 0
    doc = out.read_text()
    assert "%23" in doc and "%3F" in doc and "alpha: 0.0" in doc and "query_norm: faithful" in doc
    import re
    from urllib.parse import unquote

    srcs = [unquote(s) for s in re.findall(r'<img src="([^"]+)"', doc) if not s.startswith("data:")]
    assert srcs and all((out.parent / s).is_file() for s in srcs if "images" in s)
    assert "· s2" not in doc                                       # the same score is not printed twice


def test_a_summary_line_without_its_newline_is_completed_not_glued(tmp_path):
    from omgm.retrieval.summaries import SummaryStore

    store = SummaryStore(tmp_path / "s.jsonl")
    store.append([(0, "u0", "zero")])
    (tmp_path / "s.jsonl").write_text((tmp_path / "s.jsonl").read_text().rstrip("\n"))   # crash before "\n"
    store.append([(1, "u1", "one")])
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(x)["row"] for x in lines] == [0, 1]


def test_a_missing_index_is_one_line(step2_env, tiny_clip_ckpt, tmp_path, capsys):
    d = step2_env.demo
    assert step1.main(["--sample_file", str(d / "test.csv"), "--knowledge_base", str(step2_env.dir / "kb.sqlite"),
                       "--save_result_path", str(tmp_path / "o.json"), "--device", "cpu",
                       "--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained", str(tiny_clip_ckpt),
                       "--faiss_index", str(tmp_path / "none.index")]) == 2
    assert f"FAISS index not found: {tmp_path / 'none.index'}" in capsys.readouterr().err


def test_negatives_and_manifests_respect_the_umask(tmp_path):
    from omgm.rerank.negatives import NegativeEntry, write_negative_db

    write_negative_db(tmp_path / "neg.json", {"i": NegativeEntry("a.jpg", ["u"])})
    assert (tmp_path / "neg.json").stat().st_mode & 0o777 == 0o666 & ~_umask()
