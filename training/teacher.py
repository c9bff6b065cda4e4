"""ALIKE-n as a stage-1 teacher: its dense descriptors of the homography pool's source photos.

ALIKE-n (Zhao et al., BSD-3, trained on MegaDepth; ``../shared/weights/alike``) describes every
pixel with a 128-D unit vector. A homography training view is its source photograph seen through
``H_view_src``, so the teacher's descriptor of view pixel ``p`` is read from the *source* photo at
``inv(H_view_src) p``: the same target for that scene point in every view, whatever the warp (an
invariant target; the teacher never runs on the warped views). The maps are computed once per
photo and cached.

Storage: each photo's map is average-pooled 2x2 and re-normalised, kept in fp16
(``[128, ceil(H/2), ceil(W/2)]``: about 20 MB for a 640x480 photo). The student is read at its
stride-8 cells of views about half the photo's size, so a 2 px source cell is about one view pixel.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.errors import BadInputError

log = logging.getLogger(__name__)

#: pooling of the cached maps (source pixels per map cell)
POOL = 2


def pool_fingerprint(pool: list[np.ndarray], weights: str | Path) -> str:
    """A short hash of the pool's pixels and the teacher's weight file (the cache key)."""
    h = hashlib.sha1()
    h.update(Path(weights).read_bytes())
    for img in pool:
        h.update(np.asarray(img.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(img[::7, ::7]).tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def dense_map(net: torch.nn.Module, grey: np.ndarray) -> torch.Tensor:
    """Unit teacher descriptors ``[D, ceil(H/2), ceil(W/2)]`` (fp16) of one grey uint8 photo ``[H, W]``.

    The photo is padded (replicate) to a multiple of 32, the dense descriptor map normalised per
    pixel (as ALIKE does), average-pooled over 2x2 pixels and normalised again.
    """
    h, w = grey.shape
    x = torch.from_numpy(grey).float().div(255.0)[None, None]
    x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="replicate")
    desc = F.normalize(net(x)["descriptors"][..., :h, :w], dim=1)
    pooled = F.avg_pool2d(desc, POOL, ceil_mode=True)
    return F.normalize(pooled, dim=1)[0].half()


def teacher_variant(weights: str | Path) -> str:
    """The ALIKE variant of a weight file, from its name (``alike-n.pth`` -> ``n``)."""
    from models.alike import ALIKE_CONFIGS

    variant = Path(weights).stem.split("-")[-1]
    if variant not in ALIKE_CONFIGS:
        raise BadInputError(f"teacher {weights}: name an ALIKE weight file alike-<t|s|n|l>.pth")
    return variant


def teacher_dim(weights: str | Path) -> int:
    """Descriptor dimension of the ALIKE teacher in ``weights`` (read from its variant)."""
    from models.alike import ALIKE_CONFIGS

    return int(ALIKE_CONFIGS[teacher_variant(weights)].dim)


class TeacherMaps:
    """The teacher's pooled descriptor maps of every photo in a homography pool.

    Args:
        pool: the training photographs (grey uint8), in the order of the dataset's ``source`` index.
        weights: ALIKE weight file (``alike-n.pth``; the variant is read from the file name).
        cache: folder for the cached maps (one file per pool fingerprint); ``None``: no cache.
    """

    def __init__(self, pool: list[np.ndarray], weights: str | Path, cache: str | Path | None = None) -> None:
        from models.alike import build_alike

        weights = Path(weights)
        alike = build_alike(teacher_variant(weights), weights)  # MissingFileError / BadInputError name the file
        self.dim = int(alike.net.descriptor_dim)
        key = pool_fingerprint(pool, weights)
        path = Path(cache) / f"teacher_{weights.stem}_{key}.pt" if cache else None
        if path is not None and path.is_file():
            self.maps = torch.load(path, weights_only=True)
            log.info("teacher maps: %d photos from %s", len(self.maps), path)
        else:
            net = alike.net.eval()
            self.maps = [dense_map(net, img) for img in tqdm(pool, desc=f"teacher {weights.stem}", leave=False)]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(self.maps, path)
                log.info("teacher maps: %d photos cached in %s", len(self.maps), path)
        if len(self.maps) != len(pool):
            raise BadInputError(f"teacher cache {path} holds {len(self.maps)} maps for a pool of {len(pool)}")

    def sample(self, index: int, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher descriptors ``[N, D]`` (unit, fp32) at source-photo pixels ``pts [N, 2]`` (x, y;
        pixel centres at integers) and ``inside [N]``: the point lies on the photo."""
        m = self.maps[int(index)]
        _, hm, wm = m.shape
        u = (pts[:, 0] - (POOL - 1) / 2) / POOL  # map cell j is centred on source pixel 2j + 0.5
        v = (pts[:, 1] - (POOL - 1) / 2) / POOL
        inside = (u >= -0.5) & (u <= wm - 0.5) & (v >= -0.5) & (v <= hm - 0.5)
        grid = torch.stack([2 * u / max(wm - 1, 1) - 1, 2 * v / max(hm - 1, 1) - 1], dim=-1)
        t = F.grid_sample(m[None].float(), grid.view(1, 1, -1, 2).float(), mode="bilinear", align_corners=True,
                          padding_mode="border")  # fmt: skip
        return F.normalize(t[0, :, 0].T, dim=1), inside


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, projection: torch.nn.Module) -> torch.Tensor:
    """``mean(1 - cos(projection(student), teacher))`` over rows of ``student [N, d]``, ``teacher [N, D]``.

    The projection (``d -> D``, trained with the student, never shipped) lets a smaller descriptor
    carry the teacher's information without having its dimension.
    """
    if len(student) == 0:
        return student.sum() * 0.0
    return (1.0 - F.cosine_similarity(projection(student), teacher, dim=1)).mean()
