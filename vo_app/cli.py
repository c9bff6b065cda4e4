"""``traqpoint-vo``: run TraqPoint visual odometry on a dataset, a video, a webcam or the demo.

Examples:
  traqpoint-vo --sequence demo                         # built-in rendered scene, live viewer
  traqpoint-vo --sequence demo --headless --out out/demo
  traqpoint-vo --sequence demo:1200 --headless --scale mono --out out/demo1200   # two laps, monocular
  traqpoint-vo --sequence kitti/01 --data-root ~/data/kitti/dataset --scale stereo
  traqpoint-vo --sequence ~/kitti/sequences/06 --headless --scale gt --out out/06
  traqpoint-vo --sequence ~/kitti/sequences/00 --headless --backend compile   # long runs: compiled net
  traqpoint-vo --sequence ~/tum/rgbd_dataset_freiburg2_desk --scale gt
  traqpoint-vo --sequence clip.mp4 --calib camera.yaml --scale mono
  traqpoint-vo --webcam 0                               # live tracks (add --calib for VO)
  traqpoint-vo --sequence demo --method sift --headless --video tracks.mp4
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from frontend.backends import add_backend_argument
from models import METHODS
from models.arguments import check_count, check_device, writable_dir, writable_file
from models.errors import BadInputError, TraqPointError, os_error_line
from models.machine import machine_line
from models.precision import add_precision_argument, check_precision, extractor_precision

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")  # containers OpenCV writes mp4v into


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="traqpoint-vo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("input")
    src.add_argument(
        "--sequence", help="kitti/NN, demo or demo:N (N frames), a KITTI/TUM/EuRoC folder, a video or an image folder"
    )
    src.add_argument("--webcam", type=int, metavar="N", help="live camera index N (cv2.VideoCapture)")
    src.add_argument(
        "--data-root",
        help="KITTI odometry root for kitti/NN (else $TRAQPOINT_DATA_ROOT, "
        "$KITTI_ROOT or kitti_root in configs/paths.yaml)",
    )
    src.add_argument(
        "--calib",
        help="intrinsics for video/folder/webcam: YAML (fx, fy, cx, cy, dist) or a line 'fx fy cx cy [k1 k2 p1 p2 k3]'",
    )
    src.add_argument("--max-frames", type=int, help="stop after this many frames")
    feat = p.add_argument_group("front-end")
    feat.add_argument(
        "--method", default="traqpoint-lite", choices=METHODS, help="keypoint method (default %(default)s)"
    )
    feat.add_argument("--weights", help="weight file for learned methods (default: shipped / shared weights)")
    feat.add_argument("--num-kp", type=int, default=1024, help="keypoints per frame (default %(default)s)")
    feat.add_argument("--device", default="cpu", help="torch device for learned methods, e.g. cuda")
    add_backend_argument(feat)
    add_precision_argument(feat)
    vo = p.add_argument_group("odometry")
    vo.add_argument(
        "--scale",
        choices=["gt", "stereo", "mono"],
        help="gt: ground-truth scale (paper protocol); stereo: KITTI image_1; mono: up to scale "
        "(default: gt when the source has ground truth, else mono)",
    )
    vo.add_argument("--kf-parallax", type=float,
                    help="median rotation-compensated parallax (px) that triggers a keyframe (default: "
                    "0.04 x (width + height), DSO's rule; 64 px on KITTI, 45 px at 640x480)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="traqpoint_vo_out", help="output folder (default %(default)s)")
    out.add_argument("--headless", action="store_true", help="no window: run the pipeline and write the outputs")
    out.add_argument("--video", help="also write the tracks view as an mp4")
    out.add_argument(
        "--rerun",
        nargs="?",
        const="",
        metavar="FILE.rrd",
        help='log image, tracks, trajectory and map points to a Rerun recording (default OUT/recording.rrd; '
        'pip install "traqpoint-vo[rerun]")',
    )
    out.add_argument("--export-ply", action="store_true", help="write map.ply (trajectory + points, Open3D)")
    out.add_argument("--no-gl", action="store_true", help="viewer: 2D top-down trajectory instead of the 3D view")
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad values before anything is loaded or run; create and probe the output paths."""
    if (args.sequence is None) == (args.webcam is None):
        raise BadInputError("give exactly one of --sequence or --webcam (try --sequence demo)")
    check_count(args.webcam, "--webcam", minimum=0)
    check_count(args.num_kp, "--num-kp")
    check_count(args.max_frames, "--max-frames")
    if args.kf_parallax is not None and not args.kf_parallax > 0:  # also refuses NaN
        raise BadInputError(f"--kf-parallax must be a positive number of pixels, got {args.kf_parallax}")
    check_device(args.device)
    writable_dir(args.out, "--out")
    if args.video:
        writable_file(args.video, "--video", VIDEO_SUFFIXES)
    if args.rerun is not None:  # the optional SDK and the file, before the run
        from vo_app.rerun_log import import_rerun, rerun_path

        import_rerun()
        writable_file(rerun_path(args.rerun, args.out), "--rerun", (".rrd",))
    if args.export_ply:  # Open3D's system library is missing on some desktops: say so before the run, not after
        from vo_app.export import import_open3d

        import_open3d()


