"""Step 2 through the real entry points on the demo: mine negatives, train a few steps, rerank."""
import json

import pytest
import torch

from omgm.commands import step2
from omgm.data.results import read_retrieval, write_retrieval
from omgm.prep import mine_negatives


@pytest.fixture(scope="module")
def trained(step2_env, tmp_path_factory):
    w, d = tmp_path_factory.mktemp("s2cli"), step2_env.demo
    assert mine_negatives.main(["--train_file", str(d / "train.csv"), "--step1_result", str(step2_env.dir / "train_step1.json"),
                                "--knowledge_base", str(step2_env.dir / "kb.sqlite"),
                                "--wiki_img_path_prefix", str(d / "wiki_images"), "--out", str(w / "neg.json")]) == 0
    assert json.loads((w / "neg.json").read_text()) == json.loads((step2_env.dir / "negatives.json").read_text())
    args = ["train", "--train_file", str(d / "train.csv"), "--knowledge_base_file", str(step2_env.dir / "kb.sqlite"),
            "--negative_db_file", str(w / "neg.json"), "--wiki_img_path_prefix", str(d / "wiki_images"),
            "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"),
            "--reranker-model-name", str(step2_env.config), "--tokenizer", str(step2_env.tok_dir),
            "--save_dir", str(w / "ckpt"), "--batch-size", "8", "--max_steps", "3", "--num_workers", "0",
            "--device", "cpu", "--no_progress", "--wandb", "1"]          # WANDB_MODE=disabled in tests
    assert step2.main(args) == 0
    return w


def _rerank_args(env, w, ckpt, out="s2.json", step1="test_step1.json", extra=()):
    d = env.demo
    return ["rerank", "--sample_file", str(d / "test.csv"), "--step1_result", str(env.dir / step1),
            "--reranker_ckpt_path", str(ckpt), "--knowledge_base_path", str(env.dir / "kb.sqlite"),
            "--wiki_img_path_prefix", str(d / "wiki_images"), "--inat_dir", str(d / "images/inat"),
            "--gld_dir", str(d / "images/gld"), "--tokenizer", str(env.tok_dir), "--top_ks", "1,5,10,20",
            "--save_result_path", str(w / out), "--device", "cpu", "--no_progress", *extra]


def test_train_writes_checkpoints_and_log(trained):
    assert (trained / "ckpt/model_3.pth").is_file() and (trained / "ckpt/state_3.pt").is_file()
    summary = json.loads((trained / "ckpt/train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["dropped"] == {"no positive image": 4}
    assert len((trained / "ckpt/train_log.jsonl").read_text().splitlines()) == 3


def test_rerank_end_to_end_with_alpha_sweep(step2_env, trained, capsys):
    assert step2.main(_rerank_args(step2_env, trained, trained / "ckpt/model_3.pth",
                                   extra=["--step1_alpha", "0.9,1.0"])) == 0
    s1 = read_retrieval(step2_env.dir / "test_step1.json")
    r1 = read_retrieval(trained / "s2.alpha1.json")
    r09 = read_retrieval(trained / "s2.alpha0.9.json")
    assert r09.stage == "step2" and set(r09.results) == {s.sample_id for s in step2_env.test}
    for sid, e in r09.results.items():
        assert sorted(e["retrieval_similarities"], reverse=True) == e["retrieval_similarities"]
        assert sorted(u["url"] for u in e["retrieved_entities"]) == sorted(s1.urls(sid))
        for sec, ids, s2, f, a in zip(e["sec_sim"], e["sec_ids"], e["step2_scores"], e["retrieval_similarities"],
                                      e["step1_similarities"]):
            assert len(sec) == len(ids) and s2 == (max(sec) if sec else 0.0)
            assert abs(f - (0.9 * a + 0.1 * s2)) < 1e-9
    assert all(r1.urls(k) == s1.urls(k) for k in s1.results)          # alpha 1 keeps the step-1 order
    summary = json.loads((trained / "s2.summary.json").read_text())
    assert [r["alpha"] for r in summary["runs"]] == [0.9, 1.0] and "top1_section_recall" in summary["runs"][0]
    assert summary["counts"]["title not in the wiki-image CSVs"] == 1
    assert "step 2 (alpha=0.9" in capsys.readouterr().out


def test_step1_file_of_another_split_is_refused(step2_env, trained, tmp_path, capsys):
    assert step2.main(_rerank_args(step2_env, trained, trained / "ckpt/model_3.pth", step1="train_step1.json")) == 2
    assert "was made for other samples" in capsys.readouterr().err
    bare = read_retrieval(step2_env.dir / "train_step1.json").results          # a bare file has no fingerprint
    write_retrieval(tmp_path / "bare.json", {f"x{k}": v for k, v in bare.items()}, "step1", bare=True)
    args = _rerank_args(step2_env, trained, trained / "ckpt/model_3.pth")
    args[args.index("--step1_result") + 1] = str(tmp_path / "bare.json")
    assert step2.main(args) == 2
    assert "80 of its 80 samples have no result" in capsys.readouterr().err
    # the bug: a bare TRAIN-split file has the test split's ids too (E-VQA ids are positions)
    write_retrieval(tmp_path / "bare_train.json", bare, "step1", bare=True)
    args[args.index("--step1_result") + 1] = str(tmp_path / "bare_train.json")
    assert step2.main(args) == 2
    err = capsys.readouterr().err
    assert "was not made for" in err and f"{len(bare) - 80} of its {len(bare)} ids are not samples" in err
    # a bare file of the right split but another KB
    test_bare = read_retrieval(step2_env.dir / "test_step1.json").results
    first = next(iter(test_bare))
    test_bare[first]["retrieved_entities"][0]["url"] = "https://en.wikipedia.org/wiki/Not_in_this_KB"
    write_retrieval(tmp_path / "bare_kb.json", test_bare, "step1", bare=True)
    args[args.index("--step1_result") + 1] = str(tmp_path / "bare_kb.json")
    assert step2.main(args) == 2
    assert "ranks 1 entities that are not in the knowledge base" in capsys.readouterr().err


def test_checkpoint_of_the_wrong_architecture(step2_env, trained, tmp_path, capsys):
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1, 1, 7)}}, tmp_path / "model_x.pth")
    assert step2.main(_rerank_args(step2_env, trained, tmp_path / "model_x.pth",
                                   extra=["--reranker-model-name", str(step2_env.config)])) == 2
    err = capsys.readouterr().err
    assert "visual_encoder.cls_token has shape (1, 1, 7) but the reranker expects (1, 1, 48)" in err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert step2.main(_rerank_args(step2_env, trained, tmp_path / "junk.pth")) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_unknown_entity_in_step1_is_scored_zero(step2_env, trained, tmp_path):
    s1 = read_retrieval(step2_env.dir / "test_step1.json").results
    sid = next(iter(s1))
    s1[sid]["retrieved_entities"][0] = {"url": "https://en.wikipedia.org/wiki/Nowhere", "title": "Nowhere"}
    write_retrieval(tmp_path / "s1.json", s1, "step1")
    args = _rerank_args(step2_env, trained, trained / "ckpt/model_3.pth", out="u.json")
    args[args.index("--step1_result") + 1] = str(tmp_path / "s1.json")
    assert step2.main(args) == 0
    entry = read_retrieval(trained / "u.json").results[sid]
    pos = [e["url"] for e in entry["retrieved_entities"]].index("https://en.wikipedia.org/wiki/Nowhere")
    assert entry["sec_sim"][pos] == [] and entry["step2_scores"][pos] == 0.0
    assert json.loads((trained / "u.summary.json").read_text())["counts"]["entity not in KB"] == 1


