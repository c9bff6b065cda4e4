"""Issue 12 cases of the benchmark command lines: nothing evaluated, bad flags, unwritable outputs,
corrupt index files, truncated JPEGs and frames without ground truth."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import kitti, runner, scannet1500
from models.image_io import read_image, truncated_jpeg

DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"
SCANNET = DATA / "scannet1500"
KITTI_MINI = DATA / "kitti_mini"
needs_scannet = pytest.mark.skipif(not SCANNET.is_dir(), reason=f"shared test data not available: {SCANNET}")
needs_kitti = pytest.mark.skipif(not KITTI_MINI.is_dir(), reason=f"shared test data not available: {KITTI_MINI}")


def one_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), err
    return err


@pytest.fixture
def no_run(monkeypatch):
    monkeypatch.setattr(kitti.SPEC, "run", lambda args: pytest.fail("the benchmark ran despite a bad flag"))


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--device", "banana"], "not a torch device"),
        (["--num-kp", "0"], "--num-kp"),
        (["--threads", "-1"], "--threads"),
        (["--plot", "fig.gif"], "--plot"),
    ],
)
def test_bad_common_flags_are_refused_before_the_run(flags, fragment, capsys, no_run):
    assert kitti.main(["--methods", "sift", *flags]) == 2
    one_error(capsys, fragment)


def test_unwritable_json_is_refused_before_the_run(tmp_path, capsys, no_run):
    (tmp_path / "a_file").write_text("x")
    assert kitti.main(["--methods", "sift", "--json", str(tmp_path / "a_file" / "r.json")]) == 2
    one_error(capsys, "--json")


@needs_kitti
def test_kitti_exits_2_when_every_method_was_skipped(tmp_path, capsys):
    argv = ["--root", str(KITTI_MINI), "--id", "06", "--max-frames", "3", "--methods", "traqpoint-lite",
            "--weights", f"traqpoint-lite={tmp_path / 'absent.pt'}", "--threads", "1"]
    assert kitti.main(argv) == 2
    one_error(capsys, "no method could be evaluated", "traqpoint-lite", "absent.pt")


@needs_kitti
def test_kitti_frame_without_ground_truth_is_bridged_and_counted(tmp_path, capsys):
    root = tmp_path / "kitti"
    seq = root / "sequences" / "06"
    (seq / "image_0").mkdir(parents=True)
    src = KITTI_MINI / "sequences" / "06"
    for i in range(6):
        shutil.copy(src / "image_0" / f"{i:06d}.png", seq / "image_0")
    shutil.copy(src / "calib.txt", seq)
    (root / "poses").mkdir()
    rows = (KITTI_MINI / "poses" / "06.txt").read_text().splitlines()[:6]
    rows[3] = " ".join(["nan"] * 12)
    (root / "poses" / "06.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    argv = ["--root", str(root), "--id", "06", "--methods", "sift", "--num-kp", "300", "--threads", "1",
            "--json", str(out)]
    assert kitti.main(argv) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["data"]["frames_without_gt"] == 1 and result["methods"]["sift"]["frames"] == 6
    gt = np.loadtxt(tmp_path / "r.gt.kitti.txt")
    assert gt.shape == (6, 12) and np.isnan(gt[3]).all() and np.isfinite(np.delete(gt, 3, 0)).all()


@needs_scannet
def test_scannet_corrupt_index_is_one_line(tmp_path, capsys):
    shutil.copy(SCANNET / "intrinsics.npz", tmp_path)
    (tmp_path / "test.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    assert scannet1500.main(["--root", str(tmp_path), "--methods", "sift", "--no-cache"]) == 2
    one_error(capsys, "cannot read", "test.npz")


def scannet_copy(root: Path) -> Path:
    """The sample's 8 pairs (their rows of the index and their images) under ``root``."""
    index = np.load(SCANNET / "test.npz")
    folders = [SCANNET / f"scene{s:04d}_{u:02d}" / "color" for s, u, _, _ in index["name"]]
    rows = [i for i, (d, n) in enumerate(zip(folders, index["name"])) if all((d / f"{f}.jpg").is_file() for f in n[2:])]
    root.mkdir(parents=True)
    np.savez(root / "test.npz", name=index["name"][rows], rel_pose=index["rel_pose"][rows])
    shutil.copy(SCANNET / "intrinsics.npz", root)
    for scene in SCANNET.glob("scene*"):
        shutil.copytree(scene, root / scene.name)
    return root


@needs_scannet
def test_scannet_pair_with_a_truncated_jpeg_is_skipped_and_counted(tmp_path):
    root = scannet_copy(tmp_path / "scannet")
    names = np.load(root / "test.npz")["name"]
    scene, sub, frame0, _ = names[0]
    jpg = root / f"scene{scene:04d}_{sub:02d}" / "color" / f"{frame0}.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    assert truncated_jpeg(jpg) and not truncated_jpeg(SCANNET / jpg.relative_to(root))
    with pytest.raises(Exception, match="truncated"):
        read_image(jpg)
    args = runner.make_parser(scannet1500.SPEC).parse_args(
        ["--root", str(root), "--methods", "orb", "--num-kp", "500", "--no-cache"])
    result = scannet1500.run(args).result
    using = sum(jpg.stem in (str(f0), str(f1)) for s, u, f0, f1 in names if (s, u) == (scene, sub))
    assert result["data"]["pairs_skipped_truncated_images"] == using >= 1
    assert result["methods"]["orb"]["pairs"] == len(names) - using
    assert result["data"]["truncated_images"] == [str(jpg)]


def test_truncated_jpeg_detection(tmp_path):
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (64, 80), dtype=np.uint8)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), image)
    assert not truncated_jpeg(path)
    with path.open("ab") as fh:  # data after the end-of-image marker (e.g. motion photos) is not a cut
        fh.write(b"\x00\x00trailer bytes after the image")
    assert not truncated_jpeg(path)
    path.write_bytes(path.read_bytes()[:300])
    assert truncated_jpeg(path)
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), image)
    assert not truncated_jpeg(png)
