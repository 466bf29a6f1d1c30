"""VISTA (Visualized-BGE) and MMRet behind the retriever interface, with tiny random configs."""
import numpy as np
import pytest
import torch
from PIL import Image

from omgm.retrieval.base import RetrieverSpec
from omgm.retrieval.mmret import MLLMEmbedRetriever, MMRetClipRetriever
from omgm.retrieval.registry import build_retriever
from omgm.retrieval.vista import VistaCheckpointError, VistaRetriever, ours_to_released

TINY_EVA = dict(img_size=224, patch_size=32, embed_dim=32, depth=2, num_heads=2, ref_feat_shape=(7, 7))
IMGS = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (50, 70), (20, 30, 220))]


@pytest.fixture(scope="module")
def bge_folder(tmp_path_factory, demo_corpus):
    from utils.make_tiny_models import make_tiny_bge

    return make_tiny_bge(tmp_path_factory.mktemp("bge"), demo_corpus)


def _unit(x):
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_vista_encodings(bge_folder):
    torch.manual_seed(0)
    r = VistaRetriever(str(bge_folder), None, device="cpu", tiny_vision=TINY_EVA)
    img, txt = r.encode_images(IMGS), r.encode_texts(["a red disc", "a blue square"])
    both = r.encode_composed(IMGS, ["a red disc", "a blue square"])
    assert img.shape == txt.shape == both.shape == (2, 32) and all(_unit(x) for x in (img, txt, both))
    assert not np.allclose(both, img, atol=1e-4) and not np.allclose(both, txt, atol=1e-4)
    assert not np.allclose(img[0], img[1], atol=1e-4)
    # text-only is BGE's [CLS], as transformers' own model computes it
    enc = r.tokenizer(["a red disc"], return_tensors="pt")
    ref = torch.nn.functional.normalize(r.model.bge(**enc).last_hidden_state[:, 0], dim=-1).detach().numpy()
    assert np.allclose(ref, txt[:1], atol=1e-5)
    # composed inputs longer than the room left by the 49 image tokens are cut and counted
    r.encode_composed(IMGS[:1], ["word " * 200])
    assert r.truncated_texts == 1


def test_vista_released_layout_loads_strictly(bge_folder, tmp_path):
    torch.manual_seed(0)
    a = VistaRetriever(str(bge_folder), None, device="cpu", tiny_vision=TINY_EVA)
    sd = ours_to_released(a.model)
    assert any(k.startswith("bge_encoder.layer.0.") for k in sd) and "visual_proj.weight" in sd
    assert any(k.startswith("model_visual.visual.blocks.0.mlp.w1") for k in sd)          # EVA-CLIP names
    assert any(k.endswith("attn.q_bias") for k in sd) and not any("fc1_g" in k for k in sd)
    assert not any("fc_norm" in k for k in sd)              # token pooling, like the released towers
    sd["model_visual.visual.head.weight"] = torch.zeros(8, 32)                             # unused by VISTA
    # released files may carry non-persistent buffers: rope tables and position ids
    sd["model_visual.visual.rope.freqs_cos"] = torch.zeros(49, 16)
    sd["bge_embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    torch.save(sd, tmp_path / "Visualized_tiny.pth")
    torch.manual_seed(1)
    b = VistaRetriever(str(bge_folder), str(tmp_path / "Visualized_tiny.pth"), device="cpu", tiny_vision=TINY_EVA)
    assert set(b.ignored) == {"model_visual.visual.head.weight", "model_visual.visual.rope.freqs_cos",
                              "bge.embeddings.position_ids"} and b.model_id.startswith("vista:")
    assert np.allclose(a.encode_composed(IMGS, ["x", "y"]), b.encode_composed(IMGS, ["x", "y"]), atol=1e-6)
    del sd["visual_proj.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(VistaCheckpointError, match="missing \\['visual_proj.weight'\\]"):
        VistaRetriever(str(bge_folder), str(tmp_path / "broken.pth"), device="cpu", tiny_vision=TINY_EVA)


def test_mmret_clip_composed(tiny_hf_clip):
    r = build_retriever(RetrieverSpec("mmret-base", retriever_path=str(tiny_hf_clip), device="cpu"))
    assert isinstance(r, MMRetClipRetriever) and r.supports_composed
    img, txt = r.encode_images(IMGS), r.encode_texts(["red", "blue"])
    both = r.encode_composed(IMGS, ["red", "blue"])
    assert _unit(both) and not np.allclose(both, img) and not np.allclose(both, txt)
    # MMRet's reference rule: raw projected features summed, normalised once (not a sum of unit vectors)
    with torch.no_grad():
        pix = torch.stack([r.preprocess(im) for im in IMGS])
        raw_img = r.model.get_image_features(pixel_values=pix).pooler_output
        raw_txt = r.model.get_text_features(**r.tokenizer(["red", "blue"], padding=True, return_tensors="pt")).pooler_output
    expect = torch.nn.functional.normalize(raw_img + raw_txt, dim=-1).numpy()
    assert np.allclose(both, expect, atol=1e-6)
    old_rule = (img + txt) / np.linalg.norm(img + txt, axis=1, keepdims=True)
    assert not np.allclose(both, old_rule, atol=1e-4)


def test_mmret_mllm_last_token_embeddings(tiny_step3_models):
    r = build_retriever(RetrieverSpec("mmret-mllm", retriever_path=str(tiny_step3_models.llava), device="cpu"))
    assert isinstance(r, MLLMEmbedRetriever) and r.dim == 32
    img, txt = r.encode_images(IMGS), r.encode_texts(["red", "blue things"])
    both = r.encode_composed(IMGS, ["red", "blue"])
    assert all(_unit(x) for x in (img, txt, both)) and not np.allclose(both, img, atol=1e-4)
    assert np.allclose(r.encode_texts(["red"]), txt[:1], atol=1e-5)            # left padding changes nothing
