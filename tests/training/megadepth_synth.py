"""A small synthetic MegaDepth scene with exact geometry, written in the standard layout.

Two textured planes (a large one at world z = 0 and a small occluder at z = -1, nearer to the
cameras) seen by 7 pinhole cameras; images are rendered by the plane homographies with a
z-buffer, depth maps are the exact ray-plane distances (0 where no plane is seen). The scene
info is a pickled dict exactly like the official files (a ``None`` entry included). Geometry
here is independent of ``training/``: numpy and OpenCV only.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np

HW = (120, 160)  # original image size (H, W)
K_COLMAP = np.array([[140.0, 0, 80.0], [0, 140.0, 60.0], [0, 0, 1]])  # corner convention, like MegaDepth
SCENE = "0000"
DEPTH_DIR = f"phoenix/S6/zl548/MegaDepth_v1/{SCENE}/dense0/depths"
IMAGE_DIR = f"Undistorted_SfM/{SCENE}/images"
# camera centre (x, y, z) and rotation angles (yaw about y, pitch about x, roll about z) in degrees
CAMERAS = [
    ((0.0, 0.0, -4.0), (0, 0, 0)),
    ((2.2, 0.0, -4.0), (-4, 0, 3)),
    ((-2.1, 0.2, -4.2), (3, 0, -4)),
    ((0.2, 1.6, -4.0), (0, 3, 2)),
    ((-0.3, -1.7, -3.8), (0, -4, -3)),
    ((0.1, 0.05, -3.95), (0, 0, 1)),  # nearly view 0: overlap > 0.7
    ((4.3, 0.0, -4.0), (0, 0, 0)),  # far to the side: overlap with view 0 < 0.1
]


@dataclass
class Plane:
    """A textured rectangle ``x_range x y_range`` of the world plane ``z = z0`` (normal +z)."""

    z0: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    texture: np.ndarray  # uint8 grey

    def tex_to_plane(self) -> np.ndarray:
        """3x3 map from texture pixels (pixel-centre convention) to plane coordinates (X, Y)."""
        th, tw = self.texture.shape
        sx = (self.x_range[1] - self.x_range[0]) / tw
        sy = (self.y_range[1] - self.y_range[0]) / th
        return np.array([[sx, 0, self.x_range[0] + 0.5 * sx], [0, sy, self.y_range[0] + 0.5 * sy], [0, 0, 1]])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation from angles in degrees."""
    a, b, c = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def pose(centre, angles) -> np.ndarray:
    """World-to-camera 4x4 (MegaDepth's ``poses``)."""
    R = rotation(*angles).T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ np.asarray(centre, float)
    return T


def plane_homography(K: np.ndarray, T: np.ndarray, plane: Plane) -> np.ndarray:
    """Plane coordinates (X, Y) -> pixels of the camera ``K`` (any pixel convention), ``T`` world-to-camera."""
    R, t = T[:3, :3], T[:3, 3]
    return K @ np.column_stack([R[:, 0], R[:, 1], plane.z0 * R[:, 2] + t])


def pixel_homography(K_i, T_i, K_j, T_j, plane: Plane) -> np.ndarray:
    """Plane-induced homography from pixels of view i to pixels of view j."""
    return plane_homography(K_j, T_j, plane) @ np.linalg.inv(plane_homography(K_i, T_i, plane))


