"""Front-end speed benchmark: ``python -m benchmarks.frontend_speed --data SEQUENCE --methods sift,orb``.

Every method runs in one process on the same frames, decoded into memory first. ``--data`` takes
every sequence ``traqpoint-vo --sequence`` takes (:func:`vo_app.sources.open_source`): a KITTI
sequence folder (``image_0/``) or ``kitti/NN``, a TUM or EuRoC folder, a video file, a folder of
images, or ``demo`` (the rendered sequence); no calibration is needed. Per method:

1. warm-up: the first ``--warmup`` frames through the engine and a throw-away tracker (not timed);
2. latency pass (live mode: :class:`~frontend.engine.ExtractionEngine`, batch 1, pipelined, then
   :class:`~frontend.tracker.Tracker` on each frame as it comes out): per frame, the time the
   engine takes to deliver its features (*extract*) and the tracker's match / verify / refine / update.
   Frame 0 only starts tracks (nothing to match), so the statistics cover frames 1..N-1:
   ``fps_extract`` = frames / extraction seconds, ``fps_frontend`` = frames / (extraction +
   tracking) seconds, ``latency_ms_p50`` / ``latency_ms_p95`` of extraction + tracking per frame,
   ``keypoints_mean``, and ``aktl`` of the tracker over all N frames. The pass runs ``--rounds``
   times (default 3) per method, back to back, and the statistics pool the frames of all rounds
   (a 20-frame TUM sample alone moved ORB between 50 and 68 FPS from one run to the next on a
   quiet 2-core machine);
3. with ``--batch`` (default ``1,8,32`` on CUDA, none on the CPU): extraction-only throughput at each
   batch size, ``naive`` (synchronous loop) against ``pipelined`` (producer thread; on CUDA pinned
   buffers, a copy stream and a compute stream), interleaved per batch size on the same device.

The JSON adds three blocks beside the schema: ``profile`` (per method, mean ms of extract / match /
verify / refine / update / total per frame), ``fps_frontend_rounds`` (per method, each round's FPS) and
``batches`` (per method, frames/s per batch size and mode).
``--backend`` applies to TraqPoint networks (ONNX Runtime, TorchScript, ...; :mod:`frontend.backends`)
and ``--precision`` to networks that have one (:mod:`models.precision`); the other methods run as
they are, and ``config.methods.<name>.backend`` / ``.precision`` say what each one ran. Every table
printed ends with the machine line (CPU model, vector extensions, threads, GPU, precision).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from tqdm import tqdm

from frontend.backends import BackendNet, accelerate, add_backend_argument
from frontend.engine import ExtractionEngine
from frontend.tracker import TIMED_STAGES, Tracker
from models.errors import BadInputError
from models.machine import machine_line
from models.traqpoint import TraqPoint
from vo_app.sources import open_source

from . import runner
from .methods import Method
from .plots import save_figure

NAME = "frontend_speed"
KEYS = ("fps_extract", "fps_frontend", "latency_ms_p50", "latency_ms_p95", "keypoints_mean", "aktl")
PROFILE_KEYS = ("extract_ms", "match_ms", "verify_ms", "refine_ms", "update_ms", "total_ms")
DEFAULT_DATA = runner.shared_data("kitti_mini", "sequences", "06")
CUDA_BATCHES = (1, 8, 32)


# -- inputs ---------------------------------------------------------------------------------------
def load_frames(data: str | os.PathLike, count: int) -> tuple[list[np.ndarray], str]:
    """The first ``count`` grey ``uint8`` images of any ``traqpoint-vo`` sequence, in memory, and its name.

    Calibration is not needed to time a front-end: folders and videos without one get a guessed K
    (without the VO app's warning that poses would be wrong: no pose is computed here).
    """
    calib_log = logging.getLogger("vo_app.sources.calib")
    level = calib_log.level
    calib_log.setLevel(logging.ERROR)
    try:
        source = open_source(data, allow_guess=True)
    finally:
        calib_log.setLevel(level)
    with source:
        frames = [
            f.image for f in tqdm(itertools.islice(source, count), desc="load", unit="img", leave=False, disable=None)
        ]
        name = source.name
    if len(frames) < 2:
        raise BadInputError(f"need at least 2 images in {data}, found {len(frames)}")
    return frames, name


def parse_batches(text: str | None, device: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]``; none given: :data:`CUDA_BATCHES` on CUDA, no sweep on the CPU."""
    if text is None:
        return list(CUDA_BATCHES) if device.startswith("cuda") else []
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise BadInputError(f"--batch expects comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise BadInputError(f"--batch sizes must be positive integers, got {text!r}")
    return list(dict.fromkeys(sizes))


def network_backend(method: Method, requested: str) -> str:
    """The backend a method's network gets: ``requested`` for TraqPoint networks, ``eager`` otherwise."""
    return requested if isinstance(method.extractor, TraqPoint) else "eager"


def backend_ran(extractor) -> str:
    """The backend an (accelerated) extractor actually runs: ``auto`` may have fallen back to eager."""
    net = getattr(extractor, "net", None)
    if isinstance(net, BackendNet):
        return net.backend
    return "eager" if isinstance(net, torch.nn.Module) else "opencv"


# -- measurements ---------------------------------------------------------------------------------
def latency_pass(extractor, frames: list[np.ndarray], num_kp: int) -> dict:
    """Live-mode timing of extraction + tracking per frame -> raw per-frame times of frames 1..N-1.

    Keys: ``extract`` and ``total`` [N-1] seconds, each of :data:`~frontend.tracker.TIMED_STAGES` [N-1] ms,
    ``keypoints`` [N], ``aktl`` (frame 0 matches nothing, so it is not timed).
    """
    engine = ExtractionEngine(extractor, batch_size=1, num_keypoints=num_kp, num_threads=None)
    tracker = Tracker(extractor)
    extract, total, keypoints = [], [], []
    frames_out = engine.run(frames)
    while True:
        t0 = time.perf_counter()
        frame = next(frames_out, None)
        if frame is None:
            break
        t1 = time.perf_counter()
        tracker.track(frame)
        t2 = time.perf_counter()
        extract.append(t1 - t0)
        total.append(t2 - t0)
        keypoints.append(frame.num_keypoints)
    st = tracker.stats[1:]
    return {
        "extract": np.array(extract[1:]),
        "total": np.array(total[1:]),
        **{k: np.array([getattr(s, f"t_{k}_ms") for s in st]) for k in TIMED_STAGES},
        "keypoints": np.array(keypoints, dtype=float),
        "aktl": tracker.aktl,
    }


def summarise(passes: list[dict]) -> tuple[dict, dict, list[float]]:
    """Schema metrics and profile over the frames of every pass pooled, and each pass's FPS."""
    pooled = {k: np.concatenate([p[k] for p in passes]) for k in ("extract", "total", *TIMED_STAGES)}
    ext, tot = pooled["extract"], pooled["total"]
    metrics = {
        "fps_extract": len(ext) / ext.sum(),
        "fps_frontend": len(tot) / tot.sum(),
        "latency_ms_p50": 1e3 * float(np.percentile(tot, 50)),
        "latency_ms_p95": 1e3 * float(np.percentile(tot, 95)),
        "keypoints_mean": float(np.mean(passes[-1]["keypoints"])),
        "aktl": passes[-1]["aktl"],  # the tracker is deterministic: every pass has the same tracks
    }
    profile = {
        "extract_ms": 1e3 * float(ext.mean()),
        **{f"{k}_ms": float(pooled[k].mean()) for k in TIMED_STAGES},
        "total_ms": 1e3 * float(tot.mean()),
    }
    return metrics, profile, [len(p["total"]) / p["total"].sum() for p in passes]


def warm_up(extractor, frames: list[np.ndarray], num_kp: int) -> None:
    """Run the first frames through an engine and a tracker (lazy initialisation, compiles, allocator)."""
    tracker = Tracker(extractor)  # a compiled network compiles the matcher too (Tracker's compile_matcher)
    for frame in ExtractionEngine(extractor, batch_size=1, num_keypoints=num_kp, num_threads=None).run(frames):
        tracker.track(frame)


def throughput(extractor, frames: list[np.ndarray], num_kp: int, batch: int, mode: str) -> float:
    """Frames per second of extraction alone at ``batch`` in ``mode`` (one warm-up batch first)."""
    engine = ExtractionEngine(extractor, batch_size=batch, mode=mode, num_keypoints=num_kp, num_threads=None)
    for _ in engine.run(frames[:batch]):
        pass
    t0 = time.perf_counter()
    count = sum(1 for _ in engine.run(frames))
    return count / (time.perf_counter() - t0)


def batch_sweep(extractor, frames: list[np.ndarray], num_kp: int, batches: list[int]) -> dict:
    """``{batch: {"naive": fps, "pipelined": fps, "speedup": pipelined / naive}}``, modes interleaved."""
    out = {}
    for b in batches:
        row = {mode: throughput(extractor, frames, num_kp, b, mode) for mode in ("naive", "pipelined")}
        out[str(b)] = {**row, "speedup": row["pipelined"] / row["naive"]}
    return out


def prepare(method: Method, frames: list[np.ndarray], args: argparse.Namespace):
    """The method's extractor on its backend, warmed up (lazy initialisation, compiles, allocator)."""
    extractor = accelerate(method.extractor, network_backend(method, args.backend))  # once, shared by all engines
    warm_up(extractor, frames[: args.warmup], args.num_kp)
    return extractor


def measure_all(methods: list[Method], frames: list[np.ndarray], args: argparse.Namespace,
                batches: list[int]) -> dict[str, dict]:
    """Every method's metrics, profile, per-round FPS, batch sweep and backend.

    ``args.order``:

    - ``sequential`` (default): each method's passes back to back, then the next method (what a
      user running one method sees), each method's warm-up frames run again (not timed) right
      before its first pass: every method is prepared first, so without it the first method was
      timed after the other networks' warm-ups had filled the heap and the caches.
    - ``interleaved``: round ``r`` runs every method's pass ``r`` before round ``r + 1`` starts,
      each pass after its method's warm-up frames again (not timed), so that every method sees the
      same host: a shared 2-core host drifted by ~30 % within minutes (seventh session: one
      method's rounds ranged 48-58 FPS in one run and 66-75 in the next, 30 s apart). Measured in
      the seventh session (five methods, ``benchmarks/README.md``), it still lowered
      traqpoint-lite against ORB by 3-7 % (the other networks' heap state between its rounds; the
      fifth session measured ~15 % without the re-warm-up), so it is not the default.

    The metrics pool the frames of all rounds.
    """
    extractors, passes = {}, {}
    for method in methods:
        extractors[method.name] = prepare(method, frames, args)
        passes[method.name] = []
    if args.order == "sequential":
        schedule = [m for m in methods for _ in range(args.rounds)]
    else:
        schedule = [m for _ in range(args.rounds) for m in methods]
    for i, method in enumerate(tqdm(schedule, desc=NAME, unit="pass", disable=None)):
        extractor = extractors[method.name]
        first = not passes[method.name]
        if (args.order == "interleaved" and i >= len(methods)) or (args.order == "sequential" and first):
            # its caches and heap after the other methods ran (in sequential order: their warm-ups,
            # which all come before the first method's rounds)
            warm_up(extractor, frames[: args.warmup], args.num_kp)
        passes[method.name].append(latency_pass(extractor, frames, args.num_kp))
    found = {}
    for method in methods:
        extractor = extractors[method.name]
        metrics, profile, rounds = summarise(passes[method.name])
        sweep = batch_sweep(extractor, frames, args.num_kp, batches) if batches else {}
        found[method.name] = {"metrics": metrics, "profile": profile, "rounds": rounds, "batches": sweep,
                              "backend": backend_ran(extractor)}
    return found


# -- the benchmark --------------------------------------------------------------------------------
def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="any traqpoint-vo sequence: KITTI/TUM/EuRoC folder, kitti/NN, video, image folder or demo",
    )
    parser.add_argument("--frames", type=int, default=50, help="frames to load and time (at least 2)")
    parser.add_argument("--warmup", type=int, default=3, help="frames run before timing (the first ones again)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed passes per method (back to back), frames pooled"
    )
    parser.add_argument(
        "--order", choices=("sequential", "interleaved"), default="sequential",
        help="sequential: each method's rounds back to back; interleaved: round r of every method "
        "before round r+1 (the same host for all)",
    )
    parser.add_argument("--batch", default=None, help="batch sizes of the naive/pipelined sweep, e.g. 1,8,32")
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> runner.Outcome:
    if args.frames < 2 or args.warmup < 0 or args.rounds < 1:
        raise BadInputError(
            f"--frames must be >= 2, --warmup >= 0 and --rounds >= 1, got {args.frames}, {args.warmup}, {args.rounds}"
        )
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"--device {args.device}: CUDA is not available in this torch build")
    batches = parse_batches(args.batch, str(args.device))
    frames, source_name = load_frames(args.data, args.frames)
    load_start = os.getloadavg()[0]
    methods = runner.methods_from_args(args)
    found = measure_all([m for m in methods if m.extractor is not None], frames, args, batches)
    h, w = frames[0].shape[:2]
    config = {
        "source": source_name,
        "frames": len(frames),
        "warmup_frames": min(args.warmup, len(frames)),
        "image_size": f"{w}x{h}",
        "num_keypoints": args.num_kp,
        "device": str(args.device),
        "threads": torch.get_num_threads(),
        "backend_requested": args.backend,
        "precision_requested": args.precision,
        "latency_pass": "ExtractionEngine batch 1, pipelined mode, then Tracker per frame; stats over frames 1..N-1",
        "rounds": args.rounds,
        "order": args.order,
        "tracker": dict(Tracker.default_conf),  # compile_matcher None: on with a method's compile backend
        "batch_sweep": batches,
    }
    result = runner.make_result(
        NAME, args.data, config, methods, {n: r["metrics"] for n, r in found.items()},
        {"frames": len(frames), "load_average_1min_start": load_start, "load_average_1min_end": os.getloadavg()[0]},
    )  # fmt: skip
    for name, r in found.items():
        result["config"]["methods"][name]["backend"] = r["backend"]
    result["profile"] = {n: r["profile"] for n, r in found.items()}
    result["fps_frontend_rounds"] = {n: r["rounds"] for n, r in found.items()}
    result["batches"] = {n: r["batches"] for n, r in found.items() if r["batches"]}
    return runner.Outcome(result, {"profile": result["profile"], "batches": result["batches"]})


