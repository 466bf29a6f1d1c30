"""``python -m omgm.step3_train``: the command lives in :mod:`omgm.commands.step3_train`."""
from omgm.commands.step3_train import main

if __name__ == "__main__":
    raise SystemExit(main())
