"""``python -m omgm.evaluate``: the command lives in :mod:`omgm.commands.evaluate`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.evaluate"))
