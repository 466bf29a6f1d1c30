"""``omgm``: one command for every stage. ``omgm --help`` lists the subcommands, ``omgm SUB --help`` their flags.

Each subcommand is the same entry point as ``python -m omgm.<module>`` (same flags, the official names).
"""
from __future__ import annotations

import sys

from omgm.errors import run_module

# subcommand words -> (module whose main(argv) runs it, one line of help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("ask",): ("omgm.commands.ask", "one question end to end: top entities, chosen section, answer"),
    ("step1",): ("omgm.commands.step1", "step 1: query image -> entity summaries (FAISS), recall@k"),
    ("step2", "train"): ("omgm.commands.step2", "step 2a: train the IT2IT Q-Former reranker"),
    ("step2", "rerank"): ("omgm.commands.step2", "step 2b: hybrid-grained reranking of step-1 results"),
    ("step3",): ("omgm.commands.step3", "step 3: best section of the top entity -> generator -> official metric"),
    ("step3", "train"): ("omgm.commands.step3_train", "fine-tune the step-3 generator on a training split"),
    ("evaluate",): ("omgm.commands.evaluate", "score an answers file (E-VQA / InfoSeek) or a ranking (recall@k)"),
    ("report",): ("omgm.commands.report", "an HTML page of a run: recall plot, per-sample rankings, sections, answers"),
    ("compare",): ("omgm.commands.compare", "compare retrievers on the same samples (table + plot)"),
    ("kb", "import"): ("omgm.data.kb_import", "KB JSON, or your own JSONL + images, -> SQLite store"),
    ("index", "build"): ("omgm.commands.build_index", "summaries -> embeddings -> FAISS index with a manifest"),
    ("data", "download-images"): ("omgm.prep.download_wiki_images", "download the Wikipedia images of the CSVs"),
    ("data", "check"): ("omgm.prep.check_data", "what is missing (query images, entities, wiki images) per split"),
    ("data", "rename-inat"): ("omgm.prep.rename_inat", "lay iNaturalist files out as {dir}/{id}.jpg"),
    ("data", "mine-negatives"): ("omgm.prep.mine_negatives", "hard negatives for step 2a from step-1 results"),
    ("fetch",): ("omgm.fetch.cli", "download the released files a dataset's published rows need (resumable, verified)"),
    ("reproduce",): ("omgm.reproduce.cli", "steps 1-3 + metrics with the published settings -> tables vs the paper"),
    ("list-models",): ("omgm.commands.list_models", "the retrievers, generators and reranker sizes omgm knows"),
}
# module mains that take the second word themselves (python -m omgm.step2 train ...)
_KEEPS_WORD = {("step2", "train"), ("step2", "rerank")}


def usage() -> str:
    width = max(len(" ".join(k)) for k in COMMANDS) + 2
    lines = ["usage: omgm <command> [flags]   (omgm <command> --help for its flags; omgm --version)", "",
             "commands:"]
    lines += [f"  {' '.join(k):<{width}}{h}" for k, (_, h) in COMMANDS.items()]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """The longest command that ``argv`` starts with, and the remaining arguments."""
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            return key, argv[n:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version", "version"):
        from omgm import __version__

        print(f"omgm {__version__}")
        return 0
    found = resolve(argv)
    if found is None:
        print(f"error: unknown command {' '.join(argv[:2])!r}\n\n{usage()}", file=sys.stderr)
        return 2
    key, rest = found
    module, _ = COMMANDS[key]
    return run_module(module, [key[1], *rest] if key in _KEEPS_WORD else rest)


if __name__ == "__main__":
    raise SystemExit(main())
