import json
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from omgm.data import kb_import
from omgm.data.kb import JsonKnowledgeBase, KnowledgeBaseError, SqliteKnowledgeBase, UnknownEntityError, UrlOrderHash, open_kb
from omgm.data.kb_import import run_import
from utils.synthetic_kb import write_synthetic_kb


def test_import_round_trips_entities_in_order(tmp_path: Path, demo_dir: Path):
    store = run_import(demo_dir / "kb.json", tmp_path / "kb.sqlite", progress=False, commit_every=7)
    js, sq = JsonKnowledgeBase(demo_dir / "kb.json"), open_kb(store)
    assert isinstance(sq, SqliteKnowledgeBase) and len(sq) == len(js) == 40
    assert list(sq.urls()) == list(json.loads((demo_dir / "kb.json").read_text()))
    assert [e for e in sq.entities()] == [e for e in js.entities()]
    assert sq.url_order_hash() == js.url_order_hash() == UrlOrderHash.of(js.urls())
    assert sq.url_title_at(3) == js.url_title_at(3) == (js.url_at(3), js.at(3).title)
    assert not (tmp_path / "kb.sqlite.partial").exists()


def test_sections_skip_references_and_external_links(demo_dir: Path):
    ent = JsonKnowledgeBase(demo_dir / "kb.json").at(0)
    titles = [s.title for s in ent.sections()]
    assert "References" in ent.section_titles and "References" not in titles
    assert "External links" not in titles and titles[0] == ent.title
    assert [s.index for s in ent.sections()] == list(range(len(titles)))   # kept sections keep their ids
    assert len(ent.sections(skip_references=False)) == len(ent.section_titles)


def test_unknown_entity_names_url_and_kb(demo_dir: Path):
    kb = JsonKnowledgeBase(demo_dir / "kb.json")
    assert "https://nope" not in kb
    with pytest.raises(UnknownEntityError, match="'https://nope' is not in the knowledge base .*kb.json"):
        kb.get("https://nope")


def _dup_kb(tmp_path: Path) -> Path:
    f = tmp_path / "dup.json"
    ent = {"title": "A", "section_titles": ["A"], "section_texts": ["x"]}
    f.write_text("{" + ",".join(f'"{u}": {json.dumps(ent)}' for u in ["u0", "u1", "u2", "u1"]) + "}")
    return f


def test_duplicate_url_is_an_error_in_both_backends(tmp_path: Path):
    f = _dup_kb(tmp_path)
    with pytest.raises(KnowledgeBaseError, match="duplicate URL 'u1' at rows 1 and 3"):
        JsonKnowledgeBase(f)
    with pytest.raises(KnowledgeBaseError, match="duplicate URL 'u1' at rows 1 and 3"):
        run_import(f, tmp_path / "dup.sqlite", progress=False, commit_every=1)
    with pytest.raises(KnowledgeBaseError, match="duplicate URL 'u1' at rows 1 and 3"):
        run_import(f, tmp_path / "dup2.sqlite", progress=False, overwrite=True)   # within one batch


def test_malformed_entity_names_row(tmp_path: Path):
    f = tmp_path / "bad.json"
    f.write_text('{"u0": {"title": "A", "section_titles": ["A", "B"], "section_texts": ["x"]}}')
    with pytest.raises(KnowledgeBaseError, match=r"entity 'u0' \(row 0\) has 2 section titles but 1"):
        JsonKnowledgeBase(f).at(0)
    f.write_text('{"u0": [1, 2]}')
    with pytest.raises(KnowledgeBaseError, match=r"'u0' \(row 0\) is a list"):
        run_import(f, tmp_path / "bad.sqlite", progress=False)


