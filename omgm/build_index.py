"""``python -m omgm.build_index``: the command lives in :mod:`omgm.commands.build_index`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.build_index"))
