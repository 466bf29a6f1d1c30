"""Non-persistent buffers of remote-code models, recomputed after loading.

Remote-code models (EVA-CLIP-8B, InternVL2.5) create tensors such as ``position_ids`` and rotary tables as
non-persistent buffers in ``__init__``. transformers 5 builds a model on the meta device before loading its
weights, and such buffers, which no checkpoint holds, are left uninitialised (arbitrary values): features come
out wrong, or indexing crashes. :func:`restore_nonpersistent_buffers` builds a twin of the model whose
parameters stay on the meta device (free) while its buffers are computed for real, and copies every
non-persistent buffer from it.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def nonpersistent_buffers(model: nn.Module) -> list[str]:
    """Dotted names of every non-persistent buffer of ``model``."""
    out = []
    for prefix, module in model.named_modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            if module._buffers.get(name) is not None:
                out.append(f"{prefix}.{name}" if prefix else name)
    return out


def _twin(model: nn.Module) -> nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        cls = type(model)
        if hasattr(cls, "_from_config"):
            return cls._from_config(model.config)
        return cls(model.config)


def restore_nonpersistent_buffers(model: nn.Module, build_twin: Callable[[nn.Module], nn.Module] | None = None
                                  ) -> list[str]:
    """Recompute every non-persistent buffer of ``model`` from a freshly built twin; returns their names.

    Each buffer keeps its device; floating buffers keep the twin's dtype (rotary tables stay fp32).
    """
    names = nonpersistent_buffers(model)
    if not names:
        return []
    twin = (build_twin or _twin)(model)
    fresh = dict(twin.named_buffers())
    restored = []
    for name in names:
        if name not in fresh or fresh[name].is_meta:
            raise RuntimeError(f"cannot recompute buffer {name!r} of {type(model).__name__}: the freshly built "
                               f"model has no such buffer")
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        old = module._buffers[attr]
        module._buffers[attr] = fresh[name].to(old.device if not old.is_meta else "cpu")
        restored.append(name)
    log.info("recomputed %d non-persistent buffers of %s", len(restored), type(model).__name__)
    return restored


def buffers_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
