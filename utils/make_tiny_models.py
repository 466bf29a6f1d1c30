"""Write the tiny random-weight models that the demo and tests use (no download needed).

    python -m utils.make_tiny_models --out .cache/demo/models

- ``tiny_clip.pt``: an open_clip ``omgm-tiny-eva`` state dict (timm EVA02-tiny image tower, 2-layer text
  tower, 64-d embeddings), seeded so every machine writes the same weights. RANDOM weights: retrieval with it
  is chance level; it exists to run every code path end to end.
- ``tiny_llm/``: a 2-layer Llama-architecture causal LM with a small byte-level BPE tokenizer trained on the
  demo KB text and a chat template, saved with ``save_pretrained`` so ``AutoModelForCausalLM`` loads it.
  RANDOM weights: it generates gibberish, through the same code as Llama-3.
- ``tiny_llava/``: a LLaVA-architecture VLM (2-layer CLIP vision tower, 2-layer Llama) with its processor and
  chat template, RANDOM weights, for step 3's VLM path.
- ``tiny_cross_encoder/``: a 1-layer BERT sequence classifier (one logit), RANDOM weights, standing in for
  bge-reranker-v2-m3 in step 3's section ranking.
- ``tiny_bert/`` + ``tiny_reranker.json``: a BERT WordPiece tokenizer over the demo's words and the sizes of a
  2-layer IT2IT reranker (``IT2ITConfig.tiny``) whose vocabulary matches it. The reranker starts RANDOM; the
  demo trains it on the demo's train split.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from omgm.config import quiet_libraries


def make_tiny_clip(path: Path, seed: int = 0) -> Path:
    import open_clip

    from omgm.retrieval.encoders import MODEL_CONFIG_DIR

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    torch.manual_seed(seed)
    model = open_clip.create_model("omgm-tiny-eva", pretrained=None)
    from omgm.io import atomic_write

    with atomic_write(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


def make_tiny_bert_tokenizer(folder: Path, corpus: list[str]) -> Path:
    """A BERT WordPiece tokenizer (uncased) whose vocabulary is the corpus' words plus single characters."""
    import re

    from transformers import BertTokenizerFast

    words = sorted({w for t in corpus for w in re.findall(r"[a-z0-9]+", t.lower())})
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars) + [f"##{c}" for c in chars] + \
        [w for w in words if w not in chars] + list("&,'?-/|")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _bpe_tokenizer(corpus: list[str] | None, extra_special: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or ["The answer is a small demo sentence about species, landmarks and years."]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": extra_special})
    return tok


def make_tiny_causal_lm(folder: Path, corpus: list[str] | None = None, seed: int = 0, hidden: int = 32,
                        layers: int = 2) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _bpe_tokenizer(corpus)
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# llava-hf/llava-1.5-7b-hf's chat template: every image placeholder first, then the texts, each followed by a space
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def make_tiny_llava(folder: Path, corpus: list[str] | None = None, seed: int = 0) -> Path:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _bpe_tokenizer(corpus, ["<image>"])
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                             crop_size={"height": 32, "width": 32}),
                          tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1,
                          chat_template=LLAVA_TEMPLATE)
    torch.manual_seed(seed)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, patch_size=8),
                      text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                              max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
                      vision_feature_layer=-2)
    folder.mkdir(parents=True, exist_ok=True)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def make_sentencepiece(folder: Path, corpus: list[str], kind: str = "llama", vocab_size: int = 600,
                       legacy: bool | None = False) -> Path:
    """A slow-Llama-tokenizer folder (``tokenizer.model`` + configs) trained on ``corpus``.

    ``kind="llama"``: BPE with byte fallback and no normalisation, like Llama's; ``kind="default"``:
    sentencepiece's defaults (unigram, NFKC, whitespace folded), which transformers 5 converts lossily.
    """
    import json

    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    opts = dict(model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True) \
        if kind == "llama" else {}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=vocab_size, hard_vocab_limit=False, num_threads=1, minloglevel=3,
                                   **opts)
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    cfg = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
           "clean_up_tokenization_spaces": False, "model_max_length": 2048, "pad_token": None,
           "padding_side": "right", **special}
    if legacy is not None:
        cfg["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


def make_tiny_clip_tower(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A full (text + vision) CLIP checkpoint with its image processor, as ``openai/clip-vit-large-patch14-336``
    is laid out (LLaVA takes the vision part)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=16),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=2, image_size=image_size, patch_size=8), projection_dim=16)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(folder)
    return folder


