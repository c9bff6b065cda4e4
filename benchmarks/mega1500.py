"""MegaDepth-1500 relative pose benchmark: ``python -m benchmarks.mega1500 --root MEGADEPTH --methods sift``.

Pairs: the five official scene-info files of LoFTR's MegaDepth-1500 (``--index``, default
``../shared/data/megadepth1500_index``: ``megadepth_test_1500.txt`` lists the scenes, each
``<scene>.npz`` is a pickled dict (or an ``.npz``) with ``image_paths``, ``intrinsics`` (3x3, COLMAP
pixel convention), ``poses`` (4x4 world-to-camera) and ``pair_infos`` ``((i, j), overlap, ...)``).
Images: ``--root`` is the MegaDepth root holding ``Undistorted_SfM/<scene>/images/`` (the paths of
the index), or glue-factory's ``megadepth1500`` folder holding ``images/<scene>/``. The index files
are pickles: only read ones you trust. Images are resized to a long side of 1200 px (``--long-side``).
Metrics: AUC@5/10/20 deg (percent), pairs, mean matches, mean RANSAC inliers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

from . import relpose, runner
from .images import Resize

NAME = "mega1500"
LIST_FILE = "megadepth_test_1500.txt"
SCENE_KEYS = ("image_paths", "intrinsics", "poses", "pair_infos")
COLMAP_TO_OURS = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])  # COLMAP puts pixel centres at +0.5


def load_scene_info(path: Path) -> dict:
    """One scene-info file as a dict with :data:`SCENE_KEYS` (pickled dict or ``.npz``)."""
    if not path.is_file():
        raise MissingFileError(f"MegaDepth-1500 scene info not found: {path}")
    try:
        data = np.load(path, allow_pickle=True)  # trusted index files (pickles)
    except (OSError, ValueError, EOFError) as err:
        raise BadInputError(f"cannot read scene info {path}: {err}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        data = {k: data[k] for k in data.files}
    if not isinstance(data, dict) or any(k not in data for k in SCENE_KEYS):
        raise BadInputError(f"wrong layout: {path} is not a scene-info dict with keys {', '.join(SCENE_KEYS)}")
    return data


def scene_names(index: Path) -> list[str]:
    """Scene-info names listed in ``index/megadepth_test_1500.txt`` (or every ``*.npz`` there)."""
    index = runner.require_dir(index, "MegaDepth-1500 index folder")
    listing = index / LIST_FILE
    if listing.is_file():
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    names = sorted(p.stem for p in index.glob("*.npz"))
    if not names:
        raise BadInputError(f"wrong layout: {index} has neither {LIST_FILE} nor scene-info *.npz files")
    return names


def image_resolver(root: Path):
    """Map an index path ``Undistorted_SfM/<scene>/images/<file>`` to a file under ``root``.

    Returns the function and the folder checked for each scene (for the error message).
    """
    root = root.parent if root.name == "Undistorted_SfM" else root
    glue_factory = not (root / "Undistorted_SfM").is_dir() and (root / "images").is_dir()

    def folder(rel: str) -> Path:
        scene = Path(rel).parts[1]
        return root / "images" / scene if glue_factory else root / Path(rel).parent

    return (lambda rel: folder(rel) / Path(rel).name), folder


def load_pairs(root: Path, index: Path) -> list[relpose.PosePair]:
    """All listed pairs; raises one clear error naming the first missing scene image folder."""
    root = runner.require_dir(root, "MegaDepth root", "pass --root with Undistorted_SfM/<scene>/images")
    resolve, folder = image_resolver(root)
    pairs = []
    for name in scene_names(index):
        info = load_scene_info(index / f"{name}.npz")
        for entry in info["pair_infos"]:
            i, j = (int(v) for v in entry[0])
            rel0, rel1 = info["image_paths"][i], info["image_paths"][j]
            for rel in (rel0, rel1):
                if rel is None:
                    raise BadInputError(f"wrong layout: {name} pair ({i}, {j}) refers to an image without a path")
                if not folder(rel).is_dir():
                    raise MissingFileError(f"MegaDepth image folder not found: {folder(rel)} (scene {name})")
            K0, K1 = (COLMAP_TO_OURS @ np.asarray(info["intrinsics"][k], dtype=np.float64) for k in (i, j))
            pose0, pose1 = (np.asarray(info["poses"][k], dtype=np.float64) for k in (i, j))
            pairs.append(relpose.PosePair(resolve(rel0), resolve(rel1), K0, K1, pose1 @ np.linalg.inv(pose0)))
    return pairs


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="MegaDepth root (with Undistorted_SfM/)")
    parser.add_argument("--index", type=Path, default=runner.shared_data("megadepth1500_index"), help="scene infos")
    parser.add_argument("--long-side", type=int, default=1200, help="resize the long side to this (px)")
    relpose.add_ransac_args(parser)


def run(args: argparse.Namespace) -> runner.Outcome:
    listed = load_pairs(args.root, args.index)
    pairs, skipped = relpose.split_available(listed)
    if not pairs:
        raise MissingFileError(f"none of the {len(listed)} MegaDepth-1500 pairs has its images under {args.root}")
    if args.long_side <= 0:
        raise BadInputError(f"--long-side must be positive, got {args.long_side}")
    resize = Resize("long", args.long_side)
    extra = {
        "index": str(args.index),
        "intrinsics": "scene-info K shifted by -0.5 px (COLMAP -> pixel-centre-at-0), scaled to the resized image",
    }
    return relpose.run_pose_benchmark(NAME, args, args.root, listed, pairs, skipped, resize, extra)


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], relpose.KEYS, run, add_args, relpose.error_plot(NAME))


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
