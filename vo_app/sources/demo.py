"""The built-in ``demo`` sequence: a textured 3D scene rendered at run time with known poses.

The scene is a courtyard: a cobblestone ground, four walls and a few dozen boxes along a
closed, smoothly curving path, textured with real photographs (``demo_textures/``, see its
README) and lit by a fixed sun direction. The camera drives along the path at constant
speed (straight stretches and turns, a little bob and pitch), 1.5 m above the ground. Frame
``i`` is rendered when it is requested (a few ms at 640x480 on one CPU core); everything is
deterministic for a given ``seed``.

World frame: that of the first camera (x right, y down, z forward), so ``gt_poses[0]`` is
the identity; poses are ``T_world_cam``. Units: metres.
"""

from __future__ import annotations

import logging
import math
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from frontend.frame import Frame
from models.errors import BadInputError

from .base import IndexedSource, readonly
from .demo_render import Material, Quad, Renderer

log = logging.getLogger(__name__)

TEXTURE_DIR = Path(__file__).parent / "demo_textures"
CAMERA_HEIGHT = 1.5  # ground plane is y = +1.5 (y points down)
LOOP_LENGTH = 60.0  # metres of one lap of the path
WALL_HEIGHT = 6.0
SUN = np.array([0.45, -1.0, 0.3]) / np.linalg.norm([0.45, -1.0, 0.3])  # towards the sun (up is -y)
# texture file -> texels per metre on the surfaces that use it
TEXTURES = {"ground_cobblestones.jpg": 128.0, "facade_brick.jpg": 80.0, "trees_street.jpg": 60.0}


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def heading(s: np.ndarray) -> np.ndarray:
    """Yaw (rad) at arc length ``s``: curvature (2 pi / L)(1 - cos(4 pi s / L)) >= 0, closed after one lap."""
    return 2 * np.pi * s / LOOP_LENGTH - 0.5 * np.sin(4 * np.pi * s / LOOP_LENGTH)


