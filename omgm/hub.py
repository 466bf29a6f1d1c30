"""Loading transformers models and tokenizers by hub id or local folder, with errors a user can act on.

``from_pretrained`` raises long ``OSError`` texts when a name is neither a folder nor reachable; on the
offline machines this project runs on, the useful answer is which path was tried and how to supply a copy.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

from omgm.errors import OmgmError

log = logging.getLogger(__name__)


class ModelLoadError(OmgmError, OSError):
    """A model, tokenizer or processor that cannot be loaded; the message names the path and the fix."""


def looks_local(path: str | os.PathLike) -> bool:
    """A path a user meant as a folder (exists, or written like a path) rather than a hub id."""
    s = str(path)
    return Path(s).exists() or s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep == "\\" and "\\" in s


def explain(path: str | os.PathLike, what: str, exc: BaseException) -> str:
    """One line: what could not be loaded from where, and what to do."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, pickle.UnpicklingError):
        first = "a weight file holds pickled objects besides tensors: refused, nothing in it was run"
    p = Path(str(path)).expanduser()
    if looks_local(path):
        if not p.exists():
            return f"{what}: no such folder {p}"
        return f"{what}: cannot load {p}: {first}"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return (f"{what}: {path!r} is not a local folder and is not in the Hugging Face cache (HF_HUB_OFFLINE is "
                f"set); download it where there is internet (`hf download {path}`) or pass a local folder")
    return f"{what}: cannot load {path!r} from the Hugging Face hub: {first}"


# Image processors as transformers 4.x ran them: the PIL ("slow") backend. transformers 5 defaults to its
# torchvision backend, whose pixels differ by 1-2 uint8 levels on ~1-2 % of values (docs/faithfulness.md).
# Asking for a concrete class (``CLIPImageProcessor``) gives the torchvision one even with use_fast=False, so
# every image processor is loaded through the auto classes with ``backend="pil"``.
IMAGE_PROCESSOR_BACKEND = "pil"
_IMAGE_PROCESSOR_CLASSES = {"CLIPImageProcessor": "AutoImageProcessor", "AutoImageProcessor": "AutoImageProcessor",
                            "AutoProcessor": "AutoProcessor"}


def load_pretrained(cls_name: str, path: str | os.PathLike, what: str = "model", **kwargs: Any):
    """``transformers.<cls_name>.from_pretrained(path, **kwargs)`` with :class:`ModelLoadError` on failure.

    Models are loaded strictly: a parameter the checkpoint does not fill (transformers would initialise it at
    random and only log it) or fills with the wrong shape is an error; unused checkpoint tensors are logged.
    Image processors (and processors holding one) get the PIL backend unless ``backend=`` is given.
    """
    import transformers

    if cls_name in _IMAGE_PROCESSOR_CLASSES:
        cls_name = _IMAGE_PROCESSOR_CLASSES[cls_name]
        kwargs.setdefault("backend", IMAGE_PROCESSOR_BACKEND)
    cls = getattr(transformers, cls_name)
    is_model = "Model" in cls_name
    try:
        out = cls.from_pretrained(str(path), **kwargs, **({"output_loading_info": True} if is_model else {}))
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(explain(path, what, exc)) from None
    if not is_model:
        return out
    model, info = out
    missing = sorted(info.get("missing_keys") or [])
    bad = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or bad:
        raise ModelLoadError(f"{what}: {path} does not fill the model it describes (it would run with random "
                             f"weights): missing {missing[:6]}{' ...' if len(missing) > 6 else ''}"
                             + (f"; wrong shape {bad[:4]}" if bad else ""))
    if info.get("unexpected_keys"):
        log.info("%s: %d tensors of %s are not used: %s", what, len(info["unexpected_keys"]), path,
                 sorted(info["unexpected_keys"])[:6])
    return model
