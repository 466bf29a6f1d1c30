"""The download root is a database: one fetch at a time, paths confined, half-made entries made again, damaged
bookkeeping files one line (issue: nothing lost, round three)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from test_fetch import BIG, _fetch, _registry, _serve_release, server  # noqa: F401 - the fixture

from omgm.fetch import builders
from omgm.fetch import cli as fetch_cli
from omgm.fetch.lock import FetchError, Lock, RootLock
from omgm.fetch.registry import load_registry
from omgm.io import OutputLock
from omgm.reproduce import cli as reproduce_cli


def _one_line(err: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith("error:"), err


def test_two_fetches_on_one_root_leave_the_file_and_the_lock_right(server, tmp_path, capsys):  # noqa: F811
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    release.faults = {"/drive/BIGFILE": ["slow"]}
    root = tmp_path / "root"
    codes = {}

    def run(name, *extra):
        codes[name] = _fetch(reg, root, "--only", "index", *extra)

    first = threading.Thread(target=run, args=("a",))
    first.start()
    time.sleep(0.3)                                  # the first holds the root, in the middle of its download
    second = threading.Thread(target=run, args=("b", "--wait", "30"))
    second.start()
    first.join(60)
    second.join(60)
    assert codes == {"a": 0, "b": 0}
    assert (root / "mini/summary.index").read_bytes() == BIG
    entry = json.loads((root / "omgm_fetch.lock.json").read_text())["files"]["mini/summary.index"]
    assert entry["size"] == len(BIG) and release.seen["/drive/BIGFILE"] == 1      # the second found it done
    assert "already there" in capsys.readouterr().out


def test_a_second_fetch_that_does_not_wait_is_refused_in_one_line(server, tmp_path, capsys):  # noqa: F811
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    root.mkdir()
    with RootLock(root):
        assert _fetch(reg, root, "--only", "split") == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "in use by another omgm fetch (process" in err and "--wait" in err
    assert _fetch(reg, root, "--only", "split") == 0                   # released: the next one runs


def test_a_file_longer_than_announced_is_not_recorded(tmp_path):
    lock, f = Lock(tmp_path), tmp_path / "x.part"
    f.write_bytes(b"x" * 120)
    with pytest.raises(FetchError, match="120 bytes arrived where the source announced 100"):
        lock.check_and_record("x", f, "url:x", announced=100)
    assert lock.files == {} and not (tmp_path / "omgm_fetch.lock.json").exists()


@pytest.mark.parametrize("entry, message", [
    ({"dest": "../outside"}, "dest: '../outside' leaves its folder"),
    ({"dest": "/tmp/omgm_abs_dest"}, "dest: '/tmp/omgm_abs_dest' leaves its folder"),
    ({"source": {"repo": "../../../../etc/hostname"}}, "source repo: '../../../../etc/hostname' leaves"),
    ({"provides": "mini/../../x"}, "provides: 'mini/../../x' leaves"),
    # found by the rehearsal: hard-negatives unpacked into evqa/hard_negatives/ but promised evqa/hard_negatives.json
    ({"unpack": "auto", "provides": "mini/x.json"}, "provides 'mini/x.json' is not inside dest 'mini/x'"),
])
def test_registry_paths_that_leave_the_root_are_refused_at_load(tmp_path, entry, message, capsys):
    reg = {"version": 1, "datasets": {"mini": {"split": "mini/t.csv", "rows": {"r": {}}}},
           "artifacts": [{"name": "bad", "datasets": ["mini"], "rows": ["r"], "dest": "mini/x",
                          "source": {"url": "http://127.0.0.1:9/x"}, **entry}]}
    p = tmp_path / "reg.yaml"
    p.write_text(json.dumps(reg))
    assert fetch_cli.main(["mini", "--root", str(tmp_path / "root"), "--registry", str(p)]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "artifact bad" in err and message in err
    assert not (tmp_path / "outside").exists() and not Path("/tmp/omgm_abs_dest").exists()
    assert not (tmp_path / "root").exists()                           # refused before anything was made


def test_a_killed_builder_is_built_again(tmp_path, monkeypatch, capsys):
    calls = []

    def builder(target: Path, root: Path) -> None:                  # writes its first file, then is killed
        calls.append(1)
        target.write_text("first file")
        if len(calls) == 1:
            raise KeyboardInterrupt
        (target.parent / "second").write_text("done")

    monkeypatch.setitem(builders.BUILDERS, "twostep", builder)
    reg = {"version": 1, "datasets": {"mini": {"split": "mini/t.csv", "rows": {"r": {}}}},
           "artifacts": [{"name": "models", "datasets": ["mini"], "rows": ["r"], "dest": "mini/models/first",
                          "source": {"build": "twostep"}}]}
    p = tmp_path / "reg.yaml"
    p.write_text(json.dumps(reg))
    args = ["mini", "--root", str(tmp_path / "root"), "--registry", str(p), "--no_progress"]
    assert fetch_cli.main(args) == 130
    assert fetch_cli.main(args) == 0
    assert len(calls) == 2 and (tmp_path / "root/mini/models/second").read_text() == "done"
    assert fetch_cli.main(args) == 0 and len(calls) == 2                # done now: not built a third time
    assert "already there" in capsys.readouterr().out


@pytest.mark.parametrize("content", ['{"version": 1, "files": [1, 2]}', '{"version": 1, "files": {"a": {"size": 3}}}',
                                     '{"files": {}}', "{torn", '"a string"'])
def test_a_damaged_fetch_lock_is_one_line(server, tmp_path, content, capsys):  # noqa: F811
    base, release = server
    reg, csv = _registry(tmp_path, base)
    _serve_release(release, csv)
    root = tmp_path / "root"
    root.mkdir()
    (root / "omgm_fetch.lock.json").write_text(content)
    for extra in ((), ("--list",)):
        assert _fetch(reg, root, "--only", "split", *extra) == 2
        err = capsys.readouterr().err
        _one_line(err)
        assert "omgm_fetch.lock.json (the fetch lock) is damaged" in err and "delete it" in err


@pytest.mark.parametrize("content", ["[1, 2]", '{"pid": "abc", "host": "h"}', '{"pid": null, "host": "h"}', "{torn"])
def test_a_damaged_output_lock_is_one_line(tmp_path, content):
    target = tmp_path / "result.json"
    (tmp_path / "result.json.lock").write_text(content)
    with pytest.raises(Exception) as e:
        with OutputLock(target):
            pass
    assert type(e.value).__name__ == "BookkeepingError"
    assert "output lock" in str(e.value) and "delete the lock file" in str(e.value)


@pytest.mark.parametrize("value", ["nan", "0", "-5", "inf"])
def test_fetch_timeout_is_range_checked(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as e:
        fetch_cli.main(["demo", "--root", str(tmp_path), "--timeout", value])
    assert e.value.code == 2 and "--timeout" in capsys.readouterr().err


def test_roots_and_outputs_that_are_files_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert fetch_cli.main(["demo", "--root", str(a_file), "--no_progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert fetch_cli.main(["demo", "--root", str(a_file), "--list"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert reproduce_cli.main(["demo", "--root", str(tmp_path), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "--out" in err and "is a file, not a folder" in err


@pytest.mark.parametrize("content", ["[1, 2]", "{torn", '{"stages": {"step1": "not an object"}}'])
def test_a_damaged_reproduce_state_is_one_line(tmp_path, content, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "reproduce_state.json").write_text(content)
    assert reproduce_cli.main(["demo", "--root", str(tmp_path / "root"), "--out", str(out), "--rows",
                               "retrieval"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "reproduce_state.json (reproduce's record of finished stages) is damaged" in err


def test_the_shipped_registry_loads_with_its_paths_confined():
    reg = load_registry()
    assert reg.artifacts and all(not a.dest.startswith(("/", "..")) for a in reg.artifacts.values())


def _one_artifact_registry(tmp_path, artifact: dict, dataset_extra: dict | None = None) -> Path:
    reg = {"version": 1, "datasets": {"mini": {"split": "mini/t.csv", "rows": {"r": {}}, **(dataset_extra or {})}},
           "artifacts": [{"name": "it", "datasets": ["mini"], "rows": ["r"], **artifact}]}
    p = tmp_path / "reg.yaml"
    p.write_text(json.dumps(reg))
    return p


def test_a_failing_primary_source_falls_through_to_the_mirror(server, tmp_path, capsys):  # noqa: F811
    base, release = server
    release.files["/content/kb.json"] = b'{"a": 1}'                    # Drive has no such file: 404 after its page
    reg = _one_artifact_registry(tmp_path, {"dest": "mini/kb.json", "source": {"gdrive": "GONE"},
                                            "mirrors": [{"url": f"{base}/dropbox/kb.json?rlkey=x&dl=1"}]})
    root = tmp_path / "root"
    assert fetch_cli.main(["mini", "--root", str(root), "--registry", str(reg), "--no_progress"]) == 0
    assert (root / "mini/kb.json").read_bytes() == b'{"a": 1}'
    entry = json.loads((root / "omgm_fetch.lock.json").read_text())["files"]["mini/kb.json"]
    assert entry["source"] == f"url:{base}/dropbox/kb.json?rlkey=x&dl=1"            # the lock names who served
    assert release.seen["/drive/GONE"] == 1 and release.seen["/content/kb.json"] == 1
    del release.files["/content/kb.json"]
    (root / "mini/kb.json").unlink()
    assert fetch_cli.main(["mini", "--root", str(root), "--registry", str(reg), "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "every source failed" in err and "gdrive:GONE" in err and "dropbox" in err


@pytest.mark.parametrize("served", ["zip with a top folder", "zip without", "plain JSON"])
def test_a_kb_archive_lands_as_the_file_kb_import_reads(server, tmp_path, served):  # noqa: F811
    import io
    import zipfile

    from omgm.data import kb_import

    base, release = server
    kb = {"https://en.wikipedia.org/wiki/A": {"title": "A", "section_titles": ["A"], "section_texts": ["a"]}}
    data = json.dumps(kb).encode()
    if served != "plain JSON":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("infoseek_100k_wiki/wiki_100_dict_v4.json" if served == "zip with a top folder"
                        else "wiki_100_dict_v4.json", data)
        data = buf.getvalue()
    release.files["/kb"] = data
    reg = _one_artifact_registry(tmp_path, {"dest": "mini", "unpack": "auto", "provides": "mini/wiki_100_dict_v4.json",
                                            "source": {"url": f"{base}/kb"}})
    root = tmp_path / "root"
    args = ["mini", "--root", str(root), "--registry", str(reg), "--no_progress"]
    assert fetch_cli.main(args) == 0
    assert (root / "mini/wiki_100_dict_v4.json").is_file()
    assert kb_import.main(["--kb_json", str(root / "mini/wiki_100_dict_v4.json"), "--out", str(tmp_path / "kb.sqlite"),
                           "--no_progress"]) == 0
    assert fetch_cli.main(args) == 0 and release.seen["/kb"] == 1                 # done: not fetched again


def test_a_published_checksum_is_verified(server, tmp_path, capsys):  # noqa: F811
    import hashlib

    base, release = server
    release.files["/kb.json"] = b"the published bytes"
    good = hashlib.sha256(b"the published bytes").hexdigest()
    for sha, code in (("0" * 64, 1), (good, 0)):
        reg = _one_artifact_registry(tmp_path, {"dest": "mini", "unpack": "auto", "provides": "mini/kb.json",
                                                "published": {"file": "mini/kb.json", "sha256": sha},
                                                "source": {"url": f"{base}/kb.json"}})
        root = tmp_path / f"root{code}"
        assert fetch_cli.main(["mini", "--root", str(root), "--registry", str(reg), "--no_progress"]) == code
    assert "not the 0000000000000000... its publisher gives" in capsys.readouterr().err
    refused = json.loads((tmp_path / "root1" / "omgm_fetch.lock.json").read_text())["files"]
    assert "mini/kb.json" not in refused                          # a file that fails its checksum is never recorded
    lock = json.loads((tmp_path / "root0" / "omgm_fetch.lock.json").read_text())["files"]
    assert lock["mini/kb.json"]["sha256"] == good and lock["mini/kb.json"]["source"] == "published sha256 of it"


def test_an_archive_whose_file_fails_its_published_checksum_is_unpacked_again(server, tmp_path):  # noqa: F811
    import io
    import zipfile

    base, release = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("kb.json", b"changed bytes")
    release.files["/kb.zip"] = buf.getvalue()
    reg = _one_artifact_registry(tmp_path, {"dest": "mini", "unpack": "zip", "provides": "mini/kb.json",
                                            "published": {"file": "mini/kb.json", "sha256": "1" * 64},
                                            "source": {"url": f"{base}/kb.zip"}})
    args = ["mini", "--root", str(tmp_path / "root"), "--registry", str(reg), "--no_progress"]
    assert fetch_cli.main(args) == 1 and fetch_cli.main(args) == 1     # never "already there"


def test_fetch_list_infoseek_names_the_internvl_row_and_its_kb_file(tmp_path, capsys):
    assert fetch_cli.main(["--list", "infoseek", "--root", str(tmp_path), "--rows", "internvl"]) == 0
    listing = capsys.readouterr().out
    assert "hub-internvl2_5-8b" in listing and "hub-llava-v1.5-7b-tokenizer" in listing and "infoseek-kb" in listing
    reg = load_registry()
    assert reg.dataset("infoseek")["rows"]["internvl"]["paper"] == {"accuracy": 36.1}
    assert reg.settings("infoseek", tmp_path)["kb_json"] == str(tmp_path / reg.artifacts["infoseek-kb"].provides)
    assert all("val" in r["label"] for r in reg.dataset("infoseek")["rows"].values())           # the split is named
    assert all("test (single-hop)" in r["label"] for r in reg.dataset("evqa")["rows"].values())
