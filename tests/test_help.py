"""Help a newcomer can read: one usage form, every flag described with its default, no source markup."""
from __future__ import annotations

import importlib
import re

import pytest

from omgm import cli
from omgm.help import describe

PARSERS = {("ask",): "omgm.commands.ask:build_parser", ("index", "build"): "omgm.commands.build_index:build_parser",
           ("compare",): "omgm.commands.compare:build_parser", ("evaluate",): "omgm.commands.evaluate:build_parser",
           ("report",): "omgm.commands.report:build_parser", ("step1",): "omgm.commands.step1:build_parser",
           ("step2", "train"): "omgm.commands.step2:train_parser", ("step2", "rerank"): "omgm.commands.step2:rerank_parser",
           ("step3",): "omgm.commands.step3:build_parser", ("step3", "train"): "omgm.commands.step3_train:build_parser",
           ("kb", "import"): "omgm.data.kb_import:build_parser", ("fetch",): "omgm.fetch.cli:build_parser",
           ("reproduce",): "omgm.reproduce.cli:build_parser", ("data", "check"): "omgm.prep.check_data:build_parser",
           ("data", "download-images"): "omgm.prep.download_wiki_images:build_parser",
           ("data", "mine-negatives"): "omgm.prep.mine_negatives:build_parser"}


def _parser(words):
    module, fn = PARSERS[words].split(":")
    return describe(getattr(importlib.import_module(module), fn)())


@pytest.mark.parametrize("words", sorted(PARSERS))
def test_every_flag_is_described_under_one_usage_form(words):
    p = _parser(words)
    assert p.prog == "omgm " + " ".join(words)
    bare = [a.option_strings[0] if a.option_strings else a.dest for a in p._actions if not a.help]
    assert bare == [], f"omgm {' '.join(words)}: flags without help: {bare}"


@pytest.mark.parametrize("words", sorted(k for k in cli.COMMANDS if k != ("list-models",)))
def test_help_output_is_plain_and_shows_defaults(words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*words, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith(f"usage: omgm {' '.join(words)}")
    assert "``" not in out and ":class:" not in out and ":func:" not in out
    if "--device" in out:
        assert "(default: auto)" in out or "(default: cpu)" in out or "auto" in out.split("--device")[-1][:300]
    options = re.split(r"\n  (?=-)", out.split("options:")[-1])
    twice = [o.split()[0] for o in options if o.lower().count("default") > 1]
    assert twice == [] and "(default: None)" not in out and "(default: False)" not in out, twice


def test_version(capsys):
    from omgm import __version__

    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"omgm {__version__}"


def test_from_omgm_import_pipeline():
    from omgm import Pipeline
    from omgm.pipeline.pipeline import Pipeline as Same

    assert Pipeline is Same


def test_no_progress_is_quiet(tmp_path, demo_dir, tiny_llm, capfd):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "omgm.data.kb_import", "--kb_json", str(demo_dir / "kb.json"),
                           "--out", str(tmp_path / "kb.sqlite"), "--no_progress"], capture_output=True, text=True)
    assert proc.returncode == 0 and "%|" not in proc.stderr and "\n\n" not in proc.stderr
    from omgm.config import quiet_libraries
    from omgm.hub import load_pretrained

    capfd.readouterr()
    quiet_libraries()
    load_pretrained("AutoModelForCausalLM", tiny_llm, what="test model")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err


def test_the_readme_cites_the_paper_with_its_authors():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "author    = {Yang, Wei and Fu, Jingjing and Wang, Rui and Wang, Jinyu and Song, Lei and Bian, Jiang}" in readme
    assert "2505.07879" in readme


def test_gpu_check_without_torch_says_how_in_one_line(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    fake = tmp_path / "python"                                   # a python without torch
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script), "--smoke"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMGM_PYTHON": str(fake)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "has no torch" in proc.stderr and "scripts/demo.sh" in proc.stderr
