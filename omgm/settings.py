"""Stage settings declared once, as dataclass fields: the single source of flag names, defaults, ranges, help,
YAML keys and ``OMGM_*`` variables.

A field made with :func:`setting` carries what argparse needs (its official flag spellings, type or range check,
choices, help). :func:`add_flags` turns a config class (nested ones included: ``SearchConfig.retriever`` is a
:class:`~omgm.retrieval.base.RetrieverSpec`) into parser flags, :func:`from_values` builds the config back by
keyword from parsed flags or a plain mapping, and :func:`check_values` refuses unknown keys and bad values of a
mapping (``omgm ask --set``, ``Pipeline.from_config``) with the very checks the flags run.

One setting, one name: the knowledge base is ``knowledge_base`` everywhere; the official scripts' spellings
(``--knowledge_base_path`` in step 2b and 3, ``--knowledge_base_file`` in step 2a) are aliases, accepted as flags,
YAML keys and ``OMGM_*`` variables by every stage (:data:`ALIASES`).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterator, Mapping

from omgm.errors import OmgmError

# official spelling -> the one name omgm uses for the setting
ALIASES: dict[str, str] = {"knowledge_base_path": "knowledge_base", "knowledge_base_file": "knowledge_base"}


def aliases_of(name: str) -> list[str]:
    """The official spellings accepted for the setting ``name`` (its aliases)."""
    return [alias for alias, canonical_name in ALIASES.items() if canonical_name == name]


class SettingsError(OmgmError, ValueError):
    """A key no stage knows, or a value its flag would refuse."""


def setting(default: Any = None, *, help: str | None = None, type: Callable | None = None,
            choices: tuple | list | None = None, flags: tuple[str, ...] = (), switch: bool = False,
            factory: Callable | None = None) -> Any:
    """A config field that is also a command-line flag.

    ``flags``: the spellings (default ``--NAME``; the first is the official one); ``switch``: a ``store_true``
    flag (a ``bool | None`` default makes a ``--x/--no-x`` pair); ``type``: an argparse type that also checks
    ranges (:func:`omgm.config.number_in`). Which settings name files is :func:`path_kind`'s business.
    """
    meta = {"help": help, "type": type, "choices": choices, "flags": flags, "switch": switch}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"omgm": meta})
    return dataclasses.field(default=default, metadata={"omgm": meta})


def nested(cls: type) -> Any:
    """A config inside a config (its fields become flags of their own, at the same level)."""
    return dataclasses.field(default_factory=cls, metadata={"omgm_nested": True})


def _meta(f: dataclasses.Field) -> dict:
    return f.metadata.get("omgm") or {}


def leaves(cls: type) -> Iterator[dataclasses.Field]:
    """Every field of ``cls`` that is a setting, nested configs' fields included (flattened)."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("omgm_nested"):
            yield from leaves(f.default_factory)          # type: ignore[arg-type]
        else:
            yield f


def names(*classes: type) -> set[str]:
    """The keys the configs read (their settings' names)."""
    return {f.name for cls in classes for f in leaves(cls)}


# settings that name a model: a folder, or a hub id / registered name
MODEL_KEYS = frozenset({"answer_generator", "llm_checkpoint", "section_reranker", "context_tokenizer", "tokenizer",
                        "retriever_path", "retriever_pretrained", "summary_model", "bem_model", "reranker_model_name",
                        "vision_tower", "model_name_or_path", "base_model"})
_PATH_SUFFIXES = ("_file", "_path", "_dir", "_dirs", "_ckpt", "_index", "_result", "_prefix", "_csv", "_json", "_root")
_PATH_KEYS = frozenset({"knowledge_base", "jsonl", "out", "registry", "infoseek_val", "infoseek_qtype", "image",
                        "deepspeed", "step1", "step2", "answers", "gpu_suite", "src", "dst", "result", "root",
                        "failures", "id2name", "costs"})


