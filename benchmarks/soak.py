"""Soak benchmark: ``python -m benchmarks.soak --frames 10000`` runs the VO app on the demo for a long time.

The built-in demo (:class:`vo_app.sources.DemoSource`, a rendered courtyard lapped again and
again) goes through the app's own :class:`vo_app.pipeline.VOPipeline` with ``--scale mono``,
exactly as ``traqpoint-vo --sequence demo --scale mono --headless`` runs it. Every ``--every``
frames one row is recorded: resident memory (psutil, else ``/proc/self/statm``), the FPS of that
window (frames / wall seconds, rendering included), the FPS the process's own CPU time allows
(``fps_cpu`` = frames / CPU seconds of this process, all its threads: unlike the wall-clock FPS it
does not follow the load of other programs on a shared machine), keyframes and tracking failures, and
what the run keeps for its outputs (stats rows, streamed to disk; map points for the PLY, bounded).
Rows are printed and appended to ``--csv`` as they come (nothing is lost if the run is stopped);
at the end the outputs are written like the app's (``--out``) and the verdict is computed:

- memory: RSS growth after the first window at most ``--max-growth-mb`` (default 50 MB);
- FPS: the median ``fps_cpu`` of the last quarter of the windows at least ``--min-fps-ratio`` (0.8)
  of that of the first quarter (the first window, with warm-up and first allocations, is left out);
  the wall-clock ratio is reported next to it.

Exit code 0 when both hold, 1 when one fails (the JSON says which), 2 on bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from frontend.backends import add_backend_argument
from models import METHODS
from models.arguments import check_count, check_device, writable_dir, writable_file
from models.errors import BadInputError, TraqPointError

from .runner import machine_info, set_threads, to_jsonable

FIELDS = ("frames", "rss_mb", "rss_growth_mb", "fps_window", "fps_cpu", "keyframes", "tracking_failures",
          "rows_logged", "points_kept", "seconds")


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil, else Linux ``/proc/self/statm``)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is a dependency of the test extras
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000, help="demo frames to run (default %(default)s)")
    p.add_argument("--every", type=int, default=500, help="frames per recorded row (default %(default)s)")
    p.add_argument("--method", default="traqpoint-lite", choices=METHODS, help="keypoint method (default %(default)s)")
    p.add_argument("--weights", help="weight file for learned methods")
    p.add_argument("--num-kp", type=int, default=1024, help="keypoints per frame (default %(default)s)")
    p.add_argument("--width", type=int, default=640, help="demo image width (default %(default)s)")
    p.add_argument("--height", type=int, default=480, help="demo image height (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for learned methods")
    add_backend_argument(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch and OpenCV")
    p.add_argument("--max-growth-mb", type=float, default=50.0, help="allowed RSS growth after the first window")
    p.add_argument("--min-fps-ratio", type=float, default=0.8, help="last-quarter / first-quarter median FPS")
    p.add_argument("--out", type=Path, default=Path("soak_out"), help="the app's outputs at the end")
    p.add_argument("--csv", type=Path, help="rows streamed here (default OUT/soak.csv)")
    p.add_argument("--json", type=Path, help="rows, verdict and settings (default OUT/soak.json)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad values before the network is built; probe the output paths."""
    check_count(args.frames, "--frames")
    check_count(args.every, "--every")
    check_count(args.num_kp, "--num-kp")
    check_count(args.width, "--width", minimum=32)
    check_count(args.height, "--height", minimum=32)
    check_count(args.threads, "--threads")
    check_device(args.device)
    if args.every > args.frames:
        raise BadInputError(f"--every {args.every} is larger than --frames {args.frames}: no row would be recorded")
    if not args.max_growth_mb >= 0 or not 0 < args.min_fps_ratio <= 1:
        raise BadInputError("--max-growth-mb must be >= 0 and --min-fps-ratio in (0, 1]")
    writable_dir(args.out, "--out")
    args.csv = writable_file(args.csv or args.out / "soak.csv", "--csv", (".csv",))
    args.json = writable_file(args.json or args.out / "soak.json", "--json", (".json",))


