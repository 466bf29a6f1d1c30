from pathlib import Path

import pytest

from omgm.data.samples import ImageDirs, MissingImageError, SampleFileError, read_samples, resolve_images

HEADER = ("question,answer,dataset_image_ids,dataset_name,dataset_category_id,question_type,wikipedia_url,"
          "wikipedia_title,evidence,evidence_section_id,evidence_section_title,encyclopedic_vqa_split,"
          "question_original,wikipedia_url_used_in_train\n")


def _row(qtype: str, img: str = "a|b", ds: str = "inaturalist", url: str = "u") -> str:
    return f'"Q, with comma?",A1|A2,{img},{ds},1,{qtype},{url},T,"ev\nmultiline",2,S,test,Q,False\n'


def test_filtering_keeps_single_hop_and_numbers_ids_after_filtering(tmp_path: Path):
    f = tmp_path / "t.csv"
    f.write_text(HEADER + _row("2_hop", "x") + _row("automatic", "a|b|c") + _row("2_hop", "y")
                 + _row("templated", "d") + _row("multi_answer", "e") + _row("infoseek", "g"))
    samples = read_samples(f)
    assert [s.sample_id for s in samples] == ["E-VQA_0", "E-VQA_1", "E-VQA_2", "E-VQA_3"]
    assert [s.image_id for s in samples] == ["a", "d", "e", "g"]          # first image id only
    assert samples[0].question == "Q, with comma?" and samples[0].answers == ["A1", "A2"]
    assert samples[0].row == 2                                            # CSV data row, for messages
    assert len(read_samples(f, single_hop_only=False)) == 6


def test_demo_test_split_drops_two_hop_rows(demo_dir: Path):
    samples = read_samples(demo_dir / "test.csv")
    assert len(samples) == 80                       # 85 rows, 5 of them 2-hop
    assert samples[-1].sample_id == "E-VQA_79"


def test_infoseek_ids_come_from_data_id(demo_dir: Path):
    samples = read_samples(demo_dir / "infoseek_test.csv")
    assert samples[0].sample_id.startswith("infoseek_val_") and samples[0].is_infoseek


def test_missing_column_names_the_file(tmp_path: Path):
    f = tmp_path / "bad.csv"
    f.write_text("question,answer\nq,a\n")
    with pytest.raises(SampleFileError, match=r"bad\.csv: missing column"):
        read_samples(f)


def test_malformed_row_names_file_and_row(tmp_path: Path):
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + _row("automatic") + "too,few,fields\n")
    with pytest.raises(SampleFileError, match=r"bad\.csv, row 2"):
        read_samples(f)


def test_empty_image_ids_is_an_error(tmp_path: Path):
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + _row("automatic", img=""))
    with pytest.raises(SampleFileError, match="row 1: empty dataset_image_ids"):
        read_samples(f)


def test_image_resolution_inat_then_gld_and_infoseek_jpeg(tmp_path: Path):
    inat, gld, info = (tmp_path / d for d in ("inat", "gld", "info"))
    for d in (inat, gld, info):
        d.mkdir()
    (gld / "g1.jpg").write_bytes(b"x")
    (inat / "i1.jpg").write_bytes(b"x")
    (gld / "i1.jpg").write_bytes(b"x")
    (info / "o1.JPEG").write_bytes(b"x")
    (info / "o2.jpg").write_bytes(b"x")
    f = tmp_path / "t.csv"
    f.write_text(HEADER + _row("automatic", "g1", "landmarks") + _row("automatic", "i1") + _row("infoseek", "o1", "infoseek")
                 + _row("infoseek", "o2", "infoseek") + _row("automatic", "nope"))
    dirs = ImageDirs(str(inat), str(gld), str(info))
    s = read_samples(f)
    assert dirs.resolve(s[0]) == gld / "g1.jpg"      # not in iNat: falls through to GLD
    assert dirs.resolve(s[1]) == inat / "i1.jpg"     # iNat wins when both have it
    assert dirs.resolve(s[2]) == info / "o1.JPEG"
    assert dirs.resolve(s[3]) == info / "o2.jpg"
    with pytest.raises(MissingImageError, match=r"row 5 \(E-VQA_4\).*'nope' not found"):
        dirs.resolve(s[4])
    found, missing = resolve_images(s, dirs)
    assert len(found) == 4 and len(missing) == 1


def test_demo_images_all_resolve(demo_dir: Path):
    dirs = ImageDirs(str(demo_dir / "images/inat"), str(demo_dir / "images/gld"), str(demo_dir / "images/infoseek"))
    for name in ("test.csv", "train.csv", "infoseek_test.csv"):
        _, missing = resolve_images(read_samples(demo_dir / name), dirs)
        assert missing == []
