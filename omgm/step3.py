"""``python -m omgm.step3``: the command lives in :mod:`omgm.commands.step3`."""
from omgm.commands.step3 import main

if __name__ == "__main__":
    raise SystemExit(main())
