"""``python -m omgm <command> ...``: the ``omgm`` command (``python -m omgm --help`` lists the commands). Under
``torchrun -m omgm index build ...`` or ``accelerate launch -m omgm step3 train ...`` every process runs it."""
from omgm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