def make_tiny_original_llava(folder: Path, tower: Path, corpus: list[str], seed: int = 0, sp_kind: str = "llama",
                             legacy: bool | None = False, dtype: torch.dtype = torch.float32,
                             init_std: float = 0.3) -> Path:
    """A LLaVA-1.5 folder in the LLaVA repository's own layout (``LlavaLlamaForCausalLM``, flat Llama config,
    ``mm_vision_tower`` pointing at ``tower``, projector ``model.mm_projector.{0,2}``, no tower weights,
    sentencepiece tokenizer, weights in two ``.bin`` shards with an index). RANDOM weights."""
    import json

    from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM

    make_sentencepiece(folder, corpus, sp_kind, legacy=legacy)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    llama = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                 hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                 initializer_range=init_std)  # wide init: answers that depend on the prompt and the image
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(**llama))
    mm_hidden = CLIPVisionConfig.from_pretrained(str(tower)).hidden_size
    proj = torch.nn.Sequential(torch.nn.Linear(mm_hidden, 32), torch.nn.GELU(), torch.nn.Linear(32, 32))
    for p in proj.parameters():
        torch.nn.init.normal_(p, std=init_std)
    sd = {k: v.to(dtype) for k, v in lm.state_dict().items()}
    sd.update({f"model.mm_projector.{k}": v.to(dtype) for k, v in proj.state_dict().items()})
    names = sorted(sd)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for fname, keys in shards.items():
        torch.save({k: sd[k].contiguous() for k in keys}, folder / fname)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    cfg = {"_name_or_path": folder.name, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", **llama,
           "mm_vision_tower": str(tower), "mm_hidden_size": mm_hidden, "mm_projector_type": "mlp2x_gelu",
           "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
           "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat",
           "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right", "tune_mm_mlp_adapter": False,
           "freeze_mm_mlp_adapter": False, "use_mm_proj": True, "use_cache": True, "pretraining_tp": 1,
           "torch_dtype": str(dtype).replace("torch.", ""), "transformers_version": "4.31.0"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
         "transformers_version": "4.31.0"}, indent=2))
    return folder


def make_tiny_cross_encoder(folder: Path, corpus: list[str], seed: int = 0) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tok_dir = make_tiny_bert_tokenizer(folder, corpus)
    tok = BertTokenizerFast.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             num_labels=1)).save_pretrained(folder)
    return folder


def make_tiny_hf_clip(folder: Path) -> Path:
    """A random-weight transformers CLIPModel with a byte-level tokenizer and CLIP image processor, saved locally."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    # the byte-level alphabet of GPT-2/CLIP BPE: printable bytes map to themselves, the rest to 256+
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " " and b not in range(127, 161) and b != 173]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_tiny_bge(folder: Path, corpus: list[str], hidden: int = 32) -> Path:
    """A BERT config + WordPiece tokenizer folder standing in for a BGE model (VISTA's text side)."""
    from transformers import BertConfig

    make_tiny_bert_tokenizer(folder, corpus)
    from transformers import BertTokenizerFast

    n = len(BertTokenizerFast.from_pretrained(folder))
    BertConfig(vocab_size=n, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
               max_position_embeddings=128).save_pretrained(folder)
    return folder


def demo_corpus(demo_dir: Path) -> list[str]:
    import csv
    import json

    kb = json.loads((demo_dir / "kb.json").read_text(encoding="utf-8"))
    texts = [t for e in kb.values() for t in e["section_texts"] + e["section_titles"]]
    for name in ("train.csv", "test.csv"):
        with (demo_dir / name).open(encoding="utf-8") as fh:
            texts += [r["question"] for r in csv.DictReader(fh)]
    return texts + ["wiki article section title"]


def make_tiny_reranker_files(out: Path, corpus: list[str]) -> tuple[Path, Path]:
    import json

    from omgm.rerank.inputs import load_tokenizer
    from omgm.rerank.model import IT2ITConfig

    tok_dir = make_tiny_bert_tokenizer(out / "tiny_bert", corpus)
    cfg = out / "tiny_reranker.json"
    cfg.write_text(json.dumps(IT2ITConfig.tiny(len(load_tokenizer(str(tok_dir)))).to_dict(), indent=2))
    return tok_dir, cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".cache/demo/models")
    p.add_argument("--demo_dir", default="assets/demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quiet_libraries()                   # these models are RANDOM by design: the demo says so once, up front
    out = Path(args.out)
    if not (out / "tiny_clip.pt").is_file():
        print("wrote", make_tiny_clip(out / "tiny_clip.pt", args.seed))
    if not (out / "tiny_llm" / "config.json").is_file():
        print("wrote", make_tiny_causal_lm(out / "tiny_llm", demo_corpus(Path(args.demo_dir)), seed=args.seed))
    if not (out / "tiny_llava" / "config.json").is_file():
        print("wrote", make_tiny_llava(out / "tiny_llava", demo_corpus(Path(args.demo_dir)), seed=args.seed))
    if not (out / "tiny_cross_encoder" / "config.json").is_file():
        print("wrote", make_tiny_cross_encoder(out / "tiny_cross_encoder", demo_corpus(Path(args.demo_dir)), args.seed))
    if not (out / "tiny_reranker.json").is_file():
        print("wrote", *make_tiny_reranker_files(out, demo_corpus(Path(args.demo_dir))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
