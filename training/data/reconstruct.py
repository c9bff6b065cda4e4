"""Reconstruct the multi-view training scenes with pycolmap and cache them (one command).

    nice -n 10 python -m training.data.reconstruct --out runs/sfm_cache
    nice -n 10 python -m training.data.reconstruct --out runs/sfm_cache --scenes fox lund

Scenes: every ``../shared/data/multiview/<scene>/images`` (14), ``sfm/lund/images`` and the
stereo frames of ``euroc_v101_mini`` (both cameras, undistorted here with the released
calibration to one pinhole camera, the intrinsics of cam0, which COLMAP then keeps fixed).
Evaluation sets are refused (:mod:`training.data.sfm_heldout`).

Pipeline per scene (CPU, deterministic settings): SIFT (long side <= ``--max_image_size``,
<= ``--max_features`` features from octave ``--first_octave``, one SIMPLE_RADIAL camera when all
images have one size, else one per image), exhaustive matching up to ``--exhaustive_max`` images,
else sequential matching (overlap ``--sequential_overlap``, COLMAP's quadratic overlap on),
geometric verification and incremental mapping with every RANSAC / mapper seed fixed to 0,
mapping single-threaded (the bundle adjuster then sums residuals in a fixed order; a scene that
registers under half its images is mapped once more with a relaxed initial pair); the largest
model is kept and undistorted to PINHOLE cameras (``undistort_images``), and
:mod:`training.data.sfm_index` turns it into ``scene.npz``.

Cache layout ``OUT/<scene>/``: ``database.db``, ``sparse/`` (the model), ``undistorted/images``
+ ``undistorted/sparse``, ``scene.npz`` (the training index) and ``stats.json`` (registered
images, points, reprojection error, seconds). A scene whose ``stats.json`` exists with the same
settings is skipped (``--force`` redoes it; a failed scene is retried); an interrupted scene restarts from scratch.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from models.errors import BadInputError, MissingFileError, TraqPointError
from models.image_io import IMAGE_SUFFIXES
from training.data.sfm_heldout import refuse_evaluation_paths
from training.data.sfm_index import build_index, save_index

log = logging.getLogger("training.data.reconstruct")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class SceneSpec:
    """One scene to reconstruct: its images and any per-scene settings."""

    name: str
    source: Path  # the shared folder the photographs come from
    image_dir: Path  # the folder COLMAP reads (``source`` or a prepared copy in the cache)
    names: list[str] = field(default_factory=list)
    camera_params: str = ""  # fixed PINHOLE "fx,fy,cx,cy" (COLMAP convention), "" = estimate
    init_min_tri_angle: float = 16.0  # COLMAP's default; lower for a near-static rig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.data.reconstruct",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/sfm_cache", help="cache folder (git-ignored runs/...)")
    p.add_argument("--data", default=str(SHARED), help="the shared data folder (holds multiview/, sfm/lund, ...)")
    p.add_argument("--scenes", nargs="+", help="only these scene names (default: all)")
    p.add_argument("--max_image_size", type=int, default=640, help="long side for SIFT extraction")
    p.add_argument("--max_features", type=int, default=2000, help="SIFT features per image")
    p.add_argument(
        "--first_octave", type=int, default=0, help="SIFT first octave (-1 = COLMAP's upsampled octave, 4x slower)"
    )
    p.add_argument("--exhaustive_max", type=int, default=30, help="exhaustive matching up to this many images")
    p.add_argument("--sequential_overlap", type=int, default=12, help="neighbours matched in sequential mode")
    p.add_argument("--threads", type=int, default=2, help="threads for extraction and matching")
    p.add_argument("--force", action="store_true", help="redo scenes already in the cache")
    p.add_argument("--index_only", action="store_true", help="only rebuild scene.npz from cached models")
    return p


def list_names(folder: Path) -> list[str]:
    """Image file names of a folder (sorted, not recursive)."""
    if not folder.is_dir():
        raise MissingFileError(f"scene image folder not found: {folder}")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(names) < 2:
        raise BadInputError(f"a scene needs at least 2 images, {folder} has {len(names)}")
    return names


def discover(data: Path, out: Path) -> list[SceneSpec]:
    """All training scenes under ``data`` (multiview/*, sfm/lund, euroc_v101_mini)."""
    specs = []
    multiview = data / "multiview"
    if multiview.is_dir():
        for d in sorted(p for p in multiview.iterdir() if (p / "images").is_dir()):
            specs.append(SceneSpec(d.name, d / "images", d / "images"))
    if (data / "sfm" / "lund" / "images").is_dir():
        lund = data / "sfm" / "lund" / "images"
        specs.append(SceneSpec("lund", lund, lund))
    if (data / "euroc_v101_mini" / "mav0").is_dir():
        src = data / "euroc_v101_mini" / "mav0"
        specs.append(SceneSpec("euroc_v101", src, out / "euroc_v101" / "input", init_min_tri_angle=2.0))
    if not specs:
        raise MissingFileError(f"no training scenes (multiview/, sfm/lund, euroc_v101_mini) under {data}")
    return specs


def read_euroc_camera(cam_dir: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``K`` (pixel-centre convention), radial-tangential distortion ``[4]`` and ``(w, h)`` of one EuRoC camera."""
    text = (cam_dir / "sensor.yaml").read_text()
    cfg = yaml.safe_load(text.split("\n", 1)[1] if text.startswith("%YAML") else text)
    fx, fy, cx, cy = cfg["intrinsics"]
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    return K, np.asarray(cfg["distortion_coefficients"], dtype=np.float64), tuple(cfg["resolution"])


def prepare_euroc(spec: SceneSpec) -> None:
    """Undistort both EuRoC cameras to cam0's pinhole intrinsics; fill ``spec.names`` / ``camera_params``."""
    K0, _, size = read_euroc_camera(spec.source / "cam0")
    spec.image_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for cam in ("cam0", "cam1"):
        K, dist, _ = read_euroc_camera(spec.source / cam)
        mx, my = cv2.initUndistortRectifyMap(K, dist, None, K0, size, cv2.CV_32FC1)
        for src in sorted((spec.source / cam / "data").glob("*.png")):
            name = f"{src.stem}_{cam}.png"  # timestamp first: sequential matching sees both cameras
            dst = spec.image_dir / name
            if not dst.is_file():
                img = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
                if img is None:
                    raise BadInputError(f"cannot decode EuRoC frame {src}")
                cv2.imwrite(str(dst), cv2.remap(img, mx, my, cv2.INTER_LINEAR))
            names.append(name)
    spec.names = sorted(names)
    fx, fy, cx, cy = K0[0, 0], K0[1, 1], K0[0, 2] + 0.5, K0[1, 2] + 0.5  # COLMAP: corner at (0, 0)
    spec.camera_params = f"{fx},{fy},{cx},{cy}"


def mapping_options(spec: SceneSpec, relaxed: bool = False):
    """Incremental mapping with fixed seeds (single-threaded: reproducible bundle adjustment).

    ``relaxed``: the retry for a scene that registered under half its images: an initial pair
    needs 50 inliers (COLMAP: 100) and half the triangulation angle.
    """
    import pycolmap

    opts = pycolmap.IncrementalPipelineOptions()
    opts.random_seed = 0
    opts.num_threads = 1
    opts.mapper.random_seed = 0
    opts.mapper.num_threads = 1
    opts.triangulation.random_seed = 0
    opts.mapper.init_min_tri_angle = spec.init_min_tri_angle
    opts.extract_colors = False
    if relaxed:
        opts.mapper.init_min_num_inliers = 50
        opts.mapper.init_min_tri_angle = spec.init_min_tri_angle / 2
    if spec.camera_params:  # a calibrated camera stays as calibrated
        opts.ba_refine_focal_length = False
        opts.ba_refine_extra_params = False
        opts.mapper.abs_pose_refine_focal_length = False
        opts.mapper.abs_pose_refine_extra_params = False
    return opts


def num_registered(maps: dict) -> int:
    """Registered images of the largest model (0 for none)."""
    return max((r.num_reg_images() for r in maps.values()), default=0)


def features_and_matches(spec: SceneSpec, db: Path, args: argparse.Namespace, first_octave: int) -> None:
    """SIFT extraction and matching (exhaustive or sequential) + geometric verification into ``db``."""
    import pycolmap

    sizes = {cv2.imread(str(spec.image_dir / n), cv2.IMREAD_GRAYSCALE).shape for n in spec.names}
    reader = pycolmap.ImageReaderOptions()
    if spec.camera_params:
        reader.camera_model, reader.camera_params = "PINHOLE", spec.camera_params
    else:
        reader.camera_model = "SIMPLE_RADIAL"
    mode = pycolmap.CameraMode.SINGLE if len(sizes) == 1 else pycolmap.CameraMode.PER_IMAGE
    extract = pycolmap.FeatureExtractionOptions()
    extract.max_image_size = args.max_image_size
    extract.num_threads = args.threads
    extract.sift.max_num_features = args.max_features
    extract.sift.first_octave = first_octave
    print(f"[{spec.name}] {len(spec.names)} images, SIFT from octave {first_octave} ({mode.name} camera)", flush=True)
    pycolmap.extract_features(db, spec.image_dir, spec.names, mode, reader, extract, device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = args.threads
    verify = pycolmap.TwoViewGeometryOptions()
    verify.ransac.random_seed = 0
    exhaustive = len(spec.names) <= args.exhaustive_max
    print(f"[{spec.name}] {'exhaustive' if exhaustive else 'sequential'} matching", flush=True)
    if exhaustive:
        pycolmap.match_exhaustive(db, matching, verification_options=verify, device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = args.sequential_overlap
        pycolmap.match_sequential(db, matching, pairing, verify, device=pycolmap.Device.cpu)


def map_scene(spec: SceneSpec, db: Path, scene_dir: Path) -> tuple[dict, str]:
    """Incremental mapping, retried with a relaxed initial pair under half the images registered."""
    import pycolmap

    print(f"[{spec.name}] incremental mapping", flush=True)
    maps = pycolmap.incremental_mapping(db, spec.image_dir, scene_dir / "mapping", mapping_options(spec))
    shutil.rmtree(scene_dir / "mapping", ignore_errors=True)
    mapping = "default"
    if num_registered(maps) < len(spec.names) / 2:
        print(f"[{spec.name}] {num_registered(maps)}/{len(spec.names)} registered, relaxed initial pair", flush=True)
        retry = pycolmap.incremental_mapping(db, spec.image_dir, scene_dir / "mapping", mapping_options(spec, True))
        shutil.rmtree(scene_dir / "mapping", ignore_errors=True)
        if num_registered(retry) > num_registered(maps):
            maps, mapping = retry, "relaxed"
    return maps, mapping


def reconstruct_scene(spec: SceneSpec, scene_dir: Path, args: argparse.Namespace) -> dict:
    """SIFT + matching + incremental mapping + undistortion of one scene; returns its stats.

    A scene that registers under half its images with SIFT from ``--first_octave`` 0 is extracted
    and mapped once more from the upsampled octave -1 (~4x the features, ~4x the time); the model
    with more registered images is kept.
    """
    import pycolmap

    t0 = time.perf_counter()
    if scene_dir.exists():
        for sub in (
            "database.db",
            "database_octave-1.db",
            "sparse",
            "undistorted",
            "mapping",
            "scene.npz",
            "stats.json",
        ):
            p = scene_dir / sub
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    scene_dir.mkdir(parents=True, exist_ok=True)
    if spec.name == "euroc_v101":
        prepare_euroc(spec)
    if not spec.names:
        spec.names = list_names(spec.image_dir)
    features_and_matches(spec, scene_dir / "database.db", args, args.first_octave)
    t_features = time.perf_counter() - t0
    maps, mapping = map_scene(spec, scene_dir / "database.db", scene_dir)
    if num_registered(maps) < len(spec.names) / 2 and args.first_octave >= 0:
        print(f"[{spec.name}] {num_registered(maps)}/{len(spec.names)} registered, SIFT from octave -1", flush=True)
        db = scene_dir / "database_octave-1.db"
        features_and_matches(spec, db, args, -1)
        retry, how = map_scene(spec, db, scene_dir)
        if num_registered(retry) > num_registered(maps):
            maps, mapping = retry, f"{how}, octave -1"
    t_map = time.perf_counter() - t0 - t_features
    if num_registered(maps) < 2:
        return {  # a scene without a model is recorded (and skipped when cached), not fatal
            "scene": spec.name,
            "source": str(spec.source),
            "images": len(spec.names),
            "registered": 0,
            "points3D": 0,
            "reprojection_px": None,
            "failed": "incremental mapping found no initial pair / registered no model",
            "seconds": {"total": round(time.perf_counter() - t0, 1)},
            "settings": settings(args),
        }
    best = max(maps.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    (scene_dir / "sparse").mkdir()
    best.write(scene_dir / "sparse")
    pycolmap.undistort_images(scene_dir / "undistorted", scene_dir / "sparse", spec.image_dir)
    index = build_index(scene_dir / "undistorted" / "sparse", spec.name, spec.source)
    save_index(scene_dir / "scene.npz", index)
    return {
        "scene": spec.name,
        "source": str(spec.source),
        "images": len(spec.names),
        "registered": best.num_reg_images(),
        "models": len(maps),
        "points3D": best.num_points3D(),
        "mean_track_length": round(float(best.compute_mean_track_length()), 2),
        "reprojection_px": round(float(best.compute_mean_reprojection_error()), 3),
        "matching": "exhaustive"
        if len(spec.names) <= args.exhaustive_max
        else f"sequential({args.sequential_overlap})",
        "mapping": mapping,
        "seconds": {
            "features_and_matching": round(t_features, 1),
            "map": round(t_map, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "settings": settings(args),
    }


def settings(args: argparse.Namespace) -> dict:
    """The settings a cached scene was built with (a scene built otherwise is rebuilt)."""
    keys = ("max_image_size", "max_features", "first_octave", "exhaustive_max", "sequential_overlap")
    return {k: getattr(args, k) for k in keys}


def cached(stats_file: Path, args: argparse.Namespace) -> bool:
    """Whether a scene is done: reconstructed with the same settings (a failed scene is retried)."""
    if not stats_file.is_file():
        return False
    stats = json.loads(stats_file.read_text())
    return stats.get("settings") == settings(args) and "failed" not in stats


def run(args: argparse.Namespace) -> list[dict]:
    out = Path(args.out)
    specs = discover(Path(args.data), out)
    if args.scenes:
        unknown = sorted(set(args.scenes) - {s.name for s in specs})
        if unknown:
            raise BadInputError(f"unknown scenes {unknown}; known: {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in args.scenes]
    refuse_evaluation_paths([s.source for s in specs], "scene")
    all_stats = []
    for k, spec in enumerate(specs, 1):
        scene_dir = out / spec.name
        stats_file = scene_dir / "stats.json"
        if args.index_only:
            if not stats_file.is_file() or "failed" in json.loads(stats_file.read_text()):
                print(f"[{k}/{len(specs)}] {spec.name}: no model in the cache, skipped", flush=True)
                continue
            save_index(
                scene_dir / "scene.npz", build_index(scene_dir / "undistorted" / "sparse", spec.name, spec.source)
            )
            stats = json.loads(stats_file.read_text())
        elif not args.force and cached(stats_file, args):
            stats = json.loads(stats_file.read_text())
            print(
                f"[{k}/{len(specs)}] {spec.name}: cached ({stats['registered']}/{stats['images']} images)", flush=True
            )
        else:
            print(f"[{k}/{len(specs)}] {spec.name}: reconstructing", flush=True)
            stats = reconstruct_scene(spec, scene_dir, args)
            stats_file.write_text(json.dumps(stats, indent=1))
        all_stats.append(stats)
        if "failed" in stats:
            print(f"[{k}/{len(specs)}] {spec.name}: FAILED ({stats['failed']}), not a training scene", flush=True)
            continue
        print(
            f"[{k}/{len(specs)}] {spec.name}: {stats['registered']}/{stats['images']} registered, "
            f"{stats['points3D']} points, {stats['reprojection_px']:.2f} px, {stats['seconds']['total']:.0f} s",
            flush=True,
        )
    return all_stats


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        stats = run(args)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failed = [s["scene"] for s in stats if "failed" in s]
    print(f"{len(stats) - len(failed)} scenes reconstructed in {args.out}" + (f", failed: {failed}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
