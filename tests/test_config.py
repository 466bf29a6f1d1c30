import argparse
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
    assert parse_with_config(_parser(), []).sample_file == "b.csv"        # later file wins
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        parse_with_config(_parser(), ["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ConfigError, match="--sample_file .or OMGM_SAMPLE_FILE."):
        require(argparse.Namespace(sample_file=None), "sample_file")
