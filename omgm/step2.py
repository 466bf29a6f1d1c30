"""``python -m omgm.step2``: the command lives in :mod:`omgm.commands.step2`."""
from omgm.commands.step2 import main

if __name__ == "__main__":
    raise SystemExit(main())
