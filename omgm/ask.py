"""``python -m omgm.ask``: the command lives in :mod:`omgm.commands.ask`."""
from omgm.commands.ask import main

if __name__ == "__main__":
    raise SystemExit(main())