def print_extras(result: dict) -> None:
    """The profile (and batch sweep) tables, printed before the runner's main table."""
    rounds = result["config"].get("rounds", 1)
    order = result["config"].get("order", "sequential")  # results written before the option: sequential
    print(f"per-frame profile (ms, mean over frames 1..N-1 of {rounds} round(s), methods {order})")
    print(f"{'method':<16}" + "".join(f"{k:>12}" for k in PROFILE_KEYS))
    for name, p in result["profile"].items():
        print(f"{name:<16}" + "".join(f"{p[k]:12.2f}" for k in PROFILE_KEYS))
    if result["batches"]:
        print("extraction throughput (frames/s): naive / pipelined (speedup)")
        for name, sweep in result["batches"].items():
            cells = [f"b{b}: {r['naive']:.2f} / {r['pipelined']:.2f} ({r['speedup']:.2f}x)" for b, r in sweep.items()]
            print(f"{name:<16}" + "   ".join(cells))
    if rounds > 1:
        print("fps_frontend per round: " + "; ".join(
            f"{n} " + " / ".join(f"{v:.1f}" for v in r) for n, r in result["fps_frontend_rounds"].items()))
    print(machine_line(result["machine"], runner.precisions(result)))


def plot(outcome: runner.Outcome, path: Path) -> None:
    """Bars: FPS (extraction, front-end) and the per-frame time split; lines: the batch sweep if run."""
    result, sweeps = outcome.result, outcome.plot_data["batches"]
    names = list(result["methods"])
    x = np.arange(len(names))
    fig = Figure(figsize=(5 * (3 if sweeps else 2), 4))
    ax = fig.add_subplot(1, 3 if sweeps else 2, 1)
    for i, key in enumerate(("fps_extract", "fps_frontend")):
        ax.bar(x + (i - 0.5) * 0.4, [result["methods"][n][key] for n in names], 0.4, label=key)
    ax.set(xticks=x, xticklabels=names, ylabel="frames / s", title="throughput at batch 1")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3 if sweeps else 2, 2)
    bottom = np.zeros(len(names))
    for key in PROFILE_KEYS[:-1]:
        vals = np.array([outcome.plot_data["profile"][n][key] for n in names])
        ax.bar(x, vals, 0.6, bottom=bottom, label=key.removesuffix("_ms"))
        bottom += vals
    p95 = [result["methods"][n]["latency_ms_p95"] for n in names]
    ax.scatter(x, p95, marker="_", s=400, color="black", label="p95 latency", zorder=3)
    ax.set(xticks=x, xticklabels=names, ylabel="ms per frame", title="front-end time per frame (mean)")
    ax.legend(fontsize=8)
    if sweeps:
        ax = fig.add_subplot(1, 3, 3)
        for k, (name, sweep) in enumerate(sweeps.items()):
            b = [int(s) for s in sweep]
            color = f"C{k}"
            ax.plot(b, [r["naive"] for r in sweep.values()], "--o", color=color, label=f"{name} naive")
            ax.plot(b, [r["pipelined"] for r in sweep.values()], "-o", color=color, label=f"{name} pipelined")
        sizes = sorted({int(s) for sweep in sweeps.values() for s in sweep})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, labels=[str(s) for s in sizes])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set(xlabel="batch size", ylabel="frames / s", title="extraction throughput (--batch)")
        ax.legend(fontsize=7)
    for a in fig.axes:
        a.grid(alpha=0.3)
        a.tick_params(axis="x", rotation=30)
    save_figure(fig, path)


def run_and_print(args: argparse.Namespace) -> runner.Outcome:
    """The CLI's run: :func:`run`, then the profile and sweep tables (the runner prints the main one)."""
    outcome = run(args)
    print_extras(outcome.result)
    return outcome


SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], KEYS, run_and_print, add_args, plot, num_keypoints=1024)


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