def test_killed_import_resumes_to_the_same_store(tmp_path: Path, monkeypatch):
    src = write_synthetic_kb(tmp_path / "kb.json", 500, sections=2, words=5)
    real, calls = kb_import._insert_batch, {"n": 0}

    def crash_after_three(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(kb_import, "_insert_batch", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_import(src, tmp_path / "kb.sqlite", progress=False, commit_every=50)
    assert not (tmp_path / "kb.sqlite").exists()
    con = sqlite3.connect(tmp_path / "kb.sqlite.partial")
    assert con.execute("SELECT COUNT(*) FROM entities").fetchone()[0] == 150     # three batches committed
    con.close()
    monkeypatch.setattr(kb_import, "_insert_batch", real)
    resumed = open_kb(run_import(src, tmp_path / "kb.sqlite", progress=False, commit_every=50))
    clean = open_kb(run_import(src, tmp_path / "clean.sqlite", progress=False))
    assert len(resumed) == 500 and list(resumed.urls()) == list(clean.urls())
    assert resumed.url_order_hash() == clean.url_order_hash()
    assert resumed.at(499) == clean.at(499)


def test_unfinished_or_foreign_store_is_refused(tmp_path: Path, demo_dir: Path):
    with pytest.raises(KnowledgeBaseError, match="not an omgm knowledge-base store"):
        (tmp_path / "x.sqlite").write_bytes(b"garbage" * 100)
        SqliteKnowledgeBase(tmp_path / "x.sqlite")
    run_import(demo_dir / "kb.json", tmp_path / "kb.sqlite", progress=False)
    with pytest.raises(KnowledgeBaseError, match="exists; pass --overwrite"):
        run_import(demo_dir / "kb.json", tmp_path / "kb.sqlite", progress=False)


def _peak_import_bytes(tmp_path: Path, n: int) -> tuple[int, int]:
    src = write_synthetic_kb(tmp_path / f"kb{n}.json", n, sections=5, words=60)
    tracemalloc.start()
    run_import(src, tmp_path / f"kb{n}.sqlite", progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(open_kb(tmp_path / f"kb{n}.sqlite")) == n
    return peak, src.stat().st_size


def test_import_memory_does_not_grow_with_the_json(tmp_path: Path):
    small_peak, small_size = _peak_import_bytes(tmp_path, 4_000)
    big_peak, big_size = _peak_import_bytes(tmp_path, 16_000)
    assert big_size > 35_000_000 and big_size > 3.9 * small_size
    assert big_peak < big_size / 3, f"peak {big_peak / 1e6:.1f} MB for a {big_size / 1e6:.1f} MB JSON"
    assert big_peak < 1.5 * small_peak, f"peak grew from {small_peak / 1e6:.1f} to {big_peak / 1e6:.1f} MB"


PEAK_SCRIPT = """
import sqlite3, sys, tracemalloc
from pathlib import Path
from omgm.data.kb_import import SCHEMA, import_wiki_images
con = sqlite3.connect(sys.argv[2])
con.executescript(SCHEMA)
tracemalloc.start()
import_wiki_images(con, Path(sys.argv[1]), max_per_title=50, progress=False)
con.commit()
print(tracemalloc.get_traced_memory()[1])
"""


def test_wiki_image_rows_are_deduplicated_capped_and_imported_in_flat_memory(tmp_path):
    import sqlite3
    import subprocess
    import sys

    def peak_for(rows: int) -> tuple[int, sqlite3.Connection]:
        folder = tmp_path / f"csv{rows}"
        folder.mkdir()
        with (folder / "wiki_image_url_part_1_processed.csv").open("w") as fh:
            fh.write("title,image_URL,img_path,caption\n")
            for i in range(rows):
                fh.write(f"Title {i % (rows // 4)},http://x/{i}.jpg,full/{i % (rows // 2)}.jpg,\n")
        db = tmp_path / f"kb{rows}.sqlite"                          # a fresh process: nothing of the suite's state
        proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder), str(db)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1]), sqlite3.connect(db)

    small, _ = peak_for(60_000)                                  # both above the 50,000-row insert batch
    large, con = peak_for(240_000)
    assert large < small * 1.2, (small, large)                   # was a set and a dict of every row: x2.7 here
    rows = con.execute("SELECT title, ord, img_path FROM wiki_images WHERE title = 'Title 7' ORDER BY ord").fetchall()
    assert [r[2] for r in rows] == ["full/7.jpg", "full/60007.jpg"] and [r[1] for r in rows] == [0, 1]
    assert con.execute("SELECT COUNT(*) FROM wiki_images").fetchone()[0] == 120_000         # duplicates dropped


def test_wiki_images_per_title_are_capped(tmp_path):
    import sqlite3

    from omgm.data.kb_import import SCHEMA, import_wiki_images

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "wiki_image_url_part_1_processed.csv").write_text(
        "title,image_URL,img_path,caption\n" + "".join(f"T,http://x/{i}.jpg,full/{i}.jpg,\n" for i in range(9)))
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA)
    import_wiki_images(con, tmp_path / "c", max_per_title=5, progress=False)
    assert con.execute("SELECT ord, img_path FROM wiki_images ORDER BY ord").fetchall() == \
        [(i, f"full/{i}.jpg") for i in range(5)]


WRITTEN_SCRIPT = """
import sys
from pathlib import Path
from omgm.data.kb_import import run_import
run_import(Path(sys.argv[1]), Path(sys.argv[2]), progress=False, commit_every=500)
io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
print(io["write_bytes"])
"""


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_import_writes_about_the_store_once(tmp_path: Path):
    """A bulk import writes ~1x its store (bytes sent to storage): under WAL each page went to the log and then to
    the store, 2.0x (issue: the real sizes on one box; the bound is 1.3x)."""
    import subprocess
    import sys

    src = write_synthetic_kb(tmp_path / "kb.json", 6_000, sections=5, words=60)
    out = tmp_path / "kb.sqlite"
    proc = subprocess.run([sys.executable, "-c", WRITTEN_SCRIPT, str(src), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written, store = int(proc.stdout.split()[-1]), out.stat().st_size
    if written == 0:
        pytest.skip("this file system does not account written bytes")
    assert written <= 1.3 * store, f"{written / store:.2f}x the store written"
    assert len(open_kb(out)) == 6_000
