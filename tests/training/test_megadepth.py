"""MegaDepth loader and sequence indices on a synthetic scene with exact geometry, and the depth
warp on the real MegaDepth-1500 poses and intrinsics."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from megadepth_synth import SynthScene, pixel_homography, plane_depth
from train_helpers import DATA

from models.errors import BadInputError, MissingFileError
from training.data.megadepth import MegaDepthViews, fit_view, load_index
from training.make_sequences import main as make_sequences_main
from training.warping import depth_warp, warp_item

HW = (64, 96)


def views(scene: SynthScene, n: int = 2, index: Path | None = None, length: int = 8) -> MegaDepthViews:
    return MegaDepthViews(scene.root, index or scene.scene_info, n, HW, length, seed=0)


def pose_ids(scene: SynthScene, item: dict) -> list[int]:
    """Which fixture cameras an item's views are (by pose)."""
    T = item["T_cam_world"].double().numpy()
    return [int(np.argmin(np.abs(scene.poses - t).reshape(len(scene.poses), -1).max(1))) for t in T]


def grid(h: int, w: int, step: int = 2) -> np.ndarray:
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    return np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)


def analytic(scene: SynthScene, item: dict, i: int, j: int, pts: np.ndarray):
    """Per point of view i: which plane it sees (-1 none), and its true position in view j."""
    K, T = item["K"].double().numpy(), item["T_cam_world"].double().numpy()
    d = item["depth"][i].numpy()[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    plane = np.full(len(pts), -1)
    true = np.full((len(pts), 2), np.nan)
    for k, pl in enumerate(scene.planes):
        z, inside = plane_depth(K[i], T[i], pl, pts)
        on = inside & (np.abs(z - d) < 0.02 * z) & (plane < 0)  # 2 %: depth is nearest-resized
        H = pixel_homography(K[i], T[i], K[j], T[j], pl)
        p = np.column_stack([pts, np.ones(len(pts))]) @ H.T
        plane[on], true[on] = k, p[on, :2] / p[on, 2:]
    return plane, true


def test_items_shapes_and_reproducible(synth_scene):
    ds = views(synth_scene)
    a, b = ds[3], ds[3]
    assert set(a) == {"images", "depth", "K", "T_cam_world"}
    assert a["images"].shape == (2, 1, *HW) and a["depth"].shape == (2, *HW)
    assert a["K"].shape == (2, 3, 3) and a["T_cam_world"].shape == (2, 4, 4)
    assert a["images"].dtype == torch.float32 and 0 <= a["images"].min() and a["images"].max() <= 1
    assert all(torch.equal(a[k], b[k]) for k in a)  # item i depends on (seed, i) only
    ids = {tuple(pose_ids(synth_scene, ds[i])) for i in range(len(ds))}
    ov = synth_scene.overlaps
    assert all(0.1 <= ov[i, j] <= 0.7 for i, j in ids), ids  # the official overlap filter
    assert len(ids) > 2


def test_depth_warp_matches_plane_homography(synth_scene):
    """Covisible points land where the analytic plane homography puts them (< 0.5 px); points that
    leave the image or are hidden by the occluder in the other view are not covisible."""
    ds = views(synth_scene, length=12)
    checked = out_of_view = occluded = 0
    for n in range(len(ds)):
        item = ds[n]
        pts = grid(*HW)
        pj, ok = warp_item(item, 0, 1, torch.from_numpy(pts).float())
        pj, ok = pj.double().numpy(), ok.numpy()
        plane, true = analytic(synth_scene, item, 0, 1, pts)
        assert not ok[item["depth"][0].numpy()[pts[:, 1].astype(int), pts[:, 0].astype(int)] == 0].any()
        sel = ok & (plane >= 0)
        err = np.abs(pj[sel] - true[sel]).max(initial=0)
        assert err < 0.5, f"item {n}: depth warp off the plane homography by {err:.3f} px"
        checked += sel.sum()
        h, w = HW  # out of view by more than the warp's numerical error
        outside = (plane >= 0) & (
            (true[:, 0] < -0.6) | (true[:, 0] > w - 0.4) | (true[:, 1] < -0.6) | (true[:, 1] > h - 0.4)
        )
        assert not ok[outside].any()
        out_of_view += outside.sum()
        # main-plane points that fall on the occluder in view 1 (well inside it): depth-inconsistent
        T, K = item["T_cam_world"].double().numpy(), item["K"].double().numpy()
        hidden = plane == 0
        for dx in (-1.5, 0, 1.5):
            for dy in (-1.5, 0, 1.5):
                hidden &= plane_depth(K[1], T[1], synth_scene.planes[1], np.nan_to_num(true) + [dx, dy])[1]
        assert not ok[hidden].any()
        occluded += hidden.sum()
    assert checked > 2000 and out_of_view > 100 and occluded > 5, (checked, out_of_view, occluded)


def test_correspondences_are_photometric(synth_scene):
    """The adjusted K fits the resized/cropped pixels: the two images agree at warped points and
    disagree at points moved by 2 px (a wrong principal point or scale would blur the difference)."""
    item = views(synth_scene)[0]
    pts = grid(*HW, step=1)
    pj, ok = warp_item(item, 0, 1, torch.from_numpy(pts).float(), margin=2)
    pj, ok = pj.numpy(), ok.numpy()
    im0, im1 = (item["images"][k, 0].numpy() for k in (0, 1))

    def diff(shift: float) -> float:
        p = pj[ok] + [shift, 0]
        v1 = cv2.remap(im1, p[:, 0].astype(np.float32)[:, None], p[:, 1].astype(np.float32)[:, None], cv2.INTER_LINEAR)[
            :, 0
        ]
        return float(np.abs(v1 - im0[pts[ok, 1].astype(int), pts[ok, 0].astype(int)]).mean())

    assert ok.sum() > 1000
    assert diff(0) < 0.04 and diff(0) < 0.5 * diff(2.0), (diff(0), diff(2.0))


def test_fit_view_geometry():
    """Pixel-centre convention after resize + crop: a blob lands where the new K projects its ray;
    depth is resized by the nearest *source pixel containing* each target pixel centre."""
    h0, w0 = 120, 160
    K = np.array([[150.0, 0, 80.0], [0, 150.0, 60.0], [0, 0, 1]])  # COLMAP: corner convention
    ys, xs = np.mgrid[0:h0, 0:w0]
    bx, by = 97.3, 41.8  # blob centre, pixel-centre convention of the original image
    image = (255 * np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * 4.0**2))).astype(np.uint8)
    depth = (xs + 1).astype(np.float32)  # depth = source column + 1
    img, dep, K2 = fit_view(image, depth, K, HW, centre=(90.0, 50.0))
    assert img.shape == HW and dep.shape == HW
    ray = np.linalg.solve(K, [bx + 0.5, by + 0.5, 1.0])  # COLMAP pixel = centre-convention pixel + 0.5
    p = K2 @ ray
    w = img.astype(np.float64)
    w = np.where(w > 0.3 * w.max(), w, 0)
    yy, xx = np.mgrid[0 : HW[0], 0 : HW[1]]
    centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
    assert np.abs(centroid - p[:2] / p[2]).max() < 0.1
    cols = np.arange(HW[1], dtype=np.float64)
    u = (cols - K2[0, 2]) / K2[0, 0] * K[0, 0] + K[0, 2]  # COLMAP x of each target pixel centre
    assert np.array_equal(dep[0], (np.floor(u) + 1).astype(np.float32))


