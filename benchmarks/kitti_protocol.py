"""The TraqPoint authors' KITTI VO evaluation (``python -m benchmarks.kitti --protocol traqpoint``).

Reproduces the protocol of the authors' public evaluation (xiaomi-research/traqpoint,
``benchmarks/visual_odometry``) so that our numbers can sit next to the paper's; the code is ours.

Odometry, per frame ``k >= 1`` (:func:`frame_to_frame`): the method's features of frames ``k - 1``
(*ref*) and ``k`` (*cur*) are matched with the method's own matcher; ``cv2.findEssentialMat(cur,
ref, focal=fx, pp=(cx, cy))`` with RANSAC at 1.0 px and confidence 0.999 (:data:`DEFAULT_CONF`);
``cv2.recoverPose`` on every match (the authors pass no inlier mask) gives ``T_ref_cur``; the
translation gets the ground-truth scale ``s = |t_gt(k) - t_gt(k - 1)|`` and the pose is composed
``t += s R_w t_rel``, ``R_w = R_w R_rel``, only when ``s > 0.1`` m (the car stands still otherwise).
The authors negate ``t_y`` of every relative translation before composing (``flip_ty``; their code's
quirk, kept by default; it hardly moves x-z). Their code passes ``method=cv2.RHO``, which
``findEssentialMat`` does not implement and silently runs as LMedS (no threshold);
``essential_method: "rho"`` reproduces that, the default is the RANSAC the protocol states. The
run starts at the first ground-truth pose (identity for a full KITTI sequence).

ATE (theirs): the mean over every frame (the first included) of the x-z distance between the
estimated and ground-truth camera positions, no alignment: ``ate_xz_mean_m``.

AKTL (theirs, :class:`AuthorsTracks`): on *every detected keypoint* of each frame (not only the
matches), in detection order, a keypoint continues the nearest still-unclaimed active track when it
lies within 30 px of the track's last position and the cosine of their descriptors is > 0.5
(the nearest only: if it fails the cosine the keypoint starts a new track); otherwise it starts a
new track. A track that is not continued survives ``max_missing = 1`` frame and ends on its second
consecutive miss. AKTL = the mean length (observations) of the tracks alive after the last frame.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from models.errors import BadInputError
from vo_app.trajectory import ape, kitti_metrics, path_length

from . import runner
from .methods import Method

DEFAULT_CONF = {
    "ransac_threshold_px": 1.0,  # cv2.findEssentialMat threshold (pixels)
    "ransac_confidence": 0.999,
    "essential_method": "ransac",  # "ransac" (the stated protocol) or "rho" (the flag their code passes = LMedS)
    "flip_ty": True,  # negate t_y of each relative translation, as the authors' code does
    "min_scale_m": 0.1,  # ground-truth displacement at or below which the pose is not updated
    "aktl_radius_px": 30.0,  # a keypoint continues a track within this distance of its last position
    "aktl_min_cosine": 0.5,  # ... and with a descriptor cosine above this
    "aktl_max_missing": 1,  # frames a track may go unobserved before it ends
}
ESSENTIAL_METHODS = {"ransac": cv2.RANSAC, "rho": cv2.RHO}


# -- AKTL -----------------------------------------------------------------------------------------
def greedy_assign(
    points: np.ndarray, descs: np.ndarray, tracks: np.ndarray, track_descs: np.ndarray, radius: float, min_cos: float
) -> np.ndarray:
    """The authors' sequential greedy assignment, computed in vectorised rounds -> track index ``[N]`` or -1.

    Sequentially, keypoint ``i`` (in order) takes the nearest track not yet taken by keypoints
    ``< i`` if it is closer than ``radius`` and the descriptor cosine exceeds ``min_cos``. Each round
    settles every keypoint whose nearest free candidate no earlier unsettled keypoint has within its
    radius (no earlier keypoint can then take it); the earliest unsettled keypoint always settles, so
    the rounds end, and the result equals the sequential one.

    Args:
        points: ``[N, 2]`` keypoints of the frame; ``descs [N, D]`` their descriptors.
        tracks: ``[M, 2]`` last positions of the active tracks; ``track_descs [M, D]``.
    """
    n, m = len(points), len(tracks)
    assign = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return assign
    dist = np.linalg.norm(points[:, None] - tracks[None], axis=2)  # [N, M]
    near = dist < radius
    d0 = descs / np.maximum(np.linalg.norm(descs, axis=1, keepdims=True), 1e-6)
    d1 = track_descs / np.maximum(np.linalg.norm(track_descs, axis=1, keepdims=True), 1e-6)
    remaining, free = near.any(1), np.ones(m, dtype=bool)  # keypoints with no track in reach start one
    while remaining.any():
        rows = np.flatnonzero(remaining)
        cand = near[rows] & free[None]  # [R, M]
        d = np.where(cand, dist[rows], np.inf)
        choice = d.argmin(1)
        has = np.isfinite(d[np.arange(len(rows)), choice])
        first = np.where(cand.any(0), cand.argmax(0), len(rows))  # earliest unsettled claimant of each track
        settled = ~has | (first[choice] == np.arange(len(rows)))
        cos = np.einsum("nd,nd->n", d0[rows], d1[choice])
        take = settled & has & (cos > min_cos)
        assign[rows[take]] = choice[take]
        free[choice[take]] = False
        remaining[rows[settled]] = False
    return assign


@dataclass
class AuthorsTracks:
    """The authors' AKTL tracker state: active tracks' last position, descriptor, length and last frame."""

    radius: float = 30.0
    min_cosine: float = 0.5
    max_missing: int = 1
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    desc: np.ndarray | None = None
    length: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame: int = 0
    ended_sum: int = 0
    ended_count: int = 0

    def update(self, points: np.ndarray, descs: np.ndarray) -> int:
        """Feed one frame's detections (``[N, 2]``, ``[N, D]``); returns how many continued a track."""
        points, descs = np.asarray(points, np.float64).reshape(-1, 2), np.asarray(descs, np.float64)
        self.frame += 1
        if self.desc is None:
            self.desc = np.zeros((0, descs.shape[1]))
        assign = greedy_assign(points, descs, self.xy, self.desc, self.radius, self.min_cosine)
        hit = assign >= 0
        rows = assign[hit]
        self.xy[rows], self.desc[rows] = points[hit], descs[hit]
        self.length[rows] += 1
        self.last_seen[rows] = self.frame
        born = ~hit
        self.xy = np.concatenate([self.xy, points[born]])
        self.desc = np.concatenate([self.desc, descs[born]])
        self.length = np.concatenate([self.length, np.ones(int(born.sum()), np.int64)])
        self.last_seen = np.concatenate([self.last_seen, np.full(int(born.sum()), self.frame, np.int64)])
        alive = self.frame - self.last_seen <= self.max_missing
        self.ended_sum += int(self.length[~alive].sum())
        self.ended_count += int((~alive).sum())
        self.xy, self.desc, self.length, self.last_seen = (
            a[alive] for a in (self.xy, self.desc, self.length, self.last_seen)
        )
        return int(hit.sum())

    @property
    def aktl(self) -> float:
        """The authors' AKTL: mean length of the tracks alive now (0 with none)."""
        return float(self.length.mean()) if len(self.length) else 0.0

    @property
    def aktl_all(self) -> float:
        """Mean length over every track started (ended + alive), for comparison with the project's AKTL."""
        count = self.ended_count + len(self.length)
        return (self.ended_sum + int(self.length.sum())) / count if count else 0.0


