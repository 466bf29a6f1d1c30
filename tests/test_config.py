import argparse
import os
from pathlib import Path

import pytest

from omgm.config import ConfigError, int_list, parse_with_config, require


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--sample_file")
    p.add_argument("--knowledge_base")
    p.add_argument("--top_ks", type=int_list, default=[1])
    p.add_argument("--retrieval_top_k", type=int, default=20)
    return p


def test_precedence_yaml_then_env_then_flag(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("root: /data\nsample_file: ${root}/test.csv\nknowledge_base: ${root}/kb.json\n"
                   "top_ks: [1, 5]\nretrieval_top_k: '7'\nunrelated_key: 3\n")
    args = parse_with_config(_parser(), ["--config", str(cfg)])
    assert args.sample_file == "/data/test.csv" and args.top_ks == [1, 5] and args.retrieval_top_k == 7
    monkeypatch.setenv("OMGM_KNOWLEDGE_BASE", "/env/kb.sqlite")
    monkeypatch.setenv("OMGM_TOP_KS", "1,10")
    args = parse_with_config(_parser(), ["--config", str(cfg)])
    assert args.knowledge_base == "/env/kb.sqlite" and args.top_ks == [1, 10]
    args = parse_with_config(_parser(), ["--config", str(cfg), "--knowledge_base", "flag.json", "--top_ks", "3"])
    assert args.knowledge_base == "flag.json" and args.top_ks == [3]


def test_config_from_env_list_and_errors(tmp_path: Path, monkeypatch):
    (tmp_path / "a.yaml").write_text("sample_file: a.csv\n")
    (tmp_path / "b.yaml").write_text("sample_file: b.csv\n")
    monkeypatch.setenv("OMGM_CONFIG", f"{tmp_path / 'a.yaml'}:{tmp_path / 'b.yaml'}")
    assert parse_with_config(_parser(), []).sample_file == str(tmp_path / "b.csv")    # later file wins
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        parse_with_config(_parser(), ["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ConfigError, match="--sample_file .or OMGM_SAMPLE_FILE."):
        require(argparse.Namespace(sample_file=None), "sample_file")


def test_relative_paths_in_a_config_file_are_relative_to_that_file(tmp_path: Path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "configs" / "c.yaml").write_text(
        "root: ../data\nsample_file: ${root}/test.csv\nknowledge_base: kb.sqlite\nanswer_generator: llava1_5\n"
        "section_reranker: BAAI/bge-reranker-v2-m3\ntokenizer: ../models/tiny\nprompt_style: official\n")
    p = _parser()
    for flag in ("--answer_generator", "--section_reranker", "--tokenizer", "--prompt_style"):
        p.add_argument(flag)
    monkeypatch.chdir(tmp_path / "models")                 # anywhere else: the file's folder counts, not the cwd
    args = parse_with_config(p, ["--config", str(tmp_path / "configs" / "c.yaml")])
    assert args.sample_file == str(tmp_path / "data" / "test.csv")
    assert args.knowledge_base == str(tmp_path / "configs" / "kb.sqlite")
    assert args.tokenizer == str(tmp_path / "models" / "tiny")          # a model folder written as ../
    assert args.answer_generator == "llava1_5" and args.section_reranker == "BAAI/bge-reranker-v2-m3"  # names, ids
    assert args.prompt_style == "official"                              # not a path setting
    monkeypatch.setenv("OMGM_KNOWLEDGE_BASE", "env.sqlite")              # variables and flags: the working directory
    assert parse_with_config(p, ["--config", str(tmp_path / "configs" / "c.yaml")]).knowledge_base == "env.sqlite"


def test_the_official_kb_spellings_are_aliases_everywhere(tmp_path: Path, monkeypatch, capsys):
    from omgm.commands import report, step1, step2, step3, step3_train
    from omgm.prep import check_data, mine_negatives
    from omgm.settings import SettingsError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("knowledge_base_path: /kb/a.sqlite\n")
    for parser in (step1.build_parser(), step2.rerank_parser(), step2.train_parser(), step3.build_parser(),
                   step3_train.build_parser(), report.build_parser(), check_data.build_parser(),
                   mine_negatives.build_parser()):
        assert parse_with_config(parser, ["--config", str(cfg)]).knowledge_base == "/kb/a.sqlite"
        for flag in ("--knowledge_base", "--knowledge_base_path", "--knowledge_base_file"):
            assert parse_with_config(parser, [flag, "x.sqlite"]).knowledge_base == "x.sqlite"
    monkeypatch.setenv("OMGM_KNOWLEDGE_BASE_FILE", "/env/kb.sqlite")
    assert parse_with_config(step1.build_parser(), []).knowledge_base == "/env/kb.sqlite"
    monkeypatch.delenv("OMGM_KNOWLEDGE_BASE_FILE")
    cfg.write_text("knowledge_base_path: /kb/a.sqlite\nknowledge_base: /kb/b.sqlite\n")
    with pytest.raises(SettingsError, match="c.yaml: knowledge_base and knowledge_base/knowledge_base_path/"):
        parse_with_config(step1.build_parser(), ["--config", str(cfg)])
    cfg.write_text("knowledge_base_path: /kb/a.sqlite\nknowledge_base: /kb/a.sqlite\n")     # the same value: fine
    assert parse_with_config(step3.build_parser(), ["--config", str(cfg)]).knowledge_base == "/kb/a.sqlite"


@pytest.mark.parametrize("dataset", ["evqa", "infoseek"])
def test_the_shipped_path_configs_name_files_where_omgm_fetch_puts_them(tmp_path, dataset, monkeypatch):
    """configs/paths.yaml + configs/DATASET.yaml, with data_root set to a fetch root, give every path setting the
    registry gives (the layout omgm fetch writes and omgm reproduce reads)."""
    from pathlib import Path

    from omgm.config import config_values
    from omgm.fetch.registry import load_registry

    for key in [k for k in os.environ if k.startswith("OMGM_")]:
        monkeypatch.delenv(key)
    repo = Path(__file__).resolve().parents[1]
    mine = tmp_path / "my_paths.yaml"
    mine.write_text((repo / "configs/paths.yaml").read_text().replace("/path/to/omgm_data", str(tmp_path / "root")))
    expected = {k: v for k, v in load_registry().settings(dataset, tmp_path / "root").items()
                if isinstance(v, str) and v.startswith(str(tmp_path / "root"))}
    got = config_values([str(mine), str(repo / f"configs/{dataset}.yaml")], expected)
    assert {k: got.get(k) for k in expected} == expected
