"""Builders for the demo release: the files the authors release for the real datasets, made here from the
repository's tiny RANDOM-weight models in the same layouts (so ``omgm reproduce demo`` runs exactly the code a
GPU user runs): the models, a reranker ``.pth`` as the authors' training script saves it (LAVIS keys, ViT in fp16,
plus ``prompt_tokens``), and a bare FAISS summary index without a manifest, like ``summary_llama3.index``.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from omgm.fetch.lock import FetchError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo"


def _utils():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from utils import make_tiny_models
    except ImportError:
        raise FetchError("the demo's tiny models are built by utils/make_tiny_models.py, which is only in a "
                         "clone of the repository") from None
    return make_tiny_models


def tiny_models(target: Path, root: Path) -> None:
    _utils().main(["--out", str(target.parent), "--demo_dir", str(DEMO)])


def authors_layout_reranker(target: Path, root: Path) -> None:
    import torch

    from omgm.rerank.convert import save_authors_layout
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    config = target.parent / "tiny_reranker.json"
    if not config.is_file():
        raise FetchError(f"{config}: build demo-models first")
    torch.manual_seed(0)
    save_authors_layout(IT2ITReranker(IT2ITConfig.from_dict(__import__("json").loads(config.read_text()))), target)


def bare_summary_index(target: Path, root: Path) -> None:
    import faiss

    models = target.parent / "models"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        store, index = Path(tmp) / "kb.sqlite", Path(tmp) / "summary.index"
        _run(["omgm.data.kb_import", "--kb_json", str(root / "demo" / "kb.json"), "--out", str(store)])
        _run(["omgm", "index", "build", "--knowledge_base", str(store), "--faiss_index", str(index), "--summarizer",
              "lead", "--summary_file", str(Path(tmp) / "summaries.jsonl"), "--retriever_vit", "omgm-tiny-eva",
              "--retriever_pretrained", str(models / "tiny_clip.pt"), "--device", "cpu", "--no_progress"])
        faiss.write_index(faiss.read_index(str(index)), str(target.with_name(target.name + ".part")))
    target.with_name(target.name + ".part").replace(target)


def _run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ, "OMGM_CONFIG": ""})
    if proc.returncode != 0:
        raise FetchError(f"building the demo index: {' '.join(args[:1])} failed: {proc.stderr.strip()[-400:]}")


BUILDERS = {"tiny_models": tiny_models, "authors_layout_reranker": authors_layout_reranker,
            "bare_summary_index": bare_summary_index}


def build(name: str, target: Path, root: Path) -> None:
    if name not in BUILDERS:
        raise FetchError(f"unknown builder {name!r} (known: {', '.join(BUILDERS)})")
    target.parent.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](target, root)
