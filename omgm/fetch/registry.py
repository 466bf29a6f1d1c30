"""The registry of released files (``registry.yaml``, data, not code): what each published row needs.

:func:`load_registry` reads it (or a user's own file with the same schema); :meth:`Registry.select` picks the
artifacts of a dataset's rows, in an order where every artifact comes after those it is built or derived from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omgm.errors import OmgmError

DEFAULT_REGISTRY = Path(__file__).with_name("registry.yaml")
SHARED_FOLDERS = ("wiki", "models")         # beside one folder per dataset, what --root holds
SOURCE_KINDS = ("url", "gdrive", "hub", "repo", "build", "manual", "derived")


class RegistryError(OmgmError, ValueError):
    """A registry file that does not follow the schema, or a name it does not know."""


@dataclass(frozen=True)
class Artifact:
    name: str
    dest: str                                   # relative to --root
    source: dict[str, Any]
    datasets: tuple[str, ...]
    rows: tuple[str, ...]
    unpack: str = "none"                        # zip | tar | auto | none
    kind: str = "file"                          # file | subset | wiki_images
    subset: dict[str, Any] = field(default_factory=dict)
    size: int | None = None                     # bytes, when known (before the first download)
    provides: str | None = None                 # a file the unpacked archive must contain
    after: tuple[str, ...] = ()

    @property
    def source_kind(self) -> str:
        return next(k for k in SOURCE_KINDS if k in self.source)

    def describe_source(self) -> str:
        kind = self.source_kind
        return f"{kind}:{self.source[kind]}" if kind != "manual" else "manual (see --list)"


@dataclass
class Registry:
    datasets: dict[str, dict[str, Any]]
    artifacts: dict[str, Artifact]
    path: Path

    def dataset(self, name: str) -> dict[str, Any]:
        if name not in self.datasets:
            raise RegistryError(f"unknown dataset {name!r} (known: {', '.join(sorted(self.datasets))})")
        return self.datasets[name]

    def resolve(self, value: Any, root: Path) -> Any:
        """A registry value as a stage reads it: a path under ``root`` (it starts with a dataset's folder or a
        shared one) made absolute; hub ids and numbers as they are."""
        folders = set(self.datasets) | set(SHARED_FOLDERS)
        return str(root / value) if isinstance(value, str) and value.split("/")[0] in folders else value

    def settings(self, dataset: str, root: Path) -> dict[str, Any]:
        """The dataset's published settings, resolved (:meth:`resolve`)."""
        return {k: self.resolve(v, root) for k, v in self.dataset(dataset).get("settings", {}).items()}

    def rows(self, dataset: str) -> list[str]:
        return list(self.dataset(dataset)["rows"])

    def select(self, dataset: str, rows: list[str] | None = None, only: list[str] | None = None) -> list[Artifact]:
        """The artifacts of ``dataset`` that ``rows`` need (every published row when None), or exactly ``only``."""
        self.dataset(dataset)
        if only:
            unknown = [n for n in only if n not in self.artifacts]
            if unknown:
                raise RegistryError(f"--only: unknown artifact(s) {', '.join(unknown)} (see omgm fetch --list)")
            chosen = [self.artifacts[n] for n in only]
        else:
            wanted = set(rows or self.rows(dataset))
            bad = wanted - set(self.rows(dataset)) - {"train"}
            if bad:
                raise RegistryError(f"--rows: {dataset} has no row {', '.join(sorted(bad))} "
                                    f"(rows: {', '.join(self.rows(dataset))}, train)")
            chosen = [a for a in self.artifacts.values() if dataset in a.datasets and wanted & set(a.rows)]
        return _ordered(chosen, self.artifacts)


def _ordered(chosen: list[Artifact], every: dict[str, Artifact]) -> list[Artifact]:
    names = {a.name for a in chosen}
    out: list[Artifact] = []

    def visit(a: Artifact, seen: tuple[str, ...]) -> None:
        if a in out:
            return
        if a.name in seen:
            raise RegistryError(f"artifact {a.name}: circular 'after'/'derived' dependencies")
        deps = list(a.after) + ([a.source["derived"]] if "derived" in a.source else [])
        for d in deps:
            if d in names:
                visit(every[d], seen + (a.name,))
        out.append(a)

    for a in chosen:
        visit(a, ())
    return out


def load_registry(path: str | Path | None = None) -> Registry:
    p = Path(path) if path else DEFAULT_REGISTRY
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"registry {p}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("artifacts"), list):
        raise RegistryError(f"registry {p}: expected version: 1, datasets and an artifacts list")
    artifacts: dict[str, Artifact] = {}
    for i, raw in enumerate(data["artifacts"]):
        try:
            a = Artifact(name=raw["name"], dest=raw["dest"], source=dict(raw["source"]),
                         datasets=tuple(raw["datasets"]), rows=tuple(raw["rows"]), unpack=raw.get("unpack", "none"),
                         kind=raw.get("kind", "file"), subset=dict(raw.get("subset") or {}), size=raw.get("size"),
                         provides=raw.get("provides"), after=tuple(raw.get("after") or ()))
        except (KeyError, TypeError) as exc:
            raise RegistryError(f"registry {p}: artifact #{i + 1} lacks or mistypes {exc}") from None
        if not any(k in a.source for k in SOURCE_KINDS) or a.unpack not in ("zip", "tar", "auto", "none"):
            raise RegistryError(f"registry {p}: artifact {a.name}: unknown source or unpack kind")
        if a.name in artifacts:
            raise RegistryError(f"registry {p}: artifact {a.name} is listed twice")
        artifacts[a.name] = a
    return Registry(datasets=dict(data.get("datasets") or {}), artifacts=artifacts, path=p)