def build_pipeline(args: argparse.Namespace):
    """Open the source, build the extractor and the VO pipeline from parsed arguments."""
    import models
    from vo_app.pipeline import VOPipeline
    from vo_app.sources import open_source

    spec = f"webcam:{args.webcam}" if args.webcam is not None else args.sequence
    live = args.webcam is not None
    source = open_source(
        spec, data_root=args.data_root, calib=args.calib, **({"allow_guess": True} if live and not args.calib else {})
    )
    has_gt = getattr(source, "gt_poses", None) is not None
    if has_gt and source.frames_without_gt == len(source.gt_poses):  # a ground-truth file that fits no frame
        if args.scale == "gt":
            raise BadInputError(f"--scale gt: none of the {len(source.gt_poses)} frames of {source.name} has a "
                                "ground-truth pose (timestamps do not match?); use --scale mono")
        logging.getLogger(__name__).warning("%s: no frame has a ground-truth pose; running --scale mono", source.name)
        has_gt = False
    scale = args.scale or ("gt" if has_gt else "mono")
    precision = check_precision(args.precision, args.device)  # fp16 on the CPU: one clear error
    extractor = models.build(
        args.method, weights=args.weights, device=args.device, num_keypoints=args.num_kp, precision=precision
    )
    odom = {"kf_parallax": args.kf_parallax} if args.kf_parallax is not None else {}
    pipeline = VOPipeline(
        source,
        extractor,
        scale=scale,
        num_keypoints=args.num_kp,
        odometry_conf=odom,
        max_frames=args.max_frames,
        backend=args.backend,
    )
    return pipeline, source


def print_summary(metrics: dict, out: str) -> None:
    keys = (
        "frames",
        "skipped_frames",
        "keyframes",
        "tracking_failures",
        "aktl",
        "inlier_ratio",
        "fps",
        "ate_rmse_m",
        "ate_pct_path",
        "ate_unaligned_pct_path",
        "rpe_trans_m",
        "rpe_rot_deg",
        "t_err_pct",
    )
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            print(f"  {k:24s} {v:.4f}" if isinstance(v, float) else f"  {k:24s} {v}")
    print(f"outputs written to {out}/ (trajectory_kitti.txt, trajectory_tum.txt, stats.csv, results.json)")


def check_result(metrics: dict, source_name: str, args: argparse.Namespace) -> None:
    """Refuse to call a run a success when its trajectory is garbage (outputs are already written)."""
    frames = metrics.get("frames", 0)
    if frames == 0:
        raise BadInputError(f"no frame of {source_name} could be processed ({metrics.get('skipped_frames', 0)} "
                            "unreadable); check the input")
    if metrics.get("frames_without_keypoints") == frames:
        raise BadInputError(f"{args.method} found no keypoint on any of the {frames} frames of {source_name}: "
                            "check --weights (NaN or untrained?), --num-kp and the images")
    if frames >= 3 and metrics.get("tracking_failures", 0) >= frames - 1:
        raise BadInputError(f"tracking was lost on every frame of {source_name}: the trajectory is meaningless; "
                            "check the calibration and the images")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    interrupted = False
    try:
        check_args(args)
        if not args.headless:
            from vo_app.viewer import check_display

            check_display()  # before loading any model: fail fast without a screen
        pipeline, source = build_pipeline(args)
        if args.rerun is not None:
            from vo_app.rerun_log import RerunPipeline, rerun_path

            pipeline = RerunPipeline(pipeline, rerun_path(args.rerun, args.out))
        if args.headless:
            from vo_app.headless import run_headless

            metrics, interrupted = run_headless(pipeline, args.out, video=args.video, export_ply=args.export_ply)
        else:
            from vo_app.viewer import run_viewer

            metrics = run_viewer(
                pipeline, args.out, video=args.video, export_ply=args.export_ply, use_gl=False if args.no_gl else None
            )
        if not interrupted:
            check_result(metrics, source.name, args)
    except TraqPointError as err:
        return fail(str(err), args.verbose, code=2)
    except KeyboardInterrupt:
        print("traqpoint-vo: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # disk full, a file vanished under us, ...
        return fail(os_error_line(err), args.verbose, code=1)
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback with -v
        return fail(f"internal error {type(err).__name__}: {err} (rerun with -v for the traceback)", args.verbose, 1)
    print(f"{pipeline.extractor.name} on {source.name}: scale={pipeline.scale}")
    print_summary(metrics, args.out)
    print(machine_line(precision=extractor_precision(pipeline.extractor)))
    if interrupted:
        print(f"traqpoint-vo: interrupted after {metrics.get('frames', 0)} frames; partial outputs in {args.out}/",
              file=sys.stderr)
        return 130
    return 0


def fail(message: str, verbose: bool, code: int) -> int:
    """Print one error line (and, with ``-v``, the traceback); return the exit code."""
    if verbose:
        traceback.print_exc()
    print(f"traqpoint-vo: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
