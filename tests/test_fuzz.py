"""A fuzz pass over every kind of file the commands read: damaged variants of a valid file (truncated, a wrong type
at each key, nested 100,000 deep, NUL bytes, not UTF-8, huge values, wrong columns) go through the real command;
each must end in exit status 0, 1 or 2, never an uncaught exception, and a refusal is one ``error:`` line.

In the suite a small pass runs (a few variants per key); ``OMGM_FUZZ=full`` tries every variant and prints the
counts (the figure in the issue's note).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from omgm.commands import evaluate
from omgm.data import kb_import
from omgm.errors import cli_errors
from omgm.fetch import cli as fetch_cli
from omgm.parallel import _compare_or_write
from omgm.pipeline.rerank import RerankerSpec
from omgm.prep import check_data
from omgm.reproduce import cli as reproduce_cli
from omgm.rerank.negatives import read_negative_db
from omgm.train_state import check_run_settings

FULL = os.environ.get("OMGM_FUZZ") == "full"
WRONG: list[Any] = [None, -5, 1e308, "x", [], {}, True] if FULL else [None, "x", {}]
DEEP = "[" * 100_000 + "]" * 100_000


def _paths(obj: Any, prefix: tuple = (), depth: int = 4):
    """Every (path) into a JSON value, the first two items of each list only."""
    if depth == 0:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:2]) if isinstance(obj, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,), depth - 1)


def _replaced(obj: Any, path: tuple, value: Any) -> Any:
    out = json.loads(json.dumps(obj))
    target = out
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return out


def raw_variants(data: bytes) -> list[tuple[str, bytes]]:
    n = len(data)
    cuts = (0, 1, n // 4, n // 2, n - 1) if FULL else (1, n // 2)
    out = [(f"truncated at {c}", data[:c]) for c in cuts]
    mid = n // 2
    out += [("a NUL byte", data[:mid] + b"\0" + data[mid:]), ("not UTF-8", data[:mid] + b"\xff\xfe" + data[mid:]),
            ("empty", b""), ("nested 100000 deep", DEEP.encode())]
    return out


def json_variants(obj: Any) -> list[tuple[str, bytes]]:
    out = raw_variants(json.dumps(obj, indent=1).encode())
    paths = list(_paths(obj)) if FULL else list(_paths(obj, depth=2))[:12]
    for path in paths:
        for wrong in WRONG:
            out.append((f"{'/'.join(map(str, path))} = {json.dumps(wrong)}", json.dumps(_replaced(obj, path, wrong)).encode()))
        if FULL:
            out.append((f"{'/'.join(map(str, path))} = 1 MB string", json.dumps(_replaced(obj, path, "y" * (1 << 20))).encode()))
    out.append(("top level a list", json.dumps([obj]).encode()))
    return out


def csv_variants(text: str) -> list[tuple[str, bytes]]:
    lines = text.splitlines()
    out = raw_variants(text.encode())
    out += [("header only", (lines[0] + "\n").encode()),
            ("a row with one field", (text + "only-one-field\n").encode()),
            ("a row with 40 fields", (text + ",".join(["z"] * 40) + "\n").encode()),
            ("columns reversed", "\n".join(",".join(reversed(ln.split(","))) for ln in lines).encode()),
            ("a 1 MB field", (text + lines[-1].replace(",", "," + "w" * (1 << 20), 1) + "\n").encode())]
    return out


@dataclass
class Subject:
    name: str
    variants: Callable[[], list[tuple[str, bytes]]]
    run: Callable[[Path, Path], int]                # (damaged file, a fresh folder) -> exit status


def outcome(run: Callable[[], int], capsys) -> str | None:
    """None when the command ended as a user's command should; else what went wrong."""
    try:
        code = run()
    except SystemExit as exc:                       # argparse's own one-line errors
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - exactly what this test looks for
        return f"uncaught {type(exc).__name__}: {str(exc)[:150]}"
    err = capsys.readouterr().err
    if code not in (0, 1, 2):
        return f"exit status {code}"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    if code == 2 and len(errors) != 1:
        return f"exit 2 with {len(errors)} error lines: {err[-200:]!r}"
    return None


