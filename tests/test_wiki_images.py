from pathlib import Path

import pytest

from omgm.data.kb import open_kb
from omgm.data.kb_import import run_import
from omgm.data.wiki_images import WikiImageError, WikiImages, csv_files

HEAD = "entity_title,image_URL,img_path,caption\n"


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    root, csvd = tmp_path / "img", tmp_path / "csv"
    csvd.mkdir()
    rows = [f"Big,u,full/p{i}.jpg,c\n" for i in range(14)]          # 14 listed, 12 exist
    rows.insert(3, "Big,u,full/p1.jpg,dup\n")                        # duplicate path
    rows.insert(5, "only,two\n")                                     # malformed: counted, skipped
    rows.append("Ghost,u,full/ghost.jpg,c\n")                        # listed, never downloaded
    (csvd / "wiki_image_url_part_10_processed.csv").write_text(HEAD + "Late,u,full/late.jpg,c\n")
    (csvd / "wiki_image_url_part_2_processed.csv").write_text(HEAD + "".join(rows) + "Late,u,full/early.jpg,c\n")
    (root / "full").mkdir(parents=True)
    for i in range(14):
        if i not in (0, 4):
            (root / f"full/p{i}.jpg").write_bytes(b"x")
    (root / "full/late.jpg").write_bytes(b"x")
    (root / "full/early.jpg").write_bytes(b"x")
    return root, csvd


def test_lookup_by_title_keeps_ten_existing_distinct_in_csv_order(tmp_path: Path):
    root, csvd = _setup(tmp_path)
    assert [p.name for p in csv_files(csvd)] == ["wiki_image_url_part_2_processed.csv",
                                                "wiki_image_url_part_10_processed.csv"]   # numeric order
    wi = WikiImages(root, csv_dir=csvd)
    got = wi.paths("Big")
    assert [p.name for p in got] == [f"p{i}.jpg" for i in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11)]
    assert wi.first("Big") == root / "full/p1.jpg"          # p0 listed first but missing on disk
    assert wi.first("Late") == root / "full/early.jpg"      # part 2 before part 10
    assert wi.first("Nobody") is None and not wi.known("Nobody") and wi.known("Big")
    assert wi.stats.malformed == 1 and "only" in wi.stats.examples[0]
    assert wi.locate("Big") == (root / "full/p1.jpg", "")
    assert wi.locate("Ghost") == (None, "wiki image file missing")
    assert wi.locate("Nobody") == (None, "title not in the wiki-image CSVs")


def test_store_backed_lookup_equals_csv_lookup(tmp_path: Path, demo_dir: Path):
    store = run_import(demo_dir / "kb.json", tmp_path / "kb.sqlite", demo_dir / "wiki_image_csv", progress=False)
    kb = open_kb(store)
    from_csv = WikiImages(demo_dir / "wiki_images", csv_dir=demo_dir / "wiki_image_csv")
    from_store = WikiImages(demo_dir / "wiki_images", store=kb.connection())
    titles = [e.title for e in kb.entities()]
    assert [from_csv.paths(t) for t in titles] == [from_store.paths(t) for t in titles]
    missing = [t for t in titles if from_csv.first(t) is None]
    assert len(missing) == 1            # the demo has one entity without any image


def test_no_csvs_is_a_clear_error(tmp_path: Path):
    with pytest.raises(WikiImageError, match="no files named wiki_image_url_part"):
        WikiImages(tmp_path, csv_dir=tmp_path)


def test_a_store_that_imported_the_csv_folder_is_used_without_reading_the_csvs(demo_dir, tmp_path, monkeypatch):
    """Step 2 / omgm ask start-up at 2M image rows: indexed lookups, not 13 CSVs read into memory."""
    import os
    import time

    from omgm.data import wiki_images as mod
    from omgm.data.kb import open_kb
    from omgm.data.kb_import import run_import

    csvs = tmp_path / "csv"
    csvs.mkdir()
    for f in (demo_dir / "wiki_image_csv").iterdir():
        (csvs / f.name).write_bytes(f.read_bytes())
    store = run_import(demo_dir / "kb.json", tmp_path / "kb.sqlite", csvs, progress=False)
    kb = open_kb(store)
    from_csv = mod.WikiImages(demo_dir / "wiki_images", csv_dir=csvs)
    titles = [kb.get(u).title for u in kb.urls()]

    def no_csv(*a, **k):
        raise AssertionError("the CSVs were read")

    monkeypatch.setattr(mod, "iter_csv_records", no_csv)
    wiki = mod.wiki_images_for(kb, demo_dir / "wiki_images", csvs)
    assert [wiki.first(t) for t in titles] == [from_csv.first(t) for t in titles]
    later = time.time() + 5                                   # a CSV changed after the import: read it again
    os.utime(next(csvs.iterdir()), (later, later))
    with pytest.raises(AssertionError, match="the CSVs were read"):
        mod.wiki_images_for(kb, demo_dir / "wiki_images", csvs)
