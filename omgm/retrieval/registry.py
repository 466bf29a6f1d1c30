"""Every retriever by name, behind one factory (open_clip's habit): ``--retriever_vit NAME``.

The help texts of the CLIs and ``omgm list-models`` are generated from :data:`REGISTRY`, so they cannot go stale.
Any open_clip model name (``EVA02-L-14``, ``omgm-tiny-eva``, ...) is accepted too.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from omgm.errors import OmgmError
from omgm.retrieval.base import Retriever, RetrieverSpec
from omgm.retrieval.encoders import CLIP_L14, EVA_CLIP_8B, MODEL_CONFIG_DIR, HFClipRetriever, OpenClipRetriever


class UnknownRetrieverError(OmgmError, ValueError):
    """A retriever name that is neither registered nor an open_clip model."""


@dataclass(frozen=True)
class Entry:
    """A registered retriever: its factory, one line of help, and whether it encodes composed queries."""
    build: Callable[[RetrieverSpec], Retriever]
    help: str
    composed: bool = False


def _vista(spec: RetrieverSpec, m3: bool) -> Retriever:
    from omgm.retrieval.vista import VistaRetriever

    bge = spec.retriever_path or ("BAAI/bge-m3" if m3 else "BAAI/bge-base-en-v1.5")
    return VistaRetriever(bge, spec.retriever_pretrained, device=spec.device)


def _mmret(spec: RetrieverSpec, name: str) -> Retriever:
    from omgm.retrieval.mmret import MMRET_IDS, MLLMEmbedRetriever, MMRetClipRetriever

    cls = MLLMEmbedRetriever if name == "mmret-mllm" else MMRetClipRetriever
    return cls(spec.retriever_path or MMRET_IDS[name], device=spec.device, dtype=spec.precision)


def _eva_clip(spec: RetrieverSpec) -> Retriever:
    path = spec.retriever_path or EVA_CLIP_8B
    if not spec.trust_remote_code:
        raise UnknownRetrieverError(f"--retriever_vit eva-clip runs the Python code shipped with {path}: allow it "
                                    f"with --trust_remote_code (trust_remote_code: true in a config file) once you "
                                    f"trust that folder or hub repository")
    return HFClipRetriever(path, device=spec.device, dtype=spec.precision, trust_remote_code=True)


def _hf_clip(spec: RetrieverSpec) -> Retriever:
    if not spec.retriever_path:
        raise UnknownRetrieverError("--retriever_vit hf-clip needs --retriever_path (a transformers CLIP folder or id)")
    return HFClipRetriever(spec.retriever_path, device=spec.device, dtype=spec.precision,
                           trust_remote_code=bool(spec.trust_remote_code))


REGISTRY: dict[str, Entry] = {
    "eva-clip": Entry(_eva_clip, f"{EVA_CLIP_8B} through its remote code, {CLIP_L14} preprocessing (the paper)"),
    "hf-clip": Entry(_hf_clip, "any transformers CLIP folder or hub id (--retriever_path)"),
    "vista": Entry(lambda s: _vista(s, False), "Visualized-BGE base: --retriever_path BGE, --retriever_pretrained "
                                               "Visualized_base_en_v1.5.pth", composed=True),
    "vista-m3": Entry(lambda s: _vista(s, True), "Visualized-BGE m3 (--retriever_pretrained Visualized_m3.pth)",
                      composed=True),
    "mmret-base": Entry(lambda s: _mmret(s, "mmret-base"), "MMRet-CLIP base (JUNJIE99/MMRet-base)", composed=True),
    "mmret-large": Entry(lambda s: _mmret(s, "mmret-large"), "MMRet-CLIP large (JUNJIE99/MMRet-large)", composed=True),
    "mmret-mllm": Entry(lambda s: _mmret(s, "mmret-mllm"), "MMRet-MLLM (JUNJIE99/MMRet-MLLM; prompt format "
                                                           "unverified)", composed=True),
}
REGISTRY["eva-clip-8b"] = REGISTRY["eva-clip"]


def register_retriever(name: str, build: Callable[[RetrieverSpec], Retriever], help: str, *,
                       composed: bool = False) -> None:
    """Add a retriever under ``name`` (``--retriever_vit NAME``) from your own code: ``build(spec)`` returns a
    :class:`~omgm.retrieval.base.Retriever`. Every stage that names a retriever (index build, step 1, ``ask``,
    ``compare``) then finds it. A name already taken is refused."""
    if name in REGISTRY:
        raise UnknownRetrieverError(f"retriever {name!r} is already registered")
    REGISTRY[name] = Entry(build, help, composed)


def list_retrievers() -> dict[str, str]:
    """name -> one line of help (``open_clip:<name>`` stands for every open_clip model)."""
    out = {k: v.help + (" [composed queries]" if v.composed else "") for k, v in REGISTRY.items() if k != "eva-clip-8b"}
    out["open_clip:<name>"] = "any open_clip model (EVA02-L-14, EVA01-g-14, omgm-tiny-eva...) with --retriever_pretrained"
    return out


def build_retriever(spec: RetrieverSpec) -> Retriever:
    """The retriever that ``spec.retriever_vit`` names."""
    name = spec.retriever_vit
    if name in REGISTRY:
        return REGISTRY[name].build(spec)
    import open_clip

    oc_name = name.split(":", 1)[1] if name.startswith("open_clip:") else name
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    if oc_name not in open_clip.list_models():
        raise UnknownRetrieverError(f"unknown retriever {name!r}: use one of {', '.join(list_retrievers())}")
    return OpenClipRetriever(oc_name, spec.retriever_pretrained, device=spec.device, precision=spec.precision)


def add_retriever_flags(p: argparse.ArgumentParser) -> None:
    """The flags of :class:`RetrieverSpec` (official names), with the registered names listed in the help."""
    from omgm.settings import add_flags

    names = "; ".join(f"{k}: {v}" for k, v in list_retrievers().items())
    add_flags(p, RetrieverSpec, overrides={"retriever_vit": {"help": names}})


def retriever_spec(args: argparse.Namespace) -> RetrieverSpec:
    """The :class:`RetrieverSpec` of parsed flags."""
    from omgm.settings import from_values

    return from_values(RetrieverSpec, args)
