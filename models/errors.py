"""Exceptions that carry one clear, user-facing line."""


class TraqPointError(RuntimeError):
    """Base class: the message is meant to be shown to the user as is."""


class MissingFileError(TraqPointError, FileNotFoundError):
    """A file the user must supply (weights, data) is not where it was expected."""


class BadInputError(TraqPointError, ValueError):
    """An input exists but cannot be used (corrupt image, wrong shape, wrong weights)."""


def os_error_line(err: OSError) -> str:
    """One line for an operating-system failure (disk full, a file vanished): the file and the reason."""
    return f"{err.filename or ''} {err.strerror or err}".strip()
