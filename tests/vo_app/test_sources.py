"""Tests of vo_app.sources: real KITTI/TUM data, generated EuRoC/video/folder fixtures, the demo, bad inputs."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from models.errors import BadInputError, MissingFileError
from vo_app.sources import (
    DemoSource,
    EurocSource,
    ImageFolderSource,
    KittiSource,
    TumSource,
    VideoSource,
    WebcamSource,
    load_calib,
    open_source,
)
from vo_app.sources import demo as demo_module
from vo_app.sources import webcam as webcam_module
from vo_app.sources.calib import Undistorter

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRAQPOINT_SHARED", REPO.parent / "shared")) / "data"  # as in tests/conftest.py
KITTI = DATA / "kitti_mini"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA}")


def one_line(exc_info) -> str:
    """The error message, asserted to be a single non-empty line."""
    message = str(exc_info.value)
    assert message and "\n" not in message, message
    return message


def pose_tq(t, q_xyzw) -> np.ndarray:
    """4x4 from a translation and an (x, y, z, w) quaternion, via scipy (independent of the code under test)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q_xyzw).as_matrix()
    T[:3, 3] = t
    return T


def kitti_rows(path: Path) -> np.ndarray:
    rows = np.loadtxt(path).reshape(-1, 3, 4)
    return np.concatenate([rows, np.tile([[[0, 0, 0, 1.0]]], (len(rows), 1, 1))], 1)


# ---------------------------------------------------------------- KITTI


@needs_data
@pytest.mark.parametrize(
    "seq, frames, size, fx, cx, cy",
    [("06", 51, (1226, 370), 707.0912, 601.8873, 183.1104), ("00", 20, (1241, 376), 718.856, 607.1928, 185.2157)],
)
def test_kitti_real(seq, frames, size, fx, cx, cy):
    source = KittiSource(KITTI / "sequences" / seq)
    assert len(source) == frames and source.image_size == size and source.name == f"kitti/{seq}"
    np.testing.assert_allclose(source.K, [[fx, 0, cx], [0, fx, cy], [0, 0, 1]])
    gt = kitti_rows(KITTI / "poses" / f"{seq}.txt")
    assert source.gt_poses.shape == (frames, 4, 4)
    np.testing.assert_allclose(source.gt_poses, gt)
    assert source.stereo_baseline == pytest.approx(0.537, abs=0.005)  # KITTI: ~0.54 m
    first, last = source[0], source[frames - 1]
    assert first.image.shape == (size[1], size[0]) and first.image.dtype == np.uint8
    np.testing.assert_allclose(first.pose, gt[0])
    assert last.index == frames - 1 and last.timestamp > first.timestamp and last.path.name == f"{frames - 1:06d}.png"
    assert first.colour is None


@needs_data
def test_kitti_06_first_pose_is_identity_and_iteration():
    source = open_source("kitti/6", data_root=KITTI)
    np.testing.assert_allclose(source.gt_poses[0], np.eye(4), atol=1e-6)
    frames = list(source)
    assert [f.index for f in frames] == list(range(51)) and source.skipped == 0
    assert frames[1].timestamp == pytest.approx(0.1044989)


@needs_data
def test_kitti_right_image_missing_is_one_clear_error():
    source = KittiSource(KITTI / "sequences" / "06")
    assert not source.has_stereo  # kitti_mini ships the left camera only
    with pytest.raises(MissingFileError) as exc:
        source.right_image(3)
    assert "image_1" in one_line(exc)


@needs_data
def test_kitti_right_image_read(tmp_path):
    seq = tmp_path / "sequences" / "06"
    (seq / "image_0").mkdir(parents=True)
    (seq / "image_1").mkdir()
    src = KITTI / "sequences" / "06"
    shutil.copy(src / "calib.txt", seq)
    for i in range(2):
        shutil.copy(src / "image_0" / f"{i:06d}.png", seq / "image_0")
        shutil.copy(src / "image_0" / f"{i + 1:06d}.png", seq / "image_1" / f"{i:06d}.png")
    source = KittiSource(seq)
    assert source.has_stereo and source.gt_poses is None
    np.testing.assert_allclose(source[1].timestamp, 0.1)  # no times.txt: 10 Hz
    assert source.right_image(0).shape == (370, 1226)


