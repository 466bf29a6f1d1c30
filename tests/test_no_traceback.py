"""The held-out bad inputs that still ended in a Python traceback: each is one line and exit status 2 now (or
skipped and counted, where skipping is what a user wants)."""
from __future__ import annotations

import importlib
import json
import pickle
import shutil
import sqlite3

import pytest
import torch

from omgm import cli
from omgm.commands import evaluate, report, step2, step3_train
from omgm.data import kb_import
from omgm.errors import user_condition
from omgm.prep import check_data, download_wiki_images


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [ln[ln.index("error:"):] for ln in err.splitlines() if "error:" in ln]   # progress bars share lines
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


class _Planted:
    def __reduce__(self):
        return (print, ("a planted pickle ran",))


def plant(path) -> None:
    path.write_bytes(pickle.dumps({"weight": _Planted()}, protocol=2))


# -- result files ------------------------------------------------------------------------------------------

def _step_file(step2_env, tmp_path, stage: str, **changes):
    data = json.loads((step2_env.dir / "test_step1.json").read_text())
    data["stage"] = stage
    if stage == "step2":
        for e in data["results"].values():
            e["sec_sim"] = [[0.5] for _ in e["retrieved_entities"]]
    data.update(changes)
    p = tmp_path / f"{stage}.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("stage", ["step1", "step2"])
@pytest.mark.parametrize("change, message", [
    ({"version": "abc"}, "'version' must be a whole number, got 'abc'"),
    ({"version": None}, "'version' must be a whole number, got None"),
    ({"meta": "oops"}, "'meta' must be an object"),
])
def test_damaged_result_file_headers_are_one_line(step2_env, tmp_path, stage, change, message, capsys):
    p = _step_file(step2_env, tmp_path, stage, **change)
    assert evaluate.main([str(p), "--sample_file", str(step2_env.demo / "test.csv")]) == 2
    assert message in one_line(capsys)