# -- odometry -------------------------------------------------------------------------------------
def frame_to_frame(
    pts_ref: np.ndarray, pts_cur: np.ndarray, K: np.ndarray, conf: dict
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(R, t, inliers)`` of ``T_ref_cur`` (unit ``t``) from matched pixels, or ``None`` when E fails."""
    if len(pts_ref) < 5:
        return None
    focal, pp = float(K[0, 0]), (float(K[0, 2]), float(K[1, 2]))
    cur, ref = np.ascontiguousarray(pts_cur, np.float64), np.ascontiguousarray(pts_ref, np.float64)
    E, mask = cv2.findEssentialMat(
        cur, ref, focal=focal, pp=pp, method=ESSENTIAL_METHODS[conf["essential_method"]],
        prob=conf["ransac_confidence"], threshold=conf["ransac_threshold_px"],
    )  # fmt: skip
    if E is None or E.shape[0] < 3 or not np.isfinite(E).all():
        return None
    _, R, t, _ = cv2.recoverPose(E[:3], cur, ref, focal=focal, pp=pp)  # every match, as the authors
    return R, t[:, 0], int(mask.sum()) if mask is not None else 0


@dataclass
class ProtocolRun:
    """One method's run: metrics of the kitti schema, the trajectory and the extra numbers."""

    metrics: dict
    poses: np.ndarray  # [N, 4, 4] T_world_cam
    gt: np.ndarray  # [N, 4, 4]
    indices: np.ndarray
    extra: dict


def run_method(method: Method, frames, conf: dict, keys: tuple[str, ...]) -> ProtocolRun:
    """The authors' frame-to-frame VO and AKTL over ``frames`` (source frames with ground truth)."""
    tracks = AuthorsTracks(conf["aktl_radius_px"], conf["aktl_min_cosine"], conf["aktl_max_missing"])
    R_w, t_w = np.eye(3), np.zeros(3)
    poses, gts, indices, ratios = [], [], [], []
    failures = not_updated = 0
    prev = prev_gt = None
    for fr in tqdm(frames, desc=f"kitti-traqpoint {method.name}", unit="frame", leave=False, disable=None):
        if prev is None and fr.pose is None:
            raise BadInputError(f"--protocol traqpoint: frame {fr.index}, the first, has no ground-truth pose")
        f = method.extract(fr.image)
        tracks.update(f["keypoints"], f["descriptors"])
        if prev is not None:
            # a frame without ground truth has no scale: its pose is not updated (counted)
            scale = float(np.linalg.norm(fr.pose[:3, 3] - prev_gt[:3, 3])) if fr.pose is not None else 0.0
            m = method.match(prev["descriptors"], f["descriptors"])
            est = frame_to_frame(prev["keypoints"][m[:, 0]], f["keypoints"][m[:, 1]], fr.K, conf)
            if est is None:
                failures += 1
            else:
                R, t, inl = est
                ratios.append(inl / max(len(m), 1))
                if conf["flip_ty"]:
                    t = t * np.array([1.0, -1.0, 1.0])
                if scale > conf["min_scale_m"]:
                    t_w, R_w = t_w + scale * R_w @ t, R_w @ R
                else:
                    not_updated += 1
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R_w, t_w
        if prev is None:
            anchor = np.asarray(fr.pose, np.float64)
        poses.append(anchor @ T)
        gts.append(np.full((4, 4), np.nan) if fr.pose is None else np.asarray(fr.pose, np.float64))
        indices.append(fr.index)
        prev, prev_gt = f, (prev_gt if fr.pose is None else fr.pose)
    poses, gts = np.stack(poses), np.stack(gts)
    known = np.isfinite(gts.reshape(len(gts), -1)).all(1)
    xz = np.linalg.norm(poses[known][:, [0, 2], 3] - gts[known][:, [0, 2], 3], axis=1)
    length = path_length(gts[known])
    metrics = dict.fromkeys(keys)
    if known.sum() >= 3:
        metrics.update(kitti_metrics(gts[known], poses[known], "se3"))
        metrics["ate_unaligned_pct_path"] = ape(gts[known], poses[known], "none")["rmse"] / max(length, 1e-9) * 100
    metrics.update(
        aktl=tracks.aktl,
        inlier_ratio=float(np.mean(ratios)) if ratios else None,
        frames=len(poses),
        tracking_failures=failures,
        ate_xz_mean_m=float(xz.mean()),
    )
    extra = {
        "ate_xz_mean_pct_path": float(xz.mean()) / max(length, 1e-9) * 100,
        "aktl_all_tracks": tracks.aktl_all,
        "frames_pose_not_updated": not_updated,
        "frames_without_gt": int((~known).sum()),
    }
    return ProtocolRun({k: metrics.get(k) for k in keys}, poses, gts, np.asarray(indices), extra)


def config(args: argparse.Namespace, conf: dict, sequence: str) -> dict:
    """Every setting that changes a number, for the result file."""
    return {
        "protocol": "traqpoint: the authors' VO evaluation (xiaomi-research/traqpoint benchmarks/visual_odometry)",
        "sequence": sequence,
        "scale": "gt: |t_gt(k) - t_gt(k-1)| per frame",
        "num_keypoints": args.num_kp,
        "matcher": "each method's own (dual-softmax tau 20, P >= 0.01 for TraqPoint)",
        "odometry": dict(conf),
        "ate_xz_mean_m": "mean over every frame of |(x, z)_est - (x, z)_gt|, no alignment (run anchored at gt[0])",
        "aktl": "mean length of the tracks alive after the last frame (authors' tracker, every detection)",
        "schema_keys": "ate_rmse_m etc.: evo APE/RPE of the same trajectory (SE(3) aligned); fps not measured",
    }


def run(args: argparse.Namespace, seq_name: str, seq_dir, frames, methods: list[Method], keys) -> runner.Outcome:
    """Evaluate every built method under the authors' protocol."""
    if frames.gt_poses is None:
        raise BadInputError(f"--protocol traqpoint needs ground truth (scale and ATE); {seq_dir} has none")
    conf = {**DEFAULT_CONF, "essential_method": args.essential_method, "flip_ty": not args.no_flip_ty}
    runs = {m.name: run_method(m, frames, conf, keys) for m in methods if m.extractor is not None}
    gt = next(iter(runs.values())).gt if runs else None
    data = {
        "sequence": seq_name,
        "frames_evaluated": max((len(r.poses) for r in runs.values()), default=0),
        "gt_path_length_m": path_length(gt) if gt is not None else None,
        "per_method": {name: r.extra for name, r in runs.items()},
    }
    result = runner.make_result("kitti", seq_dir, config(args, conf, seq_name), methods,
                                {n: r.metrics for n, r in runs.items()}, data)  # fmt: skip
    return runner.Outcome(result, {"runs": runs, "align": "none", "sequence": seq_name})
