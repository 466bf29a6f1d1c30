"""Step 3: section-augmented answer generation, then the dataset's official metric.

    python -m omgm.step3 --test_file test.csv --retrieval_results_file step2.json --step2_beta 0.2 \
        --answer_generator llava1_5 --knowledge_base_path kb.sqlite --output_file answers.json

For each sample, the top-1 entity's best section (cross-encoder fused with step-2 scores, see
:mod:`omgm.generate.sections`) is the context, cut to ``--context_tokens`` tokens of the generator's tokenizer;
the generator answers with the prompts of :mod:`omgm.generate.prompts`. Finished batches are appended to
``OUTPUT.partial.jsonl``, so a killed run resumes; the final file is written atomically::

    {"format": "omgm.answers", "version": 1, "meta": {...}, "records": [
        {"data_id", "question", "prediction", "gt_answer", "question_type", "top1_entity_url", "top1_entity_title",
         "entity_hit", "top1_section_id", "top1_section_title", "section_hit", "context_truncated",
         "used_step2_section_scores", "scores": {"sec_sim": [...], "q2s": [...], "s3": [...]}}, ...]}
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from omgm import __version__
from omgm.config import parse_with_config, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import check_made_for, read_retrieval, write_json_atomic
from omgm.data.samples import ImageDirs, read_samples, samples_fingerprint
from omgm.errors import OmgmError, cli_errors
from omgm.evaluate import ANSWERS_FORMAT, evaluate_records
from omgm.generate.generators import GenRequest, VLMGenerator, build_generator
from omgm.generate.sections import DEFAULT_CROSS_ENCODER, CrossEncoder, SectionMismatchError, fuse_sections

log = logging.getLogger("omgm.step3")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omgm.step3", description=__doc__.split("\n\n")[0])
    p.add_argument("--test_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--retrieval_results_file", help="step-2 (or step-1) result JSON")
    p.add_argument("--step2_beta", type=float, default=0.2,
                   help="weight of the step-2 section scores (paper and script: 0.2; the official argparse default is 0)")
    p.add_argument("--answer_generator", default="llava1_5", help="llava1_5 | internvl2_5 | llama3 | mistral | <folder>")
    p.add_argument("--llm_checkpoint", default=None, help="local fine-tuned weights for the chosen generator")
    p.add_argument("--knowledge_base_path", help="KB JSON or SQLite store")
    p.add_argument("--output_file")
    p.add_argument("--section_reranker", default=DEFAULT_CROSS_ENCODER, help="cross-encoder id or folder")
    p.add_argument("--context_tokens", type=int, default=3072)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--group_batches", type=int, default=8,
                   help="batches per window whose prompts are grouped by length (and saved together)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: 200 for LLaVA, 128 otherwise")
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--attn_implementation", default=None, help="sdpa (default) or flash_attention_2 if installed")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N samples")
    p.add_argument("--no_eval", action="store_true", help="skip the metric at the end")
    p.add_argument("--bem_model", default=None, help="local PyTorch BEM folder (E-VQA); without it: EM only")
    p.add_argument("--infoseek_val", default=None, help="infoseek_val.jsonl (official InfoSeek references)")
    p.add_argument("--infoseek_qtype", default=None, help="infoseek_val_qtype.jsonl")
    p.add_argument("--bare_output", action="store_true", help="write a bare JSON list of records")
    p.add_argument("--no_progress", action="store_true")
    return p


def _load_partial(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: dropping a torn last line", path)
                continue
            done[rec["data_id"]] = rec
    return done


def _prepare(sample, entry, kb, cross_scores, beta, counts) -> tuple[dict, str | None]:
    """The record without its prediction, and the context (None when no answer can be grounded)."""
    rec = {"data_id": sample.sample_id, "question": sample.question, "gt_answer": sample.answer,
           "question_type": sample.question_type, "top1_entity_url": None, "top1_entity_title": None,
           "entity_hit": False, "top1_section_id": None, "top1_section_title": None, "section_hit": False,
           "context_truncated": False, "used_step2_section_scores": False, "scores": {}}
    if entry is None:
        counts["no retrieval result"] += 1
        return rec, None
    url = entry["retrieved_entities"][0]["url"]
    rec.update(top1_entity_url=url, entity_hit=url == sample.wikipedia_url)
    if url not in kb:
        counts["top-1 entity not in KB"] += 1
        return rec, None
    ent = kb.get(url)
    sections = ent.sections()
    rec["top1_entity_title"] = ent.title
    if not sections:
        counts["top-1 entity has no sections"] += 1
        return rec, None
    sec_sim = (entry.get("sec_sim") or [[]])[0]
    sec_ids = (entry.get("sec_ids") or [None])[0]
    if sec_sim and sec_ids is not None and sec_ids != [s.index for s in sections]:
        raise SectionMismatchError(f"{sample.sample_id}: step-2 section ids {sec_ids} do not match the sections "
                                   f"of {url} in this KB ({[s.index for s in sections]})")
    choice = fuse_sections(cross_scores, sec_sim, beta)
    counts["fused with step-2 scores" if choice.used_step2 else "cross-encoder only (no step-2 scores)"] += 1
    best = sections[choice.index]
    rec.update(top1_section_id=best.index, top1_section_title=best.title, used_step2_section_scores=choice.used_step2,
               section_hit=rec["entity_hit"] and str(best.index) == str(sample.evidence_section_id).split(".")[0],
               scores={"sec_sim": list(sec_sim), "q2s": choice.q2s, "s3": choice.s3})
    return rec, best.text


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "test_file", "retrieval_results_file", "knowledge_base_path", "output_file")
    t0 = time.time()
    all_samples = read_samples(args.test_file)
    samples = all_samples[: args.limit]
    kinds = {s.is_infoseek for s in samples}
    if len(kinds) > 1:
        raise OmgmError(f"{args.test_file} mixes InfoSeek and E-VQA rows; answer them separately")
    infoseek = kinds == {True}
    retrieval = read_retrieval(args.retrieval_results_file)
    missing = [s for s in check_made_for(retrieval, all_samples, args.test_file) if s in samples]
    kb = open_kb(args.knowledge_base_path)
    cross = CrossEncoder(args.section_reranker, None if args.device == "auto" else args.device)
    gen = build_generator(args.answer_generator, args.llm_checkpoint, args.device, args.dtype, args.max_new_tokens,
                          args.attn_implementation)
    dirs = ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir)
    out = Path(args.output_file)
    partial = out.with_name(out.name + ".partial.jsonl")
    done = _load_partial(partial)
    if done:
        print(f"resuming: {len(done)} answers already in {partial}", file=sys.stderr)
    counts: Counter = Counter()
    todo = [s for s in samples if s.sample_id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    window = args.batch_size * args.group_batches   # prompts of a window are batched by length, then saved
    for i in tqdm(range(0, len(todo), window), desc="answer", unit=f" x{window}", disable=args.no_progress):
        batch = todo[i:i + window]
        entries = [retrieval.results.get(s.sample_id) for s in batch]
        pairs, owners = [], []
        for j, (s, e) in enumerate(zip(batch, entries)):
            url = e["retrieved_entities"][0]["url"] if e else None
            if url and url in kb:
                for sec in kb.get(url).sections():
                    pairs.append((s.question, sec.text))
                    owners.append(j)
        flat = cross.scores(pairs) if pairs else []
        per = [[x for x, o in zip(flat, owners) if o == j] for j in range(len(batch))]
        recs, reqs = [], []
        for s, e, q2s in zip(batch, entries, per):
            rec, context = _prepare(s, e, kb, q2s, args.step2_beta, counts)
            recs.append(rec)
            if context is not None:
                context, rec["context_truncated"] = gen.truncate(context, args.context_tokens)
                counts["context cut to --context_tokens"] += rec["context_truncated"]
                image = dirs.resolve(s) if isinstance(gen, VLMGenerator) else None
                reqs.append((rec, GenRequest(s.question, context, infoseek, image)))
        answers = gen.generate_all([r for _, r in reqs], args.batch_size) if reqs else []
        for (rec, _), answer in zip(reqs, answers):
            rec["prediction"] = answer
        with partial.open("a", encoding="utf-8") as fh:
            for rec in recs:
                rec.setdefault("prediction", "")
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        done.update({r["data_id"]: r for r in recs})
    records = [done[s.sample_id] for s in samples]
    meta = {"omgm_version": __version__, "test_file": str(args.test_file), "samples_hash": samples_fingerprint(all_samples), "limit": args.limit,
            "retrieval_results_file": str(args.retrieval_results_file), "answer_generator": gen.name,
            "step2_beta": args.step2_beta, "section_reranker": args.section_reranker, "dataset":
            "infoseek" if infoseek else "evqa", "counts": dict(counts), "samples_without_retrieval": len(missing)}
    write_json_atomic(out, records if args.bare_output else
                      {"format": ANSWERS_FORMAT, "version": 1, "meta": meta, "records": records})
    partial.unlink(missing_ok=True)
    summary = {"stage": "step3", "answers": len(records), "seconds": round(time.time() - t0, 2),
               "entity_hit": round(100.0 * sum(r["entity_hit"] for r in records) / max(1, len(records)), 2),
               "section_hit": round(100.0 * sum(r["section_hit"] for r in records) / max(1, len(records)), 2),
               "counts": dict(counts)}
    if not args.no_eval:
        summary["evaluation"] = evaluate_records(records, "infoseek" if infoseek else "evqa", args.bem_model,
                                                 args.infoseek_val, args.infoseek_qtype, samples)
    write_json_atomic(out.with_suffix(".summary.json"), summary, indent=2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