def test_a_result_file_nested_200000_deep_is_one_line(step2_env, tmp_path, capsys):
    p = tmp_path / "deep.json"
    p.write_text('{"format": "omgm.retrieval", "version": 1, "results": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert evaluate.main([str(p), "--sample_file", str(step2_env.demo / "test.csv")]) == 2
    assert "nested too deeply" in one_line(capsys)


# -- knowledge base ----------------------------------------------------------------------------------------

def test_a_kb_json_that_is_not_utf8_is_one_line(tmp_path, capsys):
    kb = tmp_path / "kb.json"
    kb.write_bytes(b'{"https://x/A": {"title": "A\xff\xfe", "section_titles": ["A"], "section_texts": ["t"]}}')
    assert kb_import.main(["--kb_json", str(kb), "--out", str(tmp_path / "kb.sqlite")]) == 2
    assert "not UTF-8 text near byte" in one_line(capsys)


def test_a_kb_entity_with_a_number_for_section_titles_is_one_line(demo_dir, tmp_path, capsys):
    from omgm.data.samples import read_samples

    gold = read_samples(demo_dir / "test.csv")[0].wikipedia_url
    kb = tmp_path / "kb.json"
    kb.write_text(json.dumps({gold: {"title": "A", "section_titles": 5, "section_texts": ["t"]}}))
    assert check_data.main(["--splits", str(demo_dir / "test.csv"), "--knowledge_base", str(kb),
                            "--wiki_img_path_prefix", str(demo_dir / "wiki_images"),
                            "--wiki_img_csv_dir", str(demo_dir / "wiki_image_csv")]) == 2
    assert "section_titles is a int, expected a list" in one_line(capsys)


# -- the wiki-image downloader ---------------------------------------------------------------------------------

def test_a_nul_byte_in_an_img_path_is_counted_and_the_run_goes_on(tmp_path, capsys):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "wiki_image_url_part_1_processed.csv").write_text(
        "entity_title,image_URL,img_path,caption\nA,http://127.0.0.1:9/a.jpg,full/a\0b.jpg,c\n"
        "B,http://127.0.0.1:9/\0b.jpg,full/b.jpg,c\n", encoding="utf-8")
    code = download_wiki_images.main(["--csv_dir", str(csv_dir), "--out", str(tmp_path / "out"), "--retries", "0",
                                      "--no_progress"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 1 and "Traceback" not in err
    assert summary["malformed_csv_rows"] == 1 and summary["failed"] == 1
    assert list(summary["failure_reasons"])[0].startswith("bad URL")


# -- planted pickles -------------------------------------------------------------------------------------------

def test_a_planted_reranker_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    from omgm.errors import OmgmError
    from omgm.rerank.train import _resume
    from omgm.train_state import rng_state

    torch.save({"step": 1, "optimizer": {}, "scheduler": {}, "rng": rng_state()}, tmp_path / "state_1.pt")
    plant(tmp_path / "model_1.pth")
    with pytest.raises(OmgmError, match="model_1.pth: it holds pickled objects besides tensors"):
        _resume(tmp_path, None, None, None, None)
    assert "a planted pickle ran" not in capsys.readouterr().out


def test_a_planted_cross_encoder_weight_file_is_one_line(tiny_step3_models, tmp_path, capsys):
    from omgm.hub import ModelLoadError, load_pretrained

    folder = tmp_path / "cross"
    shutil.copytree(tiny_step3_models.cross, folder)
    for f in folder.glob("model*.safetensors"):
        f.unlink()
    plant(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickled objects besides tensors"):
        load_pretrained("AutoModelForSequenceClassification", folder, what="cross-encoder")
    assert "a planted pickle ran" not in capsys.readouterr().out


def test_a_planted_peft_adapter_is_one_line(tmp_path, capsys):
    from omgm.generate.generators.adapters import apply_adapter
    from omgm.generate.generators.base import GeneratorError

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["x"],
                                                              "base_model_name_or_path": "base"}))
    plant(tmp_path / "adapter_model.bin")
    with pytest.raises(GeneratorError, match="pickled objects besides tensors"):
        apply_adapter(torch.nn.Linear(2, 2), tmp_path)
    assert "a planted pickle ran" not in capsys.readouterr().out


# -- damaged reranker checkpoints and configs ----------------------------------------------------------------

def _reranker_ckpt(step2_env, **changes):
    from omgm.rerank.convert import OURS_FORMAT
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    config = IT2ITConfig.from_dict(json.loads(step2_env.config.read_text()))
    obj = {"format": OURS_FORMAT, "config": config.to_dict(), "model": IT2ITReranker(config).state_dict(),
           "trainable_only": False}
    obj.update(changes)
    return obj


