"""Entity summaries: the texts a step-1 index embeds, one per KB entity, in KB row order.

The authors indexed summaries written by Llama-3 but released neither the summaries nor the prompt.
We offer two summarisers and store their output as JSONL (``{"row", "url", "summary"}`` per line, row
order), appended and flushed batch by batch, so a killed run resumes at the first missing row:

- ``lead``: ``"{title}. {lead section}"`` cut to ``max_words`` words (no model; also a sound baseline);
- ``llm``: a transformers causal LM (e.g. ``meta-llama/Meta-Llama-3-8B-Instruct``), greedy decoding,
  with :data:`SUMMARY_SYSTEM` / :data:`SUMMARY_USER` below (our prompt, documented in the README).
"""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from omgm.bookkeeping import read_bookkeeping
from omgm.data.kb import Entity, KnowledgeBase
from omgm.errors import OmgmError
from omgm.io import append_jsonl, atomic_write, write_json_atomic

log = logging.getLogger(__name__)

SUMMARY_SYSTEM = "You are an encyclopedia editor who writes short, factual summaries of Wikipedia articles."
SUMMARY_USER = (
    "Summarize the Wikipedia article below about \"{title}\" in two or three sentences. Say what it is and, "
    "where the article tells, what it looks like (shape, colour, size, material, setting), so that the "
    "summary helps to recognise it in a photo. Answer with the summary only.\n\nArticle:\n{article}"
)


class SummaryFileError(OmgmError, ValueError):
    """A summary JSONL that does not match the KB; the message names file and line."""


def lead_summary(entity: Entity, max_words: int = 120) -> str:
    words = f"{entity.title}. {entity.lead_text()}".split()
    return " ".join(words[:max_words])


def article_text(entity: Entity, max_words: int = 768) -> str:
    """The article as the LLM sees it: section titles and texts, references dropped, cut to ``max_words``."""
    parts = [f"{s.title}\n{s.text}" if i else s.text for i, s in enumerate(entity.sections())]
    return " ".join(" ".join(parts).split()[:max_words])


