"""KITTI odometry benchmark: ``python -m benchmarks.kitti --id 06 --root DIR --methods sift,orb``.

Runs the whole monocular VO pipeline (:class:`vo_app.pipeline.VOPipeline`: engine -> tracker ->
odometry) once per method on the same frames, held in memory (so no method pays for disk reads),
and scores each trajectory against the KITTI ground truth.

Data: ``ROOT/sequences/<id>/image_0/*.png`` (or ``image_2``), ``calib.txt``, ``times.txt`` and
``ROOT/poses/<id>.txt``; ``--id`` is ``00``..``10`` (``6`` means ``06``) or any folder name under
``ROOT/sequences``. ``--scale gt`` (default; the paper's protocol) takes each keyframe's translation
scale from the ground truth, ``stereo`` from ``image_1``, ``mono`` from triangulation (up to scale).

Metrics (:func:`vo_app.trajectory.kitti_metrics`, evo): ``ate_rmse_m`` = APE RMSE after
SE(3) Umeyama alignment (``gt``/``stereo``) or Sim(3) (``mono``), ``ate_pct_path`` = that RMSE in % of
the ground-truth path, ``rpe_trans_m`` / ``rpe_rot_deg`` = 1-frame RPE RMSE, ``t_err_pct`` /
``r_err_deg_per_100m`` = KITTI devkit drift (``null`` below 100 m of path), ``aktl``,
``inlier_ratio`` (verified / mutual matches per frame, mean), ``fps`` (frames per second of the
whole VO loop after one warm-up extraction), ``frames``, ``tracking_failures``; plus
``ate_unaligned_pct_path``: APE RMSE with no alignment (the run starts at the first ground-truth
pose) in % of the path, the figure classic "frame-to-frame VO with GT scale" results report
(``null`` for ``mono``), and ``ate_xz_mean_m``: the mean x-z distance to the ground truth with no
alignment, the ATE of the TraqPoint paper (``null`` for ``mono``). Features are not cached: the
benchmark times the live pipeline.

``--protocol traqpoint`` runs the authors' own evaluation instead of our pipeline
(:mod:`benchmarks.kitti_protocol`: frame-to-frame essential matrix, RANSAC 1 px / 0.999, GT scale,
their AKTL and their unaligned x-z ATE); the same keys, ``fps`` null.

Outputs: ``--json`` plus, next to it, ``<stem>.<method>.kitti.txt`` per method and
``<stem>.gt.kitti.txt`` (KITTI format, one line per evaluated frame); ``--plot``: x-z top view of
the ground truth and every method, and the APE of every frame (both after the ATE alignment).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from frontend.backends import add_backend_argument
from frontend.frame import Frame
from frontend.tracker import Tracker
from models.errors import BadInputError, MissingFileError
from vo_app.odometry import Odometry
from vo_app.pipeline import VOPipeline
from vo_app.sources import KittiSource
from vo_app.trajectory import path_length, umeyama

from . import kitti_protocol, runner
from .frontend_speed import backend_ran, network_backend
from .methods import Method
from .plots import save_figure

NAME = "kitti"
SCHEMA_KEYS = (
    "ate_rmse_m", "ate_pct_path", "rpe_trans_m", "rpe_rot_deg", "t_err_pct", "r_err_deg_per_100m",
    "aktl", "inlier_ratio", "fps", "frames", "tracking_failures",
)  # fmt: skip
# DESIGN.md section 6 keys, then extras: two trajectory errors and the back-end's keyframes and
# timings (median PnP ms per frame, median bundle adjustment ms per keyframe; null where not run)
KEYS = (*SCHEMA_KEYS, "ate_unaligned_pct_path", "ate_xz_mean_m", "keyframes", "pnp_ms_median", "ba_ms_median")
LAYOUT = "expected ROOT/sequences/<id>/image_0/*.png + calib.txt and ROOT/poses/<id>.txt"
KITTI_IDS = tuple(f"{i:02d}" for i in range(11))  # the sequences with public ground truth
DEFAULT_ROOT = runner.shared_data("kitti_mini")
PRELOAD_LIMIT_BYTES = 2 << 30  # longer runs stream frames from disk instead of holding them in memory


# -- data -----------------------------------------------------------------------------------------
def resolve_root(root: Path | None) -> Path:
    """The KITTI odometry root (``sequences/`` inside); one clear error otherwise."""
    if root is None:
        if not DEFAULT_ROOT.is_dir():
            raise MissingFileError(f"no --root given and the default {DEFAULT_ROOT} does not exist ({LAYOUT})")
        root = DEFAULT_ROOT
    root = runner.require_dir(root, "KITTI odometry root", LAYOUT)
    if not (root / "sequences").is_dir():
        if (root / "dataset" / "sequences").is_dir():  # where KITTI's archives unpack
            return root / "dataset"
        raise BadInputError(f"wrong layout: no sequences/ folder in {root} ({LAYOUT})")
    return root


def resolve_sequence(root: Path, seq_id: str) -> Path:
    """``ROOT/sequences/<id>`` for ``00``..``10`` (``6`` = ``06``) or any folder name present there."""
    text = seq_id.strip()
    name = f"{int(text):02d}" if text.isdigit() and int(text) <= 10 else text
    folder = root / "sequences"
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if name not in present:
        raise MissingFileError(
            f"sequence {seq_id!r} not found in {folder}; present: {', '.join(present) or 'none'} "
            f"(--id takes {KITTI_IDS[0]}-{KITTI_IDS[-1]} or a folder name under sequences/)"
        )
    return folder / name


class MemorySource:
    """The first frames of a source held in memory; other attributes come from the source itself.

    Every method then runs on the very same decoded images and no method's FPS includes disk reads.
    """

    def __init__(self, source: KittiSource, max_frames: int | None) -> None:
        self._source = source
        total = source.num_frames if max_frames is None else min(source.num_frames, max_frames)
        frames = tqdm(
            itertools.islice(source, max_frames), total=total, desc="load", unit="frame", leave=False, disable=None
        )
        self.frames: list[Frame] = list(frames)
        self.skipped = source.skipped

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not delegated (and no recursion before __init__ has set _source)
            raise AttributeError(name)
        return getattr(self._source, name)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def open_frames(seq_dir: Path, max_frames: int | None) -> tuple[KittiSource, MemorySource | KittiSource, bool]:
    """The sequence, and what the pipelines read: its frames in memory, or the source when too large."""
    source = KittiSource(seq_dir)
    n = source.num_frames if max_frames is None else min(source.num_frames, max_frames)
    w, h = source.image_size
    if n * w * h > PRELOAD_LIMIT_BYTES:
        return source, source, False
    frames = MemorySource(source, max_frames)
    if not frames.frames:
        raise BadInputError(f"no readable image in {seq_dir} ({source.skipped} unreadable)")
    return source, frames, True


# -- one method -----------------------------------------------------------------------------------
@dataclass
class Run:
    """One method's finished run: metrics and what the outputs need."""

    metrics: dict
    poses: np.ndarray  # [N, 4, 4] estimated T_world_cam
    gt: np.ndarray | None  # [N, 4, 4] ground truth of the same frames, NaN rows where unknown (None without any)
    indices: np.ndarray  # [N] frame indices
    backend: str  # what the network ran on (frontend.backends), "opencv" for OpenCV methods