def path_kind(name: str) -> str | None:
    """``"path"`` for a setting that names a file or folder (a relative one in a config file is relative to that
    file's folder), ``"model"`` for one that names a folder or a hub id (relative to the file's folder only when
    it starts with ``.`` or exists there), None otherwise. One naming rule for every command."""
    name = ALIASES.get(name, name)
    if name in MODEL_KEYS:
        return "model"
    return "path" if name in _PATH_KEYS or name.endswith(_PATH_SUFFIXES) else None


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (made by its factory when it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def add_flags(parser: argparse.ArgumentParser, *classes: type, skip: tuple[str, ...] = (),
              only: tuple[str, ...] | None = None,
              overrides: Mapping[str, Mapping[str, Any]] | None = None) -> argparse.ArgumentParser:
    """Add a flag for every setting of ``classes`` (except ``skip``; only ``only`` when given); ``overrides[name]``
    changes the flag's spellings or help for one command (``{"help": ...}``). Aliases of a setting are added as
    further spellings of its flag; a setting that already has a flag is left alone. Returns the parser."""
    overrides = overrides or {}
    for cls in classes:
        for f in leaves(cls):
            if "omgm" not in f.metadata or f.name in skip or (only is not None and f.name not in only) or any(
                    f.name == a.dest for a in parser._actions):
                continue
            meta = {**_meta(f), **overrides.get(f.name, {})}
            spellings = list(meta["flags"] or (f"--{f.name}",))
            spellings += [f"--{a}" for a in aliases_of(f.name) if f"--{a}" not in spellings]
            spellings += [f"--{f.name}"] if f"--{f.name}" not in spellings else []
            kw: dict[str, Any] = {"dest": f.name, "default": default_of(f), "help": meta["help"]}
            if meta["switch"]:
                kw["action"] = argparse.BooleanOptionalAction if f.default is None else "store_true"
            else:
                kw.update(type=meta["type"], choices=meta["choices"])
            parser.add_argument(*spellings, **{k: v for k, v in kw.items() if v is not None or k == "default"})
    return parser


def from_values(cls: type, values: Mapping[str, Any] | argparse.Namespace, **extra: Any) -> Any:
    """``cls`` built by keyword from parsed flags or a mapping (missing keys keep their defaults; nested configs
    are filled from the same flat keys); ``extra`` wins over ``values``."""
    if isinstance(values, argparse.Namespace):
        src = vars(values)
    else:                            # a mapping: its keys for ``cls`` checked and converted as the flags would
        known = names(cls)
        src = check_values({k: v for k, v in values.items() if ALIASES.get(k, k) in known}, cls)
    return _build(cls, {**src, **extra})


def _build(cls: type, src: Mapping[str, Any]) -> Any:
    kw = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("omgm_nested"):
            kw[f.name] = _build(f.default_factory, src)   # type: ignore[arg-type]
        elif f.name in src:
            kw[f.name] = src[f.name]
    return cls(**kw)


def canonical(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` with the official aliases renamed to omgm's names; an alias and its name given different values
    (in one file, or one mapping) is refused."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key)
        if name in out and out[name] != value:
            raise SettingsError(f"{where + ': ' if where else ''}{key} and {_spellings(name)} set one setting "
                                f"({name}) to different values: {out[name]!r} and {value!r}")
        out[name] = value
    return out


def _spellings(name: str) -> str:
    return "/".join([name, *aliases_of(name)])


def check_values(values: Mapping[str, Any], *classes: type, where: str = "setting") -> dict[str, Any]:
    """Refuse keys none of ``classes`` reads and values their flags would refuse; returns the values converted
    as the flags convert them (``"0.5"`` -> 0.5), under their canonical names."""
    fields_ = {f.name: f for cls in classes for f in leaves(cls)}
    values = canonical(values)
    unknown = sorted(set(values) - set(fields_))
    if unknown:
        raise SettingsError(f"unknown {where}(s) {', '.join(unknown)}; known: {', '.join(sorted(fields_))}")
    return {k: _checked(fields_[k], v, where) for k, v in values.items()}


def _checked(f: dataclasses.Field, value: Any, where: str) -> Any:
    meta = _meta(f)
    if value is None:
        return value
    try:
        if meta["choices"] is not None and value not in meta["choices"]:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(map(str, meta['choices']))}")
        check = meta["type"]
        if check is None:
            return value
        if getattr(check, "takes_list", False):
            return check(",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        if isinstance(value, (list, tuple)):
            return [check(str(v)) for v in value]
        return check(str(value)) if not isinstance(value, bool) or check is bool else value
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise SettingsError(f"{where} {f.name}: {exc}") from None


def flat(config: Any) -> dict[str, Any]:
    """A config's settings as one flat ``{name: value}`` mapping (nested configs' fields at the top level)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("omgm_nested"):
            out.update(flat(value))
        else:
            out[f.name] = value
    return out


def add_kb_flag(parser: argparse.ArgumentParser, official: str = "--knowledge_base", help: str | None = None) -> None:
    """The knowledge-base flag under the command's official spelling, with every alias (:data:`ALIASES`)."""
    from omgm.data.kb import KB_HELP

    spellings = [official] + [f"--{n}" for n in ["knowledge_base", *aliases_of("knowledge_base")] if f"--{n}" != official]
    parser.add_argument(*spellings, dest="knowledge_base", default=None, help=help or KB_HELP)