def path_xz(s_max: float, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(arc lengths, ground positions [N, 2] as (x, z)) of the path from 0 to ``s_max``."""
    s = np.arange(0.0, s_max + step, step)
    yaw = heading(s)
    d = np.stack([np.sin(yaw), np.cos(yaw)], 1)
    xz = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (d[1:] + d[:-1]) * step, 0)])
    return s, xz


def trajectory(num_frames: int, speed: float) -> np.ndarray:
    """``T_world_cam`` [N, 4, 4] of frames ``0..N-1``, one every ``speed`` metres of path."""
    s_frames = np.arange(num_frames) * speed
    s, xz = path_xz(float(s_frames[-1]) if num_frames else 0.0)
    x, z = np.interp(s_frames, s, xz[:, 0]), np.interp(s_frames, s, xz[:, 1])
    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    for i, si in enumerate(s_frames):
        bob, pitch = 0.03 * math.sin(2 * math.pi * si / 6.0), 0.015 * math.sin(2 * math.pi * si / 9.0)
        poses[i, :3, :3] = rot_y(float(heading(si))) @ rot_x(pitch)
        poses[i, :3, 3] = (x[i], bob, z[i])
    return poses


def vertical_face(centre_xz, normal_xz, half_width: float, top: float, height: float, material: str,
                  tex_offset=(0.0, 0.0), gain: float = 1.0) -> Quad:
    """An upright rectangle centred on ``centre_xz`` facing ``normal_xz``, from y = top down by ``height``."""
    nx, nz = normal_xz
    u = np.array([-nz, 0.0, nx])  # right, as seen from the front
    origin = np.array([centre_xz[0], top, centre_xz[1]]) - half_width * u
    return Quad(origin, u, np.array([0.0, 1.0, 0.0]), (2 * half_width, height), material, tex_offset, gain)


def shade(normal: np.ndarray) -> float:
    """Lambert-like brightness gain of a face with outward ``normal``."""
    return 0.55 + 0.45 * max(0.0, float(normal @ SUN))


class Scene:
    """Ground, walls and boxes of the demo courtyard (deterministic for a seed)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        _, loop = path_xz(LOOP_LENGTH, step=0.05)
        lo, hi = loop.min(0) - 12.0, loop.max(0) + 12.0
        self.ground = Quad(np.array([lo[0] - 1, CAMERA_HEIGHT, hi[1] + 1]), np.array([1.0, 0, 0]),
                           np.array([0.0, 0, -1]), (hi[0] - lo[0] + 2, hi[1] - lo[1] + 2), "ground_cobblestones.jpg")
        top = CAMERA_HEIGHT - WALL_HEIGHT
        mid = (lo + hi) / 2
        half = (hi - lo) / 2 + 0.5
        self.walls = [
            vertical_face((lo[0], mid[1]), (1, 0), half[1], top, WALL_HEIGHT, "trees_street.jpg", (0.0, 0.0)),
            vertical_face((hi[0], mid[1]), (-1, 0), half[1], top, WALL_HEIGHT, "trees_street.jpg", (7.0, 0.0)),
            vertical_face((mid[0], lo[1]), (0, 1), half[0], top, WALL_HEIGHT, "trees_street.jpg", (3.0, 0.0)),
            vertical_face((mid[0], hi[1]), (0, -1), half[0], top, WALL_HEIGHT, "trees_street.jpg", (11.0, 0.0)),
        ]
        self.boxes = self._place_boxes(rng, loop)

    @staticmethod
    def _place_boxes(rng: np.random.Generator, loop: np.ndarray) -> list[tuple[np.ndarray, list[Quad]]]:
        """Boxes beside the path (2-5 m from it, never on it, never overlapping): (centre, faces)."""
        boxes: list[tuple[np.ndarray, float, list[Quad]]] = []
        tangent = np.gradient(loop, axis=0)
        for idx in range(0, len(loop), 45):  # every ~2.25 m of path
            t = tangent[idx] / np.linalg.norm(tangent[idx])
            side = np.array([t[1], -t[0]]) * rng.choice([-1.0, 1.0])
            size = rng.uniform(0.8, 2.2, 2)
            height = rng.uniform(0.8, 3.0)
            centre = loop[idx] + side * rng.uniform(2.8, 5.0) + 0.3 * rng.normal(size=2)
            radius = 0.5 * float(np.hypot(*size))
            if np.min(np.linalg.norm(loop - centre, axis=1)) < radius + 1.8:
                continue
            if any(np.linalg.norm(c - centre) < radius + r + 0.3 for c, r, _ in boxes):
                continue
            boxes.append((centre, radius, Scene._box(rng, centre, size, height)))
        return [(np.array([c[0], CAMERA_HEIGHT, c[1]]), faces) for c, _, faces in boxes]

    @staticmethod
    def _box(rng: np.random.Generator, centre: np.ndarray, size: np.ndarray, height: float) -> list[Quad]:
        """The five visible faces of an upright box on the ground, with per-face shading."""
        yaw = rng.uniform(0, np.pi)
        e1, e2 = np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])
        texture = "facade_brick.jpg" if rng.random() < 0.65 else "trees_street.jpg"
        top = CAMERA_HEIGHT - height
        faces = []
        for axis, half, half_other in ((e1, size[0] / 2, size[1] / 2), (e2, size[1] / 2, size[0] / 2)):
            for sign in (1.0, -1.0):
                n = sign * axis
                n3 = np.array([n[0], 0.0, n[1]])
                offset = tuple(rng.uniform(0, 20, 2))
                faces.append(vertical_face(centre + n * half, n, half_other + 0.01, top, height, texture, offset,
                                           shade(n3)))
        u = np.array([e1[0], 0.0, e1[1]])
        v = np.cross(u, np.array([0.0, -1.0, 0.0]))  # so that v x u points up
        origin = np.array([centre[0], top, centre[1]]) - u * size[0] / 2 - v * size[1] / 2
        faces.append(Quad(origin, u, v, (size[0], size[1]), texture, tuple(rng.uniform(0, 20, 2)),
                          shade(np.array([0.0, -1.0, 0.0]))))
        return faces

    def quads(self, camera_centre: np.ndarray) -> list[Quad]:
        """All quads in painter's order for a camera at ``camera_centre``."""
        order = sorted(self.boxes, key=lambda box: -float(np.linalg.norm(box[0] - camera_centre)))
        return [self.ground, *self.walls, *(face for _, faces in order for face in faces)]


