"""Structure-from-motion benchmark: ``python -m benchmarks.sfm --images DIR --methods sift --out out/sfm``.

Per method, from our own keypoints and matches (no COLMAP features): export features (cache),
import the images into a fresh COLMAP database (``pycolmap.import_images``, camera model
SIMPLE_RADIAL, focal prior from EXIF or 1.2 x the long side), write keypoints (shifted by +0.5 px into
COLMAP's pixel convention) and the matches of every pair (exhaustive by default) with the method's
own matcher, verify them with COLMAP's two-view geometry (``pycolmap.geometric_verification``,
RANSAC 4 px, >= 15 inliers) and run ``pycolmap.incremental_mapping``. The largest model is scored and
every model is saved in COLMAP binary format under ``--out/<method>/sparse/<k>``.
``time_s`` is the wall time of database import, matching, verification and mapping (feature
extraction is excluded: it is cached and measured by ``frontend_speed``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pycolmap
import torch
from tqdm import tqdm

from models.errors import BadInputError
from models.image_io import IMAGE_SUFFIXES, read_image

from . import runner
from .cache import FeatureCache
from .images import Resize, to_original
from .methods import Method
from .plots import plot_bars

log = logging.getLogger(__name__)

NAME = "sfm"
KEYS = ("registered_images", "images", "points3d", "mean_track_length", "mean_reproj_error_px", "time_s")


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive), as sorted relative POSIX names."""
    folder = runner.require_dir(folder, "image folder")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(names) < 2:
        raise BadInputError(f"need at least 2 images in {folder}, found {len(names)}")
    return names


def readable_images(folder: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """``names`` split into the images that decode and those that do not (corrupt, truncated JPEG,
    not an image: each logged and left out of the reconstruction, as a photo collection's bad file
    should be). Fewer than 2 readable images is one error."""
    good, bad = [], []
    for name in names:
        try:
            read_image(folder / name)
            good.append(name)
        except BadInputError as err:
            log.warning("skipping %s: %s", name, err)
            bad.append(name)
    if len(good) < 2:
        raise BadInputError(f"need at least 2 readable images in {folder}, found {len(good)} "
                            f"({len(bad)} could not be decoded, e.g. {bad[0] if bad else '-'})")
    return good, bad


def make_pairs(names: list[str], mode: str, window: int) -> list[tuple[str, str]]:
    """Exhaustive pairs, or each image with the next ``window`` images (sorted order)."""
    if mode == "exhaustive":
        return list(itertools.combinations(names, 2))
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 : i + 1 + window]]


def write_database(
    db_path: Path,
    image_dir: Path,
    names: list[str],
    pairs: list[tuple[str, str]],
    method: Method,
    cache: FeatureCache,
    resize: Resize,
) -> int:
    """Create the COLMAP database with our keypoints and raw matches; return the number of matches."""
    pycolmap.Database.open(db_path).close()  # creates the empty database with COLMAP's schema
    pycolmap.import_images(db_path, image_dir, pycolmap.CameraMode.AUTO, image_names=names)
    feats = {n: cache.get(method, image_dir / n, resize) for n in names}
    total = 0
    with pycolmap.Database.open(db_path) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for name, f in feats.items():
            # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); ours is (0, 0).
            db.write_keypoints(ids[name], (to_original(f.keypoints, f.scale) + 0.5).astype(np.float32))
        for a, b in tqdm(pairs, desc=f"match {method.name}", unit="pair", leave=False, disable=None):
            matches = method.match(feats[a].descriptors, feats[b].descriptors)
            if len(matches):
                db.write_matches(ids[a], ids[b], matches.astype(np.uint32))
                total += len(matches)
    return total


def verification_options(seed: int = 0) -> pycolmap.TwoViewGeometryOptions:
    """COLMAP's two-view geometry defaults with a fixed RANSAC seed (reproducible numbers)."""
    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.random_seed = seed
    return options


def mapping_options(threads: int, fallback: bool = True, seed: int = 0) -> pycolmap.IncrementalPipelineOptions:
    """Incremental mapping with COLMAP defaults, fixed seeds and a thread count.

    ``fallback``: COLMAP 4's structure-less registration of images that see too few 3D points; it
    rescues weakly matched images but can spend about a minute on each hopeless one.
    """
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = threads
    options.structure_less_registration_fallback = fallback
    options.random_seed = seed
    options.mapper.random_seed = seed
    options.triangulation.random_seed = seed
    return options


def score(reconstructions: dict, num_images: int, seconds: float) -> dict:
    """Metrics of :data:`KEYS` from the largest reconstruction (zeros / nulls when there is none)."""
    best = max(reconstructions.values(), key=lambda r: r.num_reg_images(), default=None)
    if best is None or best.num_reg_images() == 0:
        return dict.fromkeys(KEYS) | {"registered_images": 0, "images": num_images, "points3d": 0, "time_s": seconds}
    return {
        "registered_images": best.num_reg_images(),
        "images": num_images,
        "points3d": best.num_points3D(),
        "mean_track_length": float(best.compute_mean_track_length()),
        "mean_reproj_error_px": float(best.compute_mean_reprojection_error()),
        "time_s": seconds,
    }


