"""Shared fixtures: the demo data shipped in assets/demo and tiny random-weight models built once per run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    assert (DEMO / "kb.json").is_file(), "assets/demo is missing: run python -m utils.make_demo"
    return DEMO


@pytest.fixture()
def demo_copy(tmp_path: Path, demo_dir: Path) -> Path:
    """A private copy of the demo data, for tests that modify files."""
    return Path(shutil.copytree(demo_dir, tmp_path / "demo"))


@pytest.fixture(scope="session")
def tiny_clip_ckpt(tmp_path_factory) -> Path:
    from utils.make_tiny_models import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("models") / "tiny_clip.pt")


@pytest.fixture(scope="session")
def tiny_retriever(tiny_clip_ckpt):
    from omgm.retrieval.encoders import RetrieverSpec, build_retriever

    return build_retriever(RetrieverSpec("omgm-tiny-eva", retriever_pretrained=str(tiny_clip_ckpt), device="cpu"))


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, demo_dir) -> Path:
    import json

    from utils.make_tiny_models import make_tiny_causal_lm

    kb = json.loads((demo_dir / "kb.json").read_text())
    corpus = [t for e in kb.values() for t in e["section_texts"]]
    return make_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny_llm", corpus)


@pytest.fixture(scope="session")
def demo_corpus(demo_dir) -> list[str]:
    import csv
    import json

    kb = json.loads((demo_dir / "kb.json").read_text())
    texts = [t for e in kb.values() for t in e["section_texts"] + e["section_titles"]]
    with (demo_dir / "train.csv").open() as fh:
        texts += [r["question"] for r in csv.DictReader(fh)]
    return texts + ["wiki article section title"]


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory, demo_corpus):
    from omgm.rerank.inputs import load_tokenizer
    from utils.make_tiny_models import make_tiny_bert_tokenizer

    return load_tokenizer(str(make_tiny_bert_tokenizer(tmp_path_factory.mktemp("tok") / "bert", demo_corpus)))


@pytest.fixture()
def tiny_reranker(bert_tokenizer):
    import torch

    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    torch.manual_seed(0)
    return IT2ITReranker(IT2ITConfig.tiny(len(bert_tokenizer))).eval()