def test_sequences_from_make_sequences(synth_scene, tmp_path, capsys):
    out = tmp_path / "sequence_indices_0.1_0.7_s5"
    assert make_sequences_main(["--scene_info", str(synth_scene.scene_info), "--out", str(out)]) == 0
    assert "sequences of 5 views in 1 scenes" in capsys.readouterr().out
    files = sorted(out.glob("*.npz"))
    assert [f.name for f in files] == ["0000.npz"]  # the two overlap-bin files of scene 0000 merged
    idx = load_index(files[0])
    seqs, scores = idx["sequence_infos"], idx["sequence_scores"]
    assert seqs.shape[1] == 5 and scores.shape == (len(seqs), 4) and len(seqs) >= 3
    ov = synth_scene.overlaps
    for seq, sc in zip(seqs, scores):
        assert len(set(seq.tolist())) == 5
        assert np.allclose(sc, ov[seq[0], seq[1:]], atol=1e-6)
        assert ((sc >= 0.1) & (sc <= 0.7)).all()
    assert sorted(seqs[seqs[:, 0] == 0][0, 1:]) == [1, 2, 3, 4]  # 5 (0.94) and 6 (0.06) are outside the range
    # the loader reads the sequences: 5 views, covisible with the reference
    ds = views(synth_scene, 5, out, length=4)
    for n in range(len(ds)):
        item = ds[n]
        ids = pose_ids(synth_scene, item)
        assert tuple(ids) in {tuple(s) for s in seqs.tolist()}
        pts = torch.from_numpy(grid(*HW, step=4)).float()
        for j in range(1, 5):
            assert warp_item(item, 0, j, pts)[1].sum() > 20
    # pairs can be drawn from a sequence index too; a scene-info folder cannot give sequences
    assert len(views(synth_scene, 2, out).scenes[0].samples) == 4 * len(seqs)
    with pytest.raises(BadInputError, match="make_sequences"):
        views(synth_scene, 5)


