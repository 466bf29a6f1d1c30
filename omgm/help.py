"""Help for the commands: one description of the flags many commands share, and the parser every ``omgm`` command
starts from (its docstring's first paragraph as the description, each default shown once)."""
from __future__ import annotations

import argparse
import re

# One description for the flags many commands share that are not stage settings (those carry their own help, see
# omgm.settings); a command's own help text wins.
COMMON_HELP = {
    "sample_file": "the questions: an E-VQA-form CSV (InfoSeek rows carry data_id)",
    "test_file": "the questions: an E-VQA-form CSV (InfoSeek rows carry data_id)",
    "train_file": "the training questions (E-VQA-form CSV)",
    "knowledge_base": "the KB: the JSON object keyed by URL, or the SQLite store of omgm kb import",
    "inat_dir": "iNaturalist query images, as {inat_dir}/{image_id}.jpg",
    "gld_dir": "Google Landmarks query images, as {gld_dir}/{image_id}.jpg",
    "infoseek_dir": "InfoSeek query images, as {infoseek_dir}/{image_id}.jpg or .JPEG",
    "wiki_img_csv_dir": "the folder of the wiki_image_url_part_*_processed.csv files",
    "wiki_img_path_prefix": "the wiki-image root: the CSVs' img_path values are relative to it",
    "no_progress": "no progress bars",
    "top_ks": "recall cut-offs, comma-separated",
    "step1_result": "the step-1 result file (ours, or the authors' bare JSON)",
    "faiss_index": "the summary index (ours with its manifest, or the authors' bare file)",
    "bem_model": "a PyTorch BEM (BERT answer-equivalence classifier) folder or hub id; without it E-VQA is EM only",
    "infoseek_val": "InfoSeek's infoseek_val.jsonl (for the official InfoSeek score)",
    "infoseek_qtype": "InfoSeek's infoseek_val_qtype.jsonl (for the official InfoSeek score)",
    "out": "the output file",
    "registry": "another registry file with the same schema as omgm/fetch/registry.yaml",
    "question": "the question about the image",
    "overrides": "a config key set for this run (repeatable), e.g. --set retrieval_top_k=10",
    "out_dir": "the folder for the comparison table and plot",
    "result_file": "a result file: answers (step 3) or a ranking (step 1/2)",
    "step1": "the step-1 result file",
    "step2": "the step-2 result file",
    "answers": "the step-3 answers file",
    "bare_output": "write the authors' headerless JSON instead of omgm's (no format, version or meta)",
    "commit_every": "entities per SQLite transaction (a killed import resumes from the last one)",
    "csv_dir": "the folder of the wiki_image_url_part_*_processed.csv files",
    "workers": "parallel downloads",
    "retries": "attempts after the first, on 429/5xx/timeouts",
    "user_agent": "the User-Agent header (Wikimedia asks for contact details)",
    "limit": "only the first N items (a quick trial)",
}


def strip_markup(text: str) -> str:
    """A docstring as plain help text: ``code`` -> code, :class:`x.Y` -> Y."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", text)
    return text.replace("``", "")


def command_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``omgm NAME``: that one usage form, its docstring's first paragraph without markup, and the
    defaults shown beside every flag."""
    first = strip_markup((doc or "").split("\n\n")[0]).strip()
    return _CommandParser(prog=f"omgm {name}", description=first, formatter_class=DefaultsOnce)


class DefaultsOnce(argparse.HelpFormatter):
    """Each flag's default shown once: appended where the help does not already say it, left out where there is
    none to show (None, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _CommandParser(argparse.ArgumentParser):
    """Shared flags get their one description (:data:`COMMON_HELP`) before help is shown."""

    def format_help(self) -> str:
        describe(self)
        return super().format_help()


def describe(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Fill the help of shared flags from :data:`COMMON_HELP` (a command's own text wins); returns the parser."""
    for action in parser._actions:
        if not action.help and action.dest in COMMON_HELP:
            action.help = COMMON_HELP[action.dest]
    return parser
