"""``python -m omgm.compare``: the command lives in :mod:`omgm.commands.compare`."""
from omgm.commands.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
