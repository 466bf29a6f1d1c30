"""The base of every error omgm raises about a user's input (files, rows, entities, models).

Entry points catch :class:`OmgmError` and print its message (which names the file and row or entity) with
exit status 2, instead of a traceback. A few conditions of the machine are the user's to fix too, whichever
library met them: a full disk (the OS's ``ENOSPC``/``EDQUOT``, SQLite's "database or disk is full", torch's
stream-writer failure), a file or folder without permission (or on a read-only file system), a file name too
long for the file system, a deeply nested (hostile) input; they are
one line as well (:func:`user_condition`). Anything else is a bug and keeps its traceback. Ctrl-C is one line
and exit status 130.
"""
from __future__ import annotations

import errno
import functools
import pickle
import sqlite3
import sys
from typing import Callable

INTERRUPTED = "interrupted: finished work is kept; run the same command again to continue"
_DISK_FULL = "the disk is full ({}); finished work is kept: free space and run the same command again"
# what libraries say when a write fails for want of space, where they do not raise OSError(ENOSPC)
_DISK_FULL_WORDS = ("database or disk is full", "basic_ios::clear", "No space left on device",
                    "PytorchStreamWriter failed writing file")


class OmgmError(Exception):
    """An input problem the user can fix; the message says where."""


def user_condition(exc: BaseException) -> str | None:
    """The one-line message for a condition of the machine the user fixes (see the module doc), else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _DISK_FULL.format(exc.filename or exc.strerror or exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS) and exc.filename:
        return f"{exc.filename}: {exc.strerror}: check its permissions, or choose a path you can write"
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return (f"a file name is too long for the file system ({str(exc.filename)[:80]}...): choose a shorter "
                f"path or name")
    if isinstance(exc, (sqlite3.Error, RuntimeError)) and any(w in str(exc) for w in _DISK_FULL_WORDS):
        return _DISK_FULL.format(str(exc).splitlines()[0][:200])
    if isinstance(exc, pickle.UnpicklingError):
        return (f"refused to read a file that holds pickled objects besides tensors (nothing in it was run): "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}")
    if isinstance(exc, RecursionError):
        return "an input file is nested too deeply to read (a damaged or hostile JSON file?)"
    return None


def cli_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator for ``main(argv)``: print ``error: <message>`` and return 2 on an :class:`OmgmError` or a
    :func:`user_condition`; print one line and return 130 on Ctrl-C."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except OmgmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        except Exception as exc:
            message = user_condition(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return 2

    return wrapper


def run_module(module: str, argv: list[str] | None = None) -> int:
    """Import ``module`` and run its ``main(argv)``; Ctrl-C while the (heavy) libraries are still importing is
    the same one line and exit 130 as Ctrl-C while the command runs."""
    import importlib

    try:
        entry = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return entry(argv)
