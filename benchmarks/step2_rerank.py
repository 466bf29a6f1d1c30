"""Step-2b figures on CPU (issue: step 2): time per query of naive per-pair scoring vs omgm's engine.

A small random-weight reranker, a synthetic KB of entities with ~10 sections and one image each, and queries
that each rerank 20 entities. "Naive" runs the ViT and the Q-Former once per (section, image) pair, with the
official padding to 512 tokens (and, second figure, padding to the text's own length). "Ours" runs the ViT
once per unique image and batches section texts across entities (no disk cache). Scores must agree to 1e-5.

    python benchmarks/step2_rerank.py [--queries 3] [--entities 40]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402
from omgm.data.kb import JsonKnowledgeBase  # noqa: E402
from omgm.data.wiki_images import WikiImages  # noqa: E402
from omgm.rerank import scoring as rr  # noqa: E402
from omgm.rerank.inputs import image_transform, load_tokenizer  # noqa: E402
from omgm.rerank.model import IT2ITConfig, IT2ITReranker, QFormerSpec, VisionSpec  # noqa: E402
from utils.make_tiny_models import make_tiny_bert_tokenizer  # noqa: E402

WORDS = "the tower bridge species bird colour stone built river north ancient museum garden island".split()


def synthetic_world(root: Path, n_entities: int, sections: int, rng: random.Random) -> tuple[Path, Path, Path]:
    kb, rows = {}, []
    (root / "img").mkdir(parents=True)
    for i in range(n_entities):
        url = f"https://en.wikipedia.org/wiki/E{i}"
        titles = [f"E{i}"] + [f"Section {j}" for j in range(1, sections)]
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(40, 160))) for _ in titles]
        kb[url] = {"title": f"E{i}", "section_titles": titles, "section_texts": texts}
        Image.new("RGB", (120, 90), tuple(rng.randrange(256) for _ in range(3))).save(root / "img" / f"{i}.jpg")
        rows.append(f"E{i},u,img/{i}.jpg,c\n")
    (root / "kb.json").write_text(json.dumps(kb))
    (root / "csv").mkdir()
    (root / "csv/wiki_image_url_part_1_processed.csv").write_text("entity_title,image_URL,img_path,caption\n"
                                                                   + "".join(rows))
    return root / "kb.json", root / "csv", root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=3)
    p.add_argument("--entities", type=int, default=40)
    p.add_argument("--sections", type=int, default=10)
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), queries=1, entities=4, sections=2)
    rng = random.Random(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        kb_path, csv_dir, root = synthetic_world(Path(tmp), a.entities, a.sections, rng)
        tok = load_tokenizer(str(make_tiny_bert_tokenizer(Path(tmp) / "tok", WORDS + ["wiki article section title"])))
        cfg = IT2ITConfig(vision=VisionSpec(hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                                            num_attention_heads=4, image_size=224, patch_size=16),
                          qformer=QFormerSpec(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4,
                                              num_attention_heads=4, intermediate_size=1024),
                          num_query_tokens=32)
        model = IT2ITReranker(cfg).eval()
        kb, wiki, t = JsonKnowledgeBase(kb_path), WikiImages(root, csv_dir=csv_dir), image_transform(224)
        urls = list(kb.urls())
        queries = [(rng.sample(urls, min(20, len(urls))), torch.randn(1, 3, 224, 224), "what is the colour of this tower")
                   for _ in range(a.queries)]
        qs = [rr.encode_queries(model, tok, pix, [text], query_norm="faithful")[0] for _, pix, text in queries]

        def naive(pad_to_max: bool) -> tuple[float, list]:
            saved = rr.tokenize
            if not pad_to_max:  # the same per-pair path, padded to the text's own length
                rr.tokenize = lambda tk, texts, n, _pad, device="cpu": saved(tk, texts, n, False, device=device)
            try:
                t0, out = time.perf_counter(), []
                for (ents, _, _), q in zip(queries, qs):
                    out.append([rr.naive_section_scores(model, tok, q, kb.get(u), image=wiki.first(kb.get(u).title), transform=t)
                                for u in ents])
                return (time.perf_counter() - t0) / len(queries), out
            finally:
                rr.tokenize = saved

        t0 = time.perf_counter()
        enc = rr.CandidateEncoder(model, tok, kb, wiki, t, batch_size=64)
        ours = []
        for (ents, _, _), q in zip(queries, qs):
            tokens = enc.encode(ents)
            ours.append([rr.entity_scores(q, tokens[u]) for u in ents])
        t_ours = (time.perf_counter() - t0) / len(queries)
        t_naive512, ref = naive(True)
        t_naive, ref2 = naive(False)
        diff = max(abs(x - y) for qa, qb in zip(ours, ref) for ea, eb in zip(qa, qb) for x, y in zip(ea, eb))
        diff2 = max(abs(x - y) for qa, qb in zip(ref2, ref) for ea, eb in zip(qa, qb) for x, y in zip(ea, eb))
        pairs = sum(len(e) for q in ours for e in q) / len(queries)
    print(f"rerank {a.queries} queries x 20 entities (~{pairs:.0f} section pairs/query), small random reranker on CPU:")
    print(f"  naive per pair, padded to 512 (official): {t_naive512:.2f} s/query")
    print(f"  naive per pair, padded to own length:     {t_naive:.2f} s/query")
    print(f"  omgm (ViT once per image, batched texts): {t_ours:.2f} s/query")
    print(f"  speed-up {t_naive512 / t_ours:.1f}x vs official-padding naive, {t_naive / t_ours:.1f}x vs own-length "
          f"naive (target >= 5x); max |score difference| {diff:.2e} (must be < 1e-5; naive 512 vs own length "
          f"{diff2:.2e})")
    print(json.dumps({"naive512_s_per_query": round(t_naive512, 3), "naive_s_per_query": round(t_naive, 3),
                      "ours_s_per_query": round(t_ours, 3), "speedup_vs_naive512": round(t_naive512 / t_ours, 1),
                      "speedup_vs_naive": round(t_naive / t_ours, 1), "max_abs_diff": diff}))
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
