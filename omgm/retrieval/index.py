"""FAISS summary index: build, write with a manifest, load, check against the KB and model, search.

An index built by omgm is ``NAME.index`` plus ``NAME.index.manifest.json``::

    {"format": "omgm.index", "version": 1, "model_id": ..., "dim": ..., "metric": "inner_product",
     "normalised": true, "index_type": "IndexFlatIP", "count": N, "kb_url_order_hash": sha256,
     "kb_path": ..., "texts": {...how the indexed texts were made...}, "created_at": ..., "omgm_version": ...}

Row ``i`` is the ``i``-th entity of the KB. The authors' released ``summary_llama3.index`` files have no
manifest: they are accepted after checking vector count against the KB and dimension against the model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from omgm.data.results import read_json
from omgm.errors import OmgmError
from omgm.io import atomic_write, write_json_atomic

log = logging.getLogger(__name__)
MANIFEST_FORMAT = "omgm.index"
MANIFEST_VERSION = 1


class IndexMismatchError(OmgmError, ValueError):
    """An index that does not belong to this KB or model; the message says which field differs."""


@dataclass
class IndexManifest:
    model_id: str
    dim: int
    count: int
    kb_url_order_hash: str
    kb_path: str = ""
    kind: str = "summary"               # "summary": one vector per entity; "image": KB images (EchoSight)
    metric: str = "inner_product"
    normalised: bool = True
    index_type: str = "IndexFlatIP"
    texts: dict = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    omgm_version: str = ""
    index_bytes: int | None = None      # the index file's size: an index and a manifest of two builds never pair up
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION


def manifest_path(index_path: str | Path) -> Path:
    return Path(str(index_path) + ".manifest.json")


def build_flat_ip(vectors: np.ndarray) -> faiss.Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def write_index(index: faiss.Index, path: str | Path, manifest: IndexManifest) -> Path:
    """Write the index and its manifest atomically: the index goes to a temporary file, the manifest (with that
    file's size) is written, and only then is the index renamed into place. A failure at any point (a full disk)
    leaves no index without its manifest: at worst the previous pair, which the size check tells apart."""
    path = Path(path)
    with atomic_write(path) as tmp:
        faiss.write_index(faiss.index_gpu_to_cpu(index) if _is_gpu(index) else index, str(tmp))
        manifest.index_bytes = Path(tmp).stat().st_size
        write_json_atomic(manifest_path(path), asdict(manifest), indent=2)
    return path


def apply_search_params(index: faiss.Index, params: str | None, flag: str = "--faiss_params") -> None:
    """Set an approximate index's search-time parameters (``"nprobe=32"``, ``"efSearch=128"``; FAISS
    ParameterSpace syntax, comma-separated); a parameter the index does not have is an error naming it."""
    if not params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as exc:
        raise IndexMismatchError(f"{flag} {params!r}: {str(exc).strip().splitlines()[-1]}") from None


def load_index(path: str | Path) -> tuple[faiss.Index, IndexManifest | None]:
    path = Path(path)
    if not path.is_file():
        raise IndexMismatchError(f"FAISS index not found: {path}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexMismatchError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
    mpath = manifest_path(path)
    if not mpath.is_file():
        return index, None
    data = read_json(mpath)
    if not isinstance(data, dict):
        raise IndexMismatchError(f"{mpath}: a manifest is a JSON object, not a {type(data).__name__}")
    known = {k: v for k, v in data.items() if k in IndexManifest.__dataclass_fields__}
    try:
        manifest = IndexManifest(**known)
    except TypeError as exc:
        raise IndexMismatchError(f"{mpath}: incomplete manifest ({exc})") from None
    bad = [k for k, t in (("model_id", str), ("dim", int), ("count", int), ("kb_url_order_hash", str), ("kind", str))
           if not isinstance(getattr(manifest, k), t) or isinstance(getattr(manifest, k), bool)]
    if bad or not isinstance(manifest.texts, dict):
        raise IndexMismatchError(f"{mpath}: field(s) of the wrong type: {', '.join(bad) or 'texts'}")
    if manifest.index_bytes is not None and manifest.index_bytes != path.stat().st_size:
        raise IndexMismatchError(f"{mpath} describes an index of {manifest.index_bytes} bytes but {path} has "
                                 f"{path.stat().st_size}: the index and its manifest are from different builds "
                                 f"(an interrupted write?); build the index again")
    return index, manifest


def check_index(index: faiss.Index, manifest: IndexManifest | None, *, index_path: str | Path, kb_len: int,
                kb_hash: str | None, model_id: str, dim: int, allow_model_mismatch: bool = False) -> list[str]:
    """Refuse an index that does not match; return notes to print (e.g. that no manifest was found)."""
    notes: list[str] = []
    if index.d != dim:
        raise IndexMismatchError(f"{index_path}: vectors have dimension {index.d} but the retriever "
                                 f"{model_id} embeds into {dim}")
    if manifest is not None and manifest.kind == "image":
        ids = load_ids(index_path)
        if len(ids) != index.ntotal or (len(ids) and int(ids.max()) >= kb_len):
            raise IndexMismatchError(f"{ids_path(index_path)}: {len(ids)} entity rows for {index.ntotal} vectors, "
                                     f"or rows beyond the KB's {kb_len} entities")
    elif index.ntotal != kb_len:
        raise IndexMismatchError(f"{index_path}: {index.ntotal} vectors but the knowledge base has {kb_len} "
                                 f"entities (row i must be the KB's i-th entity)")
    if manifest is None:
        notes.append(f"no manifest found for {index_path} (e.g. the authors' released index): checked only "
                     f"the vector count ({index.ntotal}) and dimension ({index.d})")
        return notes
    if manifest.format != MANIFEST_FORMAT or manifest.version > MANIFEST_VERSION:
        raise IndexMismatchError(f"{manifest_path(index_path)}: manifest format {manifest.format!r} "
                                 f"v{manifest.version} is not one this omgm reads")
    if manifest.kind not in ("summary", "image"):
        raise IndexMismatchError(f"{manifest_path(index_path)}: unknown index kind {manifest.kind!r}")
    if manifest.count != index.ntotal:
        raise IndexMismatchError(f"{index_path}: field 'count' is {manifest.count} in the manifest but the "
                                 f"index file holds {index.ntotal} vectors")
    if kb_hash is not None and manifest.kb_url_order_hash != kb_hash:
        raise IndexMismatchError(f"{index_path}: field 'kb_url_order_hash' differs: the index was built for "
                                 f"another knowledge base or URL order ({manifest.kb_path or 'unknown KB'})")
    if manifest.model_id != model_id:
        msg = (f"{index_path}: field 'model_id' is {manifest.model_id!r} in the manifest but the retriever "
               f"is {model_id!r}")
        if not allow_model_mismatch:
            raise IndexMismatchError(msg + " (pass --allow_model_mismatch if this is the same model)")
        notes.append("WARNING: " + msg)
    return notes


def ids_path(index_path: str | Path) -> Path:
    """For an image index: the entity row of each vector."""
    return Path(str(index_path) + ".ids.npy")


def load_ids(index_path: str | Path, kb_len: int | None = None) -> np.ndarray:
    """The KB row of every vector of an image index, checked: integers, each a row of the KB."""
    p = ids_path(index_path)
    if not p.is_file():
        raise IndexMismatchError(f"{index_path} is an image index but its entity-row file {p} is missing")
    try:
        rows = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IndexMismatchError(f"{p}: not an entity-row array ({exc})") from None
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise IndexMismatchError(f"{p}: expected a 1-D integer array of KB rows, got {rows.dtype} {rows.shape}")
    if kb_len is not None and len(rows) and (rows.min() < 0 or rows.max() >= kb_len):
        i = int(np.argmax((rows < 0) | (rows >= kb_len)))
        raise IndexMismatchError(f"{p}: item {i} is row {int(rows[i])}, outside the knowledge base's {kb_len} "
                                 f"entities (an index of another KB, or a damaged file)")
    return rows


def search_entities(index: faiss.Index, ids: np.ndarray, queries: np.ndarray, k: int, *, batch_size: int = 1024,
                    oversample: int = 10) -> tuple[list[list[int]], list[list[float]]]:
    """EchoSight's image index: search images, keep entities in order of first occurrence (with that image's
    score) until ``k`` distinct ones; search deeper for queries that found fewer."""
    rows_out, sims_out = [], []
    for start in range(0, len(queries), batch_size):
        q = queries[start:start + batch_size]
        depth = min(index.ntotal, k * oversample)
        while True:
            scores, hits = search(index, q, depth, batch_size)
            done = []
            for srow, hrow in zip(scores, hits):
                rows, sims = [], []
                for sc, h in zip(srow, hrow):
                    if h < 0:
                        continue
                    r = int(ids[h])
                    if r not in rows:
                        rows.append(r)
                        sims.append(float(sc))
                        if len(rows) == k:
                            break
                done.append((rows, sims))
            if depth >= index.ntotal or all(len(r) == k for r, _ in done):
                break
            depth = min(index.ntotal, depth * 4)
        rows_out += [r for r, _ in done]
        sims_out += [s for _, s in done]
    return rows_out, sims_out


def _is_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def gpu_options(mode: str, fp16: bool = False):
    """Cloner options for ``faiss.index_cpu_to_all_gpus``: ``shard`` splits the vectors over the GPUs (2M x 1280
    fits several small cards), ``replicate`` copies them to each (faster for many queries); ``fp16`` stores them
    in half precision (half the memory)."""
    co = faiss.GpuMultipleClonerOptions()
    co.shard = mode == "shard"
    co.useFloat16 = fp16
    return co


def maybe_to_gpu(index: faiss.Index, use_gpu: str = "auto", fp16: bool = False, gpu: int | None = None) -> faiss.Index:
    """Move the index to all visible GPUs when faiss-gpu is installed: ``auto`` (replicate if there are GPUs),
    ``replicate``, ``shard``, ``no`` (``yes`` = ``replicate``). ``gpu``: only that GPU (one rank of a torchrun
    job searches on its own GPU)."""
    n = getattr(faiss, "get_num_gpus", lambda: 0)()
    if use_gpu == "no" or (use_gpu == "auto" and n == 0):
        return index
    if n == 0:
        raise IndexMismatchError(f"--faiss_gpu {use_gpu} but faiss sees no GPU (is faiss-gpu installed?)")
    if gpu is not None:
        co = faiss.GpuClonerOptions()
        co.useFloat16 = fp16
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu % n, index, co)
    mode = "shard" if use_gpu == "shard" else "replicate"
    log.info("moving the FAISS index to %d GPU(s), %s%s", n, mode, ", fp16" if fp16 else "")
    return faiss.index_cpu_to_all_gpus(index, co=gpu_options(mode, fp16))


def search(index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 1024,
           *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products and row ids for every query, ``batch_size`` queries per FAISS call."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), batch_size), desc="search", disable=not progress):
        s, i = index.search(queries[start:start + batch_size], k)
        scores[start:start + batch_size], ids[start:start + batch_size] = s, i
    return scores, ids
