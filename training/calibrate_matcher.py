"""Calibrate the dual-softmax threshold for image pairs on training photographs.

    python -m training.calibrate_matcher --method traqpoint-lite --pairs 80

The mutual dual-softmax keeps a match when its joint probability ``P`` reaches a threshold. The
paper's 0.01 comes with the authors' 256-D descriptor; this measures where a descriptor's matches
become trustworthy instead of guessing. Homography pairs of the stage-1 recipe's *training*
photographs (evaluation sets are refused, ``training/data/sfm_heldout.py``) are rendered at
``--size`` under each warp range of ``--ranges``; both views' keypoints are mutually matched at the
descriptor's training temperature with no threshold, and a match is correct when it lies within
``--eps`` px of its keypoint warped by the true homography. The matches are binned by ``P``; the
threshold is the lowest bin edge above which every bin is more often right than wrong (precision
>= 0.5: the Bayes decision when keeping a wrong match costs as much as dropping a right one). The
recommended value is the largest over the warp ranges, so it holds for each of them.

Prints one table per range and the thresholds; ``--json`` writes them. The result is for one
two-view estimate on its own (``TraqPoint(two_view_threshold=...)``, ``models.factory``). Tracking
and SfM keep the authors' 0.01: their back-ends verify matches over many views, and recall makes
tracks long and registers hard images (``sfm/sacre_coeur``: 10/10 images at 0.01, 4/10 at 0.1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

import models
from models.errors import BadInputError, run_command
from models.matchers import dual_softmax
from training.config import CONFIG_DIR
from training.warping import in_bounds, relative, warp_points

log = logging.getLogger(__name__)

#: bin edges of P (the last edge is above 1 so that P = 1 falls in the top bin)
EDGES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0001)


@dataclass
class Calibration:
    """Binned precision of one warp range: ``counts [K]`` and ``precision [K]`` (NaN for empty
    bins) of the ``K = len(edges) - 1`` bins, and the resulting threshold."""

    warp_scale: tuple[float, float]
    edges: tuple[float, ...]
    counts: np.ndarray
    precision: np.ndarray
    threshold: float | None

    def as_dict(self) -> dict:
        return {
            "warp_scale": list(self.warp_scale),
            "bins": [
                {"p_from": a, "p_to": min(b, 1.0), "matches": int(n), "precision": None if np.isnan(p) else float(p)}
                for a, b, n, p in zip(self.edges[:-1], self.edges[1:], self.counts, self.precision)
            ],
            "threshold": self.threshold,
        }


def binned_precision(prob: np.ndarray, correct: np.ndarray, edges=EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Matches per bin of ``prob [M]`` and the fraction of them that are ``correct [M]`` (NaN when empty)."""
    which = np.digitize(prob, edges[1:-1])  # bin k holds edges[k] <= P < edges[k + 1]
    counts = np.bincount(which, minlength=len(edges) - 1)
    hits = np.bincount(which, weights=correct.astype(float), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def bayes_threshold(edges, counts: np.ndarray, precision: np.ndarray, min_count: int = 50) -> float | None:
    """Lowest edge from which every bin with at least ``min_count`` matches has precision >= 0.5.

    Sparse bins are not trusted either way. ``None`` when even the top populated bin is below 0.5.
    """
    ok = [(n < min_count) or p >= 0.5 for n, p in zip(counts, precision)]
    populated = [n >= min_count for n in counts]
    if not any(populated):
        return None
    start = len(ok)
    while start > 0 and ok[start - 1]:
        start -= 1
    if start == len(ok) or not any(populated[start:]):
        return None
    return float(edges[start])


def collect(ext, dataset, pairs: int, temperature: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Joint probability ``[M]`` and correctness ``[M]`` of every mutual match over ``pairs`` items."""
    probs, hits = [], []
    for i in range(pairs):
        item = dataset[i]
        f0, f1 = ext.extract(item["images"])
        m, p = dual_softmax(f0["descriptors"][None].float(), f1["descriptors"][None].float(), temperature, 0.0)
        keep = m[0] >= 0
        k0, k1 = f0["keypoints"][keep].float(), f1["keypoints"][m[0][keep]].float()
        h10 = relative(item["H"][1].double(), item["H"][0].double())
        warped = warp_points(h10.float(), k0)
        hw = tuple(item["images"].shape[-2:])
        right = in_bounds(warped, hw) & ((warped - k1).norm(dim=1) <= eps)
        probs.append(p[0][keep].numpy())
        hits.append(right.numpy())
        if (i + 1) % 10 == 0:
            log.info("%d / %d pairs", i + 1, pairs)
    return np.concatenate(probs), np.concatenate(hits)


def parse_ranges(text: str) -> list[tuple[float, float]]:
    """``"0.75:1.35,0.5:2.0"`` -> ``[(0.75, 1.35), (0.5, 2.0)]`` (zoom ranges of the warps)."""
    out = []
    for part in text.split(","):
        try:
            lo, hi = (float(x) for x in part.split(":"))
        except ValueError:
            raise BadInputError(f"--ranges: {part!r} is not LO:HI (e.g. 0.5:2.0)") from None
        if not 0 < lo <= hi:
            raise BadInputError(f"--ranges: need 0 < LO <= HI, got {part!r}")
        out.append((lo, hi))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.calibrate_matcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="traqpoint-lite", help="a TraqPoint method (dual-softmax matcher)")
    p.add_argument("--weights", help="weight file (default: the method's)")
    p.add_argument("--recipe", default="stage1_lite.yaml", help="stage-1 recipe whose training photographs to warp")
    p.add_argument("--ranges", default="0.75:1.35,0.5:2.0", help="warp zoom ranges LO:HI, comma-separated")
    p.add_argument("--pairs", type=int, default=80, help="pairs per range")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--num-kp", type=int, default=2048, help="keypoints per view (the pair benchmarks' budget)")
    p.add_argument("--eps", type=float, default=3.0, help="px: a match within this of the true position is right")
    p.add_argument("--seed", type=int, default=987, help="warp seed (stage 1 trains with seed 0)")
    p.add_argument("--json", help="write the tables and thresholds here")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear error for a bad value, before the network is built."""
    if args.pairs < 1 or args.num_kp < 1 or args.eps <= 0 or min(args.size) < 32:
        raise BadInputError("--pairs and --num-kp must be >= 1, --eps > 0 and --size at least 32 x 32")
    recipe = CONFIG_DIR / args.recipe if not Path(args.recipe).exists() else Path(args.recipe)
    if not recipe.exists():
        raise BadInputError(f"--recipe {args.recipe}: no such file (looked in {CONFIG_DIR})")
    args.recipe_path = recipe
    args.range_list = parse_ranges(args.ranges)


def run(args: argparse.Namespace) -> dict:
    from training.data.homography import HomographyViews, WarpConfig
    from training.data.images import load_pool
    from training.data.sfm_heldout import refuse_evaluation_paths

    ext = models.build(args.method, weights=args.weights, num_keypoints=args.num_kp, precision="fp32")
    if ext.default_matcher != "dual_softmax":
        raise BadInputError(f"--method {args.method} does not match with the dual-softmax; nothing to calibrate")
    try:
        recipe = yaml.safe_load(args.recipe_path.read_text())
    except yaml.YAMLError as err:
        raise BadInputError(f"--recipe {args.recipe_path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(recipe, dict) or not recipe.get("data"):
        raise BadInputError(f"--recipe {args.recipe_path}: no 'data' list of training image folders")
    refuse_evaluation_paths(recipe["data"], "training image folder")
    pool, _ = load_pool(recipe["data"])
    if not pool:
        folders = ", ".join(map(str, recipe["data"]))
        raise BadInputError(f"--recipe {args.recipe_path}: no readable photograph in {folders}")
    temperature = float(recipe.get("temperature", ext.matcher_kwargs.get("temperature", 20.0)))
    results = []
    for lo, hi in args.range_list:
        data = HomographyViews(pool, 2, tuple(args.size), args.pairs, args.seed, WarpConfig(scale=(lo, hi)))
        with torch.inference_mode():
            prob, right = collect(ext, data, args.pairs, temperature, args.eps)
        counts, precision = binned_precision(prob, right)
        results.append(Calibration((lo, hi), EDGES, counts, precision, bayes_threshold(EDGES, counts, precision)))
    found = [r.threshold for r in results if r.threshold is not None]
    return {
        "method": args.method,
        "weights": args.weights,
        "temperature": temperature,
        "pairs_per_range": args.pairs,
        "size": list(args.size),
        "num_kp": args.num_kp,
        "eps_px": args.eps,
        "ranges": [r.as_dict() for r in results],
        "recommended_threshold": max(found) if found else None,
    }


def print_result(res: dict) -> None:
    for r in res["ranges"]:
        lo, hi = r["warp_scale"]
        n = res["pairs_per_range"]
        print(f"\nwarp zoom {lo}-{hi}: mutual matches by P (tau {res['temperature']:g}, {n} pairs)")
        print(f"{'P from':>7} {'P to':>6} {'matches':>8} {'precision':>9}")
        for b in r["bins"]:
            prec = "-" if b["precision"] is None else f"{b['precision']:.3f}"
            print(f"{b['p_from']:7.3f} {b['p_to']:6.3f} {b['matches']:8d} {prec:>9}")
        print(f"threshold (every bin above it right more often than wrong): {r['threshold']}")
    t = res["recommended_threshold"]
    print(f"\nrecommended two-view threshold for {res['method']}: {t}")
    if t is not None:
        print(f"use it with --two-view-threshold {t} in the benchmarks, or models.build(..., two_view_threshold={t})")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)

    def body() -> None:
        check_args(args)
        res = run(args)
        print_result(res)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=2))
            print(f"wrote {args.json}")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
