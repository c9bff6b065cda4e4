"""Exceptions that carry one clear, user-facing line, and the way a command reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable


class TraqPointError(RuntimeError):
    """Base class: the message is meant to be shown to the user as is."""


class MissingFileError(TraqPointError, FileNotFoundError):
    """A file the user must supply (weights, data) is not where it was expected."""


class BadInputError(TraqPointError, ValueError):
    """An input exists but cannot be used (corrupt image, wrong shape, wrong weights)."""


def os_error_line(err: OSError) -> str:
    """One line for an operating-system failure (disk full, a file vanished): the file and the reason."""
    return f"{err.filename or ''} {err.strerror or err}".strip()


def run_command(body: Callable[[], int | None], error_code: int = 1) -> int:
    """Run a command's ``body`` and return its exit code (``None`` counts as 0).

    A :class:`TraqPointError` or an ``OSError`` becomes one ``error: ...`` line on stderr and
    ``error_code``; Ctrl-C becomes ``interrupted`` and 130. No traceback reaches the user.
    """
    try:
        code = body()
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return error_code
    return 0 if code is None else int(code)
