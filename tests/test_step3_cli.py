"""Step 3 and evaluate through their entry points, on the demo, with tiny random models."""
import json

import pytest

from omgm.commands import evaluate, step3
from omgm.data.results import read_retrieval, write_retrieval
from omgm.data.samples import read_samples, samples_fingerprint
from omgm.generate.generators.llava_hf import HFVisionGenerator
from omgm.resume import PartialRecords


@pytest.fixture(scope="module")
def step2_file(step2_env, tmp_path_factory):
    """A step-2-shaped file: the gold entity first for even samples, with sec_sim/sec_ids for its sections."""
    w = tmp_path_factory.mktemp("s3")
    s1 = read_retrieval(step2_env.dir / "test_step1.json").results
    out = {}
    for n, s in enumerate(step2_env.test):
        e = json.loads(json.dumps(s1[s.sample_id]))
        urls = [x["url"] for x in e["retrieved_entities"]]
        if s.wikipedia_url in urls:
            k = urls.index(s.wikipedia_url)
            for key in ("retrieved_entities", "retrieval_similarities"):
                e[key].insert(0, e[key].pop(k))
        ids = [[sec.index for sec in step2_env.kb.get(x["url"]).sections()] for x in e["retrieved_entities"]]
        e["sec_ids"] = ids
        e["sec_sim"] = [[float(i == int(s.evidence_section_id)) * 5 for i in row] for row in ids]
        out[s.sample_id] = e
    write_retrieval(w / "step2.json", out, "step2", {"samples_hash": samples_fingerprint(step2_env.test)})
    return w


def _args(env, models, w, results, out, generator=None, extra=()):
    d = env.demo
    return ["--test_file", str(d / "test.csv"), "--retrieval_results_file", str(results),
            "--knowledge_base_path", str(env.dir / "kb.sqlite"), "--output_file", str(w / out),
            "--answer_generator", str(generator or models.llava), "--section_reranker", str(models.cross),
            "--context_tokenizer", str(models.llava),
            "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"), "--device", "cpu",
            "--max_new_tokens", "4", "--batch_size", "2", "--window", "4", "--no_progress", *extra]


def test_step3_end_to_end_with_fused_sections(step2_env, tiny_step3_models, step2_file):
    w = step2_file
    assert step3.main(_args(step2_env, tiny_step3_models, w, w / "step2.json", "ans.json", extra=["--limit", "12"])) == 0
    data = json.loads((w / "ans.json").read_text())
    assert data["format"] == "omgm.answers" and data["meta"]["dataset"] == "evqa"
    recs = data["records"]
    assert [r["data_id"] for r in recs] == [f"E-VQA_{i}" for i in range(12)]
    samples = read_samples(step2_env.demo / "test.csv")
    for r, s in zip(recs, samples):
        assert isinstance(r["prediction"], str) and r["gt_answer"] == s.answer
        assert r["used_step2_section_scores"] and len(r["step3_sec_sim"]) == len(r["q2s_scores"])
        assert r["entity_url"] == s.wikipedia_url and r["top1_sec"].startswith("# Wiki Article: ")
        if r["entity_hit"]:            # sec_sim 5.0 on the evidence section outweighs any q2s at beta 0.2
            assert r["section_hit"] and r["top1_section_id"] == int(s.evidence_section_id)
            assert r["evidence_sec"] == r["top1_sec"]
    summary = json.loads((w / "ans.summary.json").read_text())
    assert summary["evaluation"]["metric"].startswith("EM only") and summary["evaluation"]["total"] == 12
    assert summary["entity_hit"] == 50.0 and summary["section_hit"] == 50.0
    assert not (w / "ans.json.partial.jsonl").exists()


def test_step1_file_falls_back_to_the_cross_encoder(step2_env, tiny_step3_models, step2_file):
    w = step2_file
    assert step3.main(_args(step2_env, tiny_step3_models, w, step2_env.dir / "test_step1.json", "a1.json",
                            generator=tiny_step3_models.llm, extra=["--limit", "4", "--bare_output"])) == 0
    recs = json.loads((w / "a1.json").read_text())
    assert isinstance(recs, list) and not any(r["used_step2_section_scores"] for r in recs)
    assert all(r["step3_sec_sim"] == r["q2s_scores"] for r in recs)
    counts = json.loads((w / "a1.summary.json").read_text())["counts"]
    assert counts.get("cross-encoder only (no step-2 scores)") == 4 - counts.get("top-1 entity has no sections", 0)


