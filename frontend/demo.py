"""Track keypoints through a folder of images and render the tracks to a video.

Usage::

    python -m frontend.demo SEQUENCE_DIR --method sift --out tracks.mp4

``SEQUENCE_DIR`` is a KITTI odometry sequence folder (``image_0/``, optional ``times.txt`` and
``calib.txt``) or any folder of images (sorted by name). Prints frames, keypoints, matches,
inliers, AKTL and FPS (front-end only: extraction + tracking, not drawing or encoding).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

import models
from models.arguments import check_count, check_device, writable_file
from models.errors import BadInputError, MissingFileError, TraqPointError, os_error_line
from models.image_io import IMAGE_SUFFIXES, read_image

from .backends import add_backend_argument
from .draw import draw_tracks
from .engine import ExtractionEngine
from .frame import Frame
from .tracker import Tracker

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
log = logging.getLogger(__name__)


def image_folder(root: Path) -> Path:
    """The folder holding the images: ``root/image_0`` for a KITTI sequence, else ``root``."""
    if not root.exists():
        raise MissingFileError(f"sequence folder not found: {root} (give a KITTI sequence or image folder)")
    if not root.is_dir():
        raise BadInputError(f"{root} is a file, not a folder (give a KITTI sequence or image folder)")
    return root / "image_0" if (root / "image_0").is_dir() else root


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MissingFileError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def read_times(root: Path, count: int) -> list[float | None]:
    """KITTI ``times.txt`` when present, readable and long enough, else no timestamps (logged)."""
    path = root / "times.txt"
    if path.is_file():
        try:
            times = np.loadtxt(path, ndmin=1)
        except ValueError as err:
            log.warning("%s is not a list of numbers (%s); frames get no timestamps", path, err)
            return [None] * count
        if len(times) >= count:
            return [float(t) for t in times[:count]]
    return [None] * count


def read_kitti_K(root: Path) -> np.ndarray | None:
    """Intrinsics of the left camera from KITTI ``calib.txt`` (``P0``), ``None`` when absent.

    A ``P0`` that is not 12 numbers, or whose focal lengths are not positive and finite, is refused.
    """
    path = root / "calib.txt"
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("P0:"):
            try:
                K = np.array(line.split()[1:], dtype=np.float64).reshape(3, 4)[:, :3]
            except ValueError:
                raise BadInputError(f"calibration {path}: the P0 line is not 12 numbers") from None
            if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise BadInputError(f"calibration {path} P0: focal lengths must be positive and finite, "
                                    f"got {K[0, 0]} {K[1, 1]}")
            return K
    return None


class FolderFrames:
    """Frames of an image folder, read lazily (the engine's producer thread does the decoding).

    An image that cannot be read is skipped: logged and counted in ``skipped``.
    """

    def __init__(self, root: Path, max_frames: int | None = None) -> None:
        self.files = list_images(image_folder(root))[:max_frames]
        self.times, self.K = read_times(root, len(self.files)), read_kitti_K(root)
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        for i, (path, t) in enumerate(zip(self.files, self.times)):
            try:
                image = read_image(path)
            except TraqPointError as err:
                self.skipped += 1
                log.warning("skipping frame %d: %s", i, err)
                continue
            yield Frame(index=i, image=image, timestamp=t, K=self.K)


def folder_frames(root: Path, max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of an image folder (see :class:`FolderFrames`)."""
    return iter(FolderFrames(root, max_frames))


def open_writer(out: Path, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
    suffix = out.suffix.lower()
    if suffix not in FOURCC:
        raise BadInputError(f"--out must end in {' or '.join(FOURCC)}, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC[suffix]), fps, size)
    if not writer.isOpened():
        raise BadInputError(f"OpenCV cannot write {out} (no {FOURCC[suffix]} encoder in this build)")
    return writer


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad values before a network is built or a frame is read."""
    check_count(args.num_keypoints, "--num-keypoints")
    check_count(args.max_frames, "--max-frames")
    check_count(args.batch_size, "--batch-size")
    check_count(args.threads, "--threads")
    check_count(args.trail, "--trail", minimum=0)
    if not args.fps > 0:
        raise BadInputError(f"--fps must be positive, got {args.fps}")
    check_device(args.device)
    if args.out is not None:
        writable_file(args.out, "--out", tuple(FOURCC))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m frontend.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("sequence", type=Path, help="KITTI sequence folder (with image_0/) or a folder of images")
    p.add_argument("--method", default="traqpoint-lite", choices=models.METHODS)
    p.add_argument("--weights", default=None, help="weight file; 'random' runs an untrained TraqPoint network")
    p.add_argument("--out", type=Path, default=None, help="video to write (.mp4 or .avi); none = stats only")
    p.add_argument("--num-keypoints", type=int, default=1024)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    add_backend_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every usable core)")
    p.add_argument("--trail", type=int, default=20, help="positions per track drawn as its trail")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the written video")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Extract, track and (optionally) render; return the summary statistics.

    Ctrl-C stops early: the video written so far is closed and the summary covers the frames
    done (``"interrupted": True``).
    """
    check_args(args)
    frames = FolderFrames(args.sequence, args.max_frames)
    extractor = models.build(args.method, weights=args.weights, device=args.device)
    engine = ExtractionEngine(
        extractor,
        batch_size=args.batch_size,
        num_keypoints=args.num_keypoints,
        backend=args.backend,
        num_threads=args.threads or "auto",
    )
    tracker = Tracker(extractor, history=max(args.trail, 1))
    writer, render_s, interrupted = None, 0.0, False
    t0 = time.perf_counter()
    try:
        for frame in engine.run(iter(frames)):
            result = tracker.track(frame)
            if args.out is not None:
                t = time.perf_counter()
                if writer is None:
                    size = frame.image_hw
                    writer = open_writer(args.out, size[::-1], args.fps)
                untracked = result.frame.keypoints.numpy()[result.frame.track_ids.numpy() < 0]
                canvas = draw_tracks(frame.image, tracker.tracks, untracked)
                if canvas.shape[:2] != size:  # a folder of mixed sizes: the video keeps the first one
                    canvas = cv2.resize(canvas, size[::-1])
                writer.write(canvas)
                render_s += time.perf_counter() - t
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            writer.release()
    wall = time.perf_counter() - t0
    stats = tracker.stats
    n = len(stats)
    mean = lambda key: float(np.mean([getattr(s, key) for s in stats])) if n else 0.0  # noqa: E731
    return {
        "frames": n,
        "skipped_frames": frames.skipped,
        "frames_without_keypoints": sum(s.keypoints == 0 for s in stats),
        "keypoints_mean": mean("keypoints"),
        "matches_mean": mean("matches"),
        "inliers_mean": mean("inliers"),
        "tracks": tracker.num_tracks,
        "aktl": tracker.aktl,
        "fps_frontend": n / max(wall - render_s, 1e-9),
        "fps_total": n / max(wall, 1e-9),
        "interrupted": interrupted,
    }


def check_summary(summary: dict, args: argparse.Namespace) -> None:
    """A run that tracked nothing is a failure, not a table of zeros."""
    if summary["frames"] == 0:
        raise BadInputError(f"no image of {args.sequence} could be read ({summary['skipped_frames']} unreadable)")
    if summary["frames_without_keypoints"] == summary["frames"]:
        raise BadInputError(f"{args.method} found no keypoint on any of the {summary['frames']} frames of "
                            f"{args.sequence}: check --weights (NaN or untrained?), --num-keypoints and the images")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
        if not summary["interrupted"]:
            check_summary(summary, args)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 1
    print(
        f"method {args.method}  frames {summary['frames']}  keypoints {summary['keypoints_mean']:.0f}  "
        f"matches {summary['matches_mean']:.0f}  inliers {summary['inliers_mean']:.0f}  "
        f"tracks {summary['tracks']}  AKTL {summary['aktl']:.3f}  "
        f"FPS {summary['fps_frontend']:.1f} (front-end), {summary['fps_total']:.1f} (with rendering)"
    )
    for key in ("skipped_frames", "frames_without_keypoints"):
        if summary[key]:
            print(f"warning: {summary[key]} {key.replace('_', ' ')}", file=sys.stderr)
    if args.out is not None:
        print(f"wrote {args.out}")
    if summary["interrupted"]:
        print(f"interrupted after {summary['frames']} frames", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