@pytest.mark.parametrize("damage, message", [
    ("extra_key", "unexpected keys (1)"),
    ("model_list", "not a state dict of tensors"),
    ("config_string", "the checkpoint's 'config': expected an object of reranker sizes"),
    ("init_string", "its 'init' record is a str"),
])
def test_damaged_reranker_checkpoints_are_one_line(step2_env, tmp_path, damage, message):
    from omgm.errors import OmgmError
    from omgm.pipeline.rerank import RerankerSpec

    obj = _reranker_ckpt(step2_env)
    if damage == "extra_key":
        obj["model"]["not_a_parameter.weight"] = torch.zeros(1)
    elif damage == "model_list":
        obj["model"] = [1, 2]
    elif damage == "config_string":
        obj["config"] = "blip2"
    else:
        obj.update(trainable_only=True, init="eva_vit_g.pth")
    torch.save(obj, tmp_path / "model_9.pth")
    with pytest.raises(OmgmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RerankerSpec(reranker_model_name=str(step2_env.config), device="cpu").load(str(tmp_path / "model_9.pth"))


def test_a_malformed_reranker_config_json_is_one_line(step2_env, tmp_path, capsys):
    bad = tmp_path / "sizes.json"
    bad.write_text('{"vision": {"hidden_size": 48,')
    args = ["train", "--train_file", str(step2_env.demo / "train.csv"), "--knowledge_base", str(step2_env.dir / "kb.sqlite"),
            "--negative_db_file", str(step2_env.dir / "negatives.json"), "--reranker-model-name", str(bad),
            "--tokenizer", str(step2_env.tok_dir), "--save_dir", str(tmp_path / "ckpt"), "--device", "cpu"]
    assert step2.main(args) == 2
    assert "not a JSON config file" in one_line(capsys)


# -- outputs that cannot be written: refused before any work -----------------------------------------------

def test_unwritable_output_folders_are_one_line(step2_env, demo_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")                     # a file where a folder should be: as root, what a read-only one is
    env = step2_env
    train = ["train", "--train_file", str(demo_dir / "train.csv"), "--knowledge_base", str(env.dir / "kb.sqlite"),
             "--negative_db_file", str(env.dir / "negatives.json"), "--save_dir", str(blocker / "ckpt")]
    assert step2.main(train) == 2 and "cannot write" in one_line(capsys)
    assert step3_train.main(["--train_file", str(demo_dir / "train.csv"), "--knowledge_base", str(env.dir / "kb.sqlite"),
                             "--output_dir", str(blocker / "sft")]) == 2
    assert "cannot write" in one_line(capsys)
    assert report.main(["--sample_file", str(demo_dir / "test.csv"), "--step1", str(env.dir / "test_step1.json"),
                        "--out", str(blocker / "r.html")]) == 2
    assert "cannot write" in one_line(capsys)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "wiki_image_url_part_1_processed.csv").write_text("entity_title,image_URL,img_path,caption\n")
    assert download_wiki_images.main(["--csv_dir", str(csv_dir), "--out", str(blocker / "imgs")]) == 2
    assert "cannot write" in one_line(capsys)


def test_a_file_name_too_long_is_one_line(step2_env, demo_dir, tmp_path, capsys):
    out = tmp_path / ("r" * 300 + ".html")
    assert report.main(["--sample_file", str(demo_dir / "test.csv"), "--step1", str(step2_env.dir / "test_step1.json"),
                        "--out", str(out)]) == 2
    assert "too long" in one_line(capsys)


# -- the machine: disk full as SQLite and torch say it; Ctrl-C while importing ------------------------------

def test_disk_full_inside_sqlite_is_one_line(demo_dir, tmp_path, monkeypatch, capsys):
    from omgm.data import kb_import as mod

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(mod, "run_import", full)
    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(tmp_path / "kb.sqlite")]) == 2
    assert "the disk is full (database or disk is full)" in one_line(capsys)


def test_disk_full_inside_torch_save_is_one_line(step2_env, tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                           "basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    d = step2_env.demo
    args = ["rerank", "--sample_file", str(d / "test.csv"), "--step1_result", str(step2_env.dir / "test_step1.json"),
            "--knowledge_base", str(step2_env.dir / "kb.sqlite"), "--reranker-model-name", str(step2_env.config),
            "--tokenizer", str(step2_env.tok_dir), "--wiki_img_path_prefix", str(d / "wiki_images"),
            "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"), "--cache_dir",
            str(tmp_path / "cache"), "--save_result_path", str(tmp_path / "s2.json"), "--device", "cpu",
            "--no_progress"]
    assert step2.main(args) == 2
    assert "the disk is full" in one_line(capsys)


def test_ctrl_c_while_the_libraries_import_is_one_line(monkeypatch, capsys):
    def interrupted(name, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["step1", "--help"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and "Traceback" not in err


def test_user_conditions_are_recognised_and_bugs_are_not():
    assert "disk is full" in user_condition(OSError(28, "No space left on device", "/x"))
    assert "disk is full" in user_condition(sqlite3.OperationalError("database or disk is full"))
    assert "too long" in user_condition(OSError(36, "File name too long", "/x" * 200))
    assert user_condition(KeyError("a bug")) is None and user_condition(RuntimeError("a bug")) is None