@pytest.fixture(scope="module")
def subjects(step2_env, demo_dir, tmp_path_factory) -> list[Subject]:
    env, d = step2_env, demo_dir
    base = tmp_path_factory.mktemp("fuzz_base")
    step1 = json.loads((env.dir / "test_step1.json").read_text())
    step1["results"] = dict(list(step1["results"].items())[:2])
    step2 = json.loads(json.dumps(step1))
    step2["stage"] = "step2"
    for e in step2["results"].values():
        e["sec_sim"] = [[0.5, 0.1] for _ in e["retrieved_entities"]]
    answers = [{"data_id": "E-VQA_0", "question": "q?", "gt_answer": "1263|1264", "prediction": "1263",
                "question_type": "automatic"}, {"data_id": "E-VQA_1", "question": "q?", "gt_answer": "a&&b",
                                                "prediction": "a and b", "question_type": "multi_answer"}]
    kb = dict(list(json.loads((d / "kb.json").read_text()).items())[:2])
    jsonl = {"url": "u1", "title": "One", "sections": [{"title": "One", "text": "x"}], "images": []}
    csv_text = "\n".join((d / "test.csv").read_text().splitlines()[:4]) + "\n"
    wiki_csv = "\n".join((d / "wiki_image_csv" / "wiki_image_url_part_1_processed.csv").read_text().splitlines()[:4]) + "\n"
    lock = {"format": "omgm.fetch_lock", "version": 1, "files": {"demo/kb.json": {"size": 3, "sha256": "ab" * 32,
                                                                                  "source": "repo:x"}}}
    registry = (Path(fetch_cli.__file__).with_name("registry.yaml")).read_text()
    small_kb = base / "kb.json"
    small_kb.write_text(json.dumps(kb))

    def evaluate_ranking(f, w):
        return evaluate.main([str(f), "--sample_file", str(d / "test.csv")])

    def kb_json(f, w):
        return kb_import.main(["--kb_json", str(f), "--out", str(w / "kb.sqlite"), "--no_progress"])

    def kb_jsonl(f, w):
        return kb_import.main(["--jsonl", str(f), "--out", str(w / "kb.sqlite"), "--no_progress"])

    def wiki_csvs(f, w):
        (w / "csv").mkdir()
        f.rename(w / "csv" / "wiki_image_url_part_1_processed.csv")
        return kb_import.main(["--kb_json", str(small_kb), "--wiki_img_csv_dir", str(w / "csv"), "--out",
                               str(w / "kb.sqlite"), "--no_progress"])

    def fetch_lock(f, w):
        f.rename(w / "omgm_fetch.lock.json")
        return fetch_cli.main(["demo", "--list", "--root", str(w)])

    def output_lock(f, w):
        f.rename(w / "kb.sqlite.lock")
        return kb_json(small_kb, w)

    def state(f, w):
        (w / "out").mkdir()
        f.rename(w / "out" / "reproduce_state.json")
        return reproduce_cli.main(["demo", "--root", str(w / "root"), "--out", str(w / "out"), "--rows", "retrieval"])

    val = [{"data_id": "q1", "answer_eval": ["Belluno"], "data_split": "val_unseen_question"},
           {"data_id": "q2", "answer_eval": [{"wikidata": 1.0, "range": [0.9, 1.1]}], "data_split": "val_unseen_entity"}]
    qtypes = [{"data_id": "q1", "question_type": "String"}, {"data_id": "q2", "question_type": "Numerical"}]
    preds = base / "preds.json"
    preds.write_text(json.dumps([{"data_id": "q1", "prediction": "belluno"}, {"data_id": "q2", "prediction": "1"}]))
    (base / "val.jsonl").write_text("\n".join(json.dumps(r) for r in val))
    (base / "qtype.jsonl").write_text("\n".join(json.dumps(r) for r in qtypes))

    def infoseek(f, w, which):
        files = {"val": base / "val.jsonl", "qtype": base / "qtype.jsonl", which: f}
        return evaluate.main([str(preds), "--dataset", "infoseek", "--infoseek_val", str(files["val"]),
                              "--infoseek_qtype", str(files["qtype"])])

    def as_lines(rows):                          # each variant of the list, written one object per line
        return lambda: [(n, b"\n".join(json.dumps(r).encode() for r in json.loads(v)) if v.startswith(b"[{") else v)
                        for n, v in json_variants(rows)]

    @cli_errors
    def reranker_sizes(f, w):
        RerankerSpec(reranker_model_name=str(f), tokenizer=str(env.tok_dir), device="cpu").load()
        return 0

    @cli_errors
    def negatives(f, w):
        read_negative_db(f)
        return 0

    @cli_errors
    def parts_manifest(f, w):
        (w / "parts").mkdir()
        f.rename(w / "parts" / "parts.json")
        _compare_or_write(w / "parts" / "parts.json", {"samples": "abc", "world_size": 1}, write=False)
        return 0

    @cli_errors
    def run_settings(f, w):
        check_run_settings(f, {"learning_rate": 1e-5, "seed": 0}, resuming=True)
        return 0

    tiny = json.loads(env.config.read_text())
    negative_db = json.loads((env.dir / "negatives.json").read_text())
    negative_db = dict(list(negative_db.items())[:2])
    return [
        Subject("InfoSeek references", as_lines(val), lambda f, w: infoseek(f, w, "val")),
        Subject("InfoSeek question types", as_lines(qtypes), lambda f, w: infoseek(f, w, "qtype")),
        Subject("reranker sizes (a checkpoint's JSON head)", lambda: json_variants(tiny), reranker_sizes),
        Subject("hard negatives", lambda: json_variants(negative_db), negatives),
        Subject("parts manifest", lambda: json_variants({"samples": "abc", "world_size": 1}), parts_manifest),
        Subject("training run settings", lambda: json_variants({"learning_rate": 1e-5, "seed": 0}), run_settings),
        Subject("step-1 result", lambda: json_variants(step1), evaluate_ranking),
        Subject("step-2 result", lambda: json_variants(step2), evaluate_ranking),
        Subject("answers", lambda: json_variants(answers),
                lambda f, w: evaluate.main([str(f), "--dataset", "evqa"])),
        Subject("KB JSON", lambda: json_variants(kb), kb_json),
        Subject("KB JSONL", lambda: [(n, v.replace(b"\n", b" ") + b"\n") for n, v in json_variants(jsonl)], kb_jsonl),
        Subject("samples CSV", lambda: csv_variants(csv_text),
                lambda f, w: check_data.main(["--splits", str(f), "--knowledge_base", str(small_kb)])),
        Subject("wiki-image CSV", lambda: csv_variants(wiki_csv), wiki_csvs),
        Subject("fetch lock", lambda: json_variants(lock), fetch_lock),
        Subject("output lock", lambda: json_variants({"pid": 1, "host": "elsewhere"}), output_lock),
        Subject("reproduce state", lambda: json_variants({"step1": {"command": "omgm step1"}}), state),
        Subject("registry YAML", lambda: raw_variants(registry.encode()) + [("a list", b"- 1\n- 2\n")],
                lambda f, w: fetch_cli.main(["demo", "--list", "--root", str(w), "--registry", str(f)])),
    ]


def test_damaged_files_never_end_in_a_traceback(subjects, tmp_path, capsys):
    tried, failures = 0, []
    for s in subjects:
        for i, (what, data) in enumerate(s.variants()):
            w = tmp_path / f"{s.name.replace(' ', '_')}_{i}"
            w.mkdir()
            f = w / "input"
            f.write_bytes(data)
            tried += 1
            problem = outcome(lambda: s.run(f, w), capsys)
            if problem:
                failures.append(f"{s.name} [{what}]: {problem}")
    print(f"fuzz: {tried} damaged variants of {len(subjects)} file kinds, {len(failures)} not handled")
    assert not failures, "\n".join(failures[:40] if not FULL else failures)
