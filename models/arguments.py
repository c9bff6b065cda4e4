"""Checks of command-line values shared by every entry point: devices, counts and output paths.

Each check either returns the value (normalised) or raises :class:`~models.errors.BadInputError`
with one line that names the option, the value and what to do, so a command can refuse bad
input *before* it loads a network or reads a sequence (and never loses a run to an output path
that cannot be written at the end).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .errors import BadInputError

DEVICE_FORMS = "cpu, cuda, cuda:N or mps"


def check_device(device: str | torch.device, option: str = "--device") -> str:
    """Return ``device`` if torch can run on it here; raise one line otherwise.

    ``cuda`` needs a CUDA build of torch and a visible GPU (``cuda:N``: at least N + 1 of them),
    ``mps`` an Apple GPU; anything torch cannot parse (``banana``) is refused by name.
    """
    text = str(device).strip()
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise BadInputError(f"{option} {text!r} is not a torch device; use {DEVICE_FORMS}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise BadInputError(f"{option} {text}: CUDA is not available ({build}, torch {torch.__version__}); "
                                "use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise BadInputError(f"{option} {text}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BadInputError(f"{option} {text}: Apple MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise BadInputError(f"{option} {text}: unsupported device type {dev.type!r}; use {DEVICE_FORMS}")
    return text


def check_count(value: int | None, option: str, minimum: int = 1, allow_none: bool = True) -> int | None:
    """Return ``value`` if it is at least ``minimum`` (or None when allowed); raise one line otherwise."""
    if value is None:
        if allow_none:
            return None
        raise BadInputError(f"{option} is required")
    if value < minimum:
        raise BadInputError(f"{option} must be at least {minimum}, got {value}")
    return value


def writable_dir(path: str | Path, option: str) -> Path:
    """Create the folder ``path`` if needed and prove it can be written (a probe file); return it."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{option} {path} is an existing file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BadInputError(f"{option} {path} cannot be written ({reason}); choose a writable folder") from None
    return path


def writable_file(path: str | Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Check that the file ``path`` can be written (its folder is created and probed); return it.

    ``suffixes`` (lower case, with the dot), when given, are the accepted file types.
    """
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise BadInputError(f"{option} {path}: the file must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise BadInputError(f"{option} {path} is a folder; give a file name")
    writable_dir(path.parent, f"{option} folder")
    return path
