"""Homography benchmark on the real churchill sequence, the HPatches layout and bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import homography, runner

DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"
CHURCHILL = DATA / "homography" / "churchill"
pytestmark = pytest.mark.skipif(not CHURCHILL.is_dir(), reason=f"shared test data not available: {CHURCHILL}")


def _run(argv: list[str]) -> runner.Outcome:
    return homography.run(runner.make_parser(homography.SPEC).parse_args(argv))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


def _link_sequence(folder: Path, drop: tuple[str, ...] = ()) -> None:
    folder.mkdir(parents=True)
    for f in CHURCHILL.iterdir():
        if f.name not in drop:
            os.symlink(f, folder / f.name)


def test_churchill_sift_floors(cache_dir, tmp_path):
    out = _run(["--methods", "sift", "--cache", str(cache_dir), "--plot", str(tmp_path / "mma.png")])
    result = out.result
    runner.validate_result(result, homography.KEYS)
    per_pair = result["data"].pop("per_pair")
    assert result["data"] == {"sequences": 1, "pairs_evaluated": 5, "pairs_skipped_missing_files": 0}
    sift = result["methods"]["sift"]
    rows = per_pair["sift"]
    assert [r["pair"] for r in rows] == [f"churchill/1-{k}" for k in range(2, 7)]
    assert sum(r["mma3"] for r in rows) / 5 == pytest.approx(sift["mma3"])
    assert all(0 <= r["repeatability3"] <= 100 and r["matches"] > 0 for r in rows)
    # at image 1's centre churchill zooms in, then out (1.18, 1.15, 0.89, 0.88, 0.72); perspective makes
    # the local zoom range over the image much wider (pair 1-3: 0.60 to 3.69)
    zoom = [r["zoom"] for r in rows]
    assert zoom[0] > 1.1 and zoom[4] < 0.8, zoom
    assert all(lo < z < hi for z, (lo, hi) in zip(zoom, (r["zoom_range"] for r in rows)))
    assert rows[1]["zoom_range"][1] > 3.0
    # measured (2048 SIFT, full resolution): MMA 54.0 / 80.8 / 85.7 / 87.9, HAcc 40 / 40 / 60
    assert sift["mma1"] >= 45 and sift["mma3"] >= 72 and sift["mma10"] >= 80
    assert sift["mma1"] <= sift["mma3"] <= sift["mma5"] <= sift["mma10"]
    assert sift["hacc5"] >= 40 and sift["hacc1"] <= sift["hacc3"] <= sift["hacc5"]
    homography.plot(out, tmp_path / "mma.png")
    assert (tmp_path / "mma.png").stat().st_size > 1000


def test_hpatches_layout_and_missing_files(cache_dir, tmp_path):
    root = tmp_path / "hpatches"
    _link_sequence(root / "i_church")
    _link_sequence(root / "v_church", drop=("4.ppm", "H_1_6"))  # two pairs lose a file
    (root / "not_a_sequence").mkdir()
    result = _run(["--root", str(root), "--methods", "orb", "--cache", str(cache_dir)]).result
    assert len(result["data"].pop("per_pair")["orb"]) == 8
    assert result["data"] == {"sequences": 2, "pairs_evaluated": 8, "pairs_skipped_missing_files": 2}
    assert result["methods"]["orb"]["mma10"] > 30


def test_resized_extraction_keeps_ground_truth_consistent(cache_dir):
    sift = _run(["--methods", "sift", "--long-side", "640", "--cache", str(cache_dir)]).result["methods"]["sift"]
    assert sift["mma3"] >= 60  # a wrong H rescaling would drop this to ~0


def test_bad_inputs(tmp_path, capsys):
    def fails(argv: list[str]) -> str:
        assert homography.main(["--methods", "sift", "--no-cache", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "homography dataset root not found" in fails(["--root", str(tmp_path / "absent")])
    assert "wrong layout: no homography sequence" in fails(["--root", str(tmp_path)])
    seq = tmp_path / "seq"
    _link_sequence(seq, drop=("H_1_2",))
    (seq / "H_1_3").unlink()
    (seq / "H_1_3").write_text("1 0 0\n0 1 0\n")
    assert "is not an invertible 3x3 homography" in fails(["--root", str(seq)])
