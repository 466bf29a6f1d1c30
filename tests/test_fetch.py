"""omgm fetch against a tiny release served on 127.0.0.1 in the real layouts, with the faults a user meets."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from omgm.fetch import cli as fetch_cli
from omgm.fetch.download import HttpOptions
from omgm.fetch.fetcher import Fetcher
from omgm.fetch.lock import FetchError
from omgm.fetch.registry import load_registry
from utils.rehearsal import server as rehearsal
from utils.rehearsal.server import Handler, tarred, zipped

BIG = bytes(range(256)) * 4096                                     # 1 MiB "index"
KB = {"https://en.wikipedia.org/wiki/A": {"title": "A", "url": "https://en.wikipedia.org/wiki/A",
                                          "section_titles": ["A"], "section_texts": ["a text"]}}


@dataclass
class Release(rehearsal.Release):
    """What the server serves and what it saw (the rehearsal's), and the ranges it was asked for."""
    ranges: list[str] = field(default_factory=list)


def _handler(release: Release):
    class H(Handler):
        """The rehearsal server's manner of answering (ranges, faults), over this test's own short paths."""

        def _route(self, head: bool) -> None:
            path = self.path.split("?")[0]
            release.seen[path] += 1
            fault = release.fault(path)
            if path in ("/uc", "/drive/LOOP"):          # Drive: a confirmation page in front of the file
                fid = self.path.split("id=")[1] if path == "/uc" else "LOOP"
                page = (f'<html><form id="download-form" action="http://127.0.0.1:{self.server.server_port}'
                        f'/drive/{fid}" method="get"><input type="hidden" name="confirm" value="t"></form></html>')
                return self._send(200, page.encode(), "text/html; charset=utf-8")
            if path.startswith("/dropbox/") and "dl=1" in self.path:   # a share link: a redirect to the content
                return self._send(302, b"", headers={"Location": "/content/" + path.split("/", 2)[2]})
            if fault == "429":
                return self._send(429, b"slow down", headers={"Retry-After": "0"})
            data = release.files.get(path)
            if data is None:
                return self._send(404, b"not found")
            if self.headers.get("Range"):
                release.ranges.append(self.headers["Range"])
            self._body(data, fault, head, {"Content-Disposition": 'attachment; filename="f"'}
                       if path.startswith("/drive/") else None)
    return H


@pytest.fixture()
def server(monkeypatch):
    release = Release()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(release))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    monkeypatch.setenv("OMGM_GDRIVE_BASE", f"{base}/uc")
    yield base, release
    httpd.shutdown()


def _registry(tmp_path: Path, base: str) -> Path:
    csv = "question,answer,dataset_image_ids,dataset_name,question_type,wikipedia_url\n" + "".join(
        f"q{i},a,{i},inaturalist,automatic,https://en.wikipedia.org/wiki/A\n" for i in (1, 2))
    reg = {"version": 1,
           "datasets": {"mini": {"split": "mini/test.csv", "rows": {"retrieval": {"label": "x", "paper": None}},
                                 "settings": {"inat_dir": "mini/images"}}},
           "artifacts": [
               {"name": "split", "datasets": ["mini"], "rows": ["retrieval"], "dest": "mini/test.csv",
                "source": {"url": f"{base}/test.csv"}},
               {"name": "kb", "datasets": ["mini"], "rows": ["retrieval"], "dest": "mini", "unpack": "zip",
                "provides": "mini/kb.json", "source": {"url": f"{base}/kb.zip"}},
               {"name": "index", "datasets": ["mini"], "rows": ["retrieval"], "dest": "mini/summary.index",
                "source": {"gdrive": "BIGFILE"}},
               {"name": "id2name", "datasets": ["mini"], "rows": ["retrieval"], "dest": "mini/id2name.json",
                "source": {"url": f"{base}/id2name.json"}},
               {"name": "images", "datasets": ["mini"], "rows": ["retrieval"], "dest": "mini/images", "kind": "subset",
                "subset": {"from": "tar", "dataset_name": "inaturalist", "id2name": "mini/id2name.json"},
                "source": {"url": f"{base}/val.tar.gz"}},
               {"name": "hubmodel", "datasets": ["mini"], "rows": ["retrieval"], "dest": "models/hub_cache",
                "source": {"hub": "org/model"}}]}
    p = tmp_path / "registry.yaml"
    p.write_text(json.dumps(reg))                       # JSON is YAML
    return p, csv