def run_method(method: Method, frames, args: argparse.Namespace) -> Run:
    """Run the VO pipeline of one method over ``frames`` with a progress bar."""
    limit = None if isinstance(frames, MemorySource) else args.max_frames
    backend = network_backend(method, args.backend)
    pipe = VOPipeline(frames, method.extractor, args.scale, args.num_kp, max_frames=limit, backend=backend)
    runner.set_threads(args.threads)  # the engine sets every usable core; --threads wins
    first = next(iter(frames)).image
    pipe.engine.extract(torch.from_numpy(np.ascontiguousarray(first))[None, None].to(pipe.engine.device))  # warm-up
    total = frames.num_frames if limit is None else min(frames.num_frames, limit)
    bar = tqdm(pipe.run(), total=total, desc=f"{NAME} {method.name}", unit="frame", leave=False, disable=None)
    for step in bar:
        bar.set_postfix(fps=f"{step.fps:.1f}", tracks=step.stats["active"], refresh=False)
    found = pipe.metrics()
    s = pipe.summary
    # the final trajectory (keyframes refined, frames re-localised): what the metrics score and the
    # files hold; the online poses (as first estimated) are only scored as ate_online_pct_path
    poses = pipe.final_poses() if s.poses else np.zeros((0, 4, 4))
    known = [g is not None for g in s.gt]  # frames without ground truth (NaN rows) get NaN rows here too
    if args.scale != "mono" and any(known):
        est, gt = poses[np.asarray(known)], np.stack([g for g in s.gt if g is not None])
        found["ate_xz_mean_m"] = float(np.linalg.norm(est[:, [0, 2], 3] - gt[:, [0, 2], 3], axis=1).mean())
    return Run(
        metrics={k: found.get(k) for k in KEYS},
        poses=poses,
        gt=np.stack([g if ok else np.full((4, 4), np.nan) for g, ok in zip(s.gt, known)]) if any(known) else None,
        indices=np.asarray(s.indices),
        backend=backend_ran(pipe.engine.extractor),
    )


