"""``python -m omgm.ask``: the command lives in :mod:`omgm.commands.ask`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.ask"))
