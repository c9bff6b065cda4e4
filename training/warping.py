"""Ground-truth warping of points between views of a training item, with covisibility.

Two kinds of items share one interface, :func:`warp_item`:
homography items (``H [n, 3, 3]`` view <- source, ``valid [n, 1, H, W]``) and depth items
(``depth [n, H, W]`` metres with 0 = unknown, ``K [n, 3, 3]``, ``T_cam_world [n, 4, 4]``, as in
MegaDepth's scene info where poses are world-to-camera).
"""

from __future__ import annotations

import torch


def relative(to: torch.Tensor, frm: torch.Tensor) -> torch.Tensor:
    """``to @ inv(frm)`` ``[n, n]``: the map from view ``frm``'s frame into view ``to``'s, for
    homographies (image from reference) and poses ``T_cam_world`` (camera ``to`` from camera ``frm``)."""
    return to @ torch.linalg.inv(frm)


def warp_points(H: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply ``H [..., 3, 3]`` to points ``[..., N, 2]``."""
    homo = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1) @ H.transpose(-1, -2)
    z = homo[..., 2:]
    return homo[..., :2] / torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)


def in_bounds(pts: torch.Tensor, hw: tuple[int, int], margin: float = 0.0) -> torch.Tensor:
    """Mask of points inside the image (pixel-centre convention) with an optional margin."""
    h, w = hw
    x, y = pts[..., 0], pts[..., 1]
    return (x >= margin - 0.5) & (x <= w - 0.5 - margin) & (y >= margin - 0.5) & (y <= h - 0.5 - margin)


def lookup(mask: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel values of ``mask [H, W]`` at ``pts [N, 2]`` (clamped to the image)."""
    h, w = mask.shape[-2:]
    ij = pts.round().long()
    return mask[ij[:, 1].clamp(0, h - 1), ij[:, 0].clamp(0, w - 1)]


def depth_warp(
    pts: torch.Tensor,
    depth_i: torch.Tensor,
    K_i: torch.Tensor,
    T_i: torch.Tensor,
    depth_j: torch.Tensor,
    K_j: torch.Tensor,
    T_j: torch.Tensor,
    rel_thresh: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``pts [N, 2]`` of view i into view j by depth and poses, with a depth-consistency check.

    A point is covisible when both depths are known, it projects in front of camera j inside the
    image, and the projected depth agrees with view j's depth within ``rel_thresh`` (relative).
    """
    z = lookup(depth_i, pts)
    ones = torch.ones_like(pts[:, :1])
    rays = torch.cat([pts, ones], 1) @ torch.linalg.inv(K_i).T
    X_i = rays * z[:, None]
    T_ji = relative(T_j, T_i)
    X_j = X_i @ T_ji[:3, :3].T + T_ji[:3, 3]
    zj = X_j[:, 2]
    proj = X_j @ K_j.T
    pts_j = proj[:, :2] / zj.clamp_min(1e-6)[:, None]
    ok = (z > 0) & (zj > 1e-6) & in_bounds(pts_j, depth_j.shape[-2:])
    dj = lookup(depth_j, pts_j)
    ok &= (dj > 0) & ((zj - dj).abs() < rel_thresh * dj.clamp_min(1e-6))
    return pts_j, ok


def warp_item(
    item: dict[str, torch.Tensor], i: int, j: int, pts: torch.Tensor, margin: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``pts [N, 2]`` from view ``i`` to view ``j`` of one item; returns ``(pts_j, covisible)``."""
    if "H" in item:
        H = item["H"]
        pts_j = warp_points(relative(H[j], H[i]), pts)
        valid = item["valid"]
        ok = in_bounds(pts_j, valid.shape[-2:], margin) & lookup(valid[i, 0], pts) & lookup(valid[j, 0], pts_j)
        return pts_j, ok
    pts_j, ok = depth_warp(
        pts,
        item["depth"][i],
        item["K"][i],
        item["T_cam_world"][i],
        item["depth"][j],
        item["K"][j],
        item["T_cam_world"][j],
    )
    return pts_j, ok & in_bounds(pts_j, item["depth"].shape[-2:], margin)
