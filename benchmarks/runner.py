"""The shared benchmark runner: common flags, the result schema, the printed table and the CLI.

A benchmark module declares a :class:`BenchmarkSpec` (its name, metric keys, extra flags, a
``run(args) -> Outcome`` function and an optional plot) and calls :func:`run_cli`. The runner
checks the method names first (an unknown name is a one-line error, exit code 2), runs the
benchmark, prints one table, and writes the result JSON (``--json``) and the figure (``--plot``).
Any :class:`models.errors.TraqPointError` (missing data, wrong layout, bad input) ends the run with
one line on stderr and exit code 2.

Result schema (DESIGN.md section 6)::

    {"benchmark", "dataset", "created", "machine": {cpu, vector_extensions, cpu_capability, threads, gpu, torch},
     "config": {...every setting that changes a number...},
     "methods": {name: {metric: value | null}},
     "skipped": {name: "one-line reason"},          # methods that could not be built
     "data": {...counts of what was evaluated and what was skipped...}}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import models
from models.arguments import check_count, check_device, writable_file
from models.errors import BadInputError, TraqPointError
from models.machine import machine_info, machine_line
from models.precision import add_precision_argument, check_precision

from .cache import DEFAULT_CACHE, FeatureCache
from .methods import Method, build_methods, parse_method_names, parse_weights

# The project's shared data folder (``../shared/data`` next to the repository; TRAQPOINT_SHARED overrides).
SHARED_DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"


@dataclass
class Outcome:
    """What a benchmark's ``run`` returns: the result dict and data for its figure."""

    result: dict
    plot_data: dict = field(default_factory=dict)


@dataclass
class BenchmarkSpec:
    """Declaration of one benchmark for :func:`run_cli`."""

    name: str
    description: str
    keys: tuple[str, ...]  # metric keys, in table order (the schema's keys for this benchmark)
    run: Callable[[argparse.Namespace], Outcome]
    add_args: Callable[[argparse.ArgumentParser], None] | None = None
    plot: Callable[[Outcome, Path], None] | None = None
    num_keypoints: int = 2048  # default of --num-kp


