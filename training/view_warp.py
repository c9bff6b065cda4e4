"""Warping stage-2 samples from the reference view into the other views, with three outcomes.

For the reward a point in a target view is either

* **out of view**: not counted (it left the image, fell outside the warped content, projects
  behind the camera, or its reference depth is unknown so it cannot be warped at all);
* **in view but occluded**: counted, scores 0 (the target view's known depth disagrees with the
  projected depth by more than ``depth_tol``, relative);
* **visible**: counted and scored.

Sources plug in through the keys of a training item (one sequence, views ``0..n-1``):

* homography items: ``H [n, 3, 3]`` (view <- source) and ``valid [n, 1, H, W]``; no occlusion;
* depth items: ``depth [n, H, W]`` in metres with 0 = unknown (dense like MegaDepth, or sparse
  like SfM points splatted into an empty map), ``K [n, 3, 3]``, ``T_cam_world [n, 4, 4]``.
  Unknown target depth cannot refute visibility, so such points count as visible (as in the
  authors' reward); unknown reference depth makes a point out of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.warping import in_bounds, lookup, relative, warp_points


@dataclass
class ViewWarp:
    """Reference points seen in the other views: ``points [V, N, 2]``, ``in_view`` and
    ``visible [V, N]`` bool (``visible`` implies ``in_view``)."""

    points: torch.Tensor
    in_view: torch.Tensor
    visible: torch.Tensor


def _homography(item: dict[str, torch.Tensor], j: int, pts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    H, valid = item["H"], item["valid"]
    pts_j = warp_points(relative(H[j], H[0]), pts)
    ok = in_bounds(pts_j, valid.shape[-2:]) & lookup(valid[0, 0], pts) & lookup(valid[j, 0], pts_j)
    return pts_j, ok, ok


def _depth(item: dict[str, torch.Tensor], j: int, pts: torch.Tensor, depth_tol: float) -> tuple[torch.Tensor, ...]:
    depth, K, T = item["depth"], item["K"], item["T_cam_world"]
    z = lookup(depth[0], pts)
    rays = torch.cat([pts, torch.ones_like(pts[:, :1])], 1) @ torch.linalg.inv(K[0]).T
    T_j0 = relative(T[j], T[0])
    X = (rays * z[:, None]) @ T_j0[:3, :3].T + T_j0[:3, 3]
    zj = X[:, 2]
    pts_j = (X @ K[j].T)[:, :2] / zj.clamp_min(1e-6)[:, None]
    in_view = (z > 0) & (zj > 1e-6) & in_bounds(pts_j, depth.shape[-2:])
    dj = lookup(depth[j], pts_j)
    occluded = (dj > 0) & ((zj - dj).abs() >= depth_tol * dj.clamp_min(1e-6))
    return pts_j, in_view, in_view & ~occluded


def warp_views(item: dict[str, torch.Tensor], pts: torch.Tensor, depth_tol: float) -> ViewWarp:
    """Warp ``pts [N, 2]`` of view 0 of ``item`` into its views ``1..n-1``."""
    if "H" not in item and "depth" not in item:
        raise KeyError("a stage-2 item needs H/valid (homography) or depth/K/T_cam_world")
    n = (item["H"] if "H" in item else item["depth"]).shape[0]
    parts = [_homography(item, j, pts) if "H" in item else _depth(item, j, pts, depth_tol) for j in range(1, n)]
    return ViewWarp(*(torch.stack(t) for t in zip(*parts)))


def warp_batch(batch: dict[str, torch.Tensor], pts: torch.Tensor, depth_tol: float) -> ViewWarp:
    """:func:`warp_views` for every sequence of a collated batch; ``pts [B, N, 2]`` -> ``[B, V, N, ...]``."""
    keys = [k for k in batch if k != "images"]
    warps = [warp_views({k: batch[k][i] for k in keys}, pts[i], depth_tol) for i in range(pts.shape[0])]
    return ViewWarp(*(torch.stack([getattr(w, f) for w in warps]) for f in ("points", "in_view", "visible")))
