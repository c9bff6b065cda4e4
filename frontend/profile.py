"""Measurements behind the front-end's defaults (not run by the tests).

``python -m frontend.profile backends``: the TraqPoint-lite network on the CPU at KITTI size
(1226x370, padded to 1248x384) through backends of :mod:`frontend.backends` at fp32 / bf16,
network alone and full extraction (network + NMS/top-k/sampling in torch), rounds interleaved so
that other load on the machine hits every variant alike; the load average is printed too.

``python -m frontend.profile tracker SEQUENCE_DIR``: the tracker's per-frame cost split into
match / verify / update, per method.

``--precision`` (``auto|fp32|bf16|fp16``) is the precision of every network built (for ``backends``:
of the variants written without one, e.g. ``onnx``); an unavailable one (fp16 on the CPU) is one
error line. Each table ends with the machine line (CPU model, vector extensions, threads, precision).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import models
from models.errors import BadInputError, TraqPointError
from models.machine import machine_info, machine_line
from models.precision import PRECISIONS, add_precision_argument, check_precision, extractor_precision

from .backends import BACKENDS, EXAMPLE_HW, accelerate
from .demo import folder_frames
from .engine import ExtractionEngine
from .tracker import TIMED_STAGES, Tracker

KITTI_HW = (370, 1226)


def _ms(times: list[float]) -> dict:
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times)}


def parse_variant(spec: str, default_precision: str) -> tuple[str, str]:
    """``"eager/bf16"`` -> ``("eager", "bf16")``; ``"onnx"`` -> ``("onnx", <resolved default>)``."""
    backend, _, precision = spec.partition("/")
    if backend not in BACKENDS:
        raise BadInputError(f"variant {spec!r}: unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision and precision not in PRECISIONS:
        raise BadInputError(f"variant {spec!r}: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return backend, check_precision(precision or default_precision, "cpu")


def profile_backends(
    variants: list[str], threads: int, rounds: int, num_keypoints: int, precision: str = "auto"
) -> dict:
    """Median/min milliseconds per ``backend/precision`` variant (e.g. ``eager/bf16``) for the
    network alone (inside the extractor's autocast) and for the whole extraction."""
    parsed = {spec: parse_variant(spec, precision) for spec in variants}  # every bad variant before any build
    torch.set_num_threads(threads)
    padded = torch.rand(1, 1, *EXAMPLE_HW)
    image = torch.rand(1, 1, *KITTI_HW)
    extractors, setup = {}, {}
    for spec, (backend, prec) in parsed.items():
        t = time.perf_counter()
        try:
            base = models.build("traqpoint-lite", num_keypoints=num_keypoints, precision=prec)
            extractors[spec] = accelerate(base, backend)
        except Exception as err:  # noqa: BLE001 - a variant that fails here is reported, not fatal
            setup[spec] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            continue
        setup[spec] = f"{time.perf_counter() - t:.1f} s"
    net_t: dict[str, list[float]] = {n: [] for n in extractors}
    ext_t: dict[str, list[float]] = {n: [] for n in extractors}
    with torch.inference_mode():
        for r in range(rounds + 2):  # two warm-up rounds
            for name, ext in extractors.items():
                t0 = time.perf_counter()
                ext._net(padded)
                t1 = time.perf_counter()
                ext.extract(image)
                t2 = time.perf_counter()
                if r >= 2:
                    net_t[name].append(t1 - t0)
                    ext_t[name].append(t2 - t1)
    out = {name: {"setup": setup[name], "precision": parsed[name][1]} for name in variants}
    for name in net_t:
        out[name] |= {"net": _ms(net_t[name]), "extract": _ms(ext_t[name])}
    return out


def profile_tracker(
    sequence: Path, methods: list[str], frames: int, num_keypoints: int, precision: str = "auto"
) -> dict:
    """Mean/median per-frame tracker cost (ms) of match, verify, refine and update, per method."""
    out = {}
    for spec in methods:
        name, _, matcher = spec.partition("+")  # e.g. traqpoint-lite+mnn
        ext = models.build(name, num_keypoints=num_keypoints, precision=precision)
        feats = list(ExtractionEngine(ext, batch_size=2, num_threads=None).run(folder_frames(sequence, frames)))
        tracker = Tracker(ext, **({"matcher": matcher} if matcher else {}))
        for f in feats:
            tracker.track(f)
        stats = tracker.stats[1:]
        row = {"matcher": tracker.matcher, "precision": extractor_precision(ext), "aktl": tracker.aktl}
        for key in ("keypoints", "matches", "inliers"):
            row[f"{key}_mean"] = float(np.mean([getattr(s, key) for s in stats]))
        for key in (f"t_{k}_ms" for k in TIMED_STAGES):
            vals = [getattr(s, key) for s in stats]
            row[key] = {"mean": float(np.mean(vals)), "median": float(np.median(vals))}
        out[spec] = row
    return out


def machine() -> dict:
    """The result schema's machine block plus the load average (other load changes every timing)."""
    return {**machine_info(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m frontend.profile", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backends")
    b.add_argument(
        "--variants",
        nargs="+",
        default=["eager/fp32", "eager/bf16", "compile/bf16", "compile/fp32", "onnx/fp32", "torchscript/fp32"],
        help=f"BACKEND/PRECISION pairs; backends: {', '.join(BACKENDS)}; precisions: fp32, bf16, auto",
    )
    b.add_argument("--threads", type=int, nargs="+", default=[2])
    b.add_argument("--rounds", type=int, default=20)
    b.add_argument("--num-keypoints", type=int, default=2048)
    t = sub.add_parser("tracker")
    t.add_argument("sequence", type=Path)
    t.add_argument("--methods", nargs="+", default=["traqpoint-lite", "traqpoint-lite+mnn", "sift", "orb"])
    t.add_argument("--frames", type=int, default=20)
    t.add_argument("--num-keypoints", type=int, default=1024)
    t.add_argument("--threads", type=int, default=2)
    for s in (b, t):
        s.add_argument("--json", type=Path, default=None)
        add_precision_argument(s)
    args = p.parse_args(argv)
    try:
        return run(args)
    except TraqPointError as err:
        print(f"python -m frontend.profile: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Run the chosen profile, print its table (and the machine line), write ``--json``."""
    result: dict = {"profile": args.what, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine_before": machine()}
    if args.what == "backends":
        result["config"] = {
            "image_hw": KITTI_HW,
            "padded_hw": EXAMPLE_HW,
            "rounds": args.rounds,
            "num_keypoints": args.num_keypoints,
        }
        for n in args.threads:
            res = profile_backends(args.variants, n, args.rounds, args.num_keypoints, args.precision)
            result[f"threads_{n}"] = res
            print(f"threads {n}  (load average {os.getloadavg()[0]:.2f})")
            head = ("variant", "setup", "net med", "net min", "extract med", "extract min")
            print("{:<18} {:>10} {:>9} {:>9} {:>12} {:>12}".format(*head))
            for name, r in res.items():
                if "net" not in r:
                    print(f"{name:<18} {r['setup']}")
                    continue
                print(
                    f"{name:<18} {r['setup']:>10} {r['net']['median_ms']:9.1f} {r['net']['min_ms']:9.1f} "
                    f"{r['extract']['median_ms']:12.1f} {r['extract']['min_ms']:12.1f}"
                )
            print(machine_line(precision={name: r["precision"] for name, r in res.items()}))
    else:
        result["config"] = {
            "sequence": str(args.sequence),
            "frames": args.frames,
            "num_keypoints": args.num_keypoints,
            "threads": args.threads,
        }
        torch.set_num_threads(args.threads)
        precision = check_precision(args.precision, "cpu")
        res = profile_tracker(args.sequence, args.methods, args.frames, args.num_keypoints, precision)
        result["methods"] = res
        print(
            f"{'method':<22} {'matcher':<13} {'kp':>5} {'match':>6} {'inl':>5} {'AKTL':>6} "
            f"{'t_match':>8} {'t_verify':>9} {'t_refine':>9} {'t_update':>9}  (ms, mean/median)"
        )
        for name, r in res.items():
            tm, tv, tr, tu = (r[k] for k in ("t_match_ms", "t_verify_ms", "t_refine_ms", "t_update_ms"))
            print(
                f"{name:<22} {r['matcher']:<13} {r['keypoints_mean']:5.0f} {r['matches_mean']:6.0f} "
                f"{r['inliers_mean']:5.0f} {r['aktl']:6.3f} {tm['mean']:4.1f}/{tm['median']:<4.1f} "
                f"{tv['mean']:4.1f}/{tv['median']:<4.1f} {tr['mean']:4.1f}/{tr['median']:<4.1f} "
                f"{tu['mean']:4.1f}/{tu['median']:<4.1f}"
            )
        print(machine_line(precision={name: r["precision"] for name, r in res.items()}))
    result["machine_after"] = machine()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
