"""``python -m omgm.step3_train``: the command lives in :mod:`omgm.commands.step3_train`."""
from omgm.errors import run_module

if __name__ == "__main__":
    raise SystemExit(run_module("omgm.commands.step3_train"))
