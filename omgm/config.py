"""Configuration: YAML files, environment variables and flags, in that order of precedence (last wins).

Every entry point builds an ``argparse`` parser whose flag names follow the official scripts, then calls
:func:`parse_with_config`. Values come from, lowest to highest priority:

1. the parser's built-in defaults;
2. one or more ``--config FILE.yaml`` (or ``$OMGM_CONFIG``, a ``:``-separated list), flat ``key: value``
   maps whose keys are the flags' destinations (``sample_file``, ``knowledge_base``...). Keys that a stage does
   not know are ignored, so one ``paths.yaml`` can serve every stage;
3. environment variables ``OMGM_<DEST>`` (``OMGM_SAMPLE_FILE=...``);
4. the flags on the command line.

String values may reference other keys as ``${key}`` and environment variables as ``$VAR``/``${VAR}``;
``~`` is expanded. A relative path written in a config file is relative to that file's folder (after ``${}``
substitution; a model setting only when it starts with ``.`` or exists there, else it is a hub id or name, see
:func:`omgm.settings.path_kind`); relative paths in flags and variables are relative to the working directory.
The official spellings of a setting (``knowledge_base_path``, ``knowledge_base_file``) are accepted everywhere
as its aliases (:data:`omgm.settings.ALIASES`).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from omgm.errors import OmgmError

ENV_PREFIX = "OMGM_"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(OmgmError, ValueError):
    """A configuration file or value that cannot be used."""


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a flat YAML mapping, with an error that names the file when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def interpolate(values: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``${key}`` references between values (up to 10 levels), then env vars and ``~``."""
    out = dict(values)
    for _ in range(10):
        changed = False
        for key, val in out.items():
            if isinstance(val, str):
                new = _REF.sub(lambda m: str(out[m.group(1)]) if m.group(1) in out else m.group(0), val)
                if new != val:
                    out[key], changed = new, True
        if not changed:
            break
    for key, val in out.items():
        if isinstance(val, str) and ("$" in val or val.startswith("~")):
            out[key] = os.path.expanduser(os.path.expandvars(val))
    return out


def config_values(config_files: Iterable[str], dests: Iterable[str]) -> dict[str, Any]:
    """Merge YAML files and ``OMGM_*`` environment variables into one dict, interpolated, aliases renamed to their
    settings' names, and each file's relative paths resolved against that file's folder."""
    from omgm.settings import aliases_of, canonical

    raw: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for cfg in config_files:
        data = canonical(load_yaml(cfg), where=str(cfg))
        raw.update(data)
        origin.update({k: Path(cfg).parent for k in data})
    values = interpolate(raw)
    values = {k: resolve_relative(k, v, origin[k]) for k, v in values.items()}
    env: dict[str, Any] = {}
    for dest in dests:
        for name in [dest, *aliases_of(dest)]:
            if os.environ.get(ENV_PREFIX + name.upper()) is not None:
                env[name] = os.environ[ENV_PREFIX + name.upper()]
    return {**values, **canonical(env, where="environment")}