@needs_data
def test_kitti_root_from_environment(monkeypatch):
    monkeypatch.delenv("TRAQPOINT_DATA_ROOT", raising=False)
    monkeypatch.setenv("KITTI_ROOT", str(KITTI))
    assert open_source("kitti/00").num_frames == 20
    monkeypatch.setenv("TRAQPOINT_DATA_ROOT", str(KITTI / "nowhere"))  # takes precedence over KITTI_ROOT
    with pytest.raises(MissingFileError) as exc:
        open_source("kitti/00")
    assert "TRAQPOINT_DATA_ROOT" in one_line(exc)


# ---------------------------------------------------------------- TUM


@needs_data
def test_tum_fr2_desk():
    folder = DATA / "tum_fr2_desk"
    source = open_source(folder)
    assert isinstance(source, TumSource) and source.tum_camera == "fr2"
    assert len(source) == 20 and source.image_size == (640, 480)
    # undistorted to a pinhole K: same principal point, focal zoomed so that no border is black
    assert source.K[0, 2] == pytest.approx(325.141442) and source.K[0, 0] > 520.908620
    gt = np.loadtxt(folder / "groundtruth.txt")
    frame = source[0]
    nearest = np.argmin(np.abs(gt[:, 0] - frame.timestamp))
    assert abs(gt[nearest, 0] - frame.timestamp) < 0.02
    np.testing.assert_allclose(frame.pose, pose_tq(gt[nearest, 1:4], gt[nearest, 4:]), atol=1e-12)
    assert not np.isnan(source.gt_poses).any() and source.gt_poses.shape == (20, 4, 4)
    assert frame.image.shape == (480, 480 * 4 // 3)
    raw = cv2.imread(str(frame.path), cv2.IMREAD_GRAYSCALE)
    assert np.abs(raw.astype(int) - frame.image).mean() > 2  # the image was remapped
    coloured = TumSource(folder, colour=True)[0]
    assert coloured.colour.shape == (480, 640, 3)


@needs_data
def test_tum_office_needs_camera_option():
    folder = DATA / "tum_office"  # 4 timestamp-named PNGs, no rgb.txt, no "fr3" in the name
    with pytest.raises(BadInputError) as exc:
        TumSource(folder)
    assert "tum_camera" in one_line(exc)
    source = open_source(folder, tum_camera="fr3")
    assert isinstance(source, TumSource) and len(source) == 4 and source.gt_poses is None and source[0].pose is None
    np.testing.assert_allclose(source.K, [[535.4, 0, 320.1], [0, 539.2, 247.6], [0, 0, 1]])  # fr3: no distortion


def test_undistorter_leaves_no_border():
    fx, fy, cx, cy, *dist = (520.908620, 521.007327, 325.141442, 249.701764, 0.231222, -0.784899, -0.003257,
                             -0.000105, 0.917205)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    undistort = Undistorter(K, np.array(dist), (640, 480))
    assert undistort(np.full((480, 640), 200, np.uint8)).min() == 200
    # a point through the new K and the distortion model lands where the remap reads it
    x = np.array([[[50.0, 40.0]]])
    ray = np.linalg.solve(undistort.K, [50.0, 40.0, 1.0])
    distorted, _ = cv2.projectPoints(ray[None], np.zeros(3), np.zeros(3), K, np.array(dist))
    back = cv2.undistortPoints(distorted, K, np.array(dist), P=undistort.K)
    np.testing.assert_allclose(back, x, atol=0.05)


# ---------------------------------------------------------------- EuRoC

EUROC_T_BS = [0.0148655429818, -0.999880929698, 0.00414029679422, -0.0216401454975,
              0.999557249008, 0.0149672133247, 0.025715529948, -0.064676986768,
              -0.0257744366974, 0.00375618835797, 0.999660727178, 0.00981073058949,
              0.0, 0.0, 0.0, 1.0]


def make_euroc(root: Path, image: np.ndarray, frames: int = 5) -> Path:
    """A small EuRoC sequence in the ASL layout, from one real image, with 200 Hz ground truth."""
    cam = root / "mav0" / "cam0"
    (cam / "data").mkdir(parents=True)
    image = cv2.resize(image, (752, 480))
    stamps = [1403636579763555584 + i * 50_000_000 for i in range(frames)]
    for i, ns in enumerate(stamps):
        cv2.imwrite(str(cam / "data" / f"{ns}.png"), np.roll(image, 3 * i, axis=1))
    (cam / "data.csv").write_text("#timestamp [ns],filename\n" + "".join(f"{ns},{ns}.png\n" for ns in stamps))
    (cam / "sensor.yaml").write_text(
        "%YAML:1.0\n# General sensor definitions.\nsensor_type: camera\ncomment: VI-Sensor cam0 (MT9M034)\n"
        f"T_BS:\n  cols: 4\n  rows: 4\n  data: {EUROC_T_BS}\n"
        "rate_hz: 20\nresolution: [752, 480]\ncamera_model: pinhole\n"
        "intrinsics: [458.654, 457.296, 367.215, 248.375] #fu, fv, cu, cv\n"
        "distortion_model: radial-tangential\n"
        "distortion_coefficients: [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05]\n"
    )
    gt_dir = root / "mav0" / "state_groundtruth_estimate0"
    gt_dir.mkdir()
    lines = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z [], ..."]
    for k in range(frames * 10 + 5):  # 200 Hz from 10 ms before the first image
        ns = stamps[0] - 10_000_000 + k * 5_000_000
        angle = 0.01 * k
        lines.append(f"{ns},{0.02 * k},1.0,-0.5,{np.cos(angle / 2)},0,0,{np.sin(angle / 2)},0,0,0,0,0,0,0,0,0")
    (gt_dir / "data.csv").write_text("\n".join(lines) + "\n")
    return root


@needs_data
def test_euroc_fixture(tmp_path):
    image = cv2.imread(str(DATA / "tum_office" / "1341847980.722988.png"), cv2.IMREAD_GRAYSCALE)
    root = make_euroc(tmp_path / "MH_01_easy", image)
    source = open_source(root)
    assert isinstance(source, EurocSource) and source.name == "euroc/MH_01_easy"
    assert len(source) == 5 and source.image_size == (752, 480)
    assert source.K[0, 2] == pytest.approx(367.215) and source.K[1, 2] == pytest.approx(248.375)
    frame = source[2]  # 100 ms after the first image = ground-truth row k = 22
    angle = 0.01 * 22
    T_wb = pose_tq([0.44, 1.0, -0.5], [0, 0, np.sin(angle / 2), np.cos(angle / 2)])
    np.testing.assert_allclose(frame.pose, T_wb @ np.array(EUROC_T_BS).reshape(4, 4), atol=1e-9)
    assert frame.timestamp == pytest.approx(1403636579.863555584)
    assert frame.image.shape == (480, 752) and frame.image.std() > 10
    assert EurocSource(root / "mav0").num_frames == 5  # the mav0 folder itself works too


# ---------------------------------------------------------------- video, image folder, calibration


def write_yaml_calib(path: Path, fx=707.0912, fy=707.0912, cx=601.8873, cy=183.1104, extra="") -> Path:
    path.write_text(f"fx: {fx}\nfy: {fy}\ncx: {cx}\ncy: {cy}\n{extra}")
    return path


@needs_data
def test_video_source(tmp_path):
    frames = [cv2.imread(str(KITTI / "sequences" / "06" / "image_0" / f"{i:06d}.png")) for i in range(8)]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (1226, 370))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    calib = write_yaml_calib(tmp_path / "calib.yaml")
    source = open_source(video, calib=calib)
    assert isinstance(source, VideoSource) and source.num_frames == 8 and source.image_size == (1226, 370)
    np.testing.assert_allclose(source.K, [[707.0912, 0, 601.8873], [0, 707.0912, 183.1104], [0, 0, 1]])
    got = list(source)
    assert [f.index for f in got] == list(range(8)) and got[3].timestamp == pytest.approx(0.3)
    assert np.abs(got[5].image.astype(int) - cv2.cvtColor(frames[5], cv2.COLOR_BGR2GRAY)).mean() < 8  # lossy codec
    assert len(list(source)) == 8  # iterating again starts over

    with pytest.raises(MissingFileError) as exc:
        open_source(video)
    assert "--calib" in one_line(exc)
    guessed = open_source(video, allow_guess=True)
    assert not guessed.calibrated and guessed.K[0, 0] == pytest.approx(0.8 * 1226)


