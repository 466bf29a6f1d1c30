"""Tiny RANDOM-weight models in the layouts the real release uses: hub repositories (one folder each, served by
:mod:`utils.rehearsal.server` as the Hugging Face hub) and the authors' own checkpoint files.

- ``BAAI/EVA-CLIP-8B``: remote code (``auto_map``, ``encode_image`` / ``encode_text``, non-persistent buffers),
  no tokenizer of its own: step 1 uses ``openai/clip-vit-large-patch14``'s, as the paper's code does.
- ``OpenGVLab/InternVL2_5-8B``: remote code with InternVL's ``chat(tokenizer, pixel_values, question,
  generation_config)`` over a tiny random bigram LM.
- ``openai/clip-vit-large-patch14`` (tokenizer + processor), ``openai/clip-vit-large-patch14-336`` (LLaVA's vision
  tower), ``liuhaotian/llava-v1.5-7b`` (its SentencePiece tokenizer), ``bert-base-uncased`` (the reranker's
  tokenizer), ``BAAI/bge-reranker-v2-m3`` (a one-logit cross-encoder), ``kortukov/answer-equivalence-bem`` (a
  two-label BERT classifier).
- The authors' files: the reranker ``.pth`` (LAVIS keys, ViT in fp16, ``prompt_tokens``) with the tiny sizes as a
  JSON beside it, and the fine-tuned LLaVA in the original LLaVA layout (``LlavaLlamaForCausalLM``).
Every model here answers at chance: the rehearsal proves the plumbing, never the paper's numbers.
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
LLAVA_FIXTURE = REPO / "tests" / "fixtures" / "llava_original"
EVA_CLIP_8B = "BAAI/EVA-CLIP-8B"

REMOTE_CLIP = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class TinyEvaClipConfig(PretrainedConfig):
    model_type = "tiny_eva_clip"

    def __init__(self, dim=16, vocab_size=600, image_size=32, patch=8, **kwargs):
        self.dim, self.vocab_size, self.image_size, self.patch = dim, vocab_size, image_size, patch
        super().__init__(**kwargs)


class TinyEvaClip(PreTrainedModel):
    """EVA-CLIP-8B's pattern: position ids and rope tables made as non-persistent buffers in __init__."""
    config_class = TinyEvaClipConfig

    def __init__(self, config):
        super().__init__(config)
        d, n = config.dim, (config.image_size // config.patch) ** 2 + 1
        self.patch = nn.Conv2d(3, d, config.patch, config.patch)
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(n, d)
        self.text_pos = nn.Embedding(77, d)
        self.vproj = nn.Linear(d, d)
        self.tproj = nn.Linear(d, d)
        self.register_buffer("position_ids", torch.arange(n).unsqueeze(0), persistent=False)
        self.register_buffer("text_position_ids", torch.arange(77).unsqueeze(0), persistent=False)
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        self.register_buffer("rope", torch.outer(torch.arange(n).float(), freqs).repeat(1, 2), persistent=False)
        self.post_init()

    def encode_image(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(1, keepdim=True), x], 1) + self.pos(self.position_ids) + torch.sin(self.rope)
        return self.vproj(x[:, 0])

    def encode_text(self, input_ids):
        x = self.tok(input_ids) + self.text_pos(self.text_position_ids[:, : input_ids.shape[1]])
        return self.tproj(x[torch.arange(x.shape[0]), input_ids.argmax(-1)])
'''

REMOTE_INTERNVL = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, vocab_size=100, dim=16, use_flash_attn=False, **kwargs):
        self.vocab_size, self.dim, self.use_flash_attn = vocab_size, dim, use_flash_attn
        super().__init__(**kwargs)


class InternVLChatModel(PreTrainedModel):
    """InternVL's chat() over a tiny random bigram LM: the image's mean colour and the question's last words pick
    the first token, each token the next."""
    config_class = InternVLChatConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.vision = nn.Linear(3, config.dim)
        self.head = nn.Linear(config.dim, config.vocab_size)
        self.register_buffer("position_ids", torch.arange(16), persistent=False)
        self.post_init()

    @torch.no_grad()
    def chat(self, tokenizer, pixel_values, question, generation_config):
        dtype = self.head.weight.dtype
        ids = tokenizer(question, add_special_tokens=False)["input_ids"][-8:] or [0]
        h = self.embed(torch.tensor(ids) % self.config.vocab_size).mean(0)
        h = h + self.vision(pixel_values.to(dtype).mean((0, 2, 3)))
        out = []
        for _ in range(min(int(generation_config.get("max_new_tokens", 4)), 4)):
            t = int(self.head(h).argmax())
            out.append(t)
            h = self.embed.weight[t]
        return tokenizer.decode(out, skip_special_tokens=True)
'''


