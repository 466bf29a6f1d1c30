"""The registry of released files (``registry.yaml``, data, not code): what each published row needs.

:func:`load_registry` reads it (or a user's own file with the same schema); :meth:`Registry.select` picks the
artifacts of a dataset's rows, in an order where every artifact comes after those it is built or derived from.
"""
from __future__ import annotations

import posixpath
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
    download_size: int | None = None            # bytes transferred, when known (before the first download)
    unpacked_size: int | None = None            # bytes on disk once unpacked (an archive: its contents), when known
    provides: str | None = None                 # a file the unpacked archive must contain
    after: tuple[str, ...] = ()
    mirrors: tuple[dict[str, Any], ...] = ()    # other sources of the same file, tried in order after ``source``
    published: dict[str, Any] = field(default_factory=dict)   # a checksum its publisher gives: {file, sha256} of a
    #   file (after unpacking), or {md5} of the stream itself (a tarball read as it downloads, never stored)

    @property
    def size(self) -> int | None:
        """What the download transfers (the HTTP size hint; what a listing shows)."""
        return self.download_size

    @property
    def disk_need(self) -> int | None:
        """Bytes it needs on disk while it is fetched: an archive and its contents side by side."""
        if self.unpacked_size is None:
            return self.download_size
        stored = self.download_size if self.kind == "file" and self.unpack != "none" else 0
        return self.unpacked_size + (stored or 0)

    @property
    def source_kind(self) -> str:
        return source_kind(self.source)

    @property
    def sources(self) -> tuple[dict[str, Any], ...]:
        """``source`` then the mirrors: where a download is tried, in order."""
        return (self.source, *self.mirrors)

    def describe_source(self) -> str:
        return describe(self.source) + (f" (+{len(self.mirrors)} mirror{'s' * (len(self.mirrors) > 1)})"
                                        if self.mirrors else "")


def source_kind(source: dict[str, Any]) -> str:
    return next(k for k in SOURCE_KINDS if k in source)


def describe(source: dict[str, Any]) -> str:
    """``kind:value`` of one source (what the lock records as the one that served)."""
    kind = source_kind(source)
    return f"{kind}:{source[kind]}" if kind != "manual" else "manual (see --list)"


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


def inside(value: object, what: str) -> str:
    """``value`` as a relative path that stays inside the folder it is relative to, or a one-line error naming
    ``what`` (a registry is input: a user may pass their own, so its paths are confined to --root and the
    repository)."""
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{what}: expected a relative path, got {value!r}")
    norm = posixpath.normpath(value.replace("\\", "/"))
    if value.startswith(("/", "\\", "~")) or (len(value) > 1 and value[1] == ":") or norm == "." \
            or norm == ".." or norm.startswith("../") or "\0" in value:
        raise RegistryError(f"{what}: {value!r} leaves its folder (paths must be relative and stay inside)")
    return norm


def _check_paths(p: Path, a: Artifact) -> None:
    where = f"registry {p}: artifact {a.name}"
    inside(a.dest, f"{where}: dest")
    if a.provides is not None:
        inside(a.provides, f"{where}: provides")
        if a.unpack != "none" and not posixpath.normpath(a.provides).startswith(posixpath.normpath(a.dest) + "/"):
            raise RegistryError(f"{where}: provides {a.provides!r} is not inside dest {a.dest!r}, where the archive "
                                f"unpacks: the file would never be found there")
    if "repo" in a.source:
        inside(a.source["repo"], f"{where}: source repo")
    if a.published.get("file") is not None:
        inside(a.published.get("file"), f"{where}: published file")
    for key in ("id2name", "csv"):
        if key in a.subset:
            inside(a.subset[key], f"{where}: subset {key}")


def _check_published(p: Path, a: Artifact) -> None:
    """``published``: ``{file, sha256}`` (64 hex digits) or, for a tarball streamed from a URL, ``{md5}`` (32)."""
    if not a.published:
        return
    pub, where = a.published, f"registry {p}: artifact {a.name}: published"

    def hexdigits(v, n: int) -> bool:
        return isinstance(v, str) and len(v) == n and all(c in "0123456789abcdef" for c in v.lower())

    if set(pub) == {"file", "sha256"} and hexdigits(pub["sha256"], 64):
        return
    if set(pub) == {"md5"} and hexdigits(pub["md5"], 32) and a.kind == "subset" and a.subset.get("from") == "tar":
        return
    raise RegistryError(f"{where} must be {{file, sha256 (64 hex digits)}}, or {{md5 (32 hex digits)}} for a tarball "
                        f"read as it streams (kind: subset, from: tar)")


def _check_dataset_paths(p: Path, datasets: dict, folders: set[str]) -> None:
    for name, ds in datasets.items():
        if not isinstance(ds, dict):
            raise RegistryError(f"registry {p}: dataset {name!r} is not a mapping")
        if "split" in ds:
            inside(ds["split"], f"registry {p}: dataset {name}: split")
        for key, value in (ds.get("settings") or {}).items():
            if isinstance(value, str) and value.split("/")[0] in folders:
                inside(value, f"registry {p}: dataset {name}: setting {key}")


def load_registry(path: str | Path | None = None) -> Registry:
    p = Path(path) if path else DEFAULT_REGISTRY
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RegistryError(f"registry {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("artifacts"), list) \
            or not isinstance(data.get("datasets") or {}, dict):
        raise RegistryError(f"registry {p}: expected version: 1, datasets and an artifacts list")
    datasets = dict(data.get("datasets") or {})
    folders = set(datasets) | set(SHARED_FOLDERS)
    _check_dataset_paths(p, datasets, folders)
    artifacts: dict[str, Artifact] = {}
    for i, raw in enumerate(data["artifacts"]):
        try:
            a = Artifact(name=str(raw["name"]), dest=raw["dest"], source=dict(raw["source"]),
                         datasets=tuple(raw["datasets"]), rows=tuple(raw["rows"]), unpack=raw.get("unpack", "none"),
                         kind=raw.get("kind", "file"), subset=dict(raw.get("subset") or {}),
                         download_size=raw.get("download_size"), unpacked_size=raw.get("unpacked_size"),
                         provides=raw.get("provides"), after=tuple(raw.get("after") or ()),
                         mirrors=tuple(dict(m) for m in raw.get("mirrors") or ()),
                         published=dict(raw.get("published") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"registry {p}: artifact #{i + 1} lacks or mistypes {exc}") from None
        if not any(k in a.source for k in SOURCE_KINDS) or a.unpack not in ("zip", "tar", "auto", "none"):
            raise RegistryError(f"registry {p}: artifact {a.name}: unknown source or unpack kind")
        if any(not any(k in m for k in ("url", "gdrive")) for m in a.mirrors):
            raise RegistryError(f"registry {p}: artifact {a.name}: a mirror must be a url or gdrive source")
        _check_published(p, a)
        for key in ("download_size", "unpacked_size"):
            v = getattr(a, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise RegistryError(f"registry {p}: artifact {a.name}: {key} must be a number of bytes, got {v!r}")
        _check_paths(p, a)
        if a.name in artifacts:
            raise RegistryError(f"registry {p}: artifact {a.name} is listed twice")
        artifacts[a.name] = a
    return Registry(datasets=datasets, artifacts=artifacts, path=p)
