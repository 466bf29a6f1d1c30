"""``python -m omgm.step2``: the command lives in :mod:`omgm.commands.step2`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.step2"))
