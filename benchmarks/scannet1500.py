"""ScanNet-1500 relative pose benchmark: ``python -m benchmarks.scannet1500 --methods sift,orb``.

Data (``--root``, default ``../shared/data/scannet1500``), the layout of LoFTR's ScanNet-1500 test set:
``test.npz`` (``name [1500, 4]`` = scene, sub-scene, frame0, frame1; ``rel_pose [1500, 12]`` = top
3x4 of ``T_0to1`` row-major), ``intrinsics.npz`` (key ``scene<NNNN_NN>`` -> 3x3 for 640x480 images) and
``scene<NNNN_NN>/color/<frame>.jpg``. Images are resized to 640x480 (the raw 1296x968 colour frames
too), where the intrinsics hold. Pairs whose images are missing or truncated JPEGs are skipped and counted.
Metrics: AUC@5/10/20 deg (percent), pairs, mean matches, mean RANSAC inliers.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

from . import relpose, runner
from .images import Resize

NAME = "scannet1500"
IMAGE_SIZE = (640, 480)  # (width, height) the official intrinsics refer to
LAYOUT = "expected LoFTR's ScanNet-1500 layout: test.npz, intrinsics.npz, scene<NNNN_NN>/color/<frame>.jpg"


def _load_npz(path: Path) -> dict:
    if not path.is_file():
        raise BadInputError(f"wrong layout: {path.name} not found in {path.parent} ({LAYOUT})")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:  # truncated or not an npz at all
        raise BadInputError(f"cannot read {path} ({type(err).__name__}: {err}); re-download it ({LAYOUT})") from None


def load_pairs(root: Path) -> list[relpose.PosePair]:
    """All listed pairs of ``root`` (whether or not their images exist)."""
    root = runner.require_dir(root, "ScanNet-1500 root", LAYOUT)
    index, intrinsics = _load_npz(root / "test.npz"), _load_npz(root / "intrinsics.npz")
    names, rel = index.get("name"), index.get("rel_pose")
    if names is None or rel is None or names.ndim != 2 or names.shape[1] != 4 or rel.shape != (len(names), 12):
        raise BadInputError(f"wrong layout: {root / 'test.npz'} needs 'name' [N, 4] and 'rel_pose' [N, 12]")
    pairs = []
    for (scene, sub, frame0, frame1), pose in zip(names.astype(int), rel.astype(np.float64)):
        scene_name = f"scene{scene:04d}_{sub:02d}"
        if scene_name not in intrinsics:
            raise BadInputError(f"wrong layout: {root / 'intrinsics.npz'} has no intrinsics for {scene_name}")
        K = intrinsics[scene_name].astype(np.float64).reshape(3, 3)
        T = np.eye(4)
        T[:3, :4] = pose.reshape(3, 4)
        folder = root / scene_name / "color"
        pairs.append(relpose.PosePair(folder / f"{frame0}.jpg", folder / f"{frame1}.jpg", K, K, T, IMAGE_SIZE))
    return pairs


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=runner.shared_data("scannet1500"), help="ScanNet-1500 folder")
    relpose.add_ransac_args(parser)


def run(args: argparse.Namespace) -> runner.Outcome:
    listed = load_pairs(args.root)
    pairs, skipped = relpose.split_available(listed)
    if not pairs:
        raise MissingFileError(f"none of the {len(listed)} pairs of {args.root / 'test.npz'} has its images ({LAYOUT})")
    resize = Resize("exact", width=IMAGE_SIZE[0], height=IMAGE_SIZE[1])
    return relpose.run_pose_benchmark(NAME, args, args.root, listed, pairs, skipped, resize, {})


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], relpose.KEYS, run, add_args, relpose.error_plot(NAME))


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