def test_resume_answers_only_what_is_missing(step2_env, tiny_step3_models, step2_file, monkeypatch):
    w = step2_file
    args = _args(step2_env, tiny_step3_models, w, w / "step2.json", "r.json", extra=["--limit", "8"])
    with monkeypatch.context() as m:                       # keep the partial file, as a killed run would
        m.setattr(PartialRecords, "remove", lambda self: None)
        assert step3.main(args) == 0
    recs = json.loads((w / "r.json").read_text())["records"]
    partial = w / "r.json.partial.jsonl"
    lines = partial.read_text().splitlines()
    assert json.loads(lines[0])["settings"]["answer_generator"] == str(tiny_step3_models.llava)
    partial.write_text("\n".join(lines[:6]) + '\n{"data_id": "E-VQA_5", "pred')      # header + 5 + a torn line
    seen = []
    real = HFVisionGenerator._generate
    monkeypatch.setattr(HFVisionGenerator, "_generate", lambda self, reqs: seen.extend(reqs) or real(self, reqs))
    assert step3.main(args) == 0
    assert len(seen) == 4              # windows of 4: the second one (1 of 4 answers kept) is answered again whole
    again = json.loads((w / "r.json").read_text())
    assert [r["data_id"] for r in again["records"]] == [r["data_id"] for r in recs]
    assert again["records"][:5] == recs[:5]
    assert json.loads((w / "r.summary.json").read_text())["answers"] == 8


def test_bad_inputs(step2_env, tiny_step3_models, step2_file, tmp_path, capsys):
    w = step2_file
    assert step3.main(_args(step2_env, tiny_step3_models, w, w / "step2.json", "x.json", generator="gpt-9")) == 2
    assert "unknown generator 'gpt-9'" in capsys.readouterr().err
    args = _args(step2_env, tiny_step3_models, w, w / "step2.json", "x.json")
    args[1] = str(step2_env.demo / "infoseek_test.csv")
    assert step3.main(args) == 2
    assert "was made for other samples than" in capsys.readouterr().err


def test_evaluate_cli_answers_and_retrieval(step2_env, tiny_step3_models, step2_file, tmp_path, capsys):
    w = step2_file
    recs = [{"data_id": "E-VQA_0", "question": "q", "gt_answer": "1889|eighteen", "prediction": "1889.",
             "question_type": "automatic"},
            {"data_id": "E-VQA_1", "question": "q", "gt_answer": "red&&blue", "prediction": "blue and red",
             "question_type": "multi_answer"},
            {"data_id": "E-VQA_2", "question": "q", "gt_answer": "x", "prediction": "", "question_type": "templated"}]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    assert evaluate.main([str(tmp_path / "a.json"), "--dataset", "evqa"]) == 0
    res = json.loads((tmp_path / "a.eval.json").read_text())
    assert res["accuracy"] == 66.67 and res["empty_predictions"] == 1
    assert evaluate.main([str(tmp_path / "a.json"), "--dataset", "infoseek"]) == 0
    assert "NOT the official" in json.loads((tmp_path / "a.eval.json").read_text())["metric"]
    assert evaluate.main([str(tmp_path / "a.json")]) == 2                # a bare list does not say its dataset
    assert "say --dataset evqa or --dataset infoseek" in capsys.readouterr().err
    assert evaluate.main([str(w / "step2.json"), "--sample_file", str(step2_env.demo / "test.csv")]) == 0
    rec = json.loads((w / "step2.eval.json").read_text())
    assert rec["recall"]["R@1"] == 50.0 and rec["total"] == 80
    (tmp_path / "bad.json").write_text(json.dumps([{"prediction": "x"}]))
    assert evaluate.main([str(tmp_path / "bad.json"), "--dataset", "evqa"]) == 2
    assert "expected answer records" in capsys.readouterr().err
