"""``python -m omgm.build_index``: the command lives in :mod:`omgm.commands.build_index`."""
from omgm.commands.build_index import main

if __name__ == "__main__":
    raise SystemExit(main())
