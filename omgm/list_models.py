"""``python -m omgm.list_models``: the command lives in :mod:`omgm.commands.list_models`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.list_models"))