def add_common_args(parser: argparse.ArgumentParser, num_keypoints: int = 2048) -> None:
    """Flags shared by every benchmark."""
    parser.add_argument(
        "--methods",
        default=",".join(models.METHODS),
        help=f"comma-separated methods (default: all of {', '.join(models.METHODS)}; unbuildable ones are skipped)",
    )
    parser.add_argument("--num-kp", type=int, default=num_keypoints, help="keypoints per image (top-k)")
    parser.add_argument("--weights", action="append", metavar="METHOD=PATH", help="weight file for a method")
    parser.add_argument("--device", default="cpu", help="torch device for learned methods (cpu, cuda, cuda:1)")
    parser.add_argument("--json", type=Path, help="write the result schema JSON to this path")
    parser.add_argument("--plot", type=Path, help="write the benchmark's figure to this path (.png/.pdf)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="feature cache folder (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="extract into a temporary folder, keep nothing")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and OpenCV (default: torch's default)")
    add_precision_argument(parser)
    parser.add_argument(
        "--two-view-threshold", type=float, metavar="P",
        help="dual-softmax threshold of the TraqPoint methods for one two-view estimate (default: the lite "
             "networks' calibration, 0.2; the paper network's 0.01); recalibrate retrained weights with "
             "python -m training.calibrate_matcher",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def make_parser(spec: BenchmarkSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{spec.name}", description=spec.description)
    if spec.add_args:
        spec.add_args(parser)
    add_common_args(parser, spec.num_keypoints)
    return parser


def methods_from_args(args: argparse.Namespace, names: list[str] | None = None) -> list[Method]:
    """Build the methods named by ``--methods`` (names were checked by :func:`run_cli`), or ``names``
    with the same flags (device, keypoints, weights, precision, two-view threshold)."""
    if args.num_kp <= 0:
        raise BadInputError(f"--num-kp must be positive, got {args.num_kp}")
    names = parse_method_names(args.methods) if names is None else names
    precision = check_precision(getattr(args, "precision", "auto"), args.device)  # before any build: one clear error
    return build_methods(
        names, device=args.device, num_keypoints=args.num_kp, weights=parse_weights(args.weights), precision=precision,
        two_view_threshold=getattr(args, "two_view_threshold", None),
    )


def check_common_args(args: argparse.Namespace) -> None:
    """Refuse bad common flags before anything runs; probe ``--json`` / ``--plot`` (never lose a run at the end)."""
    check_count(args.num_kp, "--num-kp")
    check_count(args.threads, "--threads")
    check_device(args.device)
    threshold = getattr(args, "two_view_threshold", None)
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise BadInputError(f"--two-view-threshold must be in [0, 1), got {threshold}")
    if args.json:
        writable_file(args.json, "--json", (".json",))
    if args.plot:
        writable_file(args.plot, "--plot", (".png", ".pdf", ".svg", ".jpg"))


def cache_from_args(args: argparse.Namespace, benchmark: str) -> FeatureCache:
    return FeatureCache(None if args.no_cache else args.cache, benchmark)


def make_result(
    benchmark: str,
    dataset: str | Path,
    config: dict,
    methods: list[Method],
    metrics: dict[str, dict],
    data: dict | None = None,
) -> dict:
    """Assemble the result schema; methods in ``metrics`` are evaluated, the others are ``skipped``."""
    config = {"methods": {m.name: m.describe() for m in methods if m.extractor is not None}, **config}
    return {
        "benchmark": benchmark,
        "dataset": str(dataset),
        "created": dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": config,
        "methods": {m.name: metrics[m.name] for m in methods if m.name in metrics},
        "skipped": {m.name: m.skipped for m in methods if m.skipped},
        "data": data or {},
    }


TOP_KEYS = ("benchmark", "dataset", "created", "machine", "config", "methods", "skipped", "data")
MACHINE_KEYS = ("cpu", "vector_extensions", "threads", "gpu", "torch")


def validate_result(result: dict, keys: tuple[str, ...]) -> None:
    """Raise :class:`BadInputError` naming the first way ``result`` departs from the schema.

    Every evaluated method must carry exactly ``keys`` (numbers or ``None``) and the file must be
    valid JSON (no NaN).
    """
    problems = [f"missing top-level key {k!r}" for k in TOP_KEYS if k not in result]
    problems += [f"missing machine key {k!r}" for k in MACHINE_KEYS if k not in result.get("machine", {})]
    for name, metrics in result.get("methods", {}).items():
        if tuple(metrics) != tuple(keys):
            problems.append(f"method {name} has keys {list(metrics)}, expected {list(keys)}")
        bad = [k for k, v in metrics.items() if v is not None and not isinstance(v, int | float | np.number)]
        problems += [f"method {name}: {k} is not a number or null" for k in bad]
    try:
        json.dumps(to_jsonable(result), allow_nan=False)
    except (TypeError, ValueError) as err:
        problems.append(f"not JSON-serialisable: {err}")
    if problems:
        raise BadInputError(f"result does not follow the schema: {problems[0]}")


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to Python; NaN and infinities to ``None`` (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` as indented JSON (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)


def format_table(result: dict, keys: tuple[str, ...]) -> str:
    """A plain-text table: one row per method, one column per metric key; skipped methods at the end."""
    header = ["method", *keys]
    rows = [[name, *(_cell(m.get(k)) for k in keys)] for name, m in result["methods"].items()]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{name.ljust(widths[0])}  skipped: {reason}" for name, reason in result.get("skipped", {}).items()]
    return "\n".join(lines)


def precisions(result: dict) -> dict[str, str]:
    """``{method: precision it ran}`` from a result's ``config.methods`` (the machine line's last part)."""
    return {n: m["precision"] for n, m in result.get("config", {}).get("methods", {}).items() if "precision" in m}


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in torch and OpenCV (OpenCV follows torch when not given)."""
    if threads is not None:
        if threads <= 0:
            raise BadInputError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    cv2.setNumThreads(torch.get_num_threads())


def run_cli(spec: BenchmarkSpec, argv: list[str] | None = None) -> int:
    """Parse flags, run the benchmark, print the table, write JSON and plot; return the exit code."""
    args = make_parser(spec).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        parse_method_names(args.methods)
        check_common_args(args)
        set_threads(args.threads)
        outcome = spec.run(args)
        if not outcome.result["methods"]:  # nothing to report is a failure, not an empty table
            reasons = "; ".join(f"{n}: {r}" for n, r in outcome.result.get("skipped", {}).items())
            raise BadInputError(f"no method could be evaluated ({reasons or 'none was run'})")
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    result = outcome.result
    validate_result(result, spec.keys)
    print(f"{spec.name} on {result['dataset']}")
    print(format_table(result, spec.keys))
    for key, value in result.get("data", {}).items():
        if not isinstance(value, dict | list):  # nested details (per-method curves) go to the JSON only
            print(f"  {key}: {_cell(value)}")
    print(machine_line(result["machine"], precisions(result)))
    if args.json:
        write_json(result, args.json)
        print(f"results: {args.json}")
    if args.plot and spec.plot and result["methods"]:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        spec.plot(outcome, args.plot)
        print(f"figure: {args.plot}")
    return 0


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a folder, else raise one clear error naming it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise models.MissingFileError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def shared_data(*parts: str) -> Path:
    """A path under the project's shared data folder (``../shared/data``), used for default roots."""
    return SHARED_DATA.joinpath(*parts)
