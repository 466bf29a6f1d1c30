"""``python -m omgm.evaluate``: the command lives in :mod:`omgm.commands.evaluate`."""
from omgm.commands.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
