"""The ALIKE-n stage-1 teacher: map convention, invariant targets, the loss, the stage-1 wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import DATA, TINY, read_log

import training.stage1 as stage1
from models.errors import BadInputError, MissingFileError
from training.data.homography import HomographyViews
from training.data.images import load_pool
from training.teacher import POOL, TeacherMaps, dense_map, distillation_loss, teacher_dim
from training.warping import warp_points

ALIKE_N = DATA.parent / "weights" / "alike" / "alike-n.pth"
needs_alike = pytest.mark.skipif(not ALIKE_N.is_file(), reason=f"ALIKE-n weights not found at {ALIKE_N}")


def maps_from(maps: list[torch.Tensor]) -> TeacherMaps:
    """A TeacherMaps holding given maps (no network)."""
    t = TeacherMaps.__new__(TeacherMaps)
    t.maps, t.dim = maps, maps[0].shape[0]
    return t


def test_sample_reads_the_cell_of_a_source_pixel():
    """Map cell (j, i) pools source pixels 2j..2j+1: its centre 2j + 0.5 reads exactly that cell's vector."""
    d, hm, wm = 3, 4, 5
    vectors = F.normalize(torch.randn(d, hm, wm, generator=torch.Generator().manual_seed(0)), dim=0)
    t = maps_from([vectors.half()])
    jj, ii = torch.meshgrid(torch.arange(wm), torch.arange(hm), indexing="xy")
    pts = torch.stack([POOL * jj.flatten() + 0.5, POOL * ii.flatten() + 0.5], dim=1).float()
    got, inside = t.sample(0, pts)
    want = F.normalize(vectors.half().float().flatten(1).T, dim=1)
    assert inside.all()
    assert torch.allclose(got, want, atol=1e-6)
    # between two cells: the normalised blend; outside the photo: flagged
    mid, _ = t.sample(0, torch.tensor([[1.5, 0.5]]))
    assert torch.allclose(mid[0], F.normalize(want[0] + want[1], dim=0), atol=1e-3)
    _, out = t.sample(0, torch.tensor([[-3.0, 0.0], [0.0, POOL * hm + 2.0], [POOL * wm - 0.6, POOL * hm - 0.6]]))
    assert out.tolist() == [False, False, True]


def test_dense_map_shape_and_units():
    class Fake(torch.nn.Module):  # descriptors = the padded image's coordinates, so padding shows
        def forward(self, x):
            _, _, h, w = x.shape
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            return {"descriptors": torch.stack([xx + 1.0, yy + 1.0, x[0, 0] + 1.0])[None]}

    grey = np.random.default_rng(0).integers(0, 256, (37, 50), dtype=np.uint8)
    m = dense_map(Fake(), grey)
    assert m.shape == (3, 19, 25) and m.dtype == torch.float16
    assert torch.allclose(m.float().norm(dim=0), torch.ones(19, 25), atol=2e-3)


def test_loss_is_zero_on_the_teacher_and_positive_elsewhere():
    g = torch.Generator().manual_seed(1)
    proj = torch.nn.Linear(4, 8, bias=False)
    student = torch.randn(50, 4, generator=g)
    target = F.normalize(proj(student), dim=1).detach()
    assert distillation_loss(student, target, proj).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(student, F.normalize(torch.randn(50, 8, generator=g), dim=1), proj).item() > 0.5
    assert distillation_loss(student[:0], target[:0], proj).item() == 0.0


@needs_alike
def test_targets_of_corresponding_view_points_agree(photo_dir, tmp_path):
    """Two homography views of one photo read the teacher at the same source point: identical targets.
    The teacher's own map separates those points from shuffled ones (it is a working descriptor)."""
    pool, _ = load_pool([photo_dir])
    teacher = TeacherMaps(pool, ALIKE_N, tmp_path)
    assert len(list(tmp_path.glob("teacher_alike-n_*.pt"))) == 1
    again = TeacherMaps(pool, ALIKE_N, tmp_path)  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(teacher.maps, again.maps))
    item = HomographyViews(pool, 2, (96, 128), 4, seed=3)[0]
    yy, xx = torch.meshgrid(torch.arange(8, 96, 16.0), torch.arange(8, 128, 16.0), indexing="ij")
    pa = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    H = item["H"].double()
    pb = warp_points((H[1] @ torch.linalg.inv(H[0])).float(), pa)
    ta, ina = teacher.sample(int(item["source"]), warp_points(torch.linalg.inv(H[0]).float(), pa))
    tb, inb = teacher.sample(int(item["source"]), warp_points(torch.linalg.inv(H[1]).float(), pb))
    ok = ina & inb
    assert ok.sum() > 10
    assert torch.allclose(ta[ok], tb[ok], atol=2e-3)
    same = (ta[ok] * tb[ok]).sum(1).mean()
    shuffled = (ta[ok] * tb[ok].roll(1, 0)).sum(1).mean()
    assert same > shuffled + 0.2, (float(same), float(shuffled))
    assert teacher_dim(ALIKE_N) == teacher.dim == 128