@needs_data
@pytest.mark.parametrize("form", ["yaml", "line", "line_dist", "matrix"])
def test_image_folder_with_calib(tmp_path, form):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 1, 2, 10):  # natural order: 2 before 10
        shutil.copy(KITTI / "sequences" / "00" / "image_0" / f"{i:06d}.png", folder / f"img{i}.png")
    calib = tmp_path / ("calib.yaml" if form == "yaml" else "calib.txt")
    if form == "yaml":
        write_yaml_calib(calib, 718.856, 718.856, 607.1928, 185.2157, "width: 1241\nheight: 376\n")
    elif form == "line":
        calib.write_text("# fx fy cx cy\n718.856 718.856 607.1928 185.2157\n")
    elif form == "line_dist":
        calib.write_text("718.856 718.856 607.1928 185.2157 -0.01 0.001 0 0\n")
    else:
        calib.write_text("718.856 0 607.1928\n0 718.856 185.2157\n0 0 1\n")
    source = open_source(folder, calib=calib)
    assert isinstance(source, ImageFolderSource) and len(source) == 4 and source.image_size == (1241, 376)
    assert [p.name for p in source.paths] == ["img0.png", "img1.png", "img2.png", "img10.png"]
    assert source.K[0, 2] == pytest.approx(607.1928) and source.K[1, 2] == pytest.approx(185.2157)
    if form == "line_dist":  # undistorted: pinhole K with a fitted focal, no black border
        assert source.undistorter is not None and source.K[0, 0] != pytest.approx(718.856)
    else:
        assert source.K[0, 0] == pytest.approx(718.856) and source.undistorter is None
    assert source[3].timestamp == pytest.approx(0.3) and source.gt_poses is None


