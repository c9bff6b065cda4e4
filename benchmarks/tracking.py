"""Track quality on the rendered demo with exact depth and poses: ``python -m benchmarks.tracking``.

Every method runs the project's tracker (:class:`frontend.tracker.Tracker`, the settings the VO
pipeline uses: dual-softmax / ratio / MNN matching, 2 px MAGSAC++ fundamental-matrix gate,
32 px occupancy grid) over the same frames of the built-in demo
(:class:`vo_app.sources.demo.DemoSource`: ``--frames`` frames of ``--width`` x ``--height``, seed
``--seed``). The demo scene is planar quads with known poses, so the exact depth of any pixel is a
ray cast (:mod:`benchmarks.demo_truth`) and every tracked keypoint can be compared with the true
reprojection of its track's first observation (:mod:`benchmarks.metrics.tracking`).

Metrics (DESIGN.md section 6): ``loc_err_px_p50`` / ``loc_err_px_p90`` (px, every observation of age
>= 1 against the reprojection of its track's first observation), ``drift_px`` (median of that error
at age 10 frames), ``coverage`` (occupied fraction of a 16 x 16 grid by continued tracks, mean over
frames), ``aktl`` (the tracker's average keypoint track length), ``inliers_mean`` (verified matches
per frame). ``data`` adds, per method, the error by track age (median, p90, share above 3 px).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from frontend.frame import Frame
from frontend.tracker import Tracker
from models.described_by import DescribedBy
from models.errors import BadInputError
from vo_app.sources.demo import DemoSource

from . import demo_truth, runner
from .methods import Method, parse_method_names
from .metrics import tracking as tm
from .plots import save_figure

NAME = "tracking"
KEYS = ("loc_err_px_p50", "loc_err_px_p90", "drift_px", "coverage", "aktl", "inliers_mean")
TRACKER_CONF = {"history": 0}  # the VO pipeline's tracker settings otherwise (it keeps 12 positions to draw)


def render_frames(source: DemoSource) -> list[np.ndarray]:
    """Every frame of the demo, rendered once for all methods (grey ``H x W`` uint8)."""
    return [source.render(i) for i in tqdm(range(source.num_frames), desc="render", leave=False, disable=None)]


def track_method(method: Method, source: DemoSource, images: list[np.ndarray]) -> tuple[dict, dict]:
    """Run extraction + tracker over ``images``; the metrics of :data:`KEYS` and the extra data."""
    tracker = Tracker(method.extractor, **TRACKER_CONF)
    parts, cover, inliers, keypoints = [], [], [], []
    prev_ids = np.zeros(0, np.int64)
    for i, image in enumerate(tqdm(images, desc=f"{NAME} {method.name}", unit="frame", leave=False, disable=None)):
        f = method.extract(image)
        frame = Frame(
            i,
            image,
            K=np.asarray(source.K),
            keypoints=torch.from_numpy(f["keypoints"]),
            scores=torch.from_numpy(f["scores"]),
            descriptors=torch.from_numpy(f["descriptors"]),
        )
        result = tracker.track(frame)
        ids = result.frame.track_ids.numpy()
        xy = result.frame.keypoints.numpy()  # the tracker's positions (refined where it refines), as the VO gets them
        parts.append((ids, i, xy))
        keypoints.append(len(ids))
        if i > 0:
            continued = (ids >= 0) & np.isin(ids, prev_ids)
            cover.append(tm.coverage(xy[continued], source.image_size))
            inliers.append(result.stats.inliers)
        prev_ids = ids[ids >= 0]
    obs = tm.Observations.concat(parts)
    errors = tm.reprojection_errors(
        obs,
        lambda fr, px: demo_truth.depth_at(source, fr, px),
        lambda frs, pts: demo_truth.project(source, frs, pts),
        lambda fr, px, d: demo_truth.backproject(source, fr, px, d),
        source.image_size,
    )
    summary = tm.error_summary(errors)
    metrics = {
        "loc_err_px_p50": summary["loc_err_px_p50"],
        "loc_err_px_p90": summary["loc_err_px_p90"],
        "drift_px": summary["drift_px"],
        "coverage": float(np.mean(cover)) if cover else None,
        "aktl": float(tracker.aktl),
        "inliers_mean": float(np.mean(inliers)) if inliers else None,
    }
    extra = {
        "error_by_age": summary["by_age"],
        "observations_scored": summary["scored"],
        "observations_not_visible": summary["not_visible"],
        "keypoints_mean": float(np.mean(keypoints)),
        "tracks": int(tracker.num_tracks),
    }
    return metrics, extra


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frames", type=int, default=300, help="demo frames (300 = half a lap: straight, turn, straight)"
    )
    parser.add_argument("--width", type=int, default=640, help="demo image width")
    parser.add_argument("--height", type=int, default=480, help="demo image height")
    parser.add_argument("--seed", type=int, default=0, help="demo scene layout")
    parser.add_argument(
        "--describe-with", metavar="METHOD",
        help="diagnosis: every method keeps its keypoints but takes its descriptors (and matcher) from this "
        "TraqPoint network, sampled at those keypoints (models.described_by); --weights applies to it too",
    )


def described_by(methods: list[Method], args: argparse.Namespace) -> list[Method]:
    """``methods`` with their descriptors taken from ``--describe-with`` (skipped ones stay skipped)."""
    names = parse_method_names(args.describe_with)
    if len(names) != 1:
        raise BadInputError(f"--describe-with takes one method, got {args.describe_with!r}")
    name = names[0]
    (describer,) = runner.methods_from_args(args, [name])
    if describer.extractor is None:
        raise BadInputError(f"--describe-with {name}: {describer.skipped}")
    out = []
    for m in methods:
        if m.extractor is None:
            out.append(m)
            continue
        ext = DescribedBy(m.extractor, describer.extractor)
        out.append(Method(f"{m.name}+{name}-desc", ext, weights=m.weights))
    return out


def run(args: argparse.Namespace) -> runner.Outcome:
    if args.frames < 2:
        raise BadInputError(f"--frames must be at least 2 (tracks need two frames), got {args.frames}")
    source = DemoSource(num_frames=args.frames, width=args.width, height=args.height, seed=args.seed)
    methods = runner.methods_from_args(args)
    if args.describe_with:
        methods = described_by(methods, args)
    images = render_frames(source)
    metrics, extra = {}, {}
    for m in methods:
        if m.extractor is not None:
            metrics[m.name], extra[m.name] = track_method(m, source, images)
    config = {
        "demo": {"frames": args.frames, "size": list(source.image_size), "seed": args.seed, "speed_m_per_frame": 0.1},
        "tracker": {**Tracker.default_conf, **TRACKER_CONF},
        "truth": "ray-cast depth of each track's first observation, reprojected with the demo's exact poses; "
        f"reprojections occluded (depth off by > {tm.OCCLUSION_TOLERANCE:.0%}) or outside the image are not scored",
        "drift_age_frames": tm.DRIFT_AGE,
        "coverage_grid": tm.COVERAGE_GRID,
        "coverage_counts": "continued tracks (keypoints matched to the previous frame)",
    }
    data = {"frames": args.frames, "per_method": extra}
    return runner.Outcome(runner.make_result(NAME, "demo", config, methods, metrics, data), {"extra": extra})


def plot(outcome: runner.Outcome, path: Path) -> None:
    """Median and p90 localisation error by track age, per method."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for name, extra in outcome.plot_data["extra"].items():
        labels = [k for k, v in extra["error_by_age"].items() if v["p50"] is not None]
        x = np.arange(len(labels))
        line = ax.plot(x, [extra["error_by_age"][k]["p50"] for k in labels], marker="o", label=f"{name} median")[0]
        ax.plot(x, [extra["error_by_age"][k]["p90"] for k in labels], ls="--", color=line.get_color(), alpha=0.6)
        ax.set_xticks(x, labels)
    ax.set(
        xlabel="track age (frames)",
        ylabel="error vs true reprojection (px)",
        yscale="log",
        title="demo: keypoint error by track age (dashed: p90)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], KEYS, run, add_args, plot, num_keypoints=1024)


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
