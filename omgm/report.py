"""``python -m omgm.report``: the command lives in :mod:`omgm.commands.report`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.report"))