def fresh_workdir(work: Path) -> Path:
    """Remove what an earlier run of this benchmark wrote in ``work`` (its database and models only)."""
    if (work / "sparse").is_dir():
        shutil.rmtree(work / "sparse")
    (work / "database.db").unlink(missing_ok=True)
    (work / "sparse").mkdir(parents=True)
    return work


def reconstruct(
    method: Method, image_dir: Path, names: list[str], args: argparse.Namespace, cache: FeatureCache, resize: Resize
) -> dict:
    """Run the whole SfM pipeline for one method; database and models go to ``args.out / method``."""
    cache.export(method, [image_dir / n for n in names], resize)
    work = fresh_workdir(args.out / method.name)
    db_path = work / "database.db"
    threads = args.threads or torch.get_num_threads()
    pycolmap.set_random_seed(0)
    start = time.perf_counter()
    write_database(db_path, image_dir, names, make_pairs(names, args.pairs, args.window), method, cache, resize)
    pycolmap.geometric_verification(
        db_path,
        pycolmap.GeometricVerifierOptions(num_threads=threads),
        pycolmap.ExistingMatchedPairingOptions(),
        verification_options(),
    )
    options = mapping_options(threads, fallback=args.fallback == "on")
    reconstructions = pycolmap.incremental_mapping(db_path, image_dir, work / "sparse", options)
    return score(reconstructions, len(names), time.perf_counter() - start)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, default=runner.shared_data("sfm", "sacre_coeur", "images"))
    parser.add_argument("--out", type=Path, default=Path("out/sfm"), help="database and models per method")
    parser.add_argument("--long-side", type=int, default=1024, help="resize the long side before extraction (0 = off)")
    parser.add_argument("--pairs", choices=("exhaustive", "sequential"), default="exhaustive")
    parser.add_argument("--window", type=int, default=10, help="neighbours per image for --pairs sequential")
    parser.add_argument("--fallback", choices=("on", "off"), default="on", help="structure-less registration fallback")
    parser.add_argument("--max-exhaustive", type=int, default=200, help="most images for --pairs exhaustive")


def run(args: argparse.Namespace) -> runner.Outcome:
    names, unreadable = readable_images(args.images, list_images(args.images))
    if args.pairs == "exhaustive" and len(names) > args.max_exhaustive:
        raise BadInputError(
            f"{len(names)} images is too many for exhaustive pairs (--max-exhaustive {args.max_exhaustive}); "
            "use --pairs sequential --window N"
        )
    if args.pairs == "sequential" and args.window <= 0:
        raise BadInputError(f"--window must be positive for --pairs sequential, got {args.window}")
    resize = Resize("long", args.long_side) if args.long_side > 0 else Resize()
    methods = runner.methods_from_args(args)
    cache = runner.cache_from_args(args, NAME)
    pycolmap.logging.minloglevel = 0 if args.verbose else 2  # COLMAP's INFO lines would bury the table
    metrics = {}
    try:
        for m in methods:
            if m.extractor is not None:
                metrics[m.name] = reconstruct(m, args.images, names, args, cache, resize)
    finally:
        cache.close()
    config = {
        "resize": resize.describe(),
        "grey": True,
        "pairs": args.pairs if args.pairs == "exhaustive" else f"sequential, window {args.window}",
        "camera": "pycolmap.import_images, CameraMode.AUTO, SIMPLE_RADIAL",
        "verification": "pycolmap.geometric_verification, COLMAP defaults (RANSAC 4 px, 15 inliers), seed 0",
        "mapping": "pycolmap.incremental_mapping, IncrementalPipelineOptions defaults, random seeds 0",
        "structure_less_fallback": args.fallback,
        "time_s": "import + matching + verification + mapping (extraction excluded)",
        "pycolmap": pycolmap.__version__,
        "out": str(args.out),
    }
    data = {"images": len(names), "pairs": len(make_pairs(names, args.pairs, args.window)),
            "images_skipped_unreadable": unreadable}
    return runner.Outcome(runner.make_result(NAME, args.images, config, methods, metrics, data))


def plot(outcome: runner.Outcome, path: Path) -> None:
    plot_bars(outcome.result, ("registered_images", "points3d", "mean_track_length", "mean_reproj_error_px"), path)


# 4096 keypoints as hloc's SfM configurations; 2048 SIFT do not register all of sacre_coeur.
SPEC = runner.BenchmarkSpec(NAME, __doc__.splitlines()[0], KEYS, run, add_args, plot, num_keypoints=4096)


def main(argv: list[str] | None = None) -> int:
    return runner.run_cli(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
