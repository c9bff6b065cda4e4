"""Strecha wide-baseline relative pose benchmark: ``python -m benchmarks.strecha --root ../shared/data/strecha``.

Data (``--root``): one folder per scene (``fountain-P11``, ``Herz-Jesus-P25``, ...) holding
``cameras.txt`` and ``images/<name>``. Each non-comment line of ``cameras.txt`` is
``name fx fy cx cy`` followed by the top 3x4 of ``T_world_cam`` (camera-to-world, row-major);
the intrinsics are those of the image files as stored, with pixel centres at integers (our
convention, :mod:`models.conventions`). The ground-truth cameras come from a laser-scan
registration (Strecha et al., CVPR 2008).

Pairs: every pair ``(i, j)``, ``0 < j - i <= --max-gap`` (default 3) in the file order of each scene
(fountain-P11 27 pairs + Herz-Jesus-P25 69 = 96); ``T_0to1 = inv(T_world_cam1) @ T_world_cam0``.
Images are resized to a long side of 1024 px (``--long-side``), the intrinsics mapped to the
resized image. Estimation, pose error and AUC as ``scannet1500`` (:mod:`benchmarks.relpose`);
``--estimator poselib`` selects PoseLib's LO-RANSAC instead of OpenCV's RANSAC.
Metrics: AUC@5/10/20 deg (percent), pairs, mean matches, mean RANSAC inliers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError
from models.image_io import IMAGE_SUFFIXES

from . import relpose, runner
from .images import Resize

log = logging.getLogger(__name__)

NAME = "strecha"
CAMERAS = "cameras.txt"
LAYOUT = "expected ROOT/<scene>/cameras.txt (name fx fy cx cy + 12 values of T_world_cam) and ROOT/<scene>/images/"


@dataclass(frozen=True)
class Camera:
    """One image of a scene: file, intrinsics ``K [3, 3]`` and ``T_world_cam [4, 4]``."""

    image: Path
    K: np.ndarray
    T_world_cam: np.ndarray


def parse_cameras(path: Path) -> list[Camera]:
    """The cameras of ``cameras.txt`` in file order; one clear error for a malformed line."""
    if not path.is_file():
        raise BadInputError(f"wrong layout: {path.name} not found in {path.parent} ({LAYOUT})")
    cameras = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError:
            values = np.zeros(0)
        if len(values) != 16 or not np.isfinite(values).all():
            raise BadInputError(f"{path}:{number}: expected 'name fx fy cx cy' + 12 pose values, got {line.strip()!r}")
        fx, fy, cx, cy = values[:4]
        if fx <= 0 or fy <= 0:
            raise BadInputError(f"{path}:{number}: focal lengths must be positive, got fx {fx}, fy {fy}")
        T = np.eye(4)
        T[:3] = values[4:].reshape(3, 4)
        R = T[:3, :3]
        if abs(np.linalg.det(R) - 1) > 1e-3 or np.abs(R.T @ R - np.eye(3)).max() > 1e-3:
            raise BadInputError(f"{path}:{number}: the 3x3 block of T_world_cam is not a rotation")
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        cameras.append(Camera(path.parent / "images" / fields[0], K, T))
    if len(cameras) < 2:
        raise BadInputError(f"{path} lists {len(cameras)} camera(s); a scene needs at least 2")
    return cameras


def relative_pose(cam0: Camera, cam1: Camera) -> np.ndarray:
    """``T_0to1 [4, 4]``: points of camera 0's frame into camera 1's frame."""
    return np.linalg.inv(cam1.T_world_cam) @ cam0.T_world_cam


def scene_pairs(cameras: list[Camera], max_gap: int) -> list[relpose.PosePair]:
    """Every pair ``(i, j)`` with ``0 < j - i <= max_gap`` (file order)."""
    return [
        relpose.PosePair(c0.image, c1.image, c0.K, c1.K, relative_pose(c0, c1))
        for i, c0 in enumerate(cameras)
        for c1 in cameras[i + 1 : i + 1 + max_gap]
    ]


def find_scenes(root: Path, names: list[str] | None = None) -> list[Path]:
    """Scene folders of ``root`` (those with ``cameras.txt``), or the named ones."""
    root = runner.require_dir(root, "Strecha root", LAYOUT)
    if names:
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise MissingFileError(f"Strecha scene {missing[0]!r} not found in {root}")
        return [root / n for n in names]
    scenes = sorted(p for p in root.iterdir() if (p / CAMERAS).is_file())
    if not scenes:
        raise BadInputError(f"wrong layout: no scene folder with {CAMERAS} in {root} ({LAYOUT})")
    return scenes


def check_max_gap(max_gap: int) -> None:
    if max_gap < 1:
        raise BadInputError(f"--max-gap must be at least 1, got {max_gap}")


def load_cameras(root: Path, names: list[str] | None = None) -> dict[Path, list[Camera]]:
    """The cameras of every scene folder of ``root`` (or the named ones), each ``cameras.txt`` read once."""
    return {scene: parse_cameras(scene / CAMERAS) for scene in find_scenes(root, names)}


def pairs_of(cameras: dict[Path, list[Camera]], max_gap: int) -> tuple[list[relpose.PosePair], dict]:
    """All pairs of every scene within ``max_gap`` (>= 1, :func:`check_max_gap`), and the pair count per scene."""
    pairs, per_scene = [], {}
    for scene, cams in cameras.items():
        found = scene_pairs(cams, max_gap)
        per_scene[scene.name] = len(found)
        pairs += found
    return pairs, per_scene


def load_pairs(root: Path, max_gap: int = 3, names: list[str] | None = None) -> tuple[list[relpose.PosePair], dict]:
    """:func:`pairs_of` the cameras of :func:`load_cameras`."""
    check_max_gap(max_gap)
    return pairs_of(load_cameras(root, names), max_gap)


def images_without_camera(cameras: dict[Path, list[Camera]]) -> list[str]:
    """Image files under a scene's ``images/`` that its cameras do not list (not evaluated; each
    logged), as ``scene/images/name``."""
    unlisted = []
    for scene, cams in cameras.items():
        listed = {c.image.name for c in cams}
        folder = scene / "images"
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        unlisted += [f"{scene.name}/images/{p.name}" for p in files if p.name not in listed]
    for name in unlisted:
        log.warning("not evaluated: %s has no line in its scene's %s", name, CAMERAS)
    return unlisted


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=runner.shared_data("strecha"), help="Strecha folder")
    parser.add_argument("--scenes", help="comma-separated scene folders (default: every folder with cameras.txt)")
    parser.add_argument("--max-gap", type=int, default=3, help="pairs (i, j) with 0 < j - i <= this (file order)")
    parser.add_argument("--long-side", type=int, default=1024, help="resize the long side to this (px)")
    relpose.add_ransac_args(parser)


def run(args: argparse.Namespace) -> runner.Outcome:
    if args.long_side <= 0:
        raise BadInputError(f"--long-side must be positive, got {args.long_side}")
    names = [n.strip() for n in args.scenes.split(",") if n.strip()] if args.scenes else None
    check_max_gap(args.max_gap)  # before any file is read
    cameras = load_cameras(args.root, names)
    listed, per_scene = pairs_of(cameras, args.max_gap)
    unlisted = images_without_camera(cameras)
    pairs, skipped = relpose.split_available(listed)
    if not pairs:
        raise MissingFileError(f"none of the {len(listed)} Strecha pairs has its images under {args.root} ({LAYOUT})")
    extra = {
        "max_gap": args.max_gap,
        "scenes": per_scene,
        "pairs": "every (i, j) with 0 < j - i <= max_gap in cameras.txt order; T_0to1 = inv(T_w_c1) T_w_c0",
        "intrinsics": "cameras.txt K (pixel centres at integers) of the stored images, scaled to the resized image",
    }
    outcome = relpose.run_pose_benchmark(
        NAME, args, args.root, listed, pairs, skipped, Resize("long", args.long_side), extra
    )
    outcome.result["data"]["images_without_camera"] = unlisted
    return outcome


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], relpose.KEYS, run, add_args, relpose.error_plot(NAME))


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