def _serve_release(release: Release, csv: str) -> None:
    release.files.update({
        "/test.csv": csv.encode(), "/kb.zip": zipped({"kb.json": json.dumps(KB).encode()}), "/drive/BIGFILE": BIG,
        "/id2name.json": json.dumps({"1": "val/x/one.jpg", "2": "val/y/two.jpg", "3": "val/z/three.jpg"}).encode(),
        "/val.tar.gz": tarred({"val/x/one.jpg": b"one", "val/y/two.jpg": b"two", "val/z/three.jpg": b"three",
                             "val/w/other.jpg": b"other"})})


@pytest.fixture()
def hub_calls(monkeypatch):
    calls = []

    def fake_snapshot(repo_id, cache_dir, allow_patterns=None, revision=None):  # the huggingface_hub boundary
        calls.append(repo_id)
        snap = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "abc"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        return str(snap)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    return calls


def _fetch(reg: Path, root: Path, *extra: str) -> int:
    return fetch_cli.main(["mini", "--root", str(root), "--registry", str(reg), "--no_progress", *extra])


def test_a_release_is_fetched_verified_unpacked_and_subset(server, tmp_path, hub_calls, capsys):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    assert _fetch(reg, root) == 0
    out = capsys.readouterr().out
    assert json.loads((root / "mini" / "kb.json").read_text()) == KB and (root / "mini/summary.index").read_bytes() == BIG
    assert sorted(p.name for p in (root / "mini/images").iterdir()) == ["1.jpg", "2.jpg"]      # only what the split needs
    assert (root / "mini/images/2.jpg").read_bytes() == b"two" and "query images: 2 of 2 on disk" in out
    lock = json.loads((root / "omgm_fetch.lock.json").read_text())["files"]
    assert {"mini/test.csv", "mini/summary.index", ".downloads/kb"} <= set(lock) and hub_calls == ["org/model"]
    assert release.seen["/uc"] == 1 and release.seen["/drive/BIGFILE"] == 1                    # through the Drive page
    assert _fetch(reg, root) == 0 and release.seen["/drive/BIGFILE"] == 1 and hub_calls == ["org/model"]
    capsys.readouterr()
    assert _fetch(reg, root, "--list", "--verify") == 0
    listing = capsys.readouterr().out
    assert "verified" in listing and "index" in listing and "missing" not in listing


def test_a_killed_download_continues_and_gives_the_same_bytes(server, tmp_path):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    part = root / "mini" / "summary.index.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BIG[:300_000])                                 # what a killed run left
    f = Fetcher(load_registry(reg), root, "mini", http=HttpOptions(progress=False, backoff=0.01))
    f.fetch(f.registry.artifacts["index"])
    assert (root / "mini/summary.index").read_bytes() == BIG and release.ranges == ["bytes=300000-"]
    assert not part.exists()


def test_retries_on_429_and_truncated_bodies(server, tmp_path):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    release.faults = {"/test.csv": ["429"], "/drive/BIGFILE": ["truncate"]}
    f = Fetcher(load_registry(reg), tmp_path / "root", "mini", http=HttpOptions(progress=False, backoff=0.01))
    f.fetch(f.registry.artifacts["split"])
    assert (tmp_path / "root/mini/test.csv").read_text() == csv and release.seen["/test.csv"] == 2
    f.fetch(f.registry.artifacts["index"])
    assert (tmp_path / "root/mini/summary.index").read_bytes() == BIG and release.seen["/drive/BIGFILE"] == 2
    assert release.ranges == [f"bytes={len(BIG) // 2}-"]            # the truncated body was continued, not restarted


def test_a_file_that_changed_after_the_lock_is_refused(server, tmp_path, capsys):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    assert _fetch(reg, root, "--only", "index") == 0
    (root / "mini/summary.index").unlink()
    release.files["/drive/BIGFILE"] = BIG[::-1]
    assert _fetch(reg, root, "--only", "index") == 1
    err = capsys.readouterr().err
    assert "mini/summary.index: the downloaded file differs from the copy recorded" in err
    assert not (root / "mini/summary.index").exists() and (root / "mini/summary.index.rejected").exists()


def test_http_errors_full_disk_and_corrupt_archives_are_one_line_errors(server, tmp_path, monkeypatch, capsys):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    del release.files["/test.csv"]
    assert _fetch(reg, root, "--only", "split") == 1
    assert "test.csv: HTTP 404" in capsys.readouterr().err
    release.files["/kb.zip"] = b"PK\x03\x04 this is not a zip" * 10
    assert _fetch(reg, root, "--only", "kb") == 1
    err = capsys.readouterr().err
    assert "corrupt or unreadable zip archive" in err or "not an archive" in err
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10, 10, 1000))
    assert _fetch(reg, root, "--only", "index") == 1
    assert "GiB free: free some space" in capsys.readouterr().err and not (root / "mini/summary.index").exists()


