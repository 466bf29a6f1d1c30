"""``python -m omgm.list_models``: the command lives in :mod:`omgm.commands.list_models`."""
from omgm.commands.list_models import main

if __name__ == "__main__":
    raise SystemExit(main())