def held(pipeline) -> tuple[int, int]:
    """(stats rows logged, map points kept for map.ply) by the pipeline's run summary."""
    s = pipeline.summary
    return len(s.rows), len(s.points)


def soak(args: argparse.Namespace) -> list[dict]:
    """Run the demo through the pipeline; stream one row per ``args.every`` frames; return the rows."""
    import models
    from vo_app.pipeline import VOPipeline
    from vo_app.sources import DemoSource

    source = DemoSource(num_frames=args.frames, width=args.width, height=args.height)
    extractor = models.build(args.method, weights=args.weights, device=args.device, num_keypoints=args.num_kp)
    pipeline = VOPipeline(source, extractor, scale="mono", num_keypoints=args.num_kp, backend=args.backend)
    set_threads(args.threads)
    rows: list[dict] = []
    with args.csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        print("  ".join(f"{f:>17s}" for f in FIELDS))
        t_start = t_window = time.perf_counter()
        cpu_window = time.process_time()
        base = None
        for n, _ in enumerate(pipeline.run(), 1):
            if n % args.every and n != args.frames:
                continue
            now, cpu, rss = time.perf_counter(), time.process_time(), rss_mb()
            done = n - (rows[-1]["frames"] if rows else 0)
            base = rss if base is None else base
            rows_logged, points_kept = held(pipeline)
            row = {
                "frames": n,
                "rss_mb": round(rss, 1),
                "rss_growth_mb": round(rss - base, 1),
                "fps_window": round(done / max(now - t_window, 1e-9), 2),
                "fps_cpu": round(done / max(cpu - cpu_window, 1e-9), 2),
                "keyframes": pipeline.odometry.keyframes,
                "tracking_failures": pipeline.odometry.failures,
                "rows_logged": rows_logged,
                "points_kept": points_kept,
                "seconds": round(now - t_start, 1),
            }
            rows.append(row)
            writer.writerow(row)
            fh.flush()
            print("  ".join(f"{row[f]:>17}" for f in FIELDS), flush=True)
            t_window, cpu_window = time.perf_counter(), time.process_time()
    pipeline.write_outputs(args.out)
    return rows


def verdict(rows: list[dict], max_growth_mb: float, min_fps_ratio: float, key: str = "fps_cpu") -> dict:
    """Memory flat after the first window, FPS (``key``) of the last quarter not below that of the first quarter."""
    growth = max((r["rss_growth_mb"] for r in rows), default=0.0)
    windows = [r[key] for r in rows[1:]] or [r[key] for r in rows]
    q = max(1, len(windows) // 4)
    first, last = statistics.median(windows[:q]), statistics.median(windows[-q:])
    ratio = last / first if first > 0 else None
    return {
        "rss_growth_mb": growth,
        "memory_flat": growth <= max_growth_mb,
        "fps_first_quarter": first,
        "fps_last_quarter": last,
        "fps_ratio": ratio,
        "fps_steady": ratio is not None and ratio >= min_fps_ratio,
        "fps_measure": key,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        check_args(args)
        rows = soak(args)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; the rows so far are in {args.csv}", file=sys.stderr)
        return 130
    result = {
        "benchmark": "soak",
        "machine": machine_info(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"source": "demo", "scale": "mono", "threads": torch.get_num_threads()},
        "rows": rows,
        "verdict": verdict(rows, args.max_growth_mb, args.min_fps_ratio),
        "wall_clock": verdict(rows, args.max_growth_mb, args.min_fps_ratio, key="fps_window"),
    }
    args.json.write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
    v = result["verdict"]
    print(f"RSS growth after the first window {v['rss_growth_mb']:.1f} MB (limit {args.max_growth_mb:g}): "
          f"{'flat' if v['memory_flat'] else 'GROWS'}; FPS first/last quarter {v['fps_first_quarter']:.2f} / "
          f"{v['fps_last_quarter']:.2f}: {'steady' if v['fps_steady'] else 'DECAYS'}; results: {args.json}")
    return 0 if v["memory_flat"] and v["fps_steady"] else 1


if __name__ == "__main__":
    sys.exit(main())
