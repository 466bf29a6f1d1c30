"""A local stand-in for every host the release lives on, served on 127.0.0.1 in each host's own manner.

- **Plain hosts** (storage.googleapis.com, S3, Wikimedia): ``/<host>/<path>`` with ``Range`` support.
- **Google Drive**: ``/drive.google.com/uc?export=download&id=ID`` redirects (303) to
  ``/drive.usercontent.google.com/download?id=ID&export=download``, which serves a small file at once and a large one
  only after the virus-scan warning page (a ``download-form`` with ``confirm`` and ``uuid`` inputs), as Drive does.
  The ``quota`` fault answers with Drive's "too many users" page instead.
- **Dropbox**: a share link ``/www.dropbox.com/scl/fi/...?...&dl=1`` redirects (302) to
  ``/dl.dropboxusercontent.com/...``, where the file is.
- **The Hugging Face hub** (``HF_ENDPOINT``): ``/api/models/REPO/revision/REV``, ``/api/models/REPO/tree/REV``
  and ``/REPO/resolve/REV/FILE`` (HEAD and GET with ``X-Repo-Commit`` / ``ETag``), for repositories served
  from a folder each.

``Release`` holds what is served and records what was asked (``seen``, by path); ``faults`` maps a path to faults
applied one per request: ``404``, ``429``, ``truncate``, ``slow``, ``quota`` (Drive only; a Drive file's faults can also be
keyed ``drive:ID``).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DRIVE_PAGE_ABOVE = 16 * 1024                 # Drive warns before serving files larger than this (it scans smaller)
QUOTA_PAGE = ('<html><body><p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>'
              '\n<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please '
              'try accessing the file again later.</p></body></html>')


@dataclass
class Release:
    """What the server serves: ``files`` by path (``/host/path``), ``drive`` by file id, ``hub`` repositories by id
    (a folder each), and the faults and requests it saw."""
    files: dict[str, bytes] = field(default_factory=dict)
    drive: dict[str, bytes] = field(default_factory=dict)
    hub: dict[str, Path] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    seen: Counter = field(default_factory=Counter)

    def fault(self, path: str) -> str | None:
        queue = self.faults.get(path)
        return queue.pop(0) if queue else None


def hub_commit(folder: Path) -> str:
    """A repository's commit id: the sha1 of its files' names and bytes (stable across runs)."""
    h = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _hub_files(folder: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())


class Handler(BaseHTTPRequestHandler):
    release: Release

    def log_message(self, *args) -> None:              # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        self.release.seen[path] += 1
        fault = self.release.fault(path)
        if fault == "404":
            return self._send(404, b"Not Found")
        if fault == "429":
            return self._send(429, b"slow down", headers={"Retry-After": "0"})
        if path == "/drive.google.com/uc":
            fid = query.get("id", [""])[0]
            return self._send(303, b"", headers={"Location": f"/drive.usercontent.google.com/download?id={fid}"
                                                               f"&export=download"})
        if path == "/drive.usercontent.google.com/download":
            return self._drive(query, fault, head)
        if path.startswith("/www.dropbox.com/") and query.get("dl") == ["1"]:
            return self._send(302, b"", headers={"Location": "/dl.dropboxusercontent.com/" + path.split("/", 2)[2]})
        if path.startswith("/api/models/"):
            return self._hub_api(path[len("/api/models/"):], head)
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if m and m.group(1) in self.release.hub:
            return self._hub_file(*m.groups(), head=head)
        data = self.release.files.get(path)
        if data is None:
            return self._send(404, b"Not Found")
        self._body(data, fault, head)

    def _drive(self, query: dict, fault: str | None, head: bool) -> None:
        fid = query.get("id", [""])[0]
        fault = fault or self.release.fault(f"drive:{fid}")
        if fault == "404":
            return self._send(404, b"Not Found")
        if fault == "quota":
            return self._send(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
        data = self.release.drive.get(fid)
        if data is None:
            return self._send(404, b"Not Found")
        if len(data) > DRIVE_PAGE_ABOVE and "confirm" not in query:
            page = ('<html><body><p>Google Drive can\'t scan this file for viruses.</p>\n<form id="download-form" '
                    'action="/drive.usercontent.google.com/download" method="get">'
                    f'<input type="hidden" name="id" value="{fid}"><input type="hidden" name="export" value="download">'
                    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0000">'
                    '</form></body></html>')
            base = f"http://{self.headers.get('Host')}"
            return self._send(200, page.replace('action="/', f'action="{base}/').encode(), "text/html; charset=utf-8")
        self._body(data, fault, head, {"Content-Disposition": f'attachment; filename="{fid}"'})

    def _hub_api(self, rest: str, head: bool) -> None:
        m = re.fullmatch(r"(.+?)/(revision|tree)/([^/]+)(?:/(.*))?", rest)
        if not m or m.group(1) not in self.release.hub:
            return self._send(404, json.dumps({"error": "Repository not found"}).encode(), "application/json",
                              {"X-Error-Code": "RepoNotFound"})
        repo, what, _rev, sub = m.groups()
        folder = self.release.hub[repo]
        files = _hub_files(folder)
        if what == "revision":
            body = {"id": repo, "modelId": repo, "sha": hub_commit(folder), "private": False,
                    "siblings": [{"rfilename": name} for name, _ in files]}
        else:
            body = [{"type": "file", "path": name, "size": p.stat().st_size,
                     "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                    for name, p in files if not sub or name.startswith(sub.rstrip("/") + "/")]
        self._send(200, json.dumps(body).encode(), "application/json", head=head)

    def _hub_file(self, repo: str, rev: str, name: str, head: bool) -> None:
        p = self.release.hub[repo] / name
        if not p.is_file():
            return self._send(404, b"Entry not found", headers={"X-Error-Code": "EntryNotFound"})
        data = p.read_bytes()
        self._body(data, None, head, {"X-Repo-Commit": hub_commit(self.release.hub[repo]),
                                      "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    def _body(self, data: bytes, fault: str | None, head: bool, headers: dict | None = None) -> None:
        start, rng = 0, self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if fault == "slow":                            # half, a pause, the rest: a download in progress
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(1.5)
            return self.wfile.write(body[len(body) // 2:])
        self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain", headers: dict | None = None,
              head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tarred(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """``with Server(release) as base:`` serves ``release`` on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, release: Release) -> None:
        self.release = release
        handler = type("ReleaseHandler", (Handler,), {"release": release})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def env(self) -> dict[str, str]:
        """What points omgm (Drive ids) and huggingface_hub (hub ids) at this server (online, whatever the caller's
        ``HF_HUB_OFFLINE``)."""
        return {"OMGM_GDRIVE_BASE": f"{self.base}/drive.google.com/uc", "HF_ENDPOINT": self.base, "HF_HUB_OFFLINE": "0"}

    @staticmethod
    def path(real: str) -> str:
        """Where this server serves a real URL's file: ``https://host/path?q`` -> ``/host/path``."""
        return "/" + real.split("://", 1)[1].split("?", 1)[0]

    def url(self, real: str) -> str:
        """A real https URL as this server serves it: ``https://host/path?q`` -> ``BASE/host/path?q``."""
        return f"{self.base}/{real.split('://', 1)[1]}"

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.base

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