@dataclass
class SummaryStore:
    """The JSONL file; reading verifies that line ``k`` is row ``k`` and the KB's ``k``-th URL."""

    path: Path

    def count_done(self, kb: KnowledgeBase) -> int:
        """Complete, valid leading rows; a torn last line (a crash mid-write) is cut off and reported."""
        if not self.path.is_file():
            return 0
        good_bytes, n, urls = 0, 0, kb.urls()       # one pass over the KB's URLs, not one query per row
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    if raw.endswith(b"\n"):
                        raise SummaryFileError(f"{self.path}, line {n + 1}: not JSON") from None
                    log.warning("%s: dropping a torn last line (interrupted write)", self.path)
                    break
                self._check(rec, n, next(urls, None))
                good_bytes += len(raw)
                n += 1
        if good_bytes < self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good_bytes)
        return n

    def _check(self, rec: dict, n: int, url: str | None) -> None:
        if rec.get("row") != n or rec.get("url") != url:
            raise SummaryFileError(f"{self.path}, line {n + 1}: expected row {n} ({url!r}), found row "
                                   f"{rec.get('row')} ({rec.get('url')!r}); the file belongs to another KB")

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(self.path.name + ".meta.json")

    def check_summarizer(self, summarizer_id: str, done: int) -> None:
        """Refuse to continue a file another summarizer wrote (its rows would be mixed); record a new one."""
        if done and self.meta_path.is_file():
            made_by = read_bookkeeping(self.meta_path, {"summarizer": str}, what="the record of what wrote the "
                                       "summaries", fix=f"delete it and {self.path}, or give another --summary_file")[
                "summarizer"]
            if made_by != summarizer_id:
                raise SummaryFileError(f"{self.path} holds {done} summaries written by {made_by!r}, not "
                                       f"{summarizer_id!r}: delete it, or give another --summary_file")
            return
        if done:
            raise SummaryFileError(f"{self.path} holds {done} summaries but no record of what wrote them "
                                   f"({self.meta_path} is missing): delete it, or give another --summary_file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.meta_path, {"summarizer": summarizer_id})

    def keep_rows(self, n: int) -> None:
        """Cut the file back to its first ``n`` lines (a crash left a partial batch after them)."""
        with self.path.open("rb") as fh, atomic_write(self.path) as tmp, tmp.open("wb") as out:
            out.writelines(itertools.islice(fh, n))            # streamed: memory does not grow with the file
        log.info("%s: cut back to %d rows (the last batch was incomplete)", self.path, n)

    def append(self, rows: Sequence[tuple[int, str, str]]) -> None:
        """Append records; a last line left without its newline by a crash is completed first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, [{"row": row, "url": url, "summary": text} for row, url, text in rows], sync=False)

    def iter_texts(self, kb: KnowledgeBase, start: int = 0) -> Iterator[str]:
        """Summaries from row ``start`` on, in row order, each checked against the KB."""
        urls = kb.urls()
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                url = next(urls, None)
                if n < start:
                    continue
                rec = json.loads(line)
                self._check(rec, n, url)
                yield rec["summary"]


class LLMSummarizer:
    """Batched greedy summaries with a transformers causal LM (left padding, chat template if it has one)."""

    def __init__(self, model_path: str, device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 96, max_words: int = 768, engine: str = "transformers") -> None:
        from omgm.devices import resolve_device, torch_dtype
        from omgm.hub import load_pretrained

        self.device = resolve_device(device)
        self.tokenizer = load_pretrained("AutoTokenizer", model_path, what="summary model tokenizer",
                                         padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.engine, self.llm, self.model = engine, None, None
        if engine == "vllm":                      # optional, CUDA only; the transformers path is the reference
            from omgm.generate.generators.vllm_engine import make_llm

            self.llm = make_llm(model_path, dtype)
        else:
            self.model = load_pretrained("AutoModelForCausalLM", model_path, what="summary model (--summary_model)",
                                         dtype=torch_dtype(dtype, self.device)).to(self.device).eval()
        self.max_new_tokens, self.max_words = max_new_tokens, max_words
        self.name = f"llm:{model_path}"

    def prompt(self, entity: Entity) -> str:
        user = SUMMARY_USER.format(title=entity.title, article=article_text(entity, self.max_words))
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [{"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": user}]
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return f"{SUMMARY_SYSTEM}\n\n{user}\n\nSummary:"

    def __call__(self, entities: Sequence[Entity]) -> list[str]:
        if self.llm is not None:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            prompts = [TokensPrompt(prompt_token_ids=self.tokenizer(self.prompt(e), add_special_tokens=False)["input_ids"])
                       for e in entities]
            outs = self.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens,
                                                             stop_token_ids=[self.tokenizer.eos_token_id]),
                                     use_tqdm=False)
            return [" ".join(o.outputs[0].text.split()) or lead_summary(e) for o, e in zip(outs, entities)]
        from omgm.generate.generators.base import greedy_texts

        texts = greedy_texts(self.model, self.tokenizer, [self.prompt(e) for e in entities], self.max_new_tokens)
        return [" ".join(t.split()) or lead_summary(e) for t, e in zip(texts, entities)]


def write_summaries(kb: KnowledgeBase, store: SummaryStore, summarize: Callable[[Sequence[Entity]], list[str]],
                    batch_size: int = 16, *, progress: bool = True, ctx=None, summarizer_id: str = "") -> int | None:
    """Summarise every entity not yet in ``store``; returns how many were written in this call (None on a rank
    that does not merge).

    Batches start at multiples of ``batch_size`` (a store left mid-batch by a crash is cut back to the last whole
    batch), so a resumed or data-parallel run summarises exactly the batches an uninterrupted one does. Under
    torchrun (``ctx``), blocks of 64 batches are spread over the ranks and rank 0 appends them in order.
    """
    from omgm.parallel import Context, parts_folder, parts_in_use

    ctx = ctx or Context()
    if ctx.main or ctx.alone:
        done = store.count_done(kb)                  # once per start: it reads and checks the whole file
        store.check_summarizer(summarizer_id, done)
        if done % batch_size and done < len(kb):    # a batch cut by a crash (the last one ends at the KB's end)
            done -= done % batch_size
            store.keep_rows(done)
    ctx.barrier()
    if not (ctx.main or ctx.alone):
        done = _rows_in(store)
    if done:
        log.info("summaries: %d of %d already in %s, resuming", done, len(kb), store.path)
    if parts_in_use(ctx, parts_folder(store.path)):
        return _write_parallel(kb, store, summarize, batch_size, progress, ctx, done, summarizer_id)
    bar = tqdm(total=len(kb), initial=done, desc="summaries", unit=" entities", disable=not progress)
    written = 0
    for a in range(done, len(kb), batch_size):
        batch = list(itertools.islice(kb.entities(start=a), batch_size))
        written += _flush(store, batch, summarize, bar)
    bar.close()
    return written


def _rows_in(store: SummaryStore) -> int:
    if not store.path.is_file():
        return 0
    with store.path.open("rb") as fh:
        return sum(1 for line in fh if line.endswith(b"\n"))


def _write_parallel(kb, store, summarize, batch_size, progress, ctx, done, summarizer_id) -> int | None:
    from omgm.parallel import Parallel, parts_folder, remove_parts, run_units, units_of

    def work(a: int, b: int) -> dict:
        rows = []
        for s in range(a, b, batch_size):
            batch = list(itertools.islice(kb.entities(start=done + s), min(batch_size, b - s)))
            rows += [[e.row, e.url, t] for e, t in zip(batch, summarize(batch))]
        return {"rows": rows}

    settings = {"kb": kb.url_order_hash(), "summarizer": summarizer_id, "batch_size": batch_size, "start": done}
    parts = run_units(Parallel(ctx, parts_folder(store.path), settings), units_of(len(kb) - done, 64 * batch_size),
                      work, progress, desc="summaries")
    if parts is None:
        return None
    rows = [r for p in parts for r in p["rows"]]
    with atomic_write(store.path) as tmp:      # the old rows and the new ones, replaced in one step
        if store.path.is_file():
            import shutil

            shutil.copyfile(store.path, tmp)
        append_jsonl(tmp, [{"row": r, "url": u, "summary": t} for r, u, t in rows])
    remove_parts(parts_folder(store.path))
    return len(rows)


def _flush(store: SummaryStore, batch: list[Entity], summarize, bar) -> int:
    texts = summarize(batch)
    store.append([(e.row, e.url, t) for e, t in zip(batch, texts)])
    bar.update(len(batch))
    return len(batch)
