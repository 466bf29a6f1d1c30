"""Greedy generation for a batch of prompts that share a long prefix, with the prefix's KV cache computed once.

The published prompts of a dataset start alike (chat template, system prompt, instruction, InfoSeek's worked
example). :class:`SharedPrefixGenerator` finds the longest common token prefix of a batch, runs the model on
it once (and remembers that cache for later batches with the same prefix), repeats the cache over the batch,
and generates from the varying parts. Each varying part is padded on its left, i.e. right after the prefix:
those pads are masked out of attention and skipped by the position ids (derived from the attention mask), so
every row sees exactly its own prompt. Answers equal generating each prompt alone up to float rounding.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch

MIN_SHARED = 16          # shorter common prefixes are not worth a cache


def cache_kwarg(model) -> str:
    """The keyword that passes a KV cache: ``cache`` in recent transformers 5 releases, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every row at least one token of its own."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for i in range(max(0, n)):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return max(0, n)


def _reserved_layer_class():
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A cache layer writing into a reserved buffer (a view is returned) instead of concatenating at every
        step, which copies the whole cache: with a long repeated prefix that copy was half of the decoding time."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
            super().__init__()
            b, h, n, d = keys.shape
            self._k = keys.new_empty(b, h, max(capacity, n), d)
            self._v = values.new_empty(b, h, max(capacity, n), values.shape[-1])
            self._k[:, :, :n] = keys
            self._v[:, :, :n] = values
            self.n, self.device, self.is_initialized = n, keys.device, True
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            need = self.n + key_states.shape[-2]
            if need > self._k.shape[-2]:                      # grow by doubling (rare: capacity is reserved)
                grow = max(need, 2 * self._k.shape[-2])
                self._k = torch.cat([self._k[:, :, :self.n], self._k.new_empty(*self._k.shape[:2], grow - self.n,
                                                                                self._k.shape[-1])], dim=2)
                self._v = torch.cat([self._v[:, :, :self.n], self._v.new_empty(*self._v.shape[:2], grow - self.n,
                                                                                self._v.shape[-1])], dim=2)
            self._k[:, :, self.n:need] = key_states
            self._v[:, :, self.n:need] = value_states
            self.n = need
            self.keys, self.values = self._k[:, :, :need], self._v[:, :, :need]
            return self.keys, self.values

    return ReservedLayer


def batch_cache(prefix_cache, batch: int, capacity: int):
    """A cache holding the prefix ``batch`` times, with room reserved for ``capacity`` positions per row."""
    from transformers import DynamicCache

    layer_cls = _reserved_layer_class()
    cache = DynamicCache()
    cache.layers = [layer_cls(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), capacity)
                    for layer in prefix_cache.layers]
    cache.layer_class_to_replicate = None
    return cache


class SharedPrefixGenerator:
    """``generate(rows, ...)`` -> new token ids per row; prefix caches kept for the last ``keep`` prefixes."""

    def __init__(self, model, keep: int = 4) -> None:
        self.model, self.keep = model, keep
        self._caches: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.prefix_runs = 0

    def _cached_prefix(self, rows: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
        """The longest remembered prefix that every row starts with (and goes beyond)."""
        fits = [p for p in self._caches if all(len(r) > len(p) and tuple(r[:len(p)]) == p for r in rows)]
        return max(fits, key=len) if fits else None

    @torch.no_grad()
    def _prefix_cache(self, prefix: tuple[int, ...]):
        if prefix in self._caches:
            self._caches.move_to_end(prefix)
            return self._caches[prefix]
        from transformers import DynamicCache

        cache = DynamicCache()
        ids = torch.tensor([prefix], device=self.model.device)
        self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **{cache_kwarg(self.model): cache})
        self.prefix_runs += 1
        self._caches[prefix] = cache
        while len(self._caches) > self.keep:
            self._caches.popitem(last=False)
        return cache

    @torch.no_grad()
    def generate(self, rows: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
                 eos_ids: Sequence[int] | int | None = None) -> list[list[int]] | None:
        """New ids per row, or None when the rows share too short a prefix (then generate the usual way)."""
        if len(rows) < 2:
            return None
        prefix = self._cached_prefix(rows)
        if prefix is None:
            n = common_prefix(rows)
            if n < MIN_SHARED:
                return None
            prefix = tuple(rows[0][:n])
        n = len(prefix)
        tails = [list(r[n:]) for r in rows]
        width = max(len(t) for t in tails)
        cache = batch_cache(self._prefix_cache(prefix), len(rows), n + width + max_new_tokens)
        ids = torch.full((len(rows), n + width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :n] = torch.tensor(prefix)
        mask[:, :n] = 1
        for i, t in enumerate(tails):
            ids[i, n + width - len(t):] = torch.tensor(t)
            mask[i, n + width - len(t):] = 1
        dev = self.model.device
        extra = {} if eos_ids is None else {"eos_token_id": eos_ids}
        out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), do_sample=False,
                                  max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                  **{cache_kwarg(self.model): cache}, **extra)
        from omgm.generate.generators.base import _until_finished

        return [_until_finished(r, eos_ids, pad_id) for r in out[:, ids.shape[1]:].tolist()]