def test_calib_forms_and_errors(tmp_path):
    yaml_dist = write_yaml_calib(tmp_path / "a.yaml", 500, 501, 320, 240, "dist: [0.1, -0.2, 0.001, 0.002, 0.05]\n")
    calib = load_calib(yaml_dist)
    np.testing.assert_allclose(calib.dist, [0.1, -0.2, 0.001, 0.002, 0.05])
    (tmp_path / "ros.yaml").write_text(
        "image_width: 640\nimage_height: 480\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
        "  data: [500, 0, 320, 0, 500, 240, 0, 0, 1]\ndistortion_coefficients:\n  rows: 1\n  cols: 5\n"
        "  data: [0.1, 0, 0, 0, 0]\n"
    )
    ros = load_calib(tmp_path / "ros.yaml")
    assert ros.size == (640, 480) and ros.dist[0] == 0.1
    with pytest.raises(BadInputError) as exc:
        ros.check_size((1241, 376))
    assert "640x480" in one_line(exc)

    bad = {
        "two_rows.txt": "500 0 320\n0 500 240\n",
        "seven.txt": "500 500 320 240 0.1 0.2 0.3\n",
        "k_2x3.yaml": "K: [[500, 0, 320], [0, 500, 240]]\n",
        "words.txt": "focal 500\n",
        "negative.txt": "-500 500 320 240\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BadInputError) as exc:
            load_calib(tmp_path / name)
        assert name in one_line(exc)
    with pytest.raises(MissingFileError) as exc:
        load_calib(tmp_path / "absent.yaml")
    assert "absent.yaml" in one_line(exc)


@needs_data
def test_image_folder_errors(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(KITTI / "sequences" / "00" / "image_0" / "000000.png", folder / "0.png")
    with pytest.raises(MissingFileError) as exc:  # no calibration: VO needs one
        open_source(folder)
    assert "--calib" in one_line(exc)
    (tmp_path / "wrong.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(BadInputError) as exc:
        open_source(folder, calib=tmp_path / "wrong.txt")
    assert "wrong shape" in one_line(exc)
    with pytest.raises(MissingFileError) as exc:
        open_source(folder, calib=tmp_path / "missing_calib.yaml")
    assert "missing_calib.yaml" in one_line(exc)
    (tmp_path / "small.txt").write_text("500 500 320 240\n")  # principal point outside a 1241x376 image? no: inside
    assert open_source(folder, calib=tmp_path / "small.txt").num_frames == 1
    (tmp_path / "other_res.txt").write_text("500 500 1500 240\n")
    with pytest.raises(BadInputError) as exc:
        open_source(folder, calib=tmp_path / "other_res.txt")
    assert "outside" in one_line(exc)
    guessed = ImageFolderSource(folder, allow_guess=True)
    np.testing.assert_allclose(guessed.K, [[992.8, 0, 620], [0, 992.8, 187.5], [0, 0, 1]])


@needs_data
def test_corrupt_image_mid_sequence_is_skipped(tmp_path, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        shutil.copy(KITTI / "sequences" / "06" / "image_0" / f"{i:06d}.png", folder / f"{i:06d}.png")
    (folder / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")  # corrupt
    good = (folder / "000003.png").read_bytes()
    (folder / "000003.png").write_bytes(good[: len(good) // 3])  # truncated
    source = ImageFolderSource(folder, calib=write_yaml_calib(tmp_path / "c.yaml"))
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 4] and source.skipped == 2
    assert sum("skipping frame 2" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(BadInputError) as exc:  # random access reports the error itself
        source[2]
    assert "000002.png" in one_line(exc)


# ---------------------------------------------------------------- resolver and webcam


def test_unknown_sequence_name():
    with pytest.raises(BadInputError) as exc:
        open_source("kitty")
    message = one_line(exc)
    assert "kitti/NN" in message and "demo" in message and "webcam" in message


def test_missing_sequence_folder(tmp_path):
    with pytest.raises(MissingFileError) as exc:
        open_source(tmp_path / "no_such_sequence")
    assert "no_such_sequence" in one_line(exc)
    with pytest.raises(MissingFileError) as exc:
        open_source("kitti/07", data_root=tmp_path)
    assert str(tmp_path / "sequences" / "07") in one_line(exc)
    with pytest.raises(MissingFileError) as exc:
        KittiSource(tmp_path / "sequences" / "99")
    assert "99" in one_line(exc)


def test_kitti_without_root(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAQPOINT_DATA_ROOT", raising=False)
    monkeypatch.delenv("KITTI_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vo_app.sources.resolve.REPO_ROOT", tmp_path)
    with pytest.raises(MissingFileError) as exc:
        open_source("kitti/01")
    assert "--data-root" in one_line(exc)


def test_unknown_option():
    with pytest.raises(BadInputError) as exc:
        open_source("demo", colur=True)
    assert "colur" in one_line(exc)


def test_nonexistent_webcam():
    start = time.perf_counter()
    with pytest.raises(MissingFileError) as exc:
        open_source("webcam:57", allow_guess=True)
    assert "webcam 57" in one_line(exc) and time.perf_counter() - start < 10


class FakeCapture:
    """A camera that delivers ``frames`` frames, then nothing (unplugged)."""

    def __init__(self, index, frames=3):
        self.left, self.released = frames, False

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 64.0, cv2.CAP_PROP_FRAME_HEIGHT: 48.0}.get(prop, 0.0)

    def set(self, prop, value):
        return True

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), 100, np.uint8)

    def release(self):
        self.released = True


def test_webcam_that_disappears_ends_cleanly(monkeypatch, caplog):
    monkeypatch.setattr(webcam_module.cv2, "VideoCapture", FakeCapture)
    source = open_source("webcam:1", allow_guess=True, stall_s=0.05)
    assert isinstance(source, WebcamSource) and source.is_live and source.num_frames is None
    cap = source.cap
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2] and frames[0].image.shape == (48, 64)
    assert cap.released and any("stopping" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError):
        len(source)


# ---------------------------------------------------------------- demo


def test_demo_sequence():
    source = open_source("demo")
    assert isinstance(source, DemoSource) and len(source) == 300 and source.image_size == (640, 480)
    assert source.gt_poses.shape == (300, 4, 4)
    np.testing.assert_allclose(source.gt_poses[0], np.eye(4), atol=1e-12)
    R = source.gt_poses[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (300, 1, 1)), atol=1e-9)
    steps = np.linalg.norm(np.diff(source.gt_poses[:, :3, 3], axis=0), axis=1)
    assert steps.min() > 0.09 and steps.max() < 0.11  # constant speed, 0.1 m per frame
    frame = source[150]
    assert frame.image.shape == (480, 640) and frame.image.dtype == np.uint8 and frame.image.std() > 20
    assert np.array_equal(frame.image, DemoSource()[150].image)  # deterministic
    np.testing.assert_allclose(frame.pose, source.gt_poses[150])
    assert frame.timestamp == pytest.approx(5.0)


def test_demo_renders_quickly():
    source = DemoSource(num_frames=60)
    source[0]  # builds textures and mip pyramids
    times = []
    for i in range(1, 60, 4):
        start = time.perf_counter()
        source.render(i)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.03, f"median {np.median(times) * 1e3:.1f} ms per 640x480 frame"


def test_demo_without_texture_files(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(demo_module, "TEXTURE_DIR", tmp_path)  # e.g. package data not installed
    with caplog.at_level(logging.WARNING):
        image = DemoSource(num_frames=3, width=160, height=120)[2].image
    assert image.std() > 10 and any("procedural" in r.getMessage() for r in caplog.records)


def test_demo_colour_and_size():
    source = DemoSource(num_frames=5, width=320, height=240, colour=True)
    frame = source[4]
    assert frame.colour.shape == (240, 320, 3) and frame.image.shape == (240, 320)
    assert source.K[0, 0] == pytest.approx(250.0) and source.K[0, 2] == pytest.approx(159.5)


def test_demo_geometry_matches_poses():
    """Matches between two rendered frames obey the ground-truth epipolar geometry (sub-pixel)."""
    source = DemoSource()
    a, b = source[100], source[108]  # in the turn: 7.5 degrees of rotation, 0.8 m of translation
    sift = cv2.SIFT_create(2000)
    ka, da = sift.detectAndCompute(a.image, None)
    kb, db = sift.detectAndCompute(b.image, None)
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(da, db)
    pa = np.float64([ka[m.queryIdx].pt for m in matches])
    pb = np.float64([kb[m.trainIdx].pt for m in matches])
    K = np.asarray(source.K)
    T_b_a = np.linalg.inv(b.pose) @ a.pose  # camera a -> camera b, as recoverPose reports it
    t = T_b_a[:3, 3]
    F = np.linalg.inv(K).T @ np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T_b_a[:3, :3]
    F = F @ np.linalg.inv(K)
    lines = np.c_[pa, np.ones(len(pa))] @ F.T
    dist = np.abs(np.sum(np.c_[pb, np.ones(len(pb))] * lines, 1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert len(matches) > 300 and np.median(dist) < 0.3, (len(matches), np.median(dist))
    E, inliers = cv2.findEssentialMat(pa, pb, K, cv2.USAC_MAGSAC, 0.999, 0.5)
    _, R, t_est, _ = cv2.recoverPose(E, pa, pb, K, mask=inliers)
    angle = np.degrees(np.arccos(np.clip((np.trace(R.T @ T_b_a[:3, :3]) - 1) / 2, -1, 1)))
    t_angle = np.degrees(np.arccos(np.clip(float(t_est.ravel() @ t) / np.linalg.norm(t), -1, 1)))
    assert angle < 0.3 and t_angle < 2.0, (angle, t_angle)
