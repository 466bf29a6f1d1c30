"""``python -m omgm.report``: the command lives in :mod:`omgm.commands.report`."""
from omgm.commands.report import main

if __name__ == "__main__":
    raise SystemExit(main())
