"""Held-out checks used to choose between checkpoints (never trained on; see MANIFEST.md).

    python -m training.evaluate --weights runs/stage2_lite/stage2.pt --compare orb,sift,alike-t

* homography (``../shared/data/homography/churchill``, ground-truth ``H_1_k``): repeatability at
  3 px (symmetric, over the covisible area), mean matching accuracy at 3 px with the method's own
  matcher, and mutual-NN + fundamental-RANSAC inliers;
* two-view: mutual-NN + RANSAC inliers on KITTI 06 frames 12 <-> 13;
* tracking (``kitti_mini/sequences/06``, ``tum_fr2_desk``): AKTL and the inlier ratio of the
  frame-to-frame tracker.

``--weights W`` evaluates TraqPoint-lite three times: with its stage-2 policy keypoints at one
scale and on the ``traqpoint-lite-ms`` image pyramid, and with stage-1 keypoints (matchability
map) from the same descriptor, to show what stage 2 adds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import models
from frontend.engine import ExtractionEngine
from frontend.tracker import Tracker
from models.base import Extractor
from models.errors import BadInputError, TraqPointError
from models.match import verify
from models.matchers import match_pair
from models.weights_io import load_checkpoint
from training.checks import check_output_dir
from training.nets import check_finite_weights
from training.warping import in_bounds, warp_points

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def repeatability(k0: torch.Tensor, k1: torch.Tensor, H: np.ndarray, hw0, hw1, eps: float = 3.0) -> float:
    """Fraction of covisible keypoints re-detected within ``eps`` px in the other image (both ways)."""
    H = torch.from_numpy(H).float()
    w01, w10 = warp_points(H, k0), warp_points(torch.linalg.inv(H), k1)
    v0, v1 = in_bounds(w01, hw1), in_bounds(w10, hw0)
    if v0.sum() == 0 or v1.sum() == 0:
        return 0.0
    d01 = torch.cdist(w01[v0], k1[v1]).min(1).values if v1.any() else torch.zeros(0)
    d10 = torch.cdist(w10[v1], k0[v0]).min(1).values if v0.any() else torch.zeros(0)
    return float(((d01 <= eps).sum() + (d10 <= eps).sum()) / (v0.sum() + v1.sum()))


def mnn_inliers(ext: Extractor, f0, f1) -> int:
    """Mutual-NN matches verified by fundamental-matrix RANSAC (1 px)."""
    m, _ = match_pair(f0["descriptors"], f1["descriptors"], "mnn")
    return int(verify(f0["keypoints"][m[:, 0]].numpy(), f1["keypoints"][m[:, 1]].numpy()).sum())


def homography_checks(ext: Extractor, root: Path, num_kp: int) -> dict[str, float]:
    """Repeatability@3, MMA@3 and MNN inliers averaged over the pairs 1->k of one sequence."""
    imgs = [models.image_io.read_image(root / f"{i}.ppm") for i in range(1, 7)]
    f = [ext.extract_numpy(im, num_kp)[0] for im in imgs]
    rep, mma, inl = [], [], []
    for k in range(2, 7):
        H = np.loadtxt(root / f"H_1_{k}")
        f0, f1 = f[0], f[k - 1]
        rep.append(repeatability(f0["keypoints"], f1["keypoints"], H, imgs[0].shape, imgs[k - 1].shape))
        kwargs = ext.matcher_settings(two_view=True)  # one two-view estimate
        m, _ = match_pair(f0["descriptors"], f1["descriptors"], ext.default_matcher, **kwargs)
        err = (warp_points(torch.from_numpy(H).float(), f0["keypoints"][m[:, 0]]) - f1["keypoints"][m[:, 1]]).norm(
            dim=1
        )
        mma.append(float((err <= 3).float().mean()) if len(m) else 0.0)
        inl.append(mnn_inliers(ext, f0, f1))
    return {
        "repeatability3": 100 * float(np.mean(rep)),
        "mma3": 100 * float(np.mean(mma)),
        "hom_inliers_1to2_4": float(np.mean(inl[:3])),
    }


def tracking_checks(ext: Extractor, spec: Path, num_kp: int) -> dict[str, float]:
    """AKTL and mean inlier ratio of the tracker over a real sequence."""
    from vo_app.sources import open_source

    source = open_source(str(spec))
    tracker = Tracker(ext)
    engine = ExtractionEngine(ext, batch_size=1, num_keypoints=num_kp, mode="naive", num_threads=None)
    ratios = []
    for frame in engine.run(f.image for f in source):
        st = tracker.track(frame).stats
        if st.matches:
            ratios.append(st.inliers / st.matches)
    return {"aktl": tracker.aktl, "inlier_ratio": float(np.mean(ratios)) if ratios else 0.0}


def evaluate(ext: Extractor, num_kp: int, data: Path) -> dict[str, float]:
    """Homography and two-view checks for one extractor."""
    out = homography_checks(ext, data / "homography" / "churchill", num_kp)
    i0, i1 = (models.image_io.read_image(data / "kitti06_frames" / f"kitti06-{i}.png") for i in (12, 13))
    out["kitti_inliers"] = float(mnn_inliers(ext, ext.extract_numpy(i0, num_kp)[0], ext.extract_numpy(i1, num_kp)[0]))
    return out


def build_candidates(weights: str | None, compare: list[str]) -> dict[str, Extractor]:
    """Stage-2 keypoints of ``weights`` (one scale and the pyramid), its stage-1 keypoints, the peers."""
    out = {}
    if weights:
        check_finite_weights(load_checkpoint(weights, "e.g. runs/stage2_lite/stage2.pt"), weights)
        out["lite-stage2"] = models.build("traqpoint-lite", weights=weights)
        out["lite-stage2-ms"] = models.build("traqpoint-lite-ms", weights=weights)  # same weights, image pyramid
        out["lite-stage1-kp"] = models.build("traqpoint-lite", weights=weights, detector="matchability")
    for name in compare:
        out[name] = models.build(name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", help="TraqPoint-lite weights to evaluate")
    p.add_argument("--compare", default="", help="comma-separated peer methods, e.g. orb,sift,alike-t")
    p.add_argument("--num-kp", type=int, default=2048, help="keypoint budget")
    p.add_argument("--tracking-kp", type=int, default=1024, help="keypoint budget for the tracking checks")
    p.add_argument("--data", default=str(DATA), help="the shared data folder")
    p.add_argument("--json", help="write the table as JSON here")
    args = p.parse_args(argv)
    try:
        check_arguments(args)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not (data / "homography" / "churchill").is_dir():
        print(
            f"error: evaluation data not found under {data} (expected homography/churchill, kitti_mini, ...)",
            file=sys.stderr,
        )
        return 2
    try:
        cands = build_candidates(args.weights, [c for c in args.compare.split(",") if c])
        rows = {}
        for name, ext in cands.items():
            res = evaluate(ext, args.num_kp, data)
            res.update(evaluate_tracking_only(ext, args.tracking_kp, data))
            rows[name] = res
            print(name, json.dumps({k: round(v, 3) for k, v in res.items()}), flush=True)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = list(next(iter(rows.values())))
    print("\n" + "method".ljust(16) + "".join(k[:18].rjust(19) for k in keys))
    for name, res in rows.items():
        print(name.ljust(16) + "".join(f"{res[k]:19.3f}" for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "methods": rows}, indent=1))
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Budgets, something to evaluate and a writable ``--json`` place, before any evaluation runs."""
    for flag, value in (("--num-kp", args.num_kp), ("--tracking-kp", args.tracking_kp)):
        if value < 1:
            raise BadInputError(f"{flag} must be >= 1, got {value}")
    if not args.weights and not [c for c in args.compare.split(",") if c]:
        raise BadInputError("nothing to evaluate: give --weights W and/or --compare orb,sift,...")
    if args.json:
        path = Path(args.json)
        if path.is_dir():
            raise BadInputError(f"--json {path} is a folder; give a file name")
        if not path.parent.is_dir():
            raise BadInputError(f"--json {path}: the folder {path.parent} does not exist")
        check_output_dir(path.parent, "--json")


def evaluate_tracking_only(ext: Extractor, num_kp: int, data: Path) -> dict[str, float]:
    """Tracking checks at the tracking keypoint budget."""
    out = {}
    for name, spec in (("kitti06", data / "kitti_mini" / "sequences" / "06"), ("tum", data / "tum_fr2_desk")):
        for key, value in tracking_checks(ext, spec, num_kp).items():
            out[f"{name}_{key}"] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
