"""InternVL2.5 as the published code runs it: the dynamic 448-px tiling, and the remote-code ``chat`` call."""
import json
import textwrap

import pytest
import torch
from PIL import Image

from omgm.generate.generators import GeneratorSpec, build_generator
from omgm.generate.generators.base import GenRequest
from omgm.generate.generators.internvl import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    candidate_grids,
    choose_grid,
    internvl_pixels,
    tile_image,
)
from omgm.generate.prompts import vlm_text


@pytest.mark.parametrize("size, grid", [
    ((448, 448), (1, 1)),        # square and small: one tile
    ((1000, 1000), (3, 3)),      # square and large: ties on the ratio go to the larger grid the image can fill
    ((896, 448), (2, 1)),        # 2:1
    ((100, 30), (3, 1)),         # 3.33:1 -> 3:1 (6:2 ties, but the image is far smaller than 12 tiles)
    ((30, 100), (1, 3)),
    ((5000, 400), (12, 1)),      # very wide: the widest grid allowed
])
def test_grid_choice(size, grid):
    assert choose_grid(*size) == grid


def test_grid_candidates_are_ordered_by_tile_count():
    grids = candidate_grids(1, 12)
    assert grids[0] == (1, 1) and all(1 <= a * b <= 12 for a, b in grids)
    assert [a * b for a, b in grids] == sorted(a * b for a, b in grids) and len(grids) == len(set(grids))


def test_tiles_thumbnail_and_normalisation():
    img = Image.new("RGB", (896, 448), (124, 116, 104))
    img.paste((255, 0, 0), (448, 0, 896, 448))                  # right half red
    tiles = tile_image(img)
    assert len(tiles) == 3 and all(t.size == (448, 448) for t in tiles)   # 2 tiles, row-major, + thumbnail
    assert tiles[0].getpixel((10, 10)) == (124, 116, 104) and tiles[1].getpixel((10, 10)) == (255, 0, 0)
    assert len(tile_image(Image.new("RGB", (448, 448)))) == 1                # one tile: no thumbnail
    px = internvl_pixels(img)
    assert px.shape == (3, 3, 448, 448)
    expect = [(c / 255 - m) / s for c, m, s in zip((124, 116, 104), IMAGENET_MEAN, IMAGENET_STD)]
    assert px[0, :, 5, 5].tolist() == pytest.approx(expect, abs=1e-5)
    red = [(c / 255 - m) / s for c, m, s in zip((255, 0, 0), IMAGENET_MEAN, IMAGENET_STD)]
    assert px[1, :, 5, 5].tolist() == pytest.approx(red, abs=1e-5)


STANDIN = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class StandinConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, use_flash_attn=False, **kwargs):
        self.use_flash_attn = use_flash_attn
        super().__init__(**kwargs)


class InternVLChatModel(PreTrainedModel):
    """A stand-in with InternVL's chat() signature and a non-persistent buffer, as remote code creates them."""
    config_class = StandinConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(4, 4)
        self.register_buffer("position_ids", torch.arange(16), persistent=False)
        self.post_init()

    def chat(self, tokenizer, pixel_values, question, generation_config):
        return (f"{tuple(pixel_values.shape)}|{pixel_values.dtype}|{generation_config}|"
                f"{int(self.position_ids.sum())}|{question}")
'''


@pytest.fixture()
def standin(tmp_path, bert_tokenizer):
    d = tmp_path / "InternVL2_5-standin"
    d.mkdir()
    (d / "modeling_standin.py").write_text(textwrap.dedent(STANDIN))
    (d / "config.json").write_text(json.dumps({
        "model_type": "internvl_chat", "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "modeling_standin.StandinConfig", "AutoModel": "modeling_standin.InternVLChatModel"}}))
    from safetensors.torch import save_file

    save_file({"proj.weight": torch.eye(4), "proj.bias": torch.zeros(4)}, d / "model.safetensors")
    bert_tokenizer.save_pretrained(d)
    return d


def test_remote_code_chat_gets_the_published_inputs(standin, tmp_path):
    gen = build_generator(GeneratorSpec("internvl2_5", str(standin), device="cpu", dtype="bf16"))
    assert gen.family == "internvl-remote" and gen.max_new_tokens == 128 and "position_ids" in gen.restored_buffers
    img = tmp_path / "img.png"
    Image.new("RGB", (896, 448), (10, 20, 30)).save(img)
    req = GenRequest("Which city?", "# Wiki Article: X\n## Section Title: Y\nZ", "infoseek", img)
    (answer,) = gen.generate([req], batch_size=8)
    shape, dtype, cfg, pos, question = answer.split("|", 4)
    assert shape == "(3, 3, 448, 448)" and dtype == "torch.bfloat16" and pos == "120"   # buffer recomputed
    assert cfg == str({"max_new_tokens": 128, "do_sample": False})
    assert question == "<image>\n" + vlm_text(req.question, req.context, "infoseek")