@needs_alike
@pytest.mark.parametrize("warmup", [0, 40])
def test_stage1_trains_the_projection_towards_the_teacher(photo_dir, tmp_path, warmup):
    """40 steps with the teacher: its loss falls (the projection learns; with warmup 40 only the
    projection does); the shipped file holds the network only."""
    out = tmp_path / "run"
    args = ["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(out), *TINY, "--model", "lite2",
            "--max-steps", "40", "--log_every", "1", "--ckpt_every", "100", "--teacher", str(ALIKE_N),
            "--teacher_weight", "1.0", "--teacher_warmup", str(warmup), "--teacher_cache", str(tmp_path / "cache")]
    assert stage1.main(args) == 0
    rows = read_log(out / "log_stage1.csv")
    teach = np.array([r["teacher"] for r in rows])
    assert np.isfinite(teach).all() and teach[-5:].mean() < 0.8 * teach[:5].mean(), teach
    state = torch.load(out / "stage1.pt", weights_only=True)
    assert not any(k.startswith("distill") for k in state)
    assert "distill.weight" in torch.load(out / "last.pt", weights_only=False)["model"]


def test_init_weights_starts_from_the_file(photo_dir, tmp_path):
    """--init_weights: the run starts from the given network (checked at step 0 through lr = 0)."""
    first = tmp_path / "a"
    assert stage1.main(["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(first), *TINY,
                        "--model", "lite2", "--max-steps", "3", "--ckpt_every", "100"]) == 0
    second = tmp_path / "b"
    assert stage1.main(["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(second), *TINY,
                        "--model", "lite2", "--max-steps", "2", "--ckpt_every", "100", "--lr", "0",
                        "--init_weights", str(first / "stage1.pt")]) == 0
    a = torch.load(first / "stage1.pt", weights_only=True)
    b = torch.load(second / "stage1.pt", weights_only=True)
    conv = "block8.0.0.weight"
    assert torch.equal(a[conv], b[conv])


@pytest.mark.parametrize(
    "flags, error, text",
    [
        (["--teacher", "missing/alike-n.pth", "--teacher_weight", "1"], MissingFileError, "--teacher"),
        (["--init_weights", "missing.pt"], MissingFileError, "--init_weights"),
        (["--teacher_weight", "-1"], BadInputError, "--teacher_weight"),
        (["--teacher_warmup", "-2"], BadInputError, "--teacher_warmup"),
    ],
)
def test_bad_teacher_settings_fail_before_work(photo_dir, tmp_path, flags, error, text):
    with pytest.raises(error, match=text):
        stage1.load_config(stage1.parser(), ["--data", str(photo_dir), "--out", str(tmp_path / "o"), *flags])


def test_teacher_file_of_another_kind_is_refused(tmp_path):
    bad = Path(tmp_path) / "weights.pth"
    bad.write_bytes(b"x")
    with pytest.raises(BadInputError, match="alike-<t|s|n|l>"):
        teacher_dim(bad)


def test_naming_a_teacher_is_enough(photo_dir, tmp_path):
    """The recipes name no teacher; naming one uses the recipe's weight (1.0), no second flag."""
    base = ["--data", str(photo_dir), "--out", str(tmp_path / "o")]
    plain = stage1.load_config(stage1.parser(), base)
    assert plain.teacher is None and plain.teacher_weight == 1.0
    if ALIKE_N.is_file():
        named = stage1.load_config(stage1.parser(), [*base, "--teacher", str(ALIKE_N)])
        assert named.teacher == str(ALIKE_N) and named.teacher_weight == 1.0


def test_teacher_with_zero_weight_warns(photo_dir, tmp_path, caplog):
    weights = tmp_path / "alike-n.pth"
    weights.write_bytes(b"x")  # never read: with weight 0 no teacher is built
    args = ["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(tmp_path / "run"), *TINY,
            "--model", "lite2", "--max-steps", "1", "--ckpt_every", "100", "--teacher", str(weights),
            "--teacher_weight", "0"]
    with caplog.at_level("WARNING"):
        assert stage1.main(args) == 0
    assert "no teacher term" in caplog.text


def test_init_weights_from_a_training_checkpoint(photo_dir, tmp_path):
    """The committed stage-1 checkpoint (model = the Describe wrapper, keys net.*) starts a run as is."""
    ckpt = Path(__file__).resolve().parents[2] / "training" / "checkpoints" / "lite2_stage1_last.pt"
    out = tmp_path / "run"
    assert stage1.main(["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(out), *TINY,
                        "--model", "lite2", "--max-steps", "1", "--ckpt_every", "100", "--lr", "0",
                        "--init_weights", str(ckpt)]) == 0
    want = torch.load(ckpt, weights_only=False)["model"]["net.block8.0.0.weight"]
    assert torch.equal(torch.load(out / "stage1.pt", weights_only=True)["block8.0.0.weight"], want)