def known_rows(gt: np.ndarray) -> np.ndarray:
    """``[N]`` mask of the ground-truth rows that are known (frames without one are NaN)."""
    return np.isfinite(gt.reshape(len(gt), -1)).all(1)


def aligned_positions(gt: np.ndarray, est: np.ndarray, align: str) -> np.ndarray:
    """Camera centres of ``est`` after the Umeyama alignment to ``gt`` that the ATE uses ``[N, 3]``."""
    src, dst = est[:, :3, 3], gt[:, :3, 3]
    if len(src) < 3 or align == "none":
        return src
    R, t, s = umeyama(src, dst, with_scale=align == "sim3")
    return s * src @ R.T + t


def write_trajectories(json_path: Path, runs: dict[str, Run]) -> str:
    """KITTI-format files next to the result JSON; returns the name pattern."""
    folder, stem = json_path.parent, json_path.stem
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        np.savetxt(folder / f"{stem}.{name}.kitti.txt", run.poses[:, :3].reshape(-1, 12), fmt="%.9e")
    gt = next((r.gt for r in runs.values() if r.gt is not None), None)
    if gt is not None:
        np.savetxt(folder / f"{stem}.gt.kitti.txt", gt[:, :3].reshape(-1, 12), fmt="%.9e")
    return str(folder / f"{stem}.<method|gt>.kitti.txt")


