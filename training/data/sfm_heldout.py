"""The evaluation sets that training must never read, and the one check that refuses them.

Every training source (SfM reconstructions, homography pools, mixes) passes its input paths
through :func:`refuse_evaluation_paths`; a path inside an evaluation set, or a folder that holds
one (training folders are read recursively), is a :class:`models.errors.BadInputError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from models.errors import BadInputError

# path components (consecutive) that mark an evaluation set of ../shared/data (see its MANIFEST.md)
EVALUATION_SETS: tuple[tuple[str, ...], ...] = (
    ("strecha",),
    ("sfm", "sacre_coeur"),
    ("kitti_mini",),
    ("tum_fr2_desk",),
    ("scannet1500",),
    ("homography", "churchill"),
)


def evaluation_set_of(path: str | Path) -> str | None:
    """The evaluation set ``path`` lies in (e.g. ``"sfm/sacre_coeur"``), or None."""
    parts = Path(path).resolve().parts
    for marker in EVALUATION_SETS:
        n = len(marker)
        if any(parts[k : k + n] == marker for k in range(len(parts) - n + 1)):
            return "/".join(marker)
    return None


def contained_evaluation_set(folder: Path) -> str | None:
    """An evaluation set found below ``folder`` (a folder of training images is read recursively)."""
    if not folder.is_dir():
        return None
    for marker in EVALUATION_SETS:
        if (folder.joinpath(*marker)).exists() or any(folder.glob("/".join(("**", *marker)))):
            return "/".join(marker)
    return None


def refuse_evaluation_paths(paths: Iterable[str | Path], what: str = "training data") -> None:
    """Raise one :class:`BadInputError` naming the first path that is, or holds, an evaluation set."""
    for path in paths:
        path = Path(path)
        marker = evaluation_set_of(path) or contained_evaluation_set(path.resolve())
        if marker is not None:
            raise BadInputError(
                f"refusing {what} {path}: it is (or holds) the evaluation set '{marker}'; "
                "training never reads evaluation sets (see ../shared/data/MANIFEST.md)"
            )
