"""What docs/extending.md promises, from a test file alone: a generator family and a retriever registered here,
with no change to omgm, run through the real entry points (step 3; index build + step 1)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omgm.generate.generators import FAMILIES, Family, Generator, GeneratorError, register_family
from omgm.retrieval.base import Retriever
from omgm.retrieval.registry import REGISTRY, UnknownRetrieverError, register_retriever


class EchoGenerator(Generator):
    """Answers with the first word of its context: deterministic, and it shows the context reached it."""
    needs_image = True

    def __init__(self, path: str, **common) -> None:
        self.name, self.style, self.max_new_tokens = f"echo:{path}", common["style"], common["max_new_tokens"]
        self.images_seen = 0

    def render(self, req) -> str:
        return f"Q: {req.question}\nC: {req.context}\nA:"

    def _generate(self, reqs) -> list[str]:
        self.images_seen += sum(r.image is not None for r in reqs)
        return [(r.context.split() or ["?"])[0] for r in reqs]


class HashRetriever(Retriever):
    """Unit vectors from a hash of the text or the image's pixels (no model)."""
    name, model_id, dim = "hash", "hash-16", 16

    def preprocess(self, image):
        return torch.tensor(np.asarray(image.convert("L").resize((4, 4)), dtype=np.float32).reshape(-1))

    def _vec(self, key: bytes) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha1(key).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_pixels(self, pixels):
        return np.stack([self._vec(p.numpy().tobytes()) for p in pixels])

    def encode_texts(self, texts):
        return np.stack([self._vec(t.encode()) for t in texts])


@pytest.fixture(scope="module")
def echo_family():
    if "toy-echo" not in FAMILIES:
        register_family("toy-echo", Family(lambda path, spec, common: EchoGenerator(path, **common), new_tokens=7,
                                           detect=lambda cfg: cfg.get("model_type") == "toy-echo"))
    yield FAMILIES["toy-echo"]


@pytest.fixture(scope="module")
def hash_retriever():
    if "toy-hash" not in REGISTRY:
        register_retriever("toy-hash", lambda spec: HashRetriever(), "a test's hashed vectors")
    yield "toy-hash"


def test_a_family_registered_here_answers_through_step3(echo_family, step2_env, tiny_step3_models, tmp_path):
    from omgm.commands import step3

    folder = tmp_path / "echo_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "toy-echo"}))
    d = step2_env.demo
    argv = ["--test_file", str(d / "test.csv"), "--retrieval_results_file", str(step2_env.dir / "test_step1.json"),
            "--knowledge_base_path", str(step2_env.dir / "kb.sqlite"), "--output_file", str(tmp_path / "a.json"),
            "--answer_generator", str(folder), "--section_reranker", str(tiny_step3_models.cross),
            "--context_tokenizer", str(tiny_step3_models.llava), "--inat_dir", str(d / "images/inat"),
            "--gld_dir", str(d / "images/gld"), "--device", "cpu", "--limit", "4", "--no_progress"]
    assert step3.main(argv) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    records = data["records"]
    assert len(records) == 4 and data["meta"]["generator"] == f"echo:{folder}"
    for r in records:          # the answer is the first word of the section the pipeline chose for it
        assert r["prediction"] == (r["top1_sec"].split() or ["?"])[0]
    with pytest.raises(GeneratorError, match="already registered"):
        register_family("toy-echo", echo_family)
    with pytest.raises(GeneratorError, match="detect"):
        register_family("toy-other", Family(echo_family.load, 7))


def test_a_retriever_registered_here_builds_an_index_and_runs_step1(hash_retriever, step2_env, tmp_path):
    from omgm.commands import build_index, step1

    d, kb = step2_env.demo, str(step2_env.dir / "kb.sqlite")
    flags = ["--retriever_vit", hash_retriever, "--knowledge_base", kb, "--device", "cpu", "--no_progress"]
    assert build_index.main(["--faiss_index", str(tmp_path / "h.index"), "--summarizer", "lead",
                             "--summary_file", str(tmp_path / "s.jsonl"), *flags]) == 0
    assert step1.main(["--sample_file", str(d / "test.csv"), "--faiss_index", str(tmp_path / "h.index"),
                       "--save_result_path", str(tmp_path / "s1.json"), "--inat_dir", str(d / "images/inat"),
                       "--gld_dir", str(d / "images/gld"), "--retrieval_top_k", "5", "--top_ks", "1,5",
                       *flags]) == 0
    s1 = json.loads((tmp_path / "s1.json").read_text())
    assert s1["meta"]["retriever"] == "hash-16"
    assert all(len(e["retrieved_entities"]) == 5 for e in s1["results"].values())
    with pytest.raises(UnknownRetrieverError, match="already registered"):
        register_retriever(hash_retriever, lambda spec: HashRetriever(), "again")


def test_docs_extending_names_what_a_family_writes():
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    assert "register_family" in text and "register_retriever" in text and "detect" in text
