"""``python -m omgm.step1``: the command lives in :mod:`omgm.commands.step1`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.step1"))
