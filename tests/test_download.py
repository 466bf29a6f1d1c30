"""The wiki-image downloader against a real HTTP server on 127.0.0.1 that injects faults."""
import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from omgm.data.wiki_images import WikiImageError
from omgm.io import OutputLock
from omgm.prep import download_wiki_images as dl

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, format="JPEG")
    return buf.getvalue()


class FaultServer:
    """Each path has a script of behaviours, consumed one per request (the last one repeats)."""

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.requests: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                with server.lock:
                    server.requests.append((name, self.headers.get("User-Agent", ""), time.monotonic()))
                    script = server.scripts.get(name, ["404"])
                    what = script.pop(0) if len(script) > 1 else script[0]
                body = _jpeg((len(name) * 20 % 255, 80, 160))
                if what == "ok" or what == "slow":
                    if what == "slow":
                        time.sleep(1.5)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif what == "trunc":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) + 500))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                elif what == "drip":                       # every read succeeds, the body never ends in time
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for b in body[:12]:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.25)
                    self.close_connection = True
                elif what == "junk":
                    data = b"<html>not an image</html>"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif what == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(int(what))
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self, name: str) -> int:
        return sum(1 for n, _, _ in self.requests if n == name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _csvs(d: Path, port: int, names: list[str], extra_rows: list[str] = ()) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = [f"T {n},http://127.0.0.1:{port}/{n},full/wiki_image_split/wiki_entity_image_{i % 3}/{n},cap\n"
            for i, n in enumerate(names)]
    (d / "wiki_image_url_part_1_processed.csv").write_text("entity_title,image_URL,img_path,caption\n"
                                                            + "".join(rows[::2]) + "".join(extra_rows))
    (d / "wiki_image_url_part_2_processed.csv").write_text("entity_title,image_URL,img_path,caption\n" + "".join(rows[1::2]))
    return d


@pytest.fixture()
def server():
    scripts = {f"good{i}.jpg": ["ok"] for i in range(4)}
    scripts.update({"flaky.jpg": ["503", "503", "ok"], "limited.jpg": ["429", "ok"], "slowfirst.jpg": ["slow", "ok"],
                    "trunc.jpg": ["trunc"], "junk.jpg": ["junk"], "gone.jpg": ["404"]})
    s = FaultServer(scripts)
    yield s
    s.close()


def test_faults_are_retried_or_recorded_and_nothing_partial_remains(server, tmp_path):
    names = sorted(server.scripts)
    csv_dir = _csvs(tmp_path / "csv", server.port, names,
                    [f"T dead,http://127.0.0.1:{_closed_port()}/dead.jpg,full/wiki_image_split/x/dead.jpg,c\n"])
    opt = dl.Options(tmp_path / "img", workers=4, rate=100, timeout=0.7, retries=3, backoff=0.05,
                     user_agent="omgm-test/1 (me@example.org)")
    summary = dl.run(csv_dir, opt, progress=False)
    good = [n for n in names if n.startswith("good")] + ["flaky.jpg", "limited.jpg", "slowfirst.jpg"]
    for n in good:
        files = list((tmp_path / "img").rglob(n))
        assert len(files) == 1, n
        Image.open(files[0]).verify()
    fails = {json.loads(x)["img_path"].rsplit("/", 1)[1]: json.loads(x)
             for x in (tmp_path / "img/download_failures.jsonl").read_text().splitlines()}
    assert set(fails) == {"trunc.jpg", "junk.jpg", "gone.jpg", "dead.jpg"}
    assert fails["trunc.jpg"]["reason"] == "truncated body" and fails["trunc.jpg"]["attempts"] == 4
    assert fails["junk.jpg"]["reason"].startswith("not an image") and fails["junk.jpg"]["attempts"] == 1
    assert fails["gone.jpg"]["reason"] == "HTTP 404" and fails["gone.jpg"]["attempts"] == 1
    assert fails["dead.jpg"]["reason"].startswith("unreachable")
    assert summary["downloaded"] == 7 and summary["failed"] == 4
    assert not list((tmp_path / "img").rglob("*.part"))
    assert server.count("flaky.jpg") == 3 and server.count("slowfirst.jpg") == 2
    t = [ts for n, _, ts in server.requests if n == "limited.jpg"]
    assert t[1] - t[0] >= 0.9                                                   # Retry-After: 1 honoured
    assert {ua for _, ua, _ in server.requests} == {"omgm-test/1 (me@example.org)"}
    before = {n: server.count(n) for n in names}
    again = dl.run(csv_dir, opt, progress=False)                                # re-run: only failures again
    assert again["already_on_disk"] == 7 and again["planned"] == 4
    assert all(server.count(n) == before[n] for n in good)
    assert server.count("junk.jpg") == before["junk.jpg"] + 1


def test_killed_run_restarts_without_downloading_twice(tmp_path):
    names = [f"img{i}.jpg" for i in range(8)]
    srv = FaultServer({n: ["ok"] for n in names})
    try:
        csv_dir = _csvs(tmp_path / "csv", srv.port, names)
        out = tmp_path / "img"
        cmd = [sys.executable, "-m", "omgm.prep.download_wiki_images", "--csv_dir", str(csv_dir), "--out", str(out),
               "--workers", "1", "--rate", "4", "--no_progress"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while len([p for p in out.rglob("*.jpg")]) < 3 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        landed = len(list(out.rglob("*.jpg")))
        assert 3 <= landed < 8
        summary = dl.run(csv_dir, dl.Options(out, workers=2, rate=100, backoff=0.05), progress=False)
        assert summary["already_on_disk"] >= landed and summary["failed"] == 0
        assert len(list(out.rglob("*.jpg"))) == 8 and not list(out.rglob("*.part"))
        assert len(srv.requests) <= 8 + 1                    # at most the one in flight at the kill, twice
    finally:
        srv.close()


def test_disk_full_stops_cleanly(server, tmp_path, monkeypatch, capsys):
    csv_dir = _csvs(tmp_path / "csv", server.port, [f"good{i}.jpg" for i in range(4)])
    real = os.replace
    state = {"n": 0}

    def replace(src, dst):
        state["n"] += 1
        if state["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(dl.os, "replace", replace)
    rc = dl.main(["--csv_dir", str(csv_dir), "--out", str(tmp_path / "img"), "--workers", "1", "--rate", "100",
                  "--no_progress"])
    assert rc == 2 and "disk full while writing" in capsys.readouterr().err
    monkeypatch.setattr(dl.os, "replace", real)
    assert len(list((tmp_path / "img").rglob("*.jpg"))) == 2 and not list((tmp_path / "img").rglob("*.part"))


def test_subset_by_entities_and_bad_csv(server, tmp_path):
    csv_dir = _csvs(tmp_path / "csv", server.port, [f"good{i}.jpg" for i in range(4)])
    (tmp_path / "titles.txt").write_text("T good1.jpg\nT good3.jpg\n")
    s = dl.run(csv_dir, dl.Options(tmp_path / "img", rate=100), dl.only_titles(tmp_path / "titles.txt"), progress=False)
    assert s["downloaded"] == 2 and {p.name for p in (tmp_path / "img").rglob("*.jpg")} == {"good1.jpg", "good3.jpg"}
    assert dl.run(csv_dir, dl.Options(tmp_path / "img2", rate=100), limit=1, progress=False)["downloaded"] == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "wiki_image_url_part_1_processed.csv").write_text("title,url\nx,y\n")
    with pytest.raises(WikiImageError, match="wiki_image_url_part_1_processed.csv: the header .* fewer than the layout"):
        dl.plan(bad, tmp_path / "img")


def test_rows_that_would_write_outside_out_are_refused(server, tmp_path):
    csv_dir = _csvs(tmp_path / "csv", server.port, ["good0.jpg"])
    f = csv_dir / "wiki_image_url_part_1_processed.csv"
    url = f.read_text().splitlines()[1].split(",")[1]
    f.write_text(f.read_text() + f"T,{url},../../escape.jpg,c\nT,{url},/tmp/abs_escape.jpg,c\n")
    s = dl.run(csv_dir, dl.Options(tmp_path / "img", rate=100), progress=False)
    assert s["downloaded"] == 1 and s["malformed_csv_rows"] == 2
    assert "leaves the image folder" in s["malformed_examples"][0] and "line 3" in s["malformed_examples"][0]
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path.parent / "escape.jpg").exists()
    assert not Path("/tmp/abs_escape.jpg").exists()


def test_a_dripping_server_cannot_hold_a_worker_and_bombs_are_skipped(tmp_path, monkeypatch):
    srv = FaultServer({"drip.jpg": ["drip"], "bomb.jpg": ["ok"], "good.jpg": ["ok"]})
    try:
        csv_dir = _csvs(tmp_path / "csv", srv.port, ["drip.jpg", "bomb.jpg", "good.jpg"])
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)           # 16x12 = 192 pixels > 2 x 60: a "bomb"
        opt = dl.Options(tmp_path / "img", workers=3, rate=100, timeout=1.0, retries=0, backoff=0.05)
        t0 = time.monotonic()
        summary = dl.run(csv_dir, opt, progress=False)
        assert time.monotonic() - t0 < 2.5                             # the 12-byte drip takes 3 s per attempt
        reasons = summary["failure_reasons"]
        assert summary["failed"] == 3                                  # every 16x12 image is a bomb here
        assert reasons.get("timeout") == 1 and any("decompression bomb" in r for r in reasons)
    finally:
        srv.close()


def test_two_downloaders_on_one_folder(tmp_path, capsys):
    out = tmp_path / "img"
    out.mkdir()
    with OutputLock(out / "download_summary.json"):
        assert dl.main(["--csv_dir", str(tmp_path), "--out", str(out), "--no_progress"]) == 2
    assert "is being written by another job" in capsys.readouterr().err
