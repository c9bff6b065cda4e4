"""Match two images with any method and draw the result.

    python -m models.match IMG0 IMG1 --method traqpoint-lite --out match.png

Prints keypoints, matches, fundamental-matrix RANSAC inliers (OpenCV USAC/MAGSAC, 1 px) and time.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from .arguments import check_count, check_device, writable_file
from .errors import BadInputError, run_command
from .factory import METHODS, build
from .geometry import verify_fundamental
from .image_io import read_image
from .matchers import MATCHERS, match_pair


def verify(p0: np.ndarray, p1: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Inlier mask of a fundamental-matrix fit (all False when fewer than 8 matches)."""
    mask, verified = verify_fundamental(p0, p1, threshold, 0.999, 10000)
    return mask if verified else np.zeros(len(p0), bool)


def draw_matches(img0: np.ndarray, img1: np.ndarray, p0: np.ndarray, p1: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    """Side-by-side image with inlier matches in green and outliers in red (stacked vertically if wide)."""
    vertical = img0.shape[1] > 1.5 * img0.shape[0]
    h = max(img0.shape[0], img1.shape[0]) if not vertical else img0.shape[0] + img1.shape[0]
    w = img0.shape[1] + img1.shape[1] if not vertical else max(img0.shape[1], img1.shape[1])
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[: img0.shape[0], : img0.shape[1]] = cv2.cvtColor(img0, cv2.COLOR_GRAY2BGR)
    off = np.array([0, img0.shape[0]]) if vertical else np.array([img0.shape[1], 0])
    canvas[off[1] : off[1] + img1.shape[0], off[0] : off[0] + img1.shape[1]] = cv2.cvtColor(img1, cv2.COLOR_GRAY2BGR)
    for good, colour in ((False, (0, 0, 255)), (True, (0, 255, 0))):
        sel = inliers == good
        lines = np.stack([p0[sel], p1[sel] + off], 1).round().astype(np.int32)
        cv2.polylines(canvas, list(lines), False, colour, 1, cv2.LINE_AA)
    return canvas


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what cv2.imwrite writes


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad values before a network is built."""
    check_count(args.num_kp, "--num-kp")
    if args.matcher is not None and args.matcher not in MATCHERS:
        raise BadInputError(f"--matcher {args.matcher!r} is unknown; choose from {', '.join(MATCHERS)}")
    check_device(args.device)
    if args.out:
        writable_file(args.out, "--out", IMAGE_SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.match", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("image0")
    p.add_argument("image1")
    p.add_argument("--method", default="traqpoint-lite", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--weights", help="weight file (default: the method's default location)")
    p.add_argument("--num-kp", type=int, default=2048, help="keypoint budget per image")
    p.add_argument("--matcher", help="override the method's default matcher (dual_softmax, mnn, ratio)")
    p.add_argument("--device", default="cpu", help="torch device for learned methods (cpu, cuda, cuda:N)")
    p.add_argument("--out", help="write a picture of the matches here (.png, .jpg, ...)")
    args = p.parse_args(argv)

    def body() -> None:
        check_args(args)
        img0, img1 = read_image(args.image0), read_image(args.image1)
        ext = build(args.method, weights=args.weights, device=args.device, num_keypoints=args.num_kp)
        ext.extract_numpy(img0)  # warm-up, so the timing below is steady-state
        t0 = time.perf_counter()
        f0, f1 = ext.extract_numpy(img0)[0], ext.extract_numpy(img1)[0]
        t1 = time.perf_counter()
        for feats, path in ((f0, args.image0), (f1, args.image1)):
            if len(feats["keypoints"]) == 0:
                raise BadInputError(f"{args.method} found no keypoint in {path}: check --weights (NaN or "
                                    "untrained?), --num-kp and the image (blank?)")
        matcher = args.matcher or ext.default_matcher
        kwargs = ext.matcher_settings(two_view=True) if matcher == ext.default_matcher else {}
        m, _ = match_pair(f0["descriptors"].cpu(), f1["descriptors"].cpu(), matcher, **kwargs)
        t2 = time.perf_counter()
        p0, p1 = f0["keypoints"][m[:, 0]].cpu().numpy(), f1["keypoints"][m[:, 1]].cpu().numpy()
        inl = verify(p0, p1)
        print(f"method {args.method}  matcher {matcher}")
        print(f"keypoints {len(f0['keypoints'])} / {len(f1['keypoints'])}  matches {len(m)}  inliers {int(inl.sum())}")
        print(f"time: extract {(t1 - t0) * 500:.1f} ms/image, match {(t2 - t1) * 1e3:.1f} ms")
        if args.out:
            if not cv2.imwrite(args.out, draw_matches(img0, img1, p0, p1, inl)):
                raise BadInputError(f"--out {args.out}: OpenCV could not write the picture")
            print(f"wrote {args.out}")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
