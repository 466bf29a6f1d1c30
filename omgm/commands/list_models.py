"""``omgm list-models``: every model name the stages accept, from the registries (so it cannot go stale)."""
from __future__ import annotations

import json

from omgm.errors import cli_errors
from omgm.help import command_parser


def catalogue() -> dict[str, dict[str, str]]:
    from omgm.generate.generators import list_generators
    from omgm.generate.sections import DEFAULT_CROSS_ENCODER
    from omgm.rerank.model import IT2ITConfig
    from omgm.retrieval.registry import list_retrievers

    blip2 = IT2ITConfig()
    return {
        "retrievers (--retriever_vit)": list_retrievers(),
        "rerankers (--reranker-model-name)": {
            "blip2": f"BLIP-2 Q-Former over EVA ViT-g/14 ({blip2.vision.num_hidden_layers} ViT blocks, "
                     f"{blip2.qformer.num_hidden_layers} Q-Former layers, {blip2.num_query_tokens} queries)",
            "<file.json>": "IT2ITConfig sizes (tests and the demo use a tiny one)"},
        "generators (--answer_generator)": {**list_generators(), "<folder>": "any local model folder (layout "
                                                                              "read from its config.json)"},
        "section rerankers (--section_reranker)": {DEFAULT_CROSS_ENCODER: "cross-encoder of step 3 (default)"},
        "answer equivalence (--bem_model)": {"kortukov/answer-equivalence-bem": "a PyTorch port of BEM"},
    }


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = command_parser("list-models", __doc__)
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    cat = catalogue()
    if args.json:
        print(json.dumps(cat, indent=2))
        return 0
    for kind, names in cat.items():
        print(kind)
        for name, help_text in names.items():
            print(f"  {name:<34}{help_text}")
    return 0
