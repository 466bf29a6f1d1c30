"""``python -m omgm.step3``: the command lives in :mod:`omgm.commands.step3`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.step3"))
