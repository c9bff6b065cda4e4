import numpy as np
import pytest
import torch

import models
from models.errors import BadInputError, MissingFileError
from models.image_io import read_image, to_tensor
from models.sampling import sample_descriptors


@pytest.fixture(scope="module")
def lite():
    return models.build("traqpoint-lite", weights="random", num_keypoints=256)


@pytest.mark.parametrize("batch", [1, 4])
def test_lite_network_shapes_and_dtypes(batch):
    from models.lite import LiteNet

    out = LiteNet().eval()(torch.rand(batch, 1, 64, 96))
    assert out["descriptors"].shape == (batch, 64, 8, 12) and out["descriptors"].dtype == torch.float32
    assert out["matchability"].shape == (batch, 1, 8, 12)
    assert out["logits"].shape == (batch, 1, 64, 96)
    assert torch.allclose(out["descriptors"].norm(dim=1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", ["traqpoint-lite", "orb", "sift"])
def test_extractor_outputs(batch, name, lite):
    ext = lite if name == "traqpoint-lite" else models.build(name, num_keypoints=256)
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(0, 255, (batch, 1, 100, 150), dtype=np.uint8)).float() / 255
    feats = ext.extract(imgs)
    assert len(feats) == batch
    for f in feats:
        n = len(f["keypoints"])
        assert 0 < n <= 256
        assert f["keypoints"].shape == (n, 2) and f["keypoints"].dtype == torch.float32
        assert f["scores"].shape == (n,) and f["descriptors"].shape == (n, ext.descriptor_dim)
        assert torch.allclose(f["descriptors"].norm(dim=1), torch.ones(n), atol=1e-4)
        x, y = f["keypoints"].T
        assert (x >= -0.5).all() and (x <= 149.5).all() and (y >= -0.5).all() and (y <= 99.5).all()


@pytest.mark.parametrize("name", ["traqpoint-lite", "orb", "sift"])
def test_black_image_gives_no_crash(name, lite):
    ext = lite if name == "traqpoint-lite" else models.build(name)
    f = ext.extract_numpy(np.zeros((64, 80), np.uint8))[0]
    assert f["descriptors"].shape[1] == ext.descriptor_dim  # zero or few keypoints, valid shapes


def test_sampling_at_cell_centres_is_exact():
    dense = torch.nn.functional.normalize(torch.randn(1, 4, 3, 5), dim=1)
    pts = torch.tensor([[[3.5, 3.5], [19.5, 11.5]]])  # centres of cells (0,0) and (1,2) at stride 8
    d = sample_descriptors(dense, pts, (24, 40))
    assert torch.allclose(d[0, 0], dense[0, :, 0, 0], atol=1e-6)
    assert torch.allclose(d[0, 1], dense[0, :, 1, 2], atol=1e-6)
    assert sample_descriptors(dense, torch.zeros(1, 0, 2), (24, 40)).shape == (1, 0, 4)


def test_unknown_method():
    with pytest.raises(BadInputError, match="unknown method 'superglue'"):
        models.build("superglue")


def test_the_renamed_lite2_method_names_its_new_name():
    with pytest.raises(BadInputError, match="'traqpoint-lite2' is now called 'traqpoint-lite'"):
        models.build("traqpoint-lite2")


def test_the_default_lite_is_v2_and_v1_stays_available():
    from models.lite import LiteNet
    from models.lite2 import LiteNet2

    assert isinstance(models.build("traqpoint-lite", precision="fp32").net, LiteNet2)
    v1 = models.build("traqpoint-lite-v1", precision="fp32")
    assert isinstance(v1.net, LiteNet) and v1.name == "traqpoint-lite-v1"


def test_missing_and_wrong_weights(tmp_path):
    with pytest.raises(MissingFileError, match="nothing.pt"):
        models.build("traqpoint-lite", weights=tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="cannot read weight file"):
        models.build("traqpoint-lite", weights=bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(BadInputError, match="does not fit LiteNet"):
        models.build("traqpoint-lite", weights=wrong)


def test_image_errors(tmp_path):
    with pytest.raises(MissingFileError, match="image not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(BadInputError, match="cannot decode image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(BadInputError, match="must be HxW"):
        to_tensor(np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(BadInputError, match="NaN"):
        to_tensor(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(BadInputError, match="share a size"):
        to_tensor([np.zeros((32, 32), np.uint8), np.zeros((32, 40), np.uint8)])


def test_sampled_descriptors_are_unit_and_match_f_normalize():
    dense = torch.randn(2, 16, 6, 10) * 3
    dense[1] = 0  # an all-zero map: zero descriptors, no NaN (F.normalize's eps)
    pts = torch.rand(2, 50, 2) * torch.tensor([79.0, 47.0])
    d = sample_descriptors(dense, pts, (48, 80))
    grid = ((pts + 0.5) / torch.tensor([80.0, 48.0]) * 2 - 1)[:, None]
    ref = torch.nn.functional.grid_sample(dense, grid, padding_mode="border", align_corners=False)[:, :, 0]
    ref = torch.nn.functional.normalize(ref.transpose(1, 2), dim=-1)
    assert d.shape == (2, 50, 16) and torch.isfinite(d).all()
    assert torch.allclose(d, ref, atol=1e-6) and torch.allclose(d[0].norm(dim=-1), torch.ones(50), atol=1e-5)
    assert (d[1] == 0).all()
