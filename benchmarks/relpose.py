"""Shared relative-pose pipeline of ``scannet1500``, ``mega1500`` and ``strecha``.

Export features of every image once (cache), then per pair: match with the method's own matcher,
estimate the essential matrix (:mod:`benchmarks.metrics.pose`: OpenCV RANSAC, or PoseLib LO-RANSAC
with ``--estimator poselib``) in the frame the features were extracted in (intrinsics mapped there
with :func:`benchmarks.images.scale_matrix`), and score
AUC@5/10/20 deg of ``max(rotation error, translation direction error)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.errors import BadInputError
from models.image_io import truncated_jpeg

from .cache import FeatureCache
from .images import Resize, scale_matrix
from .methods import Method
from .metrics.pose import (
    AUC_THRESHOLDS,
    DEFAULT_MAX_ITERS,
    DEFAULT_THRESHOLD_PX,
    ESTIMATORS,
    RansacConfig,
    pair_pose_error,
    pose_auc,
)
from .plots import plot_cumulative

log = logging.getLogger(__name__)

KEYS = ("auc5", "auc10", "auc20", "pairs", "matches_mean", "inliers_mean")


@dataclass(frozen=True)
class PosePair:
    """Two images with known intrinsics and relative pose ``T_0to1`` (camera 0 -> camera 1)."""

    image0: Path
    image1: Path
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray
    K_size: tuple[int, int] | None = None  # (width, height) the intrinsics refer to; None = the file's size

    def available(self) -> bool:
        return self.image0.is_file() and self.image1.is_file()


def split_available(pairs: list[PosePair]) -> tuple[list[PosePair], int]:
    """Pairs whose two images exist, and the number skipped because an image is missing."""
    ok = [p for p in pairs if p.available()]
    return ok, len(pairs) - len(ok)


def split_intact(pairs: list[PosePair]) -> tuple[list[PosePair], list[Path]]:
    """Pairs whose two images are not truncated JPEGs, and the truncated files (logged; their pairs are skipped).

    OpenCV decodes a cut JPEG without an error (grey rows), so such a pair would be scored silently.
    """
    broken = sorted(p for p in {p for pair in pairs for p in (pair.image0, pair.image1)} if truncated_jpeg(p))
    for path in broken:
        log.warning("skipping the pairs of a truncated JPEG: %s", path)
    bad = set(broken)
    return [p for p in pairs if p.image0 not in bad and p.image1 not in bad], broken


def intrinsics_in_frame(K: np.ndarray, K_size: tuple[int, int], frame_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics for an image of ``K_size`` mapped to the same image resized to ``frame_size``."""
    if tuple(K_size) == tuple(frame_size):
        return K
    return scale_matrix(frame_size[0] / K_size[0], frame_size[1] / K_size[1]) @ K


def evaluate_method(
    method: Method, pairs: list[PosePair], resize: Resize, cache: FeatureCache, ransac: RansacConfig
) -> tuple[dict, np.ndarray]:
    """Metrics of :data:`KEYS` for one method, and the per-pair pose errors (deg, inf = failure)."""
    images = list(dict.fromkeys(p for pair in pairs for p in (pair.image0, pair.image1)))
    cache.export(method, images, resize)
    errors, n_matches, n_inliers = [], [], []
    for pair in tqdm(pairs, desc=f"pose {method.name}", unit="pair", leave=False, disable=None):
        f0, f1 = cache.get(method, pair.image0, resize), cache.get(method, pair.image1, resize)
        matches = method.match(f0.descriptors, f1.descriptors, two_view=True)
        K0 = intrinsics_in_frame(pair.K0, pair.K_size or f0.original_size, f0.size)
        K1 = intrinsics_in_frame(pair.K1, pair.K_size or f1.original_size, f1.size)
        pts0, pts1 = f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]]
        err, inliers = pair_pose_error(pts0, pts1, K0, K1, pair.T_0to1, ransac)
        errors.append(err)
        n_matches.append(len(matches))
        n_inliers.append(inliers)
    aucs = pose_auc(errors, AUC_THRESHOLDS)
    metrics = {
        "auc5": 100 * aucs[0],
        "auc10": 100 * aucs[1],
        "auc20": 100 * aucs[2],
        "pairs": len(pairs),
        "matches_mean": float(np.mean(n_matches)) if pairs else None,
        "inliers_mean": float(np.mean(n_inliers)) if pairs else None,
    }
    return metrics, np.asarray(errors)