def plane_depth(K: np.ndarray, T: np.ndarray, plane: Plane, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the plane along the rays of ``pts [N, 2]`` and whether the hit lies inside its rectangle."""
    R, t = T[:3, :3], T[:3, 3]
    n = R[:, 2]
    rays = np.column_stack([pts, np.ones(len(pts))]) @ np.linalg.inv(K).T
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (plane.z0 + n @ t) / (rays @ n)
    X = (rays * z[:, None] - t) @ R  # world points
    inside = (
        (X[:, 0] >= plane.x_range[0])
        & (X[:, 0] <= plane.x_range[1])
        & (X[:, 1] >= plane.y_range[0])
        & (X[:, 1] <= plane.y_range[1])
        & (z > 0)
    )
    return z, inside


def render(K_cv: np.ndarray, T: np.ndarray, planes: list[Plane], hw=HW) -> tuple[np.ndarray, np.ndarray]:
    """z-buffered grey image and exact depth (0 = background) of ``planes``; ``K_cv`` pixel-centre convention."""
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(float)
    image = np.zeros((h, w), np.uint8)
    depth = np.zeros((h, w), np.float32)
    for plane in planes:
        H = plane_homography(K_cv, T, plane) @ plane.tex_to_plane()
        img = cv2.warpPerspective(plane.texture, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        z, inside = plane_depth(K_cv, T, plane, pts)
        z, inside = z.reshape(h, w), inside.reshape(h, w)
        take = inside & ((depth == 0) | (z < depth))
        image[take], depth[take] = img[take], z[take]
    return image, depth


def overlap(depths, Ks, Ts, i: int, j: int, step: int = 2) -> float:
    """Fraction of known-depth pixels of view i that are seen (depth-consistent) in view j."""
    h, w = depths[i].shape
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(float)
    z = depths[i][ys.ravel(), xs.ravel()]
    pts, z = pts[z > 0], z[z > 0]
    if len(z) == 0:
        return 0.0
    X = (np.column_stack([pts, np.ones(len(pts))]) @ np.linalg.inv(Ks[i]).T) * z[:, None]
    T = Ts[j] @ np.linalg.inv(Ts[i])
    Xj = X @ T[:3, :3].T + T[:3, 3]
    pj = Xj @ Ks[j].T
    pj = pj[:, :2] / pj[:, 2:]
    ij = np.round(pj).astype(int)
    ok = (Xj[:, 2] > 0) & (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    dj = np.zeros(len(z))
    dj[ok] = depths[j][ij[ok, 1], ij[ok, 0]]
    ok &= (dj > 0) & (np.abs(Xj[:, 2] - dj) < 0.05 * np.maximum(dj, 1e-6))
    return float(ok.mean())


def textures(photos: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Textures of the main plane and of the occluder: real photographs when given, else noise."""
    rng = np.random.default_rng(0)
    out = []
    for k, size in enumerate([(180, 240), (60, 60)]):
        img = cv2.imread(str(photos[k]), cv2.IMREAD_GRAYSCALE) if k < len(photos) else None
        if img is None:
            img = cv2.GaussianBlur(rng.integers(0, 256, (size[0] // 3, size[1] // 3)).astype(np.uint8), (3, 3), 0)
        out.append(cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA))
    return out[0], out[1]


@dataclass
class SynthScene:
    root: Path
    scene_info: Path  # folder of scene-info files
    planes: list[Plane]
    poses: np.ndarray  # [V, 4, 4] world-to-camera
    overlaps: np.ndarray  # [V, V], symmetric min of both directions
    K: np.ndarray = field(default_factory=K_COLMAP.copy)

    def image_path(self, k: int) -> Path:
        return self.root / IMAGE_DIR / f"img{k:02d}.jpg"

    def depth_path(self, k: int) -> Path:
        return self.root / DEPTH_DIR / f"img{k:02d}.h5"


def write_scene(root: Path, photos: list[Path]) -> SynthScene:
    """Render the scene and write it under ``root`` in the MegaDepth layout."""
    main_tex, occ_tex = textures(photos)
    planes = [Plane(0.0, (-2.4, 2.4), (-1.8, 1.8), main_tex), Plane(-1.0, (-0.6, 0.2), (-0.5, 0.3), occ_tex)]
    K_cv = K_COLMAP.copy()
    K_cv[:2, 2] -= 0.5  # the renderer (OpenCV) puts pixel centres on integers
    Ts = np.stack([pose(c, a) for c, a in CAMERAS])
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / DEPTH_DIR).mkdir(parents=True)
    depths = []
    for k, T in enumerate(Ts):
        image, depth = render(K_cv, T, planes)
        cv2.imwrite(str(root / IMAGE_DIR / f"img{k:02d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        with h5py.File(root / DEPTH_DIR / f"img{k:02d}.h5", "w") as f:
            f.create_dataset("depth", data=depth)
        depths.append(depth)
    v = len(Ts)
    ov = np.eye(v)
    for i in range(v):
        for j in range(i + 1, v):
            ov[i, j] = ov[j, i] = min(overlap(depths, [K_cv] * v, Ts, i, j), overlap(depths, [K_cv] * v, Ts, j, i))
    info_dir = root / "scene_info_0.1_0.7"
    info_dir.mkdir()
    pairs = [(i, j) for i in range(v) for j in range(i + 1, v) if ov[i, j] > 0]
    for name, keep in (("0.1_0.4", lambda o: o < 0.4), ("0.4_0.7", lambda o: o >= 0.4)):
        info = {  # one None entry, like the official files (images without reconstruction)
            "image_paths": np.array([f"{IMAGE_DIR}/img{k:02d}.jpg" for k in range(v)] + [None], dtype=object),
            "depth_paths": np.array([f"{DEPTH_DIR}/img{k:02d}.h5" for k in range(v)] + [None], dtype=object),
            "intrinsics": np.array([K_COLMAP.copy() for _ in range(v)] + [None], dtype=object),
            "poses": np.array(list(Ts) + [None], dtype=object),
            "pair_infos": [(np.array([i, j]), np.float64(ov[i, j]), np.zeros(4)) for i, j in pairs if keep(ov[i, j])],
        }
        with open(info_dir / f"{SCENE}_{name}.npz", "wb") as f:
            pickle.dump(info, f)
    return SynthScene(root, info_dir, planes, Ts, ov)