def test_the_real_registry_lists_every_file_of_every_published_row(tmp_path, capsys):
    reg = load_registry()
    for dataset in ("evqa", "infoseek"):
        assert fetch_cli.main(["--list", dataset, "--root", str(tmp_path)]) == 0
        listing = capsys.readouterr().out
        for a in reg.select(dataset):
            assert a.name in listing and set(a.rows) & set(reg.rows(dataset))
        for row in reg.rows(dataset):          # every published row needs at least its split, index and reranker
            names = {a.name for a in reg.select(dataset, [row])}
            assert {"reranker", f"{dataset}-index", f"{dataset}-test-csv"} <= names
    assert fetch_cli.main(["nope", "--root", str(tmp_path)]) == 2


def test_a_drive_page_that_never_gives_the_file_is_one_line(server, tmp_path):
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    data = json.loads(reg.read_text())
    data["artifacts"][2]["source"] = {"gdrive": "LOOP"}
    reg.write_text(json.dumps(data))
    f = Fetcher(load_registry(reg), tmp_path / "root", "mini", http=HttpOptions(progress=False, backoff=0.01))
    with pytest.raises(FetchError, match="keeps answering with a web page"):
        f.fetch(f.registry.artifacts["index"])


@pytest.mark.parametrize("right", [True, False])
def test_a_published_md5_is_checked_while_the_tarball_streams(server, tmp_path, hub_calls, capsys, right):
    """iNat's README publishes the md5 of val.tar.gz: the stream is hashed as it is read (to its end, past the
    last wanted member); a tarball with another md5 leaves no image behind and says so in one line."""
    import hashlib

    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    data = json.loads(reg.read_text())
    md5 = hashlib.md5(release.files["/val.tar.gz"]).hexdigest() if right else "0" * 32
    next(a for a in data["artifacts"] if a["name"] == "images")["published"] = {"md5": md5}
    reg.write_text(json.dumps(data))
    root = tmp_path / "root"
    rc = _fetch(reg, root)
    captured = capsys.readouterr()
    if right:
        assert rc == 0 and "the tarball's md5 is the published one" in captured.out
        assert sorted(p.name for p in (root / "mini/images").iterdir()) == ["1.jpg", "2.jpg"]
    else:
        assert rc != 0 and f"is not the published {md5}" in captured.err
        assert not list((root / "mini/images").glob("*.jpg"))


def test_registry_sizes_and_published_checksums_are_checked(tmp_path):
    from omgm.fetch.registry import RegistryError, load_registry

    real = load_registry()
    kb = real.artifacts["evqa-kb"]
    assert kb.download_size == 4_900_000_000 and kb.unpacked_size > kb.download_size
    assert kb.disk_need == kb.download_size + kb.unpacked_size                 # the zip and the JSON side by side
    assert real.artifacts["inat-val-images"].published == {"md5": "f6f6e0e242e3d4c9569ba56400938afc"}
    reg, _ = _registry(tmp_path, "http://127.0.0.1:1")
    data = json.loads(reg.read_text())
    data["artifacts"][0]["published"] = {"md5": "0" * 32}                    # an md5 only fits a streamed tarball
    reg.write_text(json.dumps(data))
    with pytest.raises(RegistryError, match="published"):
        load_registry(reg)


def test_a_hub_download_refused_by_offline_mode_says_so(tmp_path, monkeypatch, capsys):
    """Found by the rehearsal: scripts export HF_HUB_OFFLINE=1 (right for reproduce), which stops a fetch's hub
    downloads; the error says which variable to unset."""
    import huggingface_hub
    from huggingface_hub import constants

    def offline(**_):
        raise huggingface_hub.errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reg = {"version": 1, "datasets": {"mini": {"split": "mini/t.csv", "rows": {"r": {}}}},
           "artifacts": [{"name": "m", "datasets": ["mini"], "rows": ["r"], "dest": "models/hub_cache",
                          "source": {"hub": "org/model"}}]}
    (tmp_path / "reg.yaml").write_text(json.dumps(reg))
    assert fetch_cli.main(["mini", "--root", str(tmp_path / "root"), "--registry", str(tmp_path / "reg.yaml"),
                           "--no_progress"]) == 1
    out = capsys.readouterr()
    assert "hub model org/model could not be downloaded" in out.out + out.err and "HF_HUB_OFFLINE is set" in out.out + out.err
