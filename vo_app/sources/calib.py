"""Camera intrinsics: calibration files, a guessed K, and undistortion to a pinhole camera.

A calibration is ``K`` (3x3 float64, pixel centre convention of :mod:`models.conventions`)
plus OpenCV distortion coefficients ``dist`` (``k1 k2 p1 p2 [k3]``; zeros = pinhole).

Accepted calibration files (``--calib FILE``):

- YAML with ``fx, fy, cx, cy`` and optional ``dist: [k1, k2, p1, p2, k3]`` (or keys
  ``k1 .. k3``), or with ``K`` / ``camera_matrix`` (3x3, nested, flat 9, or OpenCV/ROS
  ``{rows, cols, data}``) and ``distortion_coefficients`` / ``D``; optional ``width`` and
  ``height`` (or ``image_width`` / ``image_height``) are checked against the images.
- text: one line ``fx fy cx cy [k1 k2 [p1 p2 [k3]]]``, or a 3x3 matrix on three lines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from models.errors import BadInputError, MissingFileError

log = logging.getLogger(__name__)

CALIB_FORMS = "YAML with fx, fy, cx, cy [dist], one line 'fx fy cx cy [k1 k2 [p1 p2 [k3]]]', or a 3x3 matrix"


@dataclass(frozen=True)
class Calibration:
    """Pinhole intrinsics ``K`` [3x3] and distortion ``dist`` [5] of one camera."""

    K: np.ndarray
    dist: np.ndarray
    size: tuple[int, int] | None = None  # (width, height) the calibration was made for, if known
    origin: str = "given"

    def check_size(self, size: tuple[int, int]) -> None:
        """Raise if the calibration cannot belong to images of ``size`` = (width, height)."""
        w, h = size
        if self.size is not None and tuple(self.size) != (w, h):
            raise BadInputError(f"calibration {self.origin} is for {self.size[0]}x{self.size[1]} images, got {w}x{h}")
        cx, cy = self.K[0, 2], self.K[1, 2]
        if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
            raise BadInputError(
                f"calibration {self.origin}: principal point ({cx:.1f}, {cy:.1f}) lies outside the {w}x{h} images"
            )


def make_calibration(fx, fy, cx, cy, dist=(), size=None, origin: str = "given") -> Calibration:
    """Build a checked :class:`Calibration` from scalars and up to 5 distortion coefficients."""
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
    return Calibration(check_K(K, origin), check_dist(dist, origin), size, origin)


def check_K(K, origin: str = "given") -> np.ndarray:
    """Return ``K`` as a 3x3 float64 array; raise one line if its shape or values are wrong."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"calibration {origin}: camera matrix is not numeric") from None
    if K.size == 9 and K.ndim == 1:
        K = K.reshape(3, 3)
    if K.shape != (3, 3):
        raise BadInputError(f"calibration {origin}: camera matrix must be 3x3, got shape {tuple(K.shape)}")
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise BadInputError(f"calibration {origin}: focal lengths must be positive and finite, got {K[0, 0]} {K[1, 1]}")
    if not np.allclose(K[2], [0, 0, 1]) or abs(K[1, 0]) > 1e-9:
        raise BadInputError(f"calibration {origin}: not an upper-triangular camera matrix with last row 0 0 1")
    return K


def check_dist(dist, origin: str = "given") -> np.ndarray:
    """Return distortion as ``[k1, k2, p1, p2, k3]`` float64 (missing terms are zero)."""
    d = np.asarray(dist if dist is not None else (), dtype=np.float64).reshape(-1)
    if d.size not in (0, 1, 2, 4, 5) or not np.isfinite(d).all():
        raise BadInputError(f"calibration {origin}: distortion must be k1 k2 [p1 p2 [k3]], got {d.size} values")
    if d.size in (1, 2):  # radial only: k1 [k2]
        d = np.concatenate([d, np.zeros(2 - d.size)])
    return np.concatenate([d, np.zeros(5 - d.size)])


def load_calib(path: str | Path) -> Calibration:
    """Read a calibration file (formats in the module docstring); raise one clear line."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"calibration file not found: {path}")
    text = path.read_text(errors="replace")
    data = parse_yaml(text)
    if isinstance(data, dict):
        return _from_mapping(data, str(path))
    return _from_numbers(text, str(path))


def parse_yaml(text: str):
    """Parse YAML (tolerating OpenCV's ``%YAML:1.0`` header and matrix tags) or return None."""
    text = re.sub(r"^%YAML[: ]?1\.\d\s*\n", "", text).replace("!!opencv-matrix", "")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _matrix(value) -> np.ndarray:
    """A matrix given as nested lists, a flat list, or an OpenCV/ROS ``{rows, cols, data}`` map."""
    if isinstance(value, dict):
        data = np.asarray(value.get("data", []), dtype=np.float64)
        rows, cols = value.get("rows"), value.get("cols")
        return data.reshape(rows, cols) if rows and cols and rows * cols == data.size else data
    return np.asarray(value, dtype=np.float64)


def _first(data: dict, *keys):
    return next((data[k] for k in keys if k in data), None)


def _from_mapping(data: dict, origin: str) -> Calibration:
    """Calibration from a YAML mapping (keys listed in the module docstring)."""
    try:
        matrix = _first(data, "K", "camera_matrix", "intrinsic_matrix")
        if matrix is not None:
            K = check_K(_matrix(matrix), origin)
        elif all(k in data for k in ("fx", "fy", "cx", "cy")):
            K = check_K([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]], origin)
        else:
            raise BadInputError(f"calibration {origin}: YAML needs fx, fy, cx, cy (or K); expected {CALIB_FORMS}")
        dist = _first(data, "dist", "distortion", "distortion_coefficients", "D")
        if dist is None:
            dist = [data.get(k, 0.0) for k in ("k1", "k2", "p1", "p2", "k3")]
        dist = check_dist(_matrix(dist), origin)
        w, h = _first(data, "width", "image_width"), _first(data, "height", "image_height")
        size = (int(w), int(h)) if w and h else None
    except BadInputError:
        raise
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"calibration {origin}: unreadable value ({exc})") from None
    return Calibration(K, dist, size, origin)


