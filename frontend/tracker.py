"""Frame-to-frame keypoint tracker: matching, geometric verification, track bookkeeping, AKTL.

Per frame ``t`` (keypoints/descriptors from the :class:`~frontend.engine.ExtractionEngine`):

1. **match** every keypoint of frame ``t - 1`` to every keypoint of frame ``t`` with the
   extractor's default matcher (:mod:`models.matchers`: mutual dual-softmax, tau = 20, P >= 0.01
   for TraqPoint; mutual ratio test for SIFT; mutual NN for ORB);
2. **verify** the matches with an LO-RANSAC fundamental matrix
   (:func:`models.geometry.lo_ransac_fundamental`; ``ransac_method="magsac"`` selects OpenCV's
   MAGSAC++, 2-4x slower for the same inliers; fewer than 8 matches cannot be verified and are
   kept as they are);
3. **refine** (``refine="lk"``, the default for every detector but SIFT's): each continued track's
   new position is moved from its matched detection to where the patch around its previous
   position aligns (Lucas-Kanade, :mod:`frontend.track_refine`), so a track is measured to a
   fraction of a pixel even where the detector places keypoints on a pixel grid (demo, ``lk``
   against the detection: traqpoint-lite median error 0.55 -> 0.32 px, ORB 0.88 -> 0.16 px;
   ``benchmarks.tracking``). The association is still the descriptor match;
4. **update**: an inlier whose frame ``t - 1`` keypoint carried a track continues that track;
   every active track without one ends; keypoints of frame ``t`` that continue nothing are
   *candidates*, and start new tracks only where the occupancy grid has room (at most
   ``max_tracks_per_cell`` active tracks per ``grid_cell``-pixel cell, best scores first), so new
   tracks fill empty regions instead of piling up where tracks already are.

Track ids are consecutive integers from 0, never reused. A keypoint that belongs to no track has
id ``-1``. Everything is vectorised (numpy/torch); no Python loop visits a keypoint or a track.

AKTL (average keypoint track length):
    ``AKTL = sum(length) / count`` over every track started so far, the ended ones and the still
    active ones, where a track's *length* is the number of frames in which it was observed
    (frames whose keypoints carry its id). A track started and never matched again has length 1.
    Tracks are contiguous (a track ends at the first frame it is not re-observed), so the length
    is also the track's age in frames. Keypoints the grid rule keeps out of tracks are not counted:
    compare methods under one tracker configuration. With no track at all, AKTL is 0.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.base import Extractor
from models.matchers import MATCHERS, match_pair_with

from .frame import Frame
from .geometry import check_verify_method, select_uniform, verify_fundamental
from .track_refine import grey_uint8, refine_lk

DUAL_SOFTMAX_KWARGS = {"temperature": 20.0, "threshold": 0.01}  # the paper's matcher settings
#: the tracker's timed stages, in order; FrameStats.t_<stage>_ms holds each one's time per frame
TIMED_STAGES = ("match", "verify", "refine", "update")


def keypoints_xy(frame: Frame) -> np.ndarray:
    """``frame.keypoints`` as a float32 numpy ``[N, 2]`` (a view where the tensor is on the CPU)."""
    return frame.keypoints.detach().cpu().float().numpy().reshape(-1, 2)


@dataclass
class FrameStats:
    """What the tracker did on one frame."""

    index: int
    keypoints: int
    matches: int  # mutual matches to the previous frame
    inliers: int  # of which geometrically verified
    verified: bool  # False when there were too few matches for a fundamental matrix
    active: int  # tracks alive after this frame
    new: int  # tracks started on this frame
    lost: int  # tracks that ended on this frame
    t_match_ms: float = 0.0
    t_verify_ms: float = 0.0
    t_update_ms: float = 0.0
    refined: int = 0  # continued tracks whose position LK refined (:mod:`frontend.track_refine`)
    t_refine_ms: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrackResult:
    """Tracker output for one frame.

    Attributes:
        frame: the input frame with ``track_ids [N]`` filled in.
        stats: the :class:`FrameStats` of the frame.
        matches: verified matches ``[K, 2]`` int64 ``(i_prev, i_cur)`` to the previous frame.
    """

    frame: Frame
    stats: FrameStats
    matches: torch.Tensor


@dataclass
class Tracks:
    """The active tracks, one row each (row order is arbitrary).

    ``ids [T]`` int64, ``start [T]`` index of the first frame, ``length [T]`` frames observed
    (= age), ``keypoints [T, 2]`` last position, ``descriptors [T, D]`` last descriptor,
    ``history [T, H, 2]`` last ``H`` positions, oldest first, NaN before the track began.
    """

    ids: np.ndarray
    start: np.ndarray
    length: np.ndarray
    keypoints: np.ndarray
    descriptors: torch.Tensor
    history: np.ndarray

    @classmethod
    def empty(cls, dim: int, history: int) -> Tracks:
        i = np.zeros(0, dtype=np.int64)
        return cls(i, i, i, np.zeros((0, 2), np.float32), torch.zeros(0, dim), np.zeros((0, history, 2), np.float32))

    def __len__(self) -> int:
        return len(self.ids)


class Tracker:
    """Stateful tracker; call :meth:`track` once per frame, in order.

    Args:
        extractor: supplies the default matcher and its settings (optional).
        **conf: overrides of :attr:`default_conf`; an unknown key is an error.

    Example:
        >>> tracker = Tracker(extractor)
        >>> for frame in engine.run(images):
        ...     result = tracker.track(frame)
        >>> tracker.aktl
    """

    default_conf = {
        "matcher": None,  # models.matchers name; None = the extractor's default (dual_softmax without one)
        "matcher_kwargs": None,  # None = the extractor's settings (tau = 20, P >= 0.01 for dual-softmax)
        "verify": True,  # fundamental-matrix check; False keeps every mutual match
        # "lo_ransac" (RANSAC + least-squares refits) or "magsac" (MAGSAC++): the same inliers
        # (Jaccard 0.96-0.99 with MAGSAC++'s on KITTI and TUM), lo_ransac 2-4x faster; VO ATE lower in
        # 11 of 19 method x sequence runs, within 0.01 % in 5 (frontend/README.md, seventh session)
        "ransac_method": "lo_ransac",
        # px, max distance of an inlier to its epipolar line: ORB-SLAM's 95 % chi-square gate for a
        # 1 px keypoint noise (sqrt(3.84) = 1.96). 1 px cut correct tracks of every learned detector
        # on blurred 640x480 TUM frames (inlier ratio 0.79 vs 0.93); table in frontend/README.md.
        "ransac_threshold": 2.0,
        "ransac_confidence": 0.999,
        "ransac_max_iters": 2000,
        "grid_cell": 32,  # px side of the occupancy-grid cell; 0 = every unmatched keypoint starts a track
        "max_tracks_per_cell": 4,  # a cell with this many active tracks gets no new one
        "max_displacement": 0.3,  # fraction of the image diagonal a match may move between frames; 0 = no limit
        # (repeated texture can give far-away matches that still satisfy the epipolar constraint)
        "history": 0,  # positions kept per track (for drawing trails); 0 = last position only
        # torch.compile the matcher (dual-softmax 6.8 -> 4.6 ms at 1024 kp; ~10 s compile); None = when
        # the extractor's network runs on the compile backend (frontend.backends)
        "compile_matcher": None,
        # device of the matcher: None = the extractor's when that is a CUDA device (descriptors go up,
        # matches come down: ~0.3 MB per frame at 1024 x 64), else the CPU
        "match_device": None,
        # position of a continued track: "lk" = Lucas-Kanade alignment of the patch around the track's
        # previous position, started at the matched detection (frontend.track_refine); "off" = the
        # detection as it is; None = the extractor's choice (Extractor.track_refine: "off" for SIFT)
        "refine": None,
        "refine_window": 9,  # px side of the LK patch (11: the same accuracy on the demo, 50 % slower)
        # px an accepted refinement may move a detection: traqpoint-lite's p90 localisation error on
        # the demo is 2.9 px; a larger move keeps the detection
        "refine_max_shift": 3.0,
    }

    def __init__(self, extractor: Extractor | None = None, **conf: object) -> None:
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown Tracker options: {sorted(unknown)}; known: {sorted(self.default_conf)}")
        self.conf = {**self.default_conf, **conf}
        check_verify_method(self.conf["ransac_method"], "ransac_method")  # before the first frame, not at it
        if self.conf["refine"] not in (None, "lk", "off"):
            raise ValueError(f"refine must be 'lk', 'off' or None (the extractor's), got {self.conf['refine']!r}")
        self.refine = self.conf["refine"] or getattr(extractor, "track_refine", "lk")
        default = extractor.default_matcher if extractor is not None else "dual_softmax"
        self.matcher = self.conf["matcher"] or default
        if self.matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {self.matcher!r}; choose from {sorted(MATCHERS)}")
        kwargs = self.conf["matcher_kwargs"]
        if kwargs is None and extractor is not None and self.matcher == extractor.default_matcher:
            kwargs = extractor.matcher_kwargs
        elif kwargs is None:
            kwargs = DUAL_SOFTMAX_KWARGS if self.matcher == "dual_softmax" else {}
        self.matcher_kwargs = dict(kwargs)
        self._match_fn = MATCHERS[self.matcher]
        compile_matcher = self.conf["compile_matcher"]
        if compile_matcher is None:
            compile_matcher = getattr(getattr(extractor, "net", None), "backend", None) == "compile"
        self.compiled_matcher = bool(compile_matcher)
        if compile_matcher:
            self._match_fn = torch.compile(self._match_fn, dynamic=True)
        self.match_device = self._pick_match_device(extractor, self.conf["match_device"])
        self._on_device: tuple[torch.Tensor, torch.Tensor] | None = None  # (host descriptors, device copy)
        self.reset()

    @staticmethod
    def _pick_match_device(extractor: Extractor | None, requested: str | None) -> torch.device:
        if requested is not None:
            return torch.device(requested)
        dev = torch.device(getattr(extractor, "device", "cpu"))
        return dev if dev.type == "cuda" and torch.cuda.is_available() else torch.device("cpu")

    def warm_up(self, descriptors: torch.Tensor) -> bool:
        """Match ``descriptors [N, D]`` to themselves once, as :meth:`track` would, and forget the result.

        Pass the descriptors of an engine warm-up (:meth:`ExtractionEngine.warm_up`): made the way
        live ones are, they let a compiled (or CUDA) matcher compile before the first live frame.
        Tracks and statistics are untouched. Returns ``False`` when nothing needed warming up.
        """
        if not (self.compiled_matcher or self.match_device.type == "cuda") or len(descriptors) == 0:
            return False
        d = descriptors.to(self.match_device)
        match_pair_with(self._match_fn, d, d, **self.matcher_kwargs)
        return True

    def reset(self) -> None:
        """Forget every track and statistic (e.g. to re-initialise after tracking loss)."""
        self.tracks: Tracks | None = None
        self.stats: list[FrameStats] = []
        self._prev: Frame | None = None
        self._prev_grey: np.ndarray | None = None  # the previous frame's grey image (refine="lk")
        self._rows = np.zeros(0, dtype=np.int64)  # row in self.tracks of each previous keypoint, -1 = none
        self._next_id = 0
        self._ended_length = 0
        self._ended_count = 0

    # -- metrics -----------------------------------------------------------------------------
    @property
    def num_tracks(self) -> int:
        """Tracks started so far (ended + active)."""
        return self._next_id

    @property
    def aktl(self) -> float:
        """Average keypoint track length over ended + active tracks (module docstring); 0 with none."""
        active = 0 if self.tracks is None else int(self.tracks.length.sum())
        count = self._ended_count + (0 if self.tracks is None else len(self.tracks))
        return (self._ended_length + active) / count if count else 0.0

    # -- one frame ---------------------------------------------------------------------------
    def track(self, frame: Frame) -> TrackResult:
        """Match ``frame`` to the previous one, verify, refine, update tracks; see the module docstring."""
        if not frame.has_features:
            raise ValueError(f"frame {frame.index} has no features; run it through an ExtractionEngine first")
        kpts = keypoints_xy(frame).copy()  # refined in place below
        if self.tracks is None:
            self.tracks = Tracks.empty(frame.descriptors.shape[-1], self.conf["history"])
        t0 = time.perf_counter()
        raw = self._match(self._prev, frame)
        t1 = time.perf_counter()
        keep, verified = self._verify(self._prev, kpts, raw)
        inliers = raw[keep]
        t2 = time.perf_counter()
        refined = self._refine(frame, kpts, inliers)  # in place: kpts of continued tracks
        t3 = time.perf_counter()
        track_ids, new, lost = self._update(frame, kpts, inliers)
        t4 = time.perf_counter()
        out = dataclasses.replace(frame, track_ids=torch.from_numpy(track_ids))
        if refined:
            out.keypoints = torch.from_numpy(kpts)
        stats = FrameStats(
            index=frame.index,
            keypoints=len(kpts),
            matches=len(raw),
            inliers=len(inliers),
            verified=verified,
            active=len(self.tracks),
            new=new,
            lost=lost,
            t_match_ms=1e3 * (t1 - t0),
            t_verify_ms=1e3 * (t2 - t1),
            t_update_ms=1e3 * (t4 - t3),
            refined=refined,
            t_refine_ms=1e3 * (t3 - t2),
        )
        self.stats.append(stats)
        self._prev = out
        return TrackResult(out, stats, torch.from_numpy(inliers))

    def _refine(self, frame: Frame, kpts: np.ndarray, inliers: np.ndarray) -> int:
        """LK-refine, in place, the positions ``kpts [N, 2]`` of the keypoints that continue a track;
        return how many refinements were accepted (:mod:`frontend.track_refine`)."""
        if self.refine != "lk":
            return 0
        grey, prev_grey = grey_uint8(frame.image), self._prev_grey
        self._prev_grey = grey
        if prev_grey is None or len(inliers) == 0 or prev_grey.shape != grey.shape:
            return 0
        cont = inliers[self._rows[inliers[:, 0]] >= 0]
        if len(cont) == 0:
            return 0
        prev_xy = keypoints_xy(self._prev)[cont[:, 0]]
        xy, ok = refine_lk(prev_grey, grey, prev_xy, kpts[cont[:, 1]], self.conf["refine_window"],
                           self.conf["refine_max_shift"])  # fmt: skip
        kpts[cont[:, 1]] = xy
        return int(ok.sum())

    def _match(self, f0: Frame | None, f1: Frame) -> np.ndarray:
        """Mutual matches ``[K, 2]`` (numpy int64) between two frames' descriptors."""
        if f0 is None or f0.num_keypoints == 0 or f1.num_keypoints == 0:
            return np.zeros((0, 2), dtype=np.int64)
        d0, d1 = self._descriptors_on_match_device(f0), self._descriptors_on_match_device(f1)
        m, _ = match_pair_with(self._match_fn, d0, d1, **self.matcher_kwargs)
        return m.cpu().numpy()

    def _descriptors_on_match_device(self, frame: Frame) -> torch.Tensor:
        """``frame.descriptors`` on :attr:`match_device`; the last upload is reused (it is the next previous frame)."""
        desc = frame.descriptors
        if self.match_device.type == "cpu":
            return desc.cpu()
        if self._on_device is not None and self._on_device[0] is desc:
            return self._on_device[1]
        self._on_device = (desc, desc.to(self.match_device, non_blocking=desc.is_pinned()))
        return self._on_device[1]

    def _verify(self, f0: Frame | None, kpts1: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, bool]:
        if f0 is None or not self.conf["verify"] or len(matches) == 0:
            return np.ones(len(matches), dtype=bool), False
        kpts0 = keypoints_xy(f0)
        limit = self.conf["max_displacement"] * float(np.hypot(*f0.image_hw))
        if limit > 0:
            near = np.linalg.norm(kpts0[matches[:, 0]] - kpts1[matches[:, 1]], axis=1) <= limit
            keep, verified = self._verify_geometry(kpts0, kpts1, matches[near])
            mask = np.zeros(len(matches), dtype=bool)
            mask[np.flatnonzero(near)[keep]] = True
            return mask, verified
        return self._verify_geometry(kpts0, kpts1, matches)

    def _verify_geometry(self, kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fundamental-matrix inlier mask of ``matches`` between two keypoint arrays."""
        return verify_fundamental(
            kpts0[matches[:, 0]],
            kpts1[matches[:, 1]],
            self.conf["ransac_threshold"],
            self.conf["ransac_confidence"],
            self.conf["ransac_max_iters"],
            self.conf["ransac_method"],
        )

    def _update(self, frame: Frame, kpts: np.ndarray, inliers: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Continue, end and start tracks; return the frame's ``track_ids [N]`` and the new/lost counts."""
        old, n = self.tracks, len(kpts)
        prev_rows = self._rows[inliers[:, 0]] if len(inliers) else np.zeros(0, dtype=np.int64)
        cont = prev_rows >= 0
        rows, cur = prev_rows[cont], inliers[cont, 1]  # mutual matches: each row and keypoint at most once
        ended = np.ones(len(old), dtype=bool)
        ended[rows] = False
        self._ended_length += int(old.length[ended].sum())
        self._ended_count += int(ended.sum())

        free = np.ones(n, dtype=bool)
        free[cur] = False
        cand = np.flatnonzero(free)
        scores = frame.scores.detach().cpu().float().numpy().reshape(-1) if frame.scores is not None else np.zeros(n)
        cell, cap = self.conf["grid_cell"], self.conf["max_tracks_per_cell"]
        born = cand[select_uniform(kpts[cand], scores[cand], kpts[cur], frame.image_hw, cell, cap)]
        self.tracks = self._new_table(old, rows, cur, born, frame, kpts)

        idx = np.concatenate([cur, born])
        self._rows = np.full(n, -1, dtype=np.int64)
        self._rows[idx] = np.arange(len(idx))
        track_ids = np.full(n, -1, dtype=np.int64)
        track_ids[idx] = self.tracks.ids
        return track_ids, len(born), int(ended.sum())

    def _new_table(
        self, old: Tracks, rows: np.ndarray, cur: np.ndarray, born: np.ndarray, frame: Frame, kpts: np.ndarray
    ) -> Tracks:
        """Active tracks after this frame: continued rows first, then the newborn."""
        nb = len(born)
        new_ids = np.arange(self._next_id, self._next_id + nb, dtype=np.int64)
        self._next_id += nb
        idx = np.concatenate([cur, born])
        h = self.conf["history"]
        hist = np.full((len(idx), h, 2), np.nan, dtype=np.float32)
        if h > 0:
            hist[: len(rows), :-1] = old.history[rows, 1:]
            hist[:, -1] = kpts[idx]
        return Tracks(
            ids=np.concatenate([old.ids[rows], new_ids]),
            start=np.concatenate([old.start[rows], np.full(nb, frame.index, dtype=np.int64)]),
            length=np.concatenate([old.length[rows] + 1, np.ones(nb, dtype=np.int64)]),
            keypoints=kpts[idx],
            descriptors=torch.from_numpy(frame.descriptors.detach().cpu().numpy()[idx]),  # numpy: no thread pool
            history=hist,
        )