def evaluate(
    methods: list[Method], pairs: list[PosePair], resize: Resize, cache: FeatureCache, ransac: RansacConfig
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run :func:`evaluate_method` for every built method -> ``(metrics, errors)`` keyed by method name."""
    metrics, errors = {}, {}
    for method in methods:
        if method.extractor is not None:
            metrics[method.name], errors[method.name] = evaluate_method(method, pairs, resize, cache, ransac)
    return metrics, errors


ESTIMATOR_TEXT = {
    "opencv": "cv2.findEssentialMat (cv2.RANSAC, normalised coordinates) + cv2.recoverPose",
    "poselib": "poselib.estimate_relative_pose (LO-RANSAC, 5-point, non-linear refinement; pixels, pinhole cameras)",
}
THRESHOLD_TEXT = {
    "opencv": "divided by the mean focal length of the pair",
    "poselib": "PoseLib max_epipolar_error: Sampson error in pixels",
}


def ransac_config(ransac: RansacConfig) -> dict:
    """The RANSAC block of a result file's config."""
    return {
        "estimator": ransac.estimator,
        "method": ESTIMATOR_TEXT[ransac.estimator],
        "threshold_px": ransac.threshold_px,
        "threshold_normalisation": THRESHOLD_TEXT[ransac.estimator],
        "confidence": ransac.confidence,
        "max_iters": ransac.max_iters,
        **({"min_iters": min(1000, ransac.max_iters), "seed": 0} if ransac.estimator == "poselib" else {}),
        "pose_error": "max(rotation angle, translation direction angle), deg; failure = inf",
        "auc_thresholds_deg": list(AUC_THRESHOLDS),
    }


def add_ransac_args(parser) -> None:
    """Flags for the essential-matrix estimator and its RANSAC (defaults per estimator)."""
    th = ", ".join(f"{k} {v}" for k, v in DEFAULT_THRESHOLD_PX.items())
    it = ", ".join(f"{k} {v}" for k, v in DEFAULT_MAX_ITERS.items())
    parser.add_argument(
        "--estimator", choices=ESTIMATORS, default="opencv", help="essential matrix: OpenCV RANSAC or PoseLib"
    )
    parser.add_argument("--ransac-th", type=float, default=None, help=f"RANSAC threshold in pixels (default: {th})")
    parser.add_argument("--ransac-conf", type=float, default=RansacConfig.confidence, help="RANSAC confidence")
    parser.add_argument("--ransac-iters", type=int, default=None, help=f"RANSAC iteration cap (default: {it})")


def ransac_from_args(args) -> RansacConfig:
    """The :class:`RansacConfig` of the flags of :func:`add_ransac_args`."""
    return RansacConfig.for_estimator(args.estimator, args.ransac_th, args.ransac_conf, args.ransac_iters)


def run_pose_benchmark(
    name: str, args, dataset, listed: list[PosePair], pairs: list[PosePair], skipped: int, resize, extra_config: dict
):
    """Evaluate every method on the available ``pairs`` and assemble the result (ScanNet/MegaDepth/Strecha)."""
    from . import runner  # runner imports the benchmark modules' helpers; import it late

    pairs, truncated = split_intact(pairs)
    if not pairs:
        raise BadInputError(f"every available pair of {dataset} has a truncated JPEG (e.g. {truncated[0]}): "
                            "re-copy the images")
    ransac = ransac_from_args(args)
    methods = runner.methods_from_args(args)
    cache = runner.cache_from_args(args, name)
    try:
        metrics, errors = evaluate(methods, pairs, resize, cache, ransac)
    finally:
        cache.close()
    config = {"resize": resize.describe(), "ransac": ransac_config(ransac), "grey": True, **extra_config}
    data = {
        "pairs_listed": len(listed),
        "pairs_evaluated": len(pairs),
        "pairs_skipped_missing_images": skipped,
        "pairs_skipped_truncated_images": len(listed) - skipped - len(pairs),
        "truncated_images": [str(p) for p in truncated],
        "sample": len(pairs) < len(listed),  # a part of the listed pairs (missing or truncated images)
        "pair_images": [[pair_name(p.image0, dataset), pair_name(p.image1, dataset)] for p in pairs],
        # per method, the pose error of every evaluated pair in that order (deg; null = no pose)
        "pose_error_deg": {m: [round(float(e), 4) if np.isfinite(e) else None for e in errs]
                           for m, errs in errors.items()},
    }
    result = runner.make_result(name, dataset, config, methods, metrics, data)
    return runner.Outcome(result, {"errors": errors})


def pair_name(image: Path, dataset) -> str:
    """``image`` relative to the dataset root where it lies under it (else its full path)."""
    try:
        return str(Path(image).relative_to(Path(dataset)))
    except ValueError:
        return str(image)


def error_plot(name: str):
    """The figure of a pose benchmark: the cumulative distribution of pose errors up to 20 deg."""

    def plot(outcome, path: Path) -> None:
        plot_cumulative(outcome.plot_data["errors"], path, 20.0, "pose error (deg)", f"{name}: cumulative pose error")

    return plot
