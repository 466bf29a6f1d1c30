"""``python -m omgm.step1``: the command lives in :mod:`omgm.commands.step1`."""
from omgm.commands.step1 import main

if __name__ == "__main__":
    raise SystemExit(main())