# -- the benchmark --------------------------------------------------------------------------------
def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", default="06", help="sequence: 00-10 or a folder name under ROOT/sequences")
    parser.add_argument("--root", type=Path, default=None, help=f"KITTI odometry root (default: {DEFAULT_ROOT})")
    parser.add_argument("--scale", choices=("gt", "stereo", "mono"), default="gt", help="translation scale source")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate the first N frames only")
    parser.add_argument(
        "--protocol",
        choices=("project", "traqpoint"),
        default="project",
        help="project = our VO pipeline; traqpoint = the authors' frame-to-frame evaluation (GT scale)",
    )
    parser.add_argument(
        "--essential-method",
        choices=tuple(kitti_protocol.ESSENTIAL_METHODS),
        default=kitti_protocol.DEFAULT_CONF["essential_method"],
        help="--protocol traqpoint: RANSAC (stated protocol) or the cv2.RHO flag the authors' code passes (runs LMedS)",
    )
    parser.add_argument(
        "--no-flip-ty", action="store_true", help="--protocol traqpoint: keep t_y (the authors negate it each frame)"
    )
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> runner.Outcome:
    if args.max_frames is not None and args.max_frames < 3:
        raise BadInputError(f"--max-frames must be at least 3 (trajectory metrics need 3 poses), got {args.max_frames}")
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"--device {args.device}: CUDA is not available in this torch build")
    root = resolve_root(args.root)
    seq_dir = resolve_sequence(root, args.id)
    source, frames, in_memory = open_frames(seq_dir, args.max_frames)
    methods = runner.methods_from_args(args)
    if args.protocol == "traqpoint":
        return kitti_protocol.run(args, seq_dir.name, seq_dir, frames, methods, KEYS)
    runs: dict[str, Run] = {}
    for m in methods:
        if m.extractor is not None:
            runs[m.name] = run_method(m, frames, args)
    align = "sim3" if args.scale == "mono" else "se3"
    gt = next((r.gt for r in runs.values() if r.gt is not None), None)
    data = {
        "sequence": seq_dir.name,
        "frames_in_sequence": source.num_frames,
        "frames_evaluated": max((len(r.poses) for r in runs.values()), default=0),
        "frames_skipped_unreadable": int(frames.skipped),
        "ground_truth": source.gt_poses is not None,
        "gt_path_length_m": path_length(gt[known_rows(gt)]) if gt is not None else None,
        "frames_without_gt": int((~known_rows(gt)).sum()) if gt is not None else None,  # odometry bridged them
        "trajectories": write_trajectories(args.json, runs) if args.json and runs else None,
    }
    result = runner.make_result(
        NAME,
        seq_dir,
        make_config(args, seq_dir.name, align, in_memory),
        methods,
        {n: r.metrics for n, r in runs.items()},
        data,
    )
    for name, r in runs.items():
        result["config"]["methods"][name]["backend"] = r.backend
    return runner.Outcome(result, {"runs": runs, "align": align, "sequence": seq_dir.name})


def make_config(args: argparse.Namespace, sequence: str, align: str, in_memory: bool) -> dict:
    """Every setting that changes a number."""
    return {
        "sequence": sequence,
        "scale": args.scale,
        "ate_alignment": f"{align} (Umeyama, evo)",
        "ate_unaligned": "no alignment; the run is anchored at the first ground-truth pose (null for mono)",
        "rpe": "1 frame, RMSE, translation (m) and rotation angle (deg)",
        "kitti_drift": "devkit: 100-800 m segments every 10th frame (null when the path is shorter than 100 m)",
        "max_frames": args.max_frames,
        "num_keypoints": args.num_kp,
        "fps": "frames / seconds of the VO loop (extract + track + odometry), after one warm-up extraction"
        + ("; frames preloaded in memory" if in_memory else "; frames read from disk by the engine's producer"),
        "engine": {"batch_size": 1, "mode": "pipelined", "backend_requested": args.backend},
        "tracker": {**Tracker.default_conf, "history": 12},
        "odometry": dict(Odometry.default_conf),
        "threads": torch.get_num_threads(),
    }


def plot(outcome: runner.Outcome, path: Path) -> None:
    """Top view (x-z) of ground truth + every method, and APE per frame, after the ATE alignment."""
    runs, align = outcome.plot_data["runs"], outcome.plot_data["align"]
    fig = Figure(figsize=(11, 4.5))
    top, err = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    gt = next((r.gt for r in runs.values() if r.gt is not None), None)
    if gt is not None:
        top.plot(gt[:, 0, 3], gt[:, 2, 3], color="black", lw=2, label="ground truth")  # NaN rows leave gaps
    for name, r in runs.items():
        ok = known_rows(r.gt) if r.gt is not None else None
        if ok is None or ok.sum() < 3:
            xyz = r.poses[:, :3, 3]
        else:
            xyz = aligned_positions(r.gt[ok], r.poses[ok], align)
            err.plot(r.indices[ok], np.linalg.norm(xyz - r.gt[ok, :3, 3], axis=1), label=name)
        top.plot(xyz[:, 0], xyz[:, 2], label=name)
    top.set(xlabel="x (m)", ylabel="z (m)", title=f"KITTI {outcome.plot_data['sequence']}: top view ({align} aligned)")
    top.set_aspect("equal", adjustable="datalim")
    err.set(xlabel="frame", ylabel="APE (m)", title=f"APE per frame ({align} aligned)")
    for ax in (top, err):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], KEYS, run, add_args, plot, num_keypoints=1024)


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
