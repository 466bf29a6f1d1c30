"""EchoSight's released image indexes, read as they are: a folder with ``kb_index.faiss`` (``IndexFlatIP`` over
L2-normalised EVA-CLIP-8B image embeddings, several per entity) and ``kb_index_ids.pkl`` (a pickled list whose
i-th item is the KB row of vector i).

The pickle is read by a restricted unpickler that builds only lists, tuples and integers (plain, or numpy
integer scalars); anything else, including any attempt to import a function, is refused before it runs.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from omgm.errors import OmgmError

INDEX_NAME = "kb_index.faiss"
IDS_NAME = "kb_index_ids.pkl"
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class EchoSightIndexError(OmgmError, ValueError):
    """A released image index that cannot be used; the message names the file."""


class _IdsUnpickler(pickle.Unpickler):
    """Only numpy's integer scalars may be reconstructed; every other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_SCALAR:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only a list of integers is expected)")


def locate(path: str | Path) -> tuple[Path, Path] | None:
    """``(index file, ids pickle)`` when ``path`` is EchoSight's folder or its ``kb_index.faiss``, else None."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if (p.is_dir() or p.name == INDEX_NAME) and (folder / INDEX_NAME).is_file() and (folder / IDS_NAME).is_file():
        return folder / INDEX_NAME, folder / IDS_NAME
    return None


def read_ids(path: str | Path, kb_len: int | None = None) -> np.ndarray:
    """The KB row of every vector, checked: a list of integers, each a row of the KB."""
    path = Path(path)
    try:
        obj = _IdsUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise EchoSightIndexError(f"{path}: not a pickled list of KB rows ({exc})") from None
    if isinstance(obj, np.ndarray) or not isinstance(obj, (list, tuple)):
        raise EchoSightIndexError(f"{path}: expected a list of integers, got {type(obj).__name__}")
    bad = next((i for i, x in enumerate(obj) if isinstance(x, bool) or not isinstance(x, (int, np.integer))), None)
    if bad is not None:
        raise EchoSightIndexError(f"{path}: item {bad} is {type(obj[bad]).__name__}, expected an integer KB row")
    rows = np.asarray(obj, dtype=np.int64)
    if kb_len is not None and len(rows) and (rows.min() < 0 or rows.max() >= kb_len):
        i = int(np.argmax((rows < 0) | (rows >= kb_len)))
        raise EchoSightIndexError(f"{path}: item {i} is row {int(rows[i])}, outside the knowledge base's "
                                  f"{kb_len} entities (an index of another KB?)")
    return rows


def check(index, rows: np.ndarray, index_path: Path, ids_path: Path, *, dim: int, model_id: str) -> list[str]:
    """Refuse a count or dimension that does not fit; return the note that there is no manifest."""
    if index.ntotal != len(rows):
        raise EchoSightIndexError(f"{index_path} holds {index.ntotal} vectors but {ids_path} lists {len(rows)} rows")
    if index.d != dim:
        raise EchoSightIndexError(f"{index_path}: vectors have dimension {index.d} but the retriever {model_id} "
                                  f"embeds into {dim}")
    return [f"no manifest found for {index_path.parent} (EchoSight's released image index): checked the vector "
            f"count ({index.ntotal}), the KB rows and the dimension ({index.d})"]
