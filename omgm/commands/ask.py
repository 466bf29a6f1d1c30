"""``omgm ask``: one question end to end, every model loaded once.

    omgm ask --config configs/demo.yaml --image photo.jpg --question "When was this built?" [--json]

Prints the top entities (step-1 and step-2 scores), the chosen section and the answer. The configuration keys
are the stages' own (see :mod:`omgm.pipeline.pipeline`); ``--set KEY=VALUE`` overrides one.
"""
from __future__ import annotations

import argparse
import json

import yaml

from omgm.config import ConfigError, positive_int, quiet_libraries, setup_logging
from omgm.errors import cli_errors
from omgm.help import command_parser


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("ask", __doc__)
    p.add_argument("--image", required=True, help="the query image")
    p.add_argument("--question", required=True)
    p.add_argument("--config", action="append", default=[], help="YAML file(s) (also $OMGM_CONFIG)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset", choices=["evqa", "infoseek"], default="evqa", help="which prompts to use")
    p.add_argument("--top", type=positive_int, default=5, help="entities shown")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise ConfigError(f"--set takes KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def show(result: dict) -> str:
    lines = [f"question: {result['question']}", "top entities" + (" (fused step 1 + step 2)" if result["reranked"]
                                                                   else " (step 1)") + ":"]
    for e in result["entities"]:
        s2 = f"  s2 {e['step2']:.3f}" if e["step2"] is not None else ""
        lines.append(f"  {e['rank']:>2}. {e['title'] or e['url']}  score {e['score']:.3f}  s1 {e['step1']:.3f}{s2}")
    sec = result["section"]
    if result["unanswered"]:
        lines.append(f"no answer: {result['unanswered']}")
    else:
        lines.append(f"section: {sec['title']!r} of {sec['entity']!r}")
        lines.append(f"answer: {result['answer']}")
    return "\n".join(lines)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    if not args.question.strip():
        raise ConfigError("--question is empty: nothing to answer")
    quiet_libraries()                               # one answer: no loading bars around it
    from omgm.pipeline.pipeline import Pipeline

    pipe = Pipeline.from_config(*args.config, **_overrides(args.overrides))
    result = pipe.ask(args.image, args.question, args.dataset, args.top)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else show(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
