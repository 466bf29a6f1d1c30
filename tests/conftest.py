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
    from omgm.retrieval.base import RetrieverSpec
    from omgm.retrieval.registry import build_retriever

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


def fake_step1(samples, urls: list[str], k: int = 20, seed: int = 0, gold_every: int = 2) -> dict:
    """Step-1-shaped results: every ``gold_every``-th sample has its gold entity somewhere in its top k."""
    import random

    rng = random.Random(seed)
    out = {}
    for n, s in enumerate(samples):
        others = [u for u in urls if u != s.wikipedia_url]
        top = rng.sample(others, k)
        if n % gold_every == 0:
            top[rng.randrange(k)] = s.wikipedia_url
        sims = sorted((rng.uniform(0.1, 0.3) for _ in range(k)), reverse=True)
        out[s.sample_id] = {"retrieved_entities": [{"url": u, "title": u.rsplit("/", 1)[1].replace("_", " ")} for u in top],
                            "retrieval_similarities": sims}
    return out


@pytest.fixture(scope="session")
def step2_env(tmp_path_factory, demo_dir, bert_tokenizer):
    """A KB store with the wiki-image CSVs, step-1-shaped results for train and test, a negative file, and the
    tokenizer folder and tiny reranker config that the CLIs take."""
    import json
    from types import SimpleNamespace

    from omgm.data.kb import open_kb
    from omgm.data.kb_import import run_import
    from omgm.data.results import read_retrieval, write_retrieval
    from omgm.data.samples import read_samples, samples_fingerprint
    from omgm.data.wiki_images import wiki_images_for
    from omgm.rerank.model import IT2ITConfig
    from omgm.rerank.negatives import mine, write_negative_db

    w = tmp_path_factory.mktemp("step2")
    kb = open_kb(run_import(demo_dir / "kb.json", w / "kb.sqlite", demo_dir / "wiki_image_csv", progress=False))
    urls = list(kb.urls())
    train = read_samples(demo_dir / "train.csv", single_hop_only=False)
    test = read_samples(demo_dir / "test.csv")
    write_retrieval(w / "train_step1.json", fake_step1(train, urls, seed=1, gold_every=1), "step1",
                    {"samples_hash": samples_fingerprint(train)})
    write_retrieval(w / "test_step1.json", fake_step1(test, urls, seed=2), "step1", {"samples_hash": samples_fingerprint(test)})
    wiki = wiki_images_for(kb, demo_dir / "wiki_images", demo_dir / "wiki_image_csv")
    entries, _ = mine(train, read_retrieval(w / "train_step1.json"), kb, wiki)
    write_negative_db(w / "negatives.json", entries)
    tok_dir = w / "tok"
    bert_tokenizer.save_pretrained(tok_dir)
    (w / "tiny.json").write_text(json.dumps(IT2ITConfig.tiny(len(bert_tokenizer)).to_dict()))
    return SimpleNamespace(dir=w, kb=kb, urls=urls, train=train, test=test, wiki=wiki, tok_dir=tok_dir,
                           config=w / "tiny.json", demo=demo_dir)


@pytest.fixture(scope="session")
def tiny_step3_models(tmp_path_factory, demo_corpus):
    """Tiny random LLaVA, chat Llama and cross-encoder folders (transformers formats)."""
    from types import SimpleNamespace

    from utils.make_tiny_models import make_tiny_causal_lm, make_tiny_cross_encoder, make_tiny_llava

    d = tmp_path_factory.mktemp("step3models")
    return SimpleNamespace(llava=make_tiny_llava(d / "llava", demo_corpus), llm=make_tiny_causal_lm(d / "llm", demo_corpus),
                           cross=make_tiny_cross_encoder(d / "cross", demo_corpus))


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory) -> Path:
    from utils.make_tiny_models import make_tiny_hf_clip

    return make_tiny_hf_clip(tmp_path_factory.mktemp("hfclip") / "tiny-hf-clip")


@pytest.fixture(scope="session")
def demo_image_index(tmp_path_factory, demo_dir, tiny_clip_ckpt):
    """The demo KB store and its image index (every wiki image, tiny EVA), built through the CLIs; ``args``: the
    retriever flags that go with it. Tests write their own outputs beside it, under names of their own."""
    from types import SimpleNamespace

    from omgm.commands import build_index
    from omgm.data import kb_import

    w = tmp_path_factory.mktemp("image_index")
    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(w / "kb.sqlite")]) == 0
    args = ["--knowledge_base", str(w / "kb.sqlite"), "--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained",
            str(tiny_clip_ckpt), "--device", "cpu", "--no_progress"]
    assert build_index.main(args + ["--faiss_index", str(w / "img.index"), "--index_kind", "image",
                                    "--wiki_img_csv_dir", str(demo_dir / "wiki_image_csv"),
                                    "--wiki_img_path_prefix", str(demo_dir / "wiki_images")]) == 0
    return SimpleNamespace(dir=w, args=args)
