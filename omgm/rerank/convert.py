"""LAVIS BLIP-2 checkpoints <-> :class:`IT2ITReranker` parameters, loaded strictly with a report.

Accepted sources, any combination, earlier sources win for a key:
- ``blip2_pretrained.pth`` (LAVIS; ``{"model": state_dict}``): trainable parameters only, no ``visual_encoder.``;
- the EVA ViT-g file (``eva_vit_g.pth``): bare ViT keys (``blocks.N...``), 40 blocks of which 39 are used;
- the authors' trained reranker (``model_*.pth``): the bare state dict of their class, i.e. the LAVIS keys (ViT
  possibly in fp16) plus ``prompt_tokens``, which no forward path uses (ignored and reported), possibly
  ``module.``-prefixed;
- omgm's own checkpoints (``{"format": "omgm.it2it", ...}``), loaded by name.

"Strict": every parameter of the model must be filled, and every key of the sources must be mapped or in the
list of keys BLIP-2 has but IT2IT does not use (the MLM head, projections, ITM head, surplus ViT blocks).
"""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from omgm.errors import OmgmError
from omgm.io import atomic_write
from omgm.rerank.model import IT2ITConfig, IT2ITReranker, QFormerSpec, VisionSpec

OURS_FORMAT = "omgm.it2it"
_GROUP = re.compile(r"(visual_encoder\.blocks\.\d+|visual_encoder\.[^.]+|Qformer\.cls|Qformer\.bert\.embeddings|[^.]+)")
_QKV_BIAS = re.compile(r"vision\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias")
# our parameter name -> LAVIS name (first full match wins)
RULES: list[tuple[str, str]] = [
    (r"vision\.embeddings\.class_embedding", "visual_encoder.cls_token"),
    (r"vision\.embeddings\.position_embedding", "visual_encoder.pos_embed"),
    (r"vision\.embeddings\.patch_embedding\.(weight|bias)", r"visual_encoder.patch_embed.proj.\1"),
    (r"vision\.encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"visual_encoder.blocks.\1.norm\2.\3"),
    (r"vision\.encoder\.layers\.(\d+)\.self_attn\.qkv\.weight", r"visual_encoder.blocks.\1.attn.qkv.weight"),
    (r"vision\.encoder\.layers\.(\d+)\.self_attn\.projection\.(weight|bias)", r"visual_encoder.blocks.\1.attn.proj.\2"),
    (r"vision\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"visual_encoder.blocks.\1.mlp.\2.\3"),
    (r"vision\.post_layernorm\.(weight|bias)", r"ln_vision.\1"),
    (r"query_tokens", "query_tokens"),
    (r"temp", "temp"),
    (r"embeddings\.(word|position)_embeddings\.weight", r"Qformer.bert.embeddings.\1_embeddings.weight"),
    (r"qformer\.layernorm\.(weight|bias)", r"Qformer.bert.embeddings.LayerNorm.\1"),
    (r"qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.(query|key|value)\.(weight|bias)",
     r"Qformer.bert.encoder.layer.\1.\2.self.\3.\4"),
    (r"qformer\.encoder\.layer\.(.+)", r"Qformer.bert.encoder.layer.\1"),
]
# LAVIS keys that exist in BLIP-2 checkpoints but that IT2IT does not use; ``prompt_tokens`` [1, 32, 768] is a
# parameter of the authors' reranker class that no forward path reads (their trained ``model_*.pth`` have it)
UNUSED = [r"Qformer\.cls\..*", r"vision_proj\..*", r"text_proj\..*", r"itm_head\..*",
          r"Qformer\.bert\.embeddings\.position_ids", r"visual_encoder\.(norm|fc_norm|head)\..*", r"prompt_tokens"]


class CheckpointError(OmgmError, ValueError):
    """A checkpoint that does not fit the reranker; the message lists the keys and shapes."""


@dataclass
class LoadReport:
    taken: Counter = field(default_factory=Counter)           # source -> keys used
    ignored: dict[str, list[str]] = field(default_factory=dict)  # source -> unused keys
    shadowed: list[str] = field(default_factory=list)         # keys also present in an earlier source

    def summary(self) -> str:
        lines = [f"took {n} tensors from {src}" for src, n in self.taken.items()]
        for src, keys in self.ignored.items():
            groups = Counter(_GROUP.match(k).group(1) + ".*" for k in keys)
            lines.append(f"ignored {len(keys)} keys of {src} that IT2IT does not use: "
                         + ", ".join(f"{g} ({n})" for g, n in sorted(groups.items())))
        if self.shadowed:
            lines.append(f"{len(self.shadowed)} keys were in several sources; the first source was used")
        return "\n".join(lines)


def lavis_name(ours: str) -> str:
    for pattern, repl in RULES:
        if re.fullmatch(pattern, ours):
            return re.sub(pattern, repl, ours)
    raise KeyError(f"no LAVIS name for parameter {ours!r}")


def to_lavis_state_dict(model: IT2ITReranker) -> dict[str, torch.Tensor]:
    """Our parameters under LAVIS names (``attn.q_bias``/``v_bias`` split out of the fused qkv bias)."""
    return ours_to_lavis(model.state_dict())


def save_authors_layout(model: IT2ITReranker, path: str | Path) -> Path:
    """``model`` saved as the authors' training script saves ``model_*.pth``: LAVIS key names, the ViT in fp16, and
    ``prompt_tokens`` (zeros; unused by the reranker). The demo release and the dress rehearsal write it."""
    sd = {k: (v.half() if k.startswith("visual_encoder.") else v) for k, v in to_lavis_state_dict(model).items()}
    sd["prompt_tokens"] = torch.zeros(1, model.config.num_query_tokens, model.config.qformer.hidden_size)
    with atomic_write(Path(path)) as tmp:
        torch.save(sd, tmp)
    return Path(path)


def ours_to_lavis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        m = _QKV_BIAS.fullmatch(name)
        if m:
            d = t.shape[0] // 3
            out[f"visual_encoder.blocks.{m.group(1)}.attn.q_bias"] = t[:d].clone()
            out[f"visual_encoder.blocks.{m.group(1)}.attn.v_bias"] = t[2 * d:].clone()
        else:
            try:
                out[lavis_name(name)] = t.clone()
            except KeyError:                          # not ours: kept, so the strict load lists it as unexpected
                out[name] = t
    return out


def read_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """``torch.load`` on CPU; ``weights_only`` unless ``trust`` (LAVIS files may pickle their config)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():             # torch's note about pickle protocols says nothing useful here
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for unreadable/unsafe files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not trust and ("Unsupported global" in str(exc) or _is_raw_pickle(path)):
            raise CheckpointError(f"cannot read checkpoint {path}: it holds pickled objects besides tensors; if you "
                                  f"trust this file, pass --trust_checkpoint to allow them") from None
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or a damaged/truncated "
                              f"one ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def _is_raw_pickle(path: Path) -> bool:
    """A bare pickle stream (protocol 2-5), not a zip checkpoint: what a planted object arrives as."""
    with path.open("rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def state_dict_of(obj: dict) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint object: ``obj['model']`` / ``obj['state_dict']`` / itself; ``module.`` stripped."""
    sd = obj.get("model", obj.get("state_dict", obj)) if not _is_state_dict(obj) else obj
    if not isinstance(sd, dict):
        raise CheckpointError(f"the checkpoint's weights are a {type(sd).__name__}, not a state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def as_vit_source(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give a bare EVA ViT-g file's keys the ``visual_encoder.`` prefix BLIP-2 uses."""
    if any(k.startswith("visual_encoder.") for k in sd):
        return sd
    return {f"visual_encoder.{k}": v for k, v in sd.items()}


def load_lavis(model: IT2ITReranker, sources: Iterable[tuple[str, dict[str, torch.Tensor]]],
               strict: bool = True) -> LoadReport:
    """Fill ``model`` from LAVIS-named state dicts; raise :class:`CheckpointError` on a misfit (see module doc)."""
    depth = model.config.vision.num_hidden_layers
    own = model.state_dict()
    want = {lavis_name(k): k for k in own if not _QKV_BIAS.fullmatch(k)}
    report, new, biases = LoadReport(), {}, {}
    unexpected: list[str] = []
    for src, sd in sources:
        for key, t in sd.items():
            if key in want:
                if want[key] in new:
                    report.shadowed.append(key)
                    continue
                new[want[key]] = _fit(key, t, own[want[key]], src)
                report.taken[src] += 1
            elif m := re.fullmatch(r"visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias", key):
                if int(m.group(1)) >= depth:
                    report.ignored.setdefault(src, []).append(key)
                elif (m.group(1), m.group(2)) not in biases:
                    biases[(m.group(1), m.group(2))] = t
                    report.taken[src] += 1
            elif _unused(key, depth):
                report.ignored.setdefault(src, []).append(key)
            else:
                unexpected.append(f"{src}: {key}")
    for i in range(depth):
        name = f"vision.encoder.layers.{i}.self_attn.qkv.bias"
        if (str(i), "q") in biases and (str(i), "v") in biases:
            q, v = biases[(str(i), "q")], biases[(str(i), "v")]
            new[name] = _fit(f"blocks.{i}.attn.q_bias/v_bias", torch.cat([q, torch.zeros_like(q), v]), own[name], "")
    missing = [k for k in own if k not in new]
    if strict and (unexpected or missing):
        raise CheckpointError("checkpoint does not fit the IT2IT reranker (wrong architecture or incomplete):"
                              + (f"\n  unexpected keys ({len(unexpected)}): {unexpected[:8]}" if unexpected else "")
                              + (f"\n  parameters not found ({len(missing)}): "
                                 f"{[lavis_name(k) if not _QKV_BIAS.fullmatch(k) else k for k in missing[:8]]}"
                                 if missing else ""))
    model.load_state_dict({**own, **new}, strict=True)
    return report


def _unused(key: str, depth: int) -> bool:
    m = re.match(r"visual_encoder\.blocks\.(\d+)\.", key)
    if m:
        return int(m.group(1)) >= depth
    return any(re.fullmatch(p, key) for p in UNUSED)


def _fit(key: str, t: torch.Tensor, target: torch.Tensor, src: str) -> torch.Tensor:
    if tuple(t.shape) != tuple(target.shape):
        raise CheckpointError(f"{src}: {key} has shape {tuple(t.shape)} but the reranker expects "
                              f"{tuple(target.shape)} (a checkpoint of another size or architecture?)")
    return t.to(target.dtype)


def save_ours(model: IT2ITReranker, path: str | Path, trainable_only: bool = False, extra: dict | None = None) -> Path:
    """Write an omgm checkpoint (config + parameters), atomically."""
    path = Path(path)
    params = {n for n, p in model.named_parameters() if p.requires_grad} if trainable_only else None
    sd = {k: v for k, v in model.state_dict().items() if params is None or k in params}
    obj = {"format": OURS_FORMAT, "config": model.config.to_dict(), "model": sd, "trainable_only": trainable_only,
           **(extra or {})}
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return path


def is_ours(obj: dict) -> bool:
    return obj.get("format") == OURS_FORMAT


def resolve_config(name_or_path: str | None, checkpoints: Iterable[dict]) -> IT2ITConfig:
    """An omgm checkpoint's own config, else ``blip2`` (the published sizes), else a JSON file of sizes."""
    for obj in checkpoints:
        if is_ours(obj):
            return _config(obj.get("config"), "the checkpoint's 'config'")
    if name_or_path in (None, "", "blip2", "blip2_reranker", "blip2_feature_extractor"):
        return IT2ITConfig()
    p = Path(name_or_path)
    if not p.is_file():
        raise CheckpointError(f"reranker model {name_or_path!r}: not 'blip2' nor a JSON config file")
    try:
        return _config(json.loads(p.read_text(encoding="utf-8")), str(p))
    except (ValueError, RecursionError) as exc:             # JSON and UTF-8 errors are ValueErrors
        raise CheckpointError(f"reranker model {p}: not a JSON config file ({str(exc)[:120]})") from None


def _config(value: object, where: str) -> IT2ITConfig:
    """An :class:`IT2ITConfig` from a mapping of sizes, or a one-line error naming ``where``."""
    if not isinstance(value, dict) or not all(isinstance(value.get(k, {}), dict) for k in ("vision", "qformer")):
        raise CheckpointError(f"{where}: expected an object of reranker sizes (with 'vision' and 'qformer' objects), "
                              f"got {str(value)[:60]!r}")
    for part, cls in (("vision", VisionSpec), ("qformer", QFormerSpec), ("", IT2ITConfig)):
        _check_sizes(value.get(part, {}) if part else value, cls, f"{where}: {part + '.' if part else ''}")
    try:
        return IT2ITConfig.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: not reranker sizes ({str(exc).splitlines()[0]})") from None


def _check_sizes(values: dict, cls: type, where: str) -> None:
    """Every size a whole number from 1 to 2**24, every epsilon/temperature a positive finite number, no unknown
    key: a config is checked before a model of its sizes is allocated."""
    import dataclasses
    import math

    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls) if str(f.type) in ("int", "float")}
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise CheckpointError(f"{where}unknown size(s) {sorted(unknown)[:4]}")
    for key, kind in kinds.items():
        if key not in values:
            continue
        v = values[key]
        ok = (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 24) if kind == "int" else \
            (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
        if not ok:
            raise CheckpointError(f"{where}{key} is {json.dumps(v)[:30]}: expected "
                                  f"{'a whole number from 1 to 16777216' if kind == 'int' else 'a positive number'}")


def build_reranker(model_name: str | None = None, reranker_ckpt: str | Path | None = None,
                   init_ckpt: str | Path | None = None, vit_ckpt: str | Path | None = None,
                   *, trust: bool = False, strict: bool = True,
                   read: dict | None = None) -> tuple[IT2ITReranker, LoadReport]:
    """The reranker with weights from, in priority order: a trained checkpoint (official or omgm), the LAVIS
    ``blip2_pretrained.pth`` init, the EVA ViT-g file. With none given, random weights (tests, demo). ``read``:
    checkpoints the caller has already read, by path (a multi-GB file is not read twice)."""
    read = {Path(p): obj for p, obj in (read or {}).items()}
    loaded = [(Path(p), read.get(Path(p)) or read_checkpoint(p, trust)) for p in (reranker_ckpt, init_ckpt, vit_ckpt)
              if p]
    config = resolve_config(model_name, [obj for _, obj in loaded])
    try:
        model = IT2ITReranker(config)
    except (ValueError, RuntimeError) as exc:             # sizes that do not fit together (heads vs width...)
        raise CheckpointError(f"reranker sizes {model_name or 'of the checkpoint'} do not make a model: "
                              f"{str(exc).splitlines()[0][:160]}") from None
    sources = []
    for path, obj in loaded:
        sd = state_dict_of(obj)
        if is_ours(obj):
            sd = ours_to_lavis(sd)
        elif vit_ckpt and path == Path(vit_ckpt):
            sd = as_vit_source(sd)
        sources.append((path.name, sd))
    report = load_lavis(model, sources, strict=strict) if sources else LoadReport()
    return model, report