def test_make_sequences_nothing_in_range(synth_scene, tmp_path, capsys):
    argv = ["--scene_info", str(synth_scene.scene_info), "--out", str(tmp_path / "s"), "--overlap", "0.95", "0.99"]
    assert make_sequences_main(argv) == 1
    assert "no 5-view sequences" in capsys.readouterr().err


def copy_scene(scene: SynthScene, dst: Path) -> SynthScene:
    shutil.copytree(scene.root, dst)
    return SynthScene(dst, dst / scene.scene_info.name, scene.planes, scene.poses, scene.overlaps)


def test_missing_files(synth_scene, tmp_path, caplog):
    with pytest.raises(MissingFileError, match="root not found"):
        MegaDepthViews(tmp_path / "nowhere", synth_scene.scene_info, 2, HW, 4)
    with pytest.raises(BadInputError, match="--scene_info is required"):
        MegaDepthViews(synth_scene.root, None, 2, HW, 4)
    # a root without depth files: one clear error at construction, naming a depth file
    scene = copy_scene(synth_scene, tmp_path / "nodepth")
    shutil.rmtree(scene.depth_path(0).parent)
    with pytest.raises(MissingFileError, match=r"depth file not found: .*img0\d\.h5"):
        views(scene)
    # one missing depth file: its samples are skipped with a warning and counted
    scene = copy_scene(synth_scene, tmp_path / "onedepth")
    scene.depth_path(3).unlink()
    ds = views(scene, length=30)
    with caplog.at_level(logging.WARNING, logger="training.data.megadepth"):
        used = {k for n in range(len(ds)) for k in pose_ids(scene, ds[n])}
    assert 3 not in used and ds.skipped > 0
    assert sum("img03.h5" in r.getMessage() for r in caplog.records) == ds.skipped
    # a missing image: an error naming the file
    scene = copy_scene(synth_scene, tmp_path / "noimage")
    scene.image_path(4).unlink()
    ds = views(scene, length=30)
    with pytest.raises(MissingFileError, match=r"image not found: .*img04\.jpg"):
        for n in range(len(ds)):
            ds[n]


def plane_depth_map(K: np.ndarray, hw: tuple[int, int], n_cam: np.ndarray, d: float) -> np.ndarray:
    """Depth at the pixel centres of a camera for the plane ``n_cam . X = d`` (0 where not in front)."""
    pts = grid(*hw, step=1)
    rays = np.column_stack([pts, np.ones(len(pts))]) @ np.linalg.inv(K).T
    with np.errstate(divide="ignore"):
        z = d / (rays @ n_cam)
    return np.where(np.isfinite(z) & (z > 0), z, 0).reshape(hw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: the training precision
def test_depth_warp_round_trip_real_poses(dtype):
    """i -> j -> i on the real MegaDepth-1500 cameras: a plane fronto-parallel to camera j gives a
    constant depth in j (exact at any sub-pixel point) and the analytic plane depth in i."""
    path = DATA / "megadepth1500_index" / "0015_0.1_0.3.npz"
    if not path.is_file():
        pytest.skip(f"shared test data not available: {path}")
    info = load_index(path)
    (i, j), _, _ = info["pair_infos"][0]
    K = [np.asarray(info["intrinsics"][k], float).copy() for k in (i, j)]
    T = [np.asarray(info["poses"][k], float) for k in (i, j)]
    for k in K:  # a quarter of the original resolution keeps the maps small
        k[:2] /= 4
    hws = [(round(2 * k[1, 2]), round(2 * k[0, 2])) for k in K]
    # plane depth: where the two optical axes pass closest, seen from camera j
    C = [-t[:3, :3].T @ t[:3, 3] for t in T]
    a = [t[2, :3] for t in T]  # optical axes in the world
    s = np.linalg.lstsq(np.column_stack([a[0], -a[1]]), C[1] - C[0], rcond=None)[0]
    d = s[1]  # depth along camera j's axis
    assert d > 0
    T_ij = T[0] @ np.linalg.inv(T[1])  # camera j -> camera i
    n_i = T_ij[:3, :3] @ np.array([0, 0, 1.0])
    depth_j = np.full(hws[1], d)
    depth_i = plane_depth_map(K[0], hws[0], n_i, d + n_i @ T_ij[:3, 3])
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    pts = t(grid(*hws[0], step=8))
    pj, ok1 = depth_warp(pts, t(depth_i), t(K[0]), t(T[0]), t(depth_j), t(K[1]), t(T[1]))
    pi, ok2 = depth_warp(pj, t(depth_j), t(K[1]), t(T[1]), t(depth_i), t(K[0]), t(T[0]))
    ok = ok1 & ok2
    assert ok.sum() > 100
    err = (pi - pts)[ok].abs().max().item()
    assert err < 1e-3, f"round trip error {err:.2e} px ({dtype})"
