"""training.refine: the sub-pixel head learns to re-find image structure after a sub-pixel warp."""

from __future__ import annotations

import pytest
import torch

from models.lite2 import LiteNet2
from training import refine


def blob_pair(shift: tuple[float, float], hw=(64, 96), n: int = 60, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch item: Gaussian blobs at random sub-pixel centres and the same blobs moved by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * torch.tensor([hw[1] - 16.0, hw[0] - 16.0]) + 8
    y, x = torch.meshgrid(torch.arange(hw[0] * 1.0), torch.arange(hw[1] * 1.0), indexing="ij")

    def render(c: torch.Tensor) -> torch.Tensor:
        d2 = (x[None] - c[:, 0, None, None]) ** 2 + (y[None] - c[:, 1, None, None]) ** 2
        return torch.exp(-d2 / 2.0).amax(0)

    H1 = torch.eye(3)
    H1[0, 2], H1[1, 2] = shift
    return {
        "images": torch.stack([render(centres), render(centres + torch.tensor(shift))])[None, :, None],
        "H": torch.stack([torch.eye(3), H1])[None],
        "valid": torch.ones(1, 2, 1, *hw, dtype=torch.bool),
    }


@pytest.mark.parametrize(("kind", "width"), [("conv", 8), ("mlp", 64)])
def test_refine_head_training_lowers_the_reprojection_error(tmp_path, kind, width):
    torch.manual_seed(0)
    weights = tmp_path / "lite2.pt"
    torch.save(LiteNet2().state_dict(), weights)
    net = refine.build(str(weights), refine_dim=width, refine_kind=kind)
    assert net.conf["refine_kind"] == kind
    assert all(p.requires_grad == n.startswith("refine_head.") for n, p in net.named_parameters())
    batch = blob_pair((0.7, -0.4))
    first = refine.batch_loss(net, batch, k=40)
    # zero-initialised head = block centres: the error is the 2x2 quantisation, well above 0.3 px
    assert first["err_head_px"] > 0.3 and first["points"] > 20
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(60):
        terms = refine.batch_loss(net, batch, k=40)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    last = refine.batch_loss(net, batch, k=40)
    assert last["total"] < 0.7 * first["total"]
    assert last["err_head_px"] < 0.6 * first["err_head_px"]


def test_refine_cli_rejects_bad_numbers_and_missing_weights(tmp_path, capsys):
    assert refine.main(["--steps", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert refine.main(["--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"), "--steps", "1"]) == 1
    assert "lite2 weights not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert refine.main(["--weights", str(corrupt), "--out", str(tmp_path / "o"), "--steps", "1"]) == 1
    assert "cannot read weight file" in capsys.readouterr().err
