"""EchoSight's released image index (kb_index.faiss + kb_index_ids.pkl), read without unpickling code."""
import os
import pickle
import shutil

import numpy as np
import pytest

from omgm.commands import step1
from omgm.data.results import read_retrieval
from omgm.retrieval.echosight import EchoSightIndexError, read_ids


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/omgm_pwned_by_pickle",))


@pytest.fixture(scope="module")
def released(demo_image_index, demo_dir):
    """omgm's image index of the demo KB, copied into EchoSight's released layout."""
    w, common = demo_image_index.dir, demo_image_index.args
    folder = w / "echosight_evqa"
    folder.mkdir()
    shutil.copy(w / "img.index", folder / "kb_index.faiss")
    ids = np.load(w / "img.index.ids.npy")
    (folder / "kb_index_ids.pkl").write_bytes(pickle.dumps([int(x) for x in ids]))
    args = common + ["--sample_file", str(demo_dir / "test.csv"), "--inat_dir", str(demo_dir / "images/inat"),
                     "--gld_dir", str(demo_dir / "images/gld"), "--num_workers", "0"]
    return w, folder, args


def test_released_folder_ranks_like_omgms_image_index(released, capsys):
    w, folder, args = released
    assert step1.main(args + ["--faiss_index", str(w / "img.index"), "--save_result_path", str(w / "ours.json")]) == 0
    for target in (folder, folder / "kb_index.faiss"):
        assert step1.main(args + ["--faiss_index", str(target), "--save_result_path", str(w / "echo.json")]) == 0
        assert "no manifest found" in capsys.readouterr().err
        ours, echo = read_retrieval(w / "ours.json"), read_retrieval(w / "echo.json")
        assert echo.results == ours.results and echo.meta["index_kind"] == "image"
        assert not echo.meta["index_manifest"]


def test_malicious_pickle_is_refused_without_running(tmp_path):
    target = "/tmp/omgm_pwned_by_pickle"
    if os.path.exists(target):
        os.unlink(target)
    (tmp_path / "kb_index_ids.pkl").write_bytes(pickle.dumps([1, 2, Evil()]))
    with pytest.raises(EchoSightIndexError, match="refusing to load posix.system"):
        read_ids(tmp_path / "kb_index_ids.pkl")
    assert not os.path.exists(target)


@pytest.mark.parametrize("ids, message", [
    ([0, 1, 40], "item 2 is row 40, outside the knowledge base's 40 entities"),
    ([0, -1], "item 1 is row -1"),
    ([0, "3"], "item 1 is str, expected an integer"),
    ({"a": 1}, "expected a list of integers, got dict"),
])
def test_bad_ids_are_refused(tmp_path, ids, message):
    (tmp_path / "ids.pkl").write_bytes(pickle.dumps(ids))
    with pytest.raises(EchoSightIndexError, match=message):
        read_ids(tmp_path / "ids.pkl", kb_len=40)


def test_numpy_integers_are_accepted(tmp_path):
    (tmp_path / "ids.pkl").write_bytes(pickle.dumps([np.int64(3), np.int32(5), 7]))
    assert read_ids(tmp_path / "ids.pkl", kb_len=10).tolist() == [3, 5, 7]


def test_count_mismatch_is_refused(released, tmp_path, capsys):
    w, folder, args = released
    bad = tmp_path / "short"
    shutil.copytree(folder, bad)
    ids = pickle.loads((folder / "kb_index_ids.pkl").read_bytes())
    (bad / "kb_index_ids.pkl").write_bytes(pickle.dumps(ids[:-1]))
    assert step1.main(args + ["--faiss_index", str(bad), "--save_result_path", str(tmp_path / "x.json")]) == 2
    assert "holds 53 vectors but" in capsys.readouterr().err