def load_textures(grey: bool) -> dict[str, np.ndarray]:
    """The demo textures (RGB or grey); a procedural stand-in (with a warning) if a file is missing."""
    textures = {}
    for i, name in enumerate(TEXTURES):
        image = cv2.imread(str(TEXTURE_DIR / name), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("demo texture %s missing; using a procedural texture", TEXTURE_DIR / name)
            image = procedural_texture(i)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if grey else cv2.COLOR_BGR2RGB)
        textures[name] = image
    return textures


def procedural_texture(seed: int, size: int = 256) -> np.ndarray:
    """A deterministic multi-scale noise texture (BGR uint8), the stand-in for a missing photograph."""
    rng = np.random.default_rng(1000 + seed)
    acc = np.zeros((size, size, 3), np.float32)
    for octave in range(2, 7):
        n = 2**octave
        acc += cv2.resize(rng.random((n, n, 3), np.float32), (size, size), interpolation=cv2.INTER_CUBIC) / octave
    acc = (acc - acc.min()) / (np.ptp(acc) + 1e-6)
    return (acc * 255).astype(np.uint8)


def sky(width: int, height: int, grey: bool) -> np.ndarray:
    """A plain vertical sky gradient (no texture, so no keypoints)."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    rgb = (1 - t) * np.array([150, 185, 230], np.float32) + t * np.array([225, 232, 240], np.float32)
    image = np.broadcast_to(rgb, (height, width, 3)).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if grey else np.ascontiguousarray(image)


class DemoSource(IndexedSource):
    """The built-in rendered sequence (``--sequence demo``): known K and ground-truth poses.

    Args:
        num_frames: length of the sequence (300 = half a lap: straight, a 180 degree turn, straight).
        width, height: image size; K has a 65 degree horizontal field of view at any size.
        colour: also deliver RGB (``frame.colour``); rendering is then in colour.
        fps: frame rate for timestamps.
        speed: metres of path per frame.
        seed: scene layout (box placement, sizes, textures).
    """

    def __init__(self, num_frames: int = 300, width: int = 640, height: int = 480, colour: bool = False,
                 fps: float = 30.0, speed: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if num_frames < 1 or width < 32 or height < 32 or fps <= 0 or speed <= 0:
            raise BadInputError(f"demo: bad settings (frames {num_frames}, size {width}x{height}, fps {fps}, "
                                f"speed {speed})")
        self.name, self.colour, self.fps = "demo", colour, fps
        self.image_size = (width, height)
        f = 500.0 * width / 640.0
        self.K = readonly([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
        self.gt_poses = readonly(trajectory(num_frames, speed))
        self.scene = Scene(seed)

    @property
    def num_frames(self) -> int:
        return len(self.gt_poses)

    @cached_property
    def renderer(self) -> Renderer:
        """Built on first use (textures, mip pyramids), so that opening the source is instant."""
        textures = load_textures(grey=not self.colour)
        materials = {name: Material(texture, TEXTURES[name]) for name, texture in textures.items()}
        return Renderer(np.asarray(self.K), self.image_size, materials, sky(*self.image_size, grey=not self.colour))

    def render(self, index: int) -> np.ndarray:
        """Rendered image of frame ``index`` (grey ``H x W``, or RGB ``H x W x 3`` if ``colour``)."""
        pose = self.gt_poses[index]
        return self.renderer.render(pose, self.scene.quads(pose[:3, 3]))

    def _load(self, index: int) -> Frame:
        image = self.render(index)
        grey, rgb = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), image) if self.colour else (image, None)
        return Frame(
            index=index, image=grey, timestamp=index / self.fps, K=self.K, pose=self.gt_poses[index], colour=rgb
        )