def _remote(folder: Path, code_name: str, code: str, config: dict, model_cls: str, config_cls: str,
            seed: int) -> Path:
    """A remote-code repository: its module, a config with ``auto_map``, and seeded weights."""
    import importlib.util

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{code_name}.py").write_text(textwrap.dedent(code))
    (folder / "config.json").write_text(json.dumps({
        **config, "auto_map": {"AutoConfig": f"{code_name}.{config_cls}", "AutoModel": f"{code_name}.{model_cls}"}},
        indent=2))
    spec = importlib.util.spec_from_file_location(f"rehearsal_{code_name}", folder / f"{code_name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(seed)
    cfg = getattr(mod, config_cls)(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})
    model = getattr(mod, model_cls)(cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return folder


def eva_clip(folder: Path, vocab_size: int) -> Path:
    return _remote(folder, "modeling_evaclip", REMOTE_CLIP, {"model_type": "tiny_eva_clip", "architectures":
                   ["TinyEvaClip"], "dim": 16, "vocab_size": vocab_size}, "TinyEvaClip", "TinyEvaClipConfig", 0)


def internvl(folder: Path, tokenizer: Path) -> Path:
    from transformers import BertTokenizer

    vocab = len(BertTokenizer.from_pretrained(tokenizer))
    _remote(folder, "modeling_internvl_chat", REMOTE_INTERNVL, {"model_type": "internvl_chat", "architectures":
            ["InternVLChatModel"], "vocab_size": vocab}, "InternVLChatModel", "InternVLChatConfig", 1)
    for f in tokenizer.iterdir():
        if f.name != "config.json":                   # the tokenizer's files, not its folder's model config
            shutil.copy(f, folder / f.name)
    return folder


def bert_classifier(folder: Path, tokenizer: Path, labels: int, seed: int) -> Path:
    """A tiny BERT sequence classifier over ``tokenizer``'s vocabulary (BEM: 2 labels; a cross-encoder: 1)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(tokenizer)
    torch.manual_seed(seed)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=labels,
                                             max_position_embeddings=512)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def hub_repositories(out: Path, corpus: list[str]) -> dict[str, Path]:
    """Every hub repository the E-VQA and InfoSeek registries name, as a folder each under ``out``."""
    from utils.make_tiny_models import make_tiny_bert_tokenizer, make_tiny_hf_clip

    bert = make_tiny_bert_tokenizer(out / "bert-base-uncased", corpus)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(
        (bert / "vocab.txt").read_text().splitlines())}))
    clip = make_tiny_hf_clip(out / "openai" / "clip-vit-large-patch14")
    llava_tok = out / "liuhaotian" / "llava-v1.5-7b"
    llava_tok.mkdir(parents=True)
    for f in (LLAVA_FIXTURE / "llava-v1.5-tiny").iterdir():
        if not f.name.startswith("pytorch_model"):       # the tokenizer and config (the registry takes *.json + .model)
            shutil.copy(f, llava_tok / f.name)
    tower = shutil.copytree(LLAVA_FIXTURE / "clip-tower", out / "openai" / "clip-vit-large-patch14-336")
    return {
        "bert-base-uncased": bert,
        "openai/clip-vit-large-patch14": clip,
        "openai/clip-vit-large-patch14-336": tower,
        "liuhaotian/llava-v1.5-7b": llava_tok,
        EVA_CLIP_8B: eva_clip(out / "BAAI" / "EVA-CLIP-8B", len(json.loads((clip / "vocab.json").read_text()))),
        "BAAI/bge-reranker-v2-m3": bert_classifier(out / "BAAI" / "bge-reranker-v2-m3", bert, 1, 2),
        "kortukov/answer-equivalence-bem": bert_classifier(out / "kortukov" / "answer-equivalence-bem", bert, 2, 3),
        "OpenGVLab/InternVL2_5-8B": internvl(out / "OpenGVLab" / "InternVL2_5-8B", bert),
    }


def reranker_files(out: Path, tokenizer: Path) -> tuple[Path, Path]:
    """The released reranker as the authors' script saves it (``model_*.pth``: LAVIS keys, the ViT in fp16,
    ``prompt_tokens``) and the tiny sizes it was built with (a JSON for ``--reranker_model_name``)."""
    from omgm.rerank.convert import save_authors_layout
    from omgm.rerank.inputs import load_tokenizer
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    config = IT2ITConfig.tiny(len(load_tokenizer(str(tokenizer))))
    sizes = out / "tiny_reranker.json"
    sizes.parent.mkdir(parents=True, exist_ok=True)
    sizes.write_text(json.dumps(config.to_dict(), indent=2))
    torch.manual_seed(0)
    return save_authors_layout(IT2ITReranker(config), out / "model_best.pth"), sizes


def llava_original() -> Path:
    """The fine-tuned LLaVA-1.5 in the original LLaVA layout (the repository's fixture, written by LLaVA's code)."""
    return LLAVA_FIXTURE / "llava-v1.5-tiny"
