"""``python -m omgm.compare``: the command lives in :mod:`omgm.commands.compare`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.compare"))
