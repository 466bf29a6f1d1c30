"""``--smoke``: every benchmark runs at tiny sizes in the test suite (tests/test_benchmarks.py), so none rots."""
from __future__ import annotations

import argparse


def add_smoke(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs (figures mean "
                                                        "nothing); the test suite runs every benchmark so")


def apply_smoke(args: argparse.Namespace, **small) -> argparse.Namespace:
    if getattr(args, "smoke", False):
        for k, v in small.items():
            setattr(args, k, v)
    return args