def _from_numbers(text: str, origin: str) -> Calibration:
    """Calibration from plain numbers: one line ``fx fy cx cy [dist]`` or a 3x3 matrix."""
    rows = []
    for line in text.splitlines():
        line = re.sub(r"[,;\[\]]", " ", line.split("#", 1)[0]).strip()
        if line:
            try:
                rows.append([float(v) for v in line.split()])
            except ValueError:
                raise BadInputError(
                    f"calibration {origin}: not a number in line {line!r}; expected {CALIB_FORMS}"
                ) from None
    shape = [len(r) for r in rows]
    if shape == [3, 3, 3]:
        return Calibration(check_K(rows, origin), np.zeros(5), None, origin)
    if len(rows) == 1 and len(rows[0]) in (4, 5, 6, 8, 9):
        fx, fy, cx, cy, *dist = rows[0]
        return make_calibration(fx, fy, cx, cy, dist, origin=origin)
    got = "no numbers" if not rows else f"{len(rows)} line(s) of {'/'.join(map(str, shape))} numbers"
    raise BadInputError(f"calibration {origin}: wrong shape, got {got}; expected {CALIB_FORMS}")


def as_calibration(calib) -> Calibration:
    """Accept a :class:`Calibration`, a file path, or a 3x3 matrix."""
    if isinstance(calib, Calibration):
        return calib
    if isinstance(calib, (str, Path)):
        return load_calib(calib)
    return Calibration(check_K(calib), np.zeros(5), None, "matrix")


def guess_calibration(size: tuple[int, int]) -> Calibration:
    """A plausible K for an unknown camera: focal = 0.8 * max(W, H), centred principal point."""
    w, h = size
    f = 0.8 * max(w, h)
    return make_calibration(f, f, (w - 1) / 2.0, (h - 1) / 2.0, origin="guess")


def resolve_calibration(calib, size: tuple[int, int], allow_guess: bool, what: str) -> Calibration:
    """The calibration of a video/folder/webcam source: given, guessed (if allowed), or an error."""
    if calib is None:
        if not allow_guess:
            raise MissingFileError(f"{what} has no intrinsics: --calib FILE is required for VO ({CALIB_FORMS})")
        log.warning("%s: no calibration given, guessing K (focal 0.8 * max(W, H)); poses will be wrong", what)
        return guess_calibration(size)
    calibration = as_calibration(calib)
    calibration.check_size(size)
    return calibration


def pinhole_camera(K: np.ndarray, dist, size: tuple[int, int]) -> tuple[np.ndarray, Undistorter | None]:
    """(pinhole K delivered to the pipeline, undistorter or None when ``dist`` is zero)."""
    if dist is None or not np.any(dist):
        return np.asarray(K, np.float64), None
    undistorter = Undistorter(K, dist, size)
    return undistorter.K, undistorter


class Undistorter:
    """Remaps images of a distorted camera to a pinhole camera of the same size.

    The pinhole ``K`` keeps the principal point and aspect ratio and is scaled so that
    every output pixel sees the input image (no black borders, which would make keypoints).
    The maps are computed once; a call costs one ``cv2.remap``.
    """

    def __init__(self, K: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> None:
        self.K_raw, self.dist, self.size = np.asarray(K, np.float64), check_dist(dist), size
        self.K = self._fitted_K()
        self.map1, self.map2 = cv2.initUndistortRectifyMap(self.K_raw, self.dist, None, self.K, size, cv2.CV_16SC2)

    def _fitted_K(self) -> np.ndarray:
        """Smallest zoom of K_raw whose output border maps inside the distorted image."""
        w, h = self.size
        t = np.linspace(0.0, 1.0, 64)
        border = np.concatenate([
            np.stack([t * (w - 1), np.zeros_like(t)], 1), np.stack([t * (w - 1), np.full_like(t, h - 1)], 1),
            np.stack([np.zeros_like(t), t * (h - 1)], 1), np.stack([np.full_like(t, w - 1), t * (h - 1)], 1),
        ])

        def inside(scale: float) -> bool:
            K = self.K_raw.copy()
            K[0, 0] *= scale
            K[1, 1] *= scale
            rays = np.linalg.solve(K, np.c_[border, np.ones(len(border))].T).T
            px, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), self.K_raw, self.dist)
            px = px.reshape(-1, 2)
            return bool(np.all((px >= -0.5) & (px <= np.array([w - 0.5, h - 0.5]))))

        lo, hi = 0.3, 3.0
        if not inside(hi):
            log.warning("undistortion: distortion too strong to avoid borders; keeping K")
            return self.K_raw.copy()
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if inside(mid) else (mid, hi)
        K = self.K_raw.copy()
        K[0, 0] *= hi
        K[1, 1] *= hi
        return K

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return cv2.remap(image, self.map1, self.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
