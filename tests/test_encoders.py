
import numpy as np
import pytest
from PIL import Image

from omgm.hub import ModelLoadError
from omgm.retrieval.base import RetrieverSpec, file_fingerprint
from omgm.retrieval.encoders import HFClipRetriever
from omgm.retrieval.registry import build_retriever


def test_tiny_open_clip_embeds_normalised_vectors(tiny_retriever):
    r = tiny_retriever
    assert r.dim == 64 and r.model_id.startswith("open_clip:omgm-tiny-eva:file-")
    imgs = r.encode_images([Image.new("RGB", (50, 80), (200, 10, 10)), Image.new("RGB", (90, 40), (10, 10, 200))])
    txt = r.encode_texts(["a red disc", "a blue square " * 60])
    for x in (imgs, txt):
        assert x.dtype == np.float32 and x.shape[1] == 64
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(imgs[0], imgs[1])
    assert r.truncated_texts == 1                 # the long text filled the 77-token context


def test_same_checkpoint_same_id_and_embeddings(tiny_clip_ckpt, tiny_retriever):
    again = build_retriever(RetrieverSpec("omgm-tiny-eva", retriever_pretrained=str(tiny_clip_ckpt), device="cpu"))
    assert again.model_id == tiny_retriever.model_id
    np.testing.assert_allclose(again.encode_texts(["x y"]), tiny_retriever.encode_texts(["x y"]), atol=1e-6)
    assert tiny_retriever.model_id.endswith(file_fingerprint(tiny_clip_ckpt))


def test_unknown_retriever_and_missing_checkpoint():
    with pytest.raises(ValueError, match="unknown retriever 'no-such-model'"):
        build_retriever(RetrieverSpec("no-such-model"))
    with pytest.raises(ModelLoadError, match="open_clip checkpoint not found"):
        build_retriever(RetrieverSpec("omgm-tiny-eva", retriever_pretrained="/no/such/ckpt.pt", device="cpu"))
    with pytest.raises(ValueError, match="hf-clip needs --retriever_path"):
        build_retriever(RetrieverSpec("hf-clip"))


def test_hf_clip_path_loads_a_local_folder(tiny_hf_clip):
    folder = tiny_hf_clip
    r = build_retriever(RetrieverSpec("hf-clip", retriever_path=str(folder), device="cpu"))
    assert isinstance(r, HFClipRetriever) and r.dim == 16 and r.model_id.startswith("hf:tiny-hf-clip-")
    img = r.encode_images([Image.new("RGB", (40, 60), (0, 200, 0))])
    txt = r.encode_texts(["a green thing", "word " * 100])
    assert img.shape == (1, 16) and txt.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, rtol=1e-5)
    assert r.truncated_texts == 1
