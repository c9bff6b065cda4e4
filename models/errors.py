"""Exceptions that carry one clear, user-facing line."""


class TraqPointError(RuntimeError):
    """Base class: the message is meant to be shown to the user as is."""


class MissingFileError(TraqPointError, FileNotFoundError):
    """A file the user must supply (weights, data) is not where it was expected."""


class BadInputError(TraqPointError, ValueError):
    """An input exists but cannot be used (corrupt image, wrong shape, wrong weights)."""
