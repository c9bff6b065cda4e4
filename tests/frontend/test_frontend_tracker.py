"""Tracker on synthetic sequences with known correspondences, the grid rule, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frontend.frame import Frame
from frontend.geometry import select_uniform, verify_fundamental
from frontend.tracker import Tracker
from tests.conftest import shifted, textured

H, W = 480, 640
K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
NUM_FRAMES = 6
# Visibility of each point: frames in which it is observed. Gaps make a point disappear and
# reappear; its reappearance must be a *new* track (we only match to the previous frame).
PATTERNS = [
    range(0, 6),  # whole sequence: one track of length 6
    range(0, 3),  # ends after frame 2: length 3
    range(2, 6),  # starts on frame 2: length 4
    [0, 1, 3, 4, 5],  # disappears on frame 2 and reappears: tracks of length 2 and 3
    [0, 2, 4],  # blinking: three tracks of length 1
    [5],  # last frame only: length 1
]


def runs(frames: list[int]) -> list[list[int]]:
    """Split sorted frame indices into runs of consecutive frames (= the expected tracks)."""
    out: list[list[int]] = []
    for f in frames:
        if out and out[-1][-1] == f - 1:
            out[-1].append(f)
        else:
            out.append([f])
    return out


def synthetic_sequence(points_per_pattern: int = 12, seed: int = 0):
    """Frames of 3D points seen by a camera moving right and forward, and each point's visibility.

    Descriptors are orthonormal (one per physical point), so true matches have similarity 1 and
    every other pair 0: the dual-softmax matching is exact and the AKTL known in advance.
    """
    rng = np.random.default_rng(seed)
    visible = [list(p) for p in PATTERNS for _ in range(points_per_pattern)]
    n = len(visible)
    xyz = np.stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(8, 20, n)], axis=1)
    dim = max(64, n)
    desc = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:n].astype(np.float32)
    frames = []
    for t in range(NUM_FRAMES):
        cam = np.array([0.2 * t, 0.0, 0.3 * t])  # camera centre (pure translation)
        ids = np.array([i for i in range(n) if t in visible[i]])
        ids = ids[rng.permutation(len(ids))]  # keypoint order carries no information
        rel = xyz[ids] - cam
        uv = (rel[:, :2] / rel[:, 2:]) * K[0, 0] + K[:2, 2]
        frames.append(
            (
                ids,
                Frame(
                    index=t,
                    image=np.zeros((H, W), np.uint8),
                    K=K,
                    keypoints=torch.from_numpy(uv.astype(np.float32)),
                    scores=torch.from_numpy(rng.uniform(0.1, 1, len(ids)).astype(np.float32)),
                    descriptors=torch.from_numpy(desc[ids]),
                ),
            )
        )
    return frames, visible


def test_tracks_follow_known_correspondences_and_aktl_is_exact():
    frames, visible = synthetic_sequence()
    tracker = Tracker(grid_cell=0)  # every unmatched keypoint starts a track
    track_of: dict[tuple[int, int], int] = {}  # (point, frame) -> track id
    for ids, frame in frames:
        result = tracker.track(frame)
        for p, tid in zip(ids, result.frame.track_ids.tolist()):
            track_of[(int(p), frame.index)] = tid
    expected_tracks = [r for v in visible for r in runs(v)]
    got = [{track_of[(p, f)] for f in r} for p, v in enumerate(visible) for r in runs(v)]
    assert all(len(s) == 1 for s in got), "a track id changed along a run of observations"
    assert len({next(iter(s)) for s in got}) == len(expected_tracks), "two runs share a track id"
    assert sorted(next(iter(s)) for s in got) == list(range(len(expected_tracks)))
    aktl = sum(len(r) for r in expected_tracks) / len(expected_tracks)
    assert tracker.aktl == aktl
    assert tracker.num_tracks == len(expected_tracks)


def test_per_frame_stats_match_the_visibility():
    frames, visible = synthetic_sequence()
    tracker = Tracker(grid_cell=0)
    for _, frame in frames:
        tracker.track(frame)
    for t, s in enumerate(tracker.stats):
        now = {i for i, v in enumerate(visible) if t in v}
        before = {i for i, v in enumerate(visible) if t - 1 in v}
        assert s.keypoints == len(now)
        assert s.matches == s.inliers == len(now & before)
        assert s.verified == (t > 0)
        assert s.new == len(now - before)
        assert s.lost == len(before - now)
        assert s.active == len(now)


def test_matcher_comes_from_the_extractor():
    import models

    assert Tracker(models.build("sift")).matcher == "ratio"
    assert Tracker(models.build("orb")).matcher == "mnn"
    t = Tracker()
    assert (t.matcher, t.matcher_kwargs) == ("dual_softmax", {"temperature": 20.0, "threshold": 0.01})
    with pytest.raises(ValueError, match="unknown Tracker options"):
        Tracker(grid_size=3)


def test_history_keeps_the_trail_of_each_track():
    frames, _ = synthetic_sequence()
    tracker = Tracker(grid_cell=0, history=4)
    for _, frame in frames:
        result = tracker.track(frame)
    tracks = tracker.tracks
    np.testing.assert_array_equal(tracks.history[:, -1], tracks.keypoints)
    observed = (~np.isnan(tracks.history[..., 0])).sum(1)
    np.testing.assert_array_equal(observed, np.minimum(tracks.length, 4))
    ids = result.frame.track_ids.numpy()
    assert set(ids[ids >= 0]) == set(tracks.ids)


def test_grid_rule_starts_tracks_only_where_there_is_room():
    xy = np.array([[5, 5], [10, 10], [20, 20], [25, 5], [40, 40], [100, 100]], np.float32)
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.2], np.float32)
    keep = select_uniform(xy, scores, np.zeros((0, 2), np.float32), (128, 128), cell=32, max_per_cell=2)
    np.testing.assert_array_equal(keep, [False, True, False, True, True, True])  # 2 best of cell 0
    occupied = np.array([[60, 60]], np.float32)  # one track already in the cell of (40, 40)
    keep = select_uniform(xy, scores, occupied, (128, 128), cell=32, max_per_cell=1)
    np.testing.assert_array_equal(keep, [False, True, False, False, False, True])
    assert select_uniform(xy, scores, occupied, (128, 128), cell=0, max_per_cell=1).all()


def test_grid_rule_fills_empty_regions_in_the_tracker():
    frames, _ = synthetic_sequence(points_per_pattern=30)
    cap, cell = 2, 64
    tracker = Tracker(grid_cell=cell, max_tracks_per_cell=cap)
    for _, frame in frames:
        before = tracker.num_tracks
        result = tracker.track(frame)
        xy = result.frame.keypoints.numpy()
        cells = ((xy[:, 1] + 0.5) // cell * 100 + (xy[:, 0] + 0.5) // cell).astype(int)
        ids = result.frame.track_ids.numpy()
        new, old = ids >= before, (ids >= 0) & (ids < before)
        for c in np.unique(cells):
            here = cells == c
            room = max(0, cap - int(old[here].sum()))
            # new tracks fill the room a cell has, best keypoints first, and never more
            assert new[here].sum() == min(room, int((here & (ids < 0)).sum() + new[here].sum()))
    assert tracker.num_tracks < sum(s.keypoints for s in tracker.stats)


def _frame(index: int, n: int, dim: int = 64, seed: int = 0) -> Frame:
    g = torch.Generator().manual_seed(seed)
    return Frame(
        index=index,
        image=np.zeros((H, W), np.uint8),
        keypoints=torch.rand(n, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0]),
        scores=torch.rand(n, generator=g),
        descriptors=torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1),
    )


def test_zero_keypoints_and_single_frames_do_not_crash():
    tracker = Tracker()
    result = tracker.track(_frame(0, 0))
    assert result.frame.track_ids.shape == (0,) and tracker.aktl == 0.0
    for i, n in enumerate([30, 0, 0, 30, 5]):
        result = tracker.track(_frame(i + 1, n, seed=i))
        assert result.frame.track_ids.shape == (n,)
        assert result.matches.shape[1] == 2
    single = Tracker(grid_cell=0)
    single.track(_frame(0, 40))
    assert single.aktl == 1.0 and single.num_tracks == 40
    assert single.stats[0].matches == 0 and single.stats[0].verified is False


def test_few_matches_are_kept_unverified():
    frames, _ = synthetic_sequence(points_per_pattern=1)  # 2-3 common points per frame pair
    tracker = Tracker(grid_cell=0)
    for _, frame in frames:
        tracker.track(frame)
    assert all(not s.verified and s.inliers == s.matches for s in tracker.stats[1:])
    mask, verified = verify_fundamental(np.zeros((3, 2)), np.zeros((3, 2)))
    assert mask.all() and not verified


def test_compiled_matcher_tracks_exactly_like_the_eager_one():
    frames, _ = synthetic_sequence()
    eager, compiled = Tracker(grid_cell=0), Tracker(grid_cell=0, compile_matcher=True)
    for _, frame in frames:
        a, b = eager.track(frame), compiled.track(frame)
        assert torch.equal(a.matches, b.matches) and torch.equal(a.frame.track_ids, b.frame.track_ids)
    assert compiled.aktl == eager.aktl > 1


def test_matcher_is_compiled_when_the_network_is():
    import copy
    from types import SimpleNamespace

    import models
    from models.matchers import MATCHERS

    sift = models.build("sift")
    assert Tracker(sift)._match_fn is MATCHERS["ratio"]
    on_compile = copy.copy(sift)
    on_compile.net = SimpleNamespace(backend="compile")  # what frontend.backends.accelerate(..., "compile") sets
    assert Tracker(on_compile)._match_fn is not MATCHERS["ratio"]
    assert Tracker(on_compile, compile_matcher=False)._match_fn is MATCHERS["ratio"]


def test_verification_method_is_a_checked_setting():
    frames, _ = synthetic_sequence()
    counts = {}
    for method in ("lo_ransac", "magsac"):
        tracker = Tracker(grid_cell=0, ransac_method=method)
        for _, frame in frames:
            tracker.track(frame)
        counts[method] = sum(s.inliers for s in tracker.stats[1:])
    assert counts["lo_ransac"] >= 0.98 * counts["magsac"] > 0, counts
    with pytest.raises(ValueError, match="ransac_method"):
        Tracker(ransac_method="ransac")


def _shifted_pair(dx: float = 0.3, dy: float = -0.6):
    """Two textured frames, the second the first moved by ``(dx, dy)`` px, with a grid of keypoints:
    exact in frame 0, rounded to the pixel grid in frame 1 (a detector without sub-pixel output)."""
    img = textured(H, W, seed=3)
    moved = shifted(img, dx, dy)
    rng = np.random.default_rng(4)
    g = np.stack(np.meshgrid(np.arange(40, W - 40, 71), np.arange(40, H - 40, 61)), -1).reshape(-1, 2)
    truth = (g + np.float32([dx, dy])).astype(np.float32)
    desc = torch.from_numpy(np.linalg.qr(rng.normal(size=(64, 64)))[0][: len(g)].astype(np.float32))
    scores = torch.ones(len(g))
    f0 = Frame(0, img, K=K, keypoints=torch.from_numpy(g.astype(np.float32)), scores=scores, descriptors=desc)
    f1 = Frame(1, moved, K=K, keypoints=torch.from_numpy(np.round(truth)), scores=scores, descriptors=desc)
    return f0, f1, truth


def test_lk_refinement_places_continued_tracks_at_sub_pixel_positions():
    f0, f1, truth = _shifted_pair()
    tracker = Tracker(grid_cell=0, refine="lk")
    tracker.track(f0)
    result = tracker.track(f1)
    xy = result.frame.keypoints.numpy()
    assert result.stats.refined == len(truth) and (result.frame.track_ids >= 0).all()
    assert np.abs(f1.keypoints.numpy() - truth).max() > 0.35  # the detections are off by the rounding
    err = np.abs(xy - truth)  # measured: median 0.03, max 0.13 px (detections: 0.35 px mean)
    assert np.median(err) < 0.06 and err.max() < 0.2
    assert torch.equal(f1.keypoints, torch.from_numpy(np.round(truth)))  # the input frame is not modified
    off = Tracker(grid_cell=0, refine="off")
    off.track(f0)
    kept = off.track(f1)
    assert kept.stats.refined == 0 and torch.equal(kept.frame.keypoints, f1.keypoints)


def test_refinement_default_comes_from_the_extractor():
    import models

    assert Tracker(models.build("sift")).refine == "off"  # sub-pixel detector: LK would only add drift
    assert Tracker(models.build("orb")).refine == "lk" and Tracker().refine == "lk"
    assert Tracker(models.build("sift"), refine="lk").refine == "lk"
    with pytest.raises(ValueError, match="refine must be"):
        Tracker(refine="klt")
