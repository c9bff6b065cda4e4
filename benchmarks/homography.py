"""Homography benchmark (HPatches protocol): ``python -m benchmarks.homography --root DIR --methods sift``.

``--root`` is one sequence (``1.ppm`` .. ``6.ppm`` + ``H_1_2`` .. ``H_1_6``, text 3x3, image 1 -> k;
e.g. ``../shared/data/homography/churchill``, the default) or a folder of such sequences (the full
HPatches release: ``i_*`` illumination and ``v_*`` viewpoint folders). Each sequence gives the pairs
(1, k), k = 2..6; a pair whose image or homography file is missing is skipped and counted.
Features are extracted at the original resolution unless ``--long-side`` is given; errors are
measured in pixels of the images as extracted. Metrics (percent): MMA@1/3/5/10 px,
homography accuracy (mean corner error) @1/3/5 px.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.errors import BadInputError

from . import runner
from .cache import FeatureCache
from .images import Resize, scale_matrix
from .methods import Method
from .metrics.homography import (
    HACC_THRESHOLDS,
    MMA_THRESHOLDS,
    HomographyRansac,
    accuracy,
    corner_error,
    estimate_homography,
    local_zoom,
    match_errors,
    matching_accuracy,
    repeatability,
    zoom_range,
)
from .plots import plot_curves

NAME = "homography"
KEYS = ("mma1", "mma3", "mma5", "mma10", "hacc1", "hacc3", "hacc5")
IMAGE_EXTS = (".ppm", ".png", ".jpg", ".jpeg", ".pgm", ".bmp")
LAYOUT = "expected a sequence folder (1.ppm..6.ppm + H_1_2..H_1_6) or a folder of them (HPatches i_*/v_*)"


@dataclass(frozen=True)
class HomographyPair:
    """Image 1 and image k of a sequence with the ground-truth ``H`` (image 1 -> image k)."""

    sequence: str
    image0: Path
    image1: Path
    H: np.ndarray


def _find_image(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{ext}" for ext in IMAGE_EXTS if (folder / f"{stem}{ext}").is_file()), None)


def is_sequence(folder: Path) -> bool:
    """A sequence folder has image ``1.*`` and at least one ``H_1_k`` file."""
    return _find_image(folder, "1") is not None and any(folder.glob("H_1_*"))


def read_homography(path: Path) -> np.ndarray:
    """A 3x3 homography from a text file; one clear error when it is not one."""
    try:
        H = np.loadtxt(path, dtype=np.float64)
    except ValueError as err:
        raise BadInputError(f"cannot read homography {path}: {err}") from None
    if H.shape != (3, 3) or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        raise BadInputError(f"{path} is not an invertible 3x3 homography (shape {H.shape})")
    return H


def sequence_pairs(folder: Path, num_images: int = 6) -> tuple[list[HomographyPair], int]:
    """Pairs (1, k) of one sequence, and how many were skipped for a missing image or H file."""
    image0 = _find_image(folder, "1")
    pairs, skipped = [], 0
    for k in range(2, num_images + 1):
        image1, h_path = _find_image(folder, str(k)), folder / f"H_1_{k}"
        if image0 is None or image1 is None or not h_path.is_file():
            skipped += 1
            continue
        pairs.append(HomographyPair(folder.name, image0, image1, read_homography(h_path)))
    return pairs, skipped


def load_pairs(root: Path) -> tuple[list[HomographyPair], int, int]:
    """``(pairs, skipped, number of sequences)`` of a sequence folder or an HPatches-style root."""
    root = runner.require_dir(root, "homography dataset root", LAYOUT)
    sequences = [root] if is_sequence(root) else sorted(p for p in root.iterdir() if p.is_dir() and is_sequence(p))
    if not sequences:
        raise BadInputError(f"wrong layout: no homography sequence in {root} ({LAYOUT})")
    pairs, skipped = [], 0
    for seq in sequences:
        p, s = sequence_pairs(seq)
        pairs += p
        skipped += s
    return pairs, skipped, len(sequences)


def evaluate_method(
    method: Method, pairs: list[HomographyPair], resize: Resize, cache: FeatureCache, ransac: HomographyRansac
) -> tuple[dict, np.ndarray, list[dict]]:
    """Metrics of :data:`KEYS` for one method, its MMA curve over :data:`MMA_THRESHOLDS` (percent) and
    per pair: the zoom of ``H`` at image 0's centre and its range over the image (perspective makes it
    vary), matches, MMA@3 and keypoint repeatability@3 (percent)."""
    cache.export(method, list(dict.fromkeys(p for pair in pairs for p in (pair.image0, pair.image1))), resize)
    mma, corner_errors, per_pair = [], [], []
    for pair in tqdm(pairs, desc=f"homography {method.name}", unit="pair", leave=False, disable=None):
        f0, f1 = cache.get(method, pair.image0, resize), cache.get(method, pair.image1, resize)
        H = scale_matrix(*f1.scale) @ pair.H @ np.linalg.inv(scale_matrix(*f0.scale))  # into the extracted frames
        matches = method.match(f0.descriptors, f1.descriptors, two_view=True)
        pts0, pts1 = f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]]
        mma.append(matching_accuracy(match_errors(pts0, pts1, H), MMA_THRESHOLDS))
        corner_errors.append(corner_error(estimate_homography(pts0, pts1, ransac)[0], H, *f0.size))
        per_pair.append({
            "pair": f"{pair.sequence}/{pair.image0.stem}-{pair.image1.stem}",
            "zoom": local_zoom(H, f0.size[0] / 2, f0.size[1] / 2),
            "zoom_range": zoom_range(H, *f0.size),
            "matches": len(matches),
            "mma3": 100 * float(mma[-1][MMA_THRESHOLDS.index(3)]),
            "repeatability3": 100 * repeatability(f0.keypoints, f1.keypoints, H, f1.size, 3.0),
        })
    curve = 100 * np.mean(mma, axis=0)
    hacc = 100 * accuracy(corner_errors, HACC_THRESHOLDS)
    metrics = {f"mma{t}": float(curve[MMA_THRESHOLDS.index(t)]) for t in (1, 3, 5, 10)}
    metrics.update({f"hacc{t}": float(v) for t, v in zip(HACC_THRESHOLDS, hacc)})
    return metrics, curve, per_pair


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=runner.shared_data("homography", "churchill"), help="sequence or HPatches root"
    )
    parser.add_argument("--long-side", type=int, default=0, help="resize the long side before extraction (0 = off)")
    parser.add_argument("--ransac-th", type=float, default=HomographyRansac().threshold_px, help="RANSAC px")


def run(args: argparse.Namespace) -> runner.Outcome:
    pairs, skipped, sequences = load_pairs(args.root)
    if not pairs:
        raise BadInputError(f"no complete image pair in {args.root} ({LAYOUT})")
    resize = Resize("long", args.long_side) if args.long_side > 0 else Resize()
    ransac = HomographyRansac(threshold_px=args.ransac_th)
    methods = runner.methods_from_args(args)
    cache = runner.cache_from_args(args, NAME)
    metrics, curves, per_pair = {}, {}, {}
    try:
        for m in methods:
            if m.extractor is not None:
                metrics[m.name], curves[m.name], per_pair[m.name] = evaluate_method(m, pairs, resize, cache, ransac)
    finally:
        cache.close()
    config = {
        "resize": resize.describe(),
        "grey": True,
        "mma": "per pair: fraction of matches within t px under the true H; mean over pairs (no match = 0)",
        "homography": {
            "estimator": "cv2.findHomography (cv2.RANSAC)",
            "threshold_px": ransac.threshold_px,
            "confidence": ransac.confidence,
            "max_iters": ransac.max_iters,
            "error": "mean distance of the 4 image-0 corners mapped by the estimate and the truth, px",
        },
    }
    data = {"sequences": sequences, "pairs_evaluated": len(pairs), "pairs_skipped_missing_files": skipped,
            "per_pair": per_pair}
    result = runner.make_result(NAME, args.root, config, methods, metrics, data)
    return runner.Outcome(result, {"curves": curves})


def plot(outcome: runner.Outcome, path: Path) -> None:
    curves = {n: (np.array(MMA_THRESHOLDS), c) for n, c in outcome.plot_data["curves"].items()}
    plot_curves(curves, path, "threshold (px)", "MMA (%)", f"{NAME}: mean matching accuracy")


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], KEYS, run, add_args, plot)


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