def resolve_relative(key: str, value: Any, folder: Path) -> Any:
    """A config file's relative path, resolved against the file's folder (see the module docstring)."""
    from omgm.settings import path_kind

    kind = path_kind(key)
    if kind is None or not isinstance(value, str) or not value or os.path.isabs(value) or "://" in value:
        return value
    candidate = folder / value
    if kind == "path" or value.startswith(("./", "../")) or value in (".", "..") or candidate.exists():
        return os.path.normpath(candidate)
    return value


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with defaults taken from ``--config`` files and ``OMGM_*`` environment variables."""
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument("--config", action="append", default=None,
                            help="YAML file(s) of defaults (repeatable; also $OMGM_CONFIG, ':'-separated)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=None)
    known, _ = pre.parse_known_args(argv)
    files = known.config or [f for f in os.environ.get("OMGM_CONFIG", "").split(":") if f]
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    values = interpolate(config_values(files, dests))       # once more for ${key} in environment variables
    parser.set_defaults(**{k: _coerce(parser, k, v) for k, v in values.items() if k in dests})
    from omgm.help import describe

    describe(parser)
    args = parser.parse_args(argv)
    args.config = files
    if getattr(args, "no_progress", False):
        quiet_libraries()
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and "\0" in v:
                raise ConfigError(f"--{dest}: the value {v!r} holds a NUL byte, which no path or setting can contain")
    return args


def quiet_libraries() -> None:
    """No progress bars or advisory chatter from transformers / huggingface_hub / open_clip (``--no_progress``)."""
    import logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    for logger in (logging.getLogger(), logging.getLogger("open_clip")):
        if not any(isinstance(f, _RandomWeightsNote) for f in logger.filters):
            logger.addFilter(_RandomWeightsNote())


class _RandomWeightsNote:
    """Drop open_clip's 'No pretrained weights loaded' line: omgm says itself when a model is random."""

    def filter(self, record) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _coerce(parser: argparse.ArgumentParser, dest: str, value: Any) -> Any:
    """Give YAML/env values the flag's type (argparse converts string defaults only for scalar flags) and run
    the flag's range check on them too, so a bad value in a config file is reported like a bad flag."""
    action = next(a for a in parser._actions if a.dest == dest)
    try:
        if isinstance(value, list) and action.type is not None:
            if getattr(action.type, "takes_list", False):
                return action.type(",".join(map(str, value)))
            return [action.type(v) if isinstance(v, str) else v for v in value]
        if isinstance(value, str) and action.nargs in ("+", "*") and action.type is not None:
            return [action.type(v) for v in value.replace(",", " ").split()]
        if getattr(action.type, "validates", False) and not isinstance(value, str) and value is not None:
            return action.type(str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(f"config value {dest}: {exc}") from None
    return value


def _validator(fn):
    fn.validates = True
    return fn


def number_in(kind: type, low: float | None = None, high: float | None = None, what: str = "",
              *, above: bool = False):
    """An argparse type: a ``kind`` number within ``[low, high]`` (either bound may be None; ``above``: the
    number must be strictly greater than ``low``)."""

    @_validator
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and (value <= low if above else value < low)) or (high is not None and value > high):
            span = f"between {low} and {high}" if low is not None and high is not None else (
                f"{'above' if above else 'at least'} {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"{value} is out of range: {what or 'the value'} must be {span}")
        return value

    parse.__name__ = kind.__name__
    return parse


@_validator
def zero_one(text: str) -> bool:
    """An argparse type for the official 0/1 switches (``--wandb 1``): 0 or 1, as a bool."""
    if str(text).strip().lower() in ("0", "false", "no"):
        return False
    if str(text).strip().lower() in ("1", "true", "yes"):
        return True
    raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")


positive_int = number_in(int, 1, what="it")
nonnegative_int = number_in(int, 0, what="it")
fraction = number_in(float, 0.0, 1.0, what="a weight")
positive_float = number_in(float, 0.0, what="it", above=True)
nonnegative_float = number_in(float, 0.0, what="it")


def require(args: argparse.Namespace, *names: str) -> None:
    """Fail with one message listing every required value that no flag, env var or config supplied."""
    missing = [n for n in names if getattr(args, n, None) in (None, "")]
    if missing:
        how = ", ".join(f"--{n} (or {ENV_PREFIX}{n.upper()})" for n in missing)
        raise ConfigError(f"missing required value(s): {how}; set them as flags, environment variables, or keys "
                          f"in a --config YAML file")


def int_list(text: str) -> list[int]:
    """Parse ``"1,5,10"`` or ``"1 5 10"`` into ``[1, 5, 10]`` (the official ``--top_ks`` form); each >= 1."""
    try:
        values = [int(t) for t in str(text).replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected cut-offs of at least 1, got {text!r}")
    return values


def float_list(text: str) -> list[float]:
    """Parse ``"0.9"`` or ``"0.5,0.9"`` into a list of weights, each between 0 and 1."""
    try:
        values = [float(t) for t in str(text).replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from exc
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected weights between 0 and 1, got {text!r}")
    return values


int_list.takes_list = float_list.takes_list = True
int_list.validates = float_list.validates = True


def setup_logging(verbose: bool = False) -> None:
    """omgm's own loggers at INFO (DEBUG when verbose); third-party libraries at WARNING."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("omgm").setLevel(logging.DEBUG if verbose else logging.INFO)