def test_the_authors_trained_file_loads(step2_env, trained, tmp_path, capsys):
    """Their training script saves the whole state dict of their class: the LAVIS keys (ViT in fp16) plus
    ``prompt_tokens`` [1, Q, D], a parameter no forward path uses, bare (no wrapper)."""
    from omgm.rerank.convert import build_reranker, to_lavis_state_dict

    model, _ = build_reranker(reranker_ckpt=trained / "ckpt/model_3.pth")
    sd = to_lavis_state_dict(model)
    sd = {k: (v.half() if k.startswith("visual_encoder.") else v) for k, v in sd.items()}
    q = model.config.num_query_tokens
    sd.update({"prompt_tokens": torch.zeros(1, q, model.config.qformer.hidden_size), "itm_head.weight": torch.zeros(2, 64),
               "vision_proj.weight": torch.zeros(16, 64), "Qformer.cls.predictions.bias": torch.zeros(5)})
    torch.save(sd, tmp_path / "model_3.pth")
    args = _rerank_args(step2_env, trained, tmp_path / "model_3.pth", out="authors.json",
                        extra=["--reranker-model-name", str(step2_env.config)])
    assert step2.main(args) == 0
    err = capsys.readouterr().err
    assert "prompt_tokens" in err and "ignored" in err
    assert read_retrieval(trained / "authors.json").stage == "step2"
    torch.save({**sd, "something_else.weight": torch.zeros(1)}, tmp_path / "model_4.pth")
    assert step2.main(_rerank_args(step2_env, trained, tmp_path / "model_4.pth", out="x.json",
                                   extra=["--reranker-model-name", str(step2_env.config)])) == 2
    assert "something_else.weight" in capsys.readouterr().err


def test_the_final_checkpoint_is_named_and_its_folder_is_accepted(step2_env, trained, capsys):
    summary = json.loads((trained / "ckpt" / "train_summary.json").read_text())
    assert summary["final_checkpoint"] == str(trained / "ckpt" / "model_3.pth")
    assert step2.main(_rerank_args(step2_env, trained, trained / "ckpt", out="from_folder.json")) == 0
    assert step2.main(_rerank_args(step2_env, trained, trained / "ckpt/model_3.pth", out="from_file.json")) == 0
    assert read_retrieval(trained / "from_folder.json").results == read_retrieval(trained / "from_file.json").results
    empty = trained / "no_checkpoints"
    empty.mkdir()
    assert step2.main(_rerank_args(step2_env, trained, empty, out="x.json")) == 2
    assert "a folder without any model_N.pth" in capsys.readouterr().err
