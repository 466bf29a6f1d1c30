"""The base of every error omgm raises about a user's input (files, rows, entities, models).

Entry points catch :class:`OmgmError` and print its message (which names the file and row or entity) with
exit status 2, instead of a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class OmgmError(Exception):
    """An input problem the user can fix; the message says where."""


def cli_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator for ``main(argv)``: print ``error: <message>`` and return 2 on an :class:`OmgmError`."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except OmgmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            if exc.errno != 28:                     # ENOSPC: the one OS error a user fixes by freeing space
                raise
            print(f"error: the disk is full ({exc.filename or exc}); finished work is kept: free space and run the "
                  f"same command again", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; run the same command again to continue", file=sys.stderr)
            return 130

    return wrapper
