import math

import pytest
import torch

from omgm.rerank.convert import CheckpointError, build_reranker, load_lavis, save_ours, to_lavis_state_dict
from omgm.rerank.inputs import candidate_text, clean_text, tokenize
from omgm.rerank.model import IT2ITConfig, IT2ITReranker, late_interaction, normalise_tokens, paired_late_interaction


def test_clean_text_follows_lavis_blip_caption():
    assert clean_text('Hello, "World"! (a*b) #x: y; ~z.') == "hello, world a b x y z"
    assert clean_text("A\nB") == "a\nb"                        # a lone newline is not collapsed
    assert clean_text("A \n B") == "a b"                       # runs of whitespace are
    assert clean_text("w " * 600).count("w") == 512
    assert clean_text(candidate_text("Big Tower", "History", "Built.")) == \
        "wiki article big tower section title history\nbuilt"


def test_late_interaction_by_hand():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])                           # 1 query, 2 tokens
    c = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 2.0], [-1.0, 0.0]]])  # 2 candidates
    # cand 0: token0 best 1.0, token1 best 0.5 -> 0.75 ; cand 1: token0 best 0.0, token1 best 2.0 -> 1.0
    assert torch.allclose(late_interaction(q, c), torch.tensor([[0.75, 1.0]]))
    assert torch.allclose(paired_late_interaction(q, c.unsqueeze(0)), torch.tensor([[0.75, 1.0]]))


def test_two_normalisations():
    x = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    per_token = normalise_tokens(x, "per_token")
    assert torch.allclose(per_token.norm(dim=-1), torch.ones(1, 2))
    faithful = normalise_tokens(x, "faithful")                          # across tokens: each feature column
    assert torch.allclose(faithful.norm(dim=1), torch.ones(1, 2))
    assert torch.allclose(faithful[0, :, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(faithful[0, :, 1], torch.tensor([4.0, 2.0]) / math.sqrt(20))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_tokens(x, "bogus")


def test_encode_shapes_eps_and_padding_invariance(tiny_reranker, bert_tokenizer):
    m = tiny_reranker
    assert m.vision.post_layernorm.eps == 1e-5 and m.vision.encoder.layers[0].layer_norm1.eps == 1e-6
    assert m.qformer.layernorm.eps == 1e-12
    pixels = torch.randn(1, 3, 224, 224)
    texts = ["what colour is this beetle", "a much longer text about the history of the tower " * 3]
    with torch.no_grad():
        feats = m.vision_features(pixels)
        ids, mask = tokenize(bert_tokenizer, texts)
        out = m.encode(feats, ids, mask)
        ids512, mask512 = tokenize(bert_tokenizer, texts, pad_to_max=True)
        out512 = m.encode(feats, ids512, mask512)
        single = m.encode(feats, *tokenize(bert_tokenizer, texts[:1]))
    assert out.shape == (2, 8, 64) and ids512.shape[1] == 512
    assert torch.allclose(out, out512, atol=1e-5)                         # padding does not change queries
    assert torch.allclose(out[:1], single, atol=1e-5)                    # nor does batching with longer texts


def test_lavis_state_dict_round_trip_loads_strictly_and_scores_identically(tiny_reranker, bert_tokenizer, tmp_path):
    sd = to_lavis_state_dict(tiny_reranker)
    assert "visual_encoder.blocks.0.attn.q_bias" in sd and "ln_vision.weight" in sd
    assert "Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in sd
    assert "Qformer.bert.embeddings.LayerNorm.weight" in sd
    # the LAVIS split layout: Q-Former/BLIP-2 file without the ViT, plus an EVA file with an extra block
    blip2 = {k: v for k, v in sd.items() if not k.startswith("visual_encoder.")}
    blip2.update({"vision_proj.weight": torch.zeros(4, 64), "itm_head.bias": torch.zeros(2),
                  "Qformer.cls.predictions.bias": torch.zeros(3)})
    eva = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    eva.update({k.replace("blocks.1.", "blocks.2."): v for k, v in eva.items() if k.startswith("blocks.1.")})
    torch.save({"model": blip2}, tmp_path / "blip2_pretrained.pth")
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    cfg = tmp_path / "tiny.json"
    import json
    cfg.write_text(json.dumps(tiny_reranker.config.to_dict()))
    loaded, report = build_reranker(str(cfg), init_ckpt=tmp_path / "blip2_pretrained.pth", vit_ckpt=tmp_path / "eva_vit_g.pth")
    assert report.taken["blip2_pretrained.pth"] == len(blip2) - 3 and report.taken["eva_vit_g.pth"] > 0
    assert "vision_proj" in report.summary() and "blocks" in report.summary()
    for k, v in tiny_reranker.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    pixels = torch.randn(2, 3, 224, 224)
    ids, mask = tokenize(bert_tokenizer, ["a red disc", "a blue square"])
    with torch.no_grad():
        assert torch.equal(tiny_reranker.eval()(pixels, ids, mask), loaded.eval()(pixels, ids, mask))
    # omgm's own format, and the official full LAVIS-style state dict with DDP prefixes
    save_ours(tiny_reranker, tmp_path / "ours.pth")
    ours, _ = build_reranker(reranker_ckpt=tmp_path / "ours.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "model_100.pth")
    official, rep = build_reranker(str(cfg), reranker_ckpt=tmp_path / "model_100.pth")
    for m in (ours, official):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in tiny_reranker.state_dict().items())


def test_wrong_architecture_is_refused(tiny_reranker, bert_tokenizer):
    sd = to_lavis_state_dict(tiny_reranker)
    other = IT2ITReranker(IT2ITConfig.tiny(len(bert_tokenizer) + 5))
    with pytest.raises(CheckpointError, match=r"word_embeddings.weight has shape \(\d+, 64\) but the reranker expects"):
        load_lavis(other, [("x.pth", sd)])
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\).*'x.pth: foo.bar'"):
        load_lavis(tiny_reranker, [("x.pth", {**sd, "foo.bar": torch.zeros(1)})])
    with pytest.raises(CheckpointError, match=r"parameters not found \(1\).*temp"):
        load_lavis(tiny_reranker, [("x.pth", {k: v for k, v in sd.items() if k != "temp"})])


def test_full_size_layout_matches_the_lavis_checkpoint_counts():
    with torch.device("meta"):
        model = IT2ITReranker(IT2ITConfig())
    sd = to_lavis_state_dict(model)
    non_vit = [k for k in sd if not k.startswith("visual_encoder.")]
    # blip2_pretrained.pth has 346 keys: ours + 14 unused (Qformer.cls 7, vision/text_proj 4, itm_head 2, position_ids)
    assert len(non_vit) == 346 - 14
    assert sd["Qformer.bert.embeddings.word_embeddings.weight"].shape == (30523, 768)
    assert sd["Qformer.bert.encoder.layer.10.crossattention.self.key.weight"].shape == (768, 1408)
    assert "Qformer.bert.encoder.layer.11.crossattention.self.key.weight" not in sd
    assert {k.split(".")[2] for k in sd if k.startswith("visual_encoder.blocks.")} == {str(i) for i in range(39)}
    assert sd["visual_encoder.pos_embed"].shape == (1, 257, 1408) and sd["query_tokens"].shape == (1, 32, 768)
