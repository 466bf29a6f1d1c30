"""Fetch the artifacts of a registry into ``--root``: each source kind, then the lock check, then unpacking.

One :class:`Fetcher` per run; :meth:`Fetcher.fetch` handles one artifact and returns a status line. Archives are
kept under ``ROOT/.downloads`` (verified against the lock) unless ``keep_archives`` is false, in which case they
are removed after a complete unpacking. Query-image subsets only fetch what the dataset's split references.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omgm.fetch.download import HttpOptions, copy_local, gdrive_url, http_download
from omgm.fetch.lock import FetchError, Lock, prepare_root
from omgm.fetch.registry import Artifact, Registry, describe, source_kind
from omgm.fetch.unpack import HashingReader, archive_kind, marker, read_marker, stream_tar_members, unpack
from omgm.io import write_json_atomic

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fetcher:
    registry: Registry
    root: Path
    dataset: str
    http: HttpOptions = field(default_factory=HttpOptions)
    keep_archives: bool = True
    create: bool = True                         # False for --list: look, do not make the root
    lock: Lock = field(init=False)

    def __post_init__(self) -> None:
        if self.create or self.root.exists():          # an existing root that is a file: one line
            prepare_root(self.root)
        self.lock = Lock(self.root)

    def target(self, a: Artifact) -> Path:
        return self.root / a.dest

    def done_marker(self, a: Artifact) -> Path:
        """Written last by a builder or a hub download: without it the entry is (re)made."""
        return self.root / ".omgm_done" / f"{a.name}.json"

    def is_done(self, a: Artifact) -> bool:
        t = self.target(a)
        if a.source_kind in ("hub", "build"):
            return self.done_marker(a).is_file() and t.exists()
        if a.unpack != "none":          # unpacked (its marker is written last), or an 'auto' file that was plain
            if t.is_dir() and read_marker(t, a.name) is not None:
                return True
            return self.done_marker(a).is_file() or (t.is_file() and not a.provides)
        return t.exists()

    def recorded(self, a: Artifact) -> dict | None:
        """The lock's entry of ``a``: its file, or its archive under ``.downloads``; None before a download."""
        return self.lock.files.get(a.dest) or self.lock.files.get(f".downloads/{a.name}")

    def query_images(self) -> dict | None:
        """The split's questions and the query images it references that are not on disk (None before the split
        is fetched)."""
        from omgm.data.samples import ImageDirs, read_samples, resolve_images

        split = self.root / self.registry.dataset(self.dataset)["split"]
        if not split.is_file():
            return None
        s = self.registry.settings(self.dataset, self.root)
        samples = read_samples(split)
        _, missing = resolve_images(samples, ImageDirs(**{k: s.get(k) for k in ("inat_dir", "gld_dir", "infoseek_dir")}))
        return {"questions": len(samples), "missing": missing}

    def _mark_done(self, a: Artifact, **facts) -> None:
        write_json_atomic(self.done_marker(a), {"artifact": a.name, "source": a.describe_source(), **facts})

    def fetch(self, a: Artifact) -> str:
        kind = a.source_kind
        if kind == "manual":
            return ("present" if self.target(a).exists() else "MANUAL") + f": {a.source['manual']}"
        if a.kind == "subset":
            return self._subset(a)
        if a.kind == "wiki_images":
            return self._wiki_images(a)
        if self.is_done(a):
            return "already there"
        if kind == "hub":
            return self._hub(a)
        if kind == "build":
            from omgm.fetch.builders import build

            build(a.source["build"], self.target(a), self.root)
            self.lock.check_and_record(a.dest, self.target(a), a.describe_source())
            self._mark_done(a)
            return "built (tiny RANDOM weights)"
        path = self._download(a)
        return self._place(a, path)

    def _download(self, a: Artifact) -> Path:
        """The file from the first of its sources that serves it whole and as recorded; each source has its own
        ``.part`` (one source's bytes are never continued from another), and the lock names the one that served."""
        archive = a.unpack != "none"
        final = (self.root / ".downloads" / a.name) if archive else self.target(a)
        if archive and final.exists():
            return final
        failures = []
        for i, source in enumerate(a.sources):
            part = final.with_name(final.name + (".part" if i == 0 else f".part-mirror{i}"))
            try:
                self._from_source(a, source, part, final)
            except FetchError as exc:
                failures.append(f"{describe(source)}: {exc}")
                if i + 1 < len(a.sources):
                    log.warning("%s: %s failed (%s); trying the next source", a.name, describe(source), exc)
                continue
            if final.exists() and final.is_dir():
                import shutil

                shutil.rmtree(final)
            part.replace(final)
            return final
        raise FetchError(failures[0] if len(failures) == 1 else
                         f"{a.name}: every source failed: " + " | ".join(failures))

    def _from_source(self, a: Artifact, source: dict, part: Path, final: Path) -> None:
        kind, announced = source_kind(source), None
        if kind == "repo":
            copy_local(REPO / source["repo"], part, inside=REPO)
        else:
            url = source["url"] if kind == "url" else gdrive_url(source["gdrive"])
            announced = http_download(url, part, gdrive=kind == "gdrive", opt=self.http, size_hint=a.size)
        try:
            self.lock.check_and_record(str(final.relative_to(self.root)), part, describe(source), announced=announced)
        except FetchError:
            part.replace(part.with_name(part.name.replace(".part", ".rejected")))
            raise

    def _place(self, a: Artifact, path: Path) -> str:
        if a.unpack == "none":
            return "downloaded and verified"
        kind = archive_kind(path) if a.unpack == "auto" else a.unpack
        if kind is None:                                  # 'auto' and a plain file: it is the file the readers want
            target = self.root / a.provides if a.provides else self.target(a)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            self._record_provided(a, "downloaded by")
            self._mark_done(a)
            return "downloaded and verified (not an archive)"
        placed = unpack(path, self.target(a), a.name, kind)
        try:
            if a.provides and not (self.root / a.provides).exists():
                raise FetchError(f"{a.name}: the archive did not contain {a.provides} (it holds {placed[:5]})")
            self._record_provided(a, "unpacked from")
        except FetchError:
            marker(self.target(a), a.name).unlink(missing_ok=True)     # not done: the next fetch unpacks again
            raise
        if not self.keep_archives:
            path.unlink()
        return f"downloaded, verified, unpacked ({len(placed)} entries)"

    def _record_provided(self, a: Artifact, how: str) -> None:
        """What the readers read goes into the lock too — the file an archive provides, or the folder it unpacked
        to (the tables then say "as fetched" of the KB JSON and of the wiki-image CSVs); a file whose publisher gives
        its sha256 must have it, and is recorded as verified."""
        if a.published.get("file"):
            rel = a.published["file"]
            self.lock.check_and_record(rel, self.root / rel, f"published sha256 of {a.name}",
                                       published=a.published["sha256"])
        rel = a.provides or a.dest
        if rel != a.published.get("file"):
            self.lock.check_and_record(rel, self.root / rel, f"{how} {a.name}")

    def _hub(self, a: Artifact) -> str:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(repo_id=a.source["hub"], cache_dir=str(self.target(a)),
                              allow_patterns=a.source.get("allow"), revision=a.source.get("revision"))
        except Exception as exc:  # noqa: BLE001 - the hub client raises many types; one line names the model
            from huggingface_hub import constants

            hint = (" (HF_HUB_OFFLINE is set in this environment: omgm fetch needs the hub; unset it for the fetch, "
                    "reproduce runs offline afterwards)" if constants.HF_HUB_OFFLINE else "")
            raise FetchError(f"{a.name}: hub model {a.source['hub']} could not be downloaded: "
                             f"{(str(exc).splitlines() or [type(exc).__name__])[0][:300]}{hint}") from None
        self._mark_done(a, revision=a.source.get("revision"))
        return "downloaded from the hub"

    def needed_images(self, dataset_name: str) -> list[str]:
        from omgm.data.samples import read_samples
        from omgm.data.wiki_images import plain_name

        split = self.root / self.registry.dataset(self.dataset)["split"]
        if not split.is_file():
            raise FetchError(f"{split}: the split is not fetched yet; it decides which query images are needed")
        ids = {s.image_id for s in read_samples(split) if s.dataset_name == dataset_name}
        unsafe = sorted(i for i in ids if not plain_name(i))
        if unsafe:
            log.warning("%s: %d image ids are not plain file names and are skipped: %s", split, len(unsafe), unsafe[:3])
        return sorted(ids - set(unsafe))

    def _subset(self, a: Artifact) -> str:
        dest = self.target(a)
        ids = [i for i in self.needed_images(a.subset["dataset_name"]) if not (dest / f"{i}.jpg").is_file()]
        if not ids:
            return "all needed images there"
        if a.subset["from"] == "tar":
            return self._tar_subset(a, ids, dest)
        return self._url_subset(a, ids, dest)

    def _tar_subset(self, a: Artifact, ids: list[str], dest: Path) -> str:
        import requests

        from omgm.prep.rename_inat import read_id2name

        id2name = read_id2name(self.root / a.subset["id2name"])
        wanted: dict[str, list[str]] = {}
        unknown = [i for i in ids if str(i) not in id2name]
        for i in ids:
            if str(i) in id2name:
                wanted.setdefault(id2name[str(i)], []).append(i)
        md5 = a.published.get("md5")
        with requests.get(a.source["url"], stream=True, timeout=self.http.timeout) as resp:
            if resp.status_code >= 400:
                raise FetchError(f"{a.source['url']}: HTTP {resp.status_code}")
            resp.raw.decode_content = True
            stream = HashingReader(resp.raw) if md5 else resp.raw
            written, unseen = stream_tar_members(stream, wanted, dest, read_to_end=bool(md5))
        missing = len(unknown) + sum(len(wanted[n]) for n in unseen)
        checked = ""
        if md5:
            if stream.hexdigest() != md5.lower():
                for ids in wanted.values():      # images of a tarball that is not the published one are not kept
                    for i in ids:
                        (dest / f"{i}.jpg").unlink(missing_ok=True)
                raise FetchError(f"{a.source['url']}: md5 {stream.hexdigest()} is not the published {md5} (a changed "
                                 f"or damaged file); its {written} images were removed")
            checked = f"; the tarball's md5 is the published one ({stream.count / 2**30:.1f} GiB read)"
        return f"{written} images written from the tarball; {missing} referenced images not found in it{checked}"

    def _url_subset(self, a: Artifact, ids: list[str], dest: Path) -> str:
        from omgm.prep.download_wiki_images import Options, run

        rows = {}
        with (self.root / a.subset["csv"]).open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows[r["id"]] = r["url"]
        tmp = self.root / ".downloads" / f"{a.name}_csv"
        tmp.mkdir(parents=True, exist_ok=True)
        with (tmp / "wiki_image_url_part_1_processed.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["entity_title", "image_URL", "img_path", "caption"])
            w.writerows([i, rows[i], f"{i}.jpg", ""] for i in ids if i in rows)
        summary = run(tmp, Options(dest, timeout=self.http.timeout, retries=self.http.retries),
                      progress=self.http.progress)
        unknown = sum(i not in rows for i in ids)
        return (f"{summary['downloaded']} images downloaded, {summary['failed']} failed, "
                f"{unknown} referenced ids not in {a.subset['csv']}")

    def _wiki_images(self, a: Artifact) -> str:
        from omgm.prep.download_wiki_images import Options, only_titles, run

        csv_dir = self.target(self.registry.artifacts[a.source["derived"]])
        needed = self.root / self.dataset / "wiki_entities.txt"
        titles = only_titles(needed) if needed.is_file() else None
        if titles is None:
            return (f"skipped: the images of which entities? `omgm reproduce` writes {needed} after step 1 "
                    f"(the candidates' titles); fetch again then, or download all with omgm data download-images")
        summary = run(csv_dir, Options(self.target(a), timeout=self.http.timeout, retries=self.http.retries),
                      titles, progress=self.http.progress)
        return f"{summary['downloaded']} wiki images downloaded, {summary['failed']} failed"
