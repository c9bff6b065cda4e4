"""training.merge_heads: lite2's policy and sub-pixel head moved onto another descriptor backbone."""

from __future__ import annotations

import pytest
import torch

from models.fusion import prepare_for_inference
from models.lite2 import LiteNet2
from models.traqpoint import TraqPoint
from tests.conftest import randomised
from training import merge_heads


def extractor(net: LiteNet2) -> TraqPoint:
    return TraqPoint(prepare_for_inference(net), num_keypoints=60, precision="fp32")


def test_merged_network_detects_the_heads_keypoints_with_the_new_descriptor(tmp_path):
    heads = randomised(LiteNet2, refine_dim=16, refine_kind="mlp")
    slim = randomised(LiteNet2, **LiteNet2.SLIM)
    torch.manual_seed(1)
    with torch.no_grad():  # a descriptor unlike the heads' own
        for p in slim.parameters():
            p.add_(0.1 * torch.randn_like(p))
    merged_state = merge_heads.merge(slim.state_dict(), heads.state_dict())
    conf = LiteNet2.conf_from_state(merged_state)
    assert conf["refine_kind"] == "mlp" and conf["block4_depth"] == 1 and conf["separable32"]
    merged = LiteNet2(**conf).eval()
    merged.load_state_dict(merged_state)
    img = torch.rand(1, 1, 64, 96)
    a, b = extractor(merged).extract(img)[0], extractor(heads).extract(img)[0]
    assert len(a["keypoints"]) > 20
    torch.testing.assert_close(a["keypoints"], b["keypoints"])  # heads read the image only
    assert not torch.allclose(a["descriptors"], b["descriptors"])  # the descriptor is the slim one
    with torch.no_grad():
        torch.testing.assert_close(merged.describe(img)["descriptors"], slim.describe(img)["descriptors"])


def test_cli_writes_weights_and_rejects_bad_inputs(tmp_path, capsys):
    torch.save(randomised(LiteNet2, **LiteNet2.SLIM).state_dict(), tmp_path / "slim.pt")
    torch.save(randomised(LiteNet2, refine_dim=8).state_dict(), tmp_path / "heads.pt")
    out = tmp_path / "o" / "merged.pt"
    args = ["--descriptor", str(tmp_path / "slim.pt"), "--heads", str(tmp_path / "heads.pt"), "--out", str(out)]
    assert merge_heads.main(args) == 0 and out.is_file()
    assert LiteNet2.conf_from_state(torch.load(out))["refine_dim"] == 8
    assert merge_heads.main(["--descriptor", str(tmp_path / "none.pt"), "--out", str(out)]) == 1
    assert "descriptor (stage-1 lite2) weights not found" in capsys.readouterr().err
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    assert merge_heads.main(["--descriptor", str(tmp_path / "other.pt"), "--heads", str(tmp_path / "heads.pt"),
                             "--out", str(out)]) == 1
    assert "--descriptor is not a lite2 state dict" in capsys.readouterr().err
    torch.save(randomised(LiteNet2, context_dim=4).state_dict(), tmp_path / "context.pt")  # reads the backbone
    assert merge_heads.main(["--descriptor", str(tmp_path / "slim.pt"), "--heads", str(tmp_path / "context.pt"),
                             "--out", str(out)]) == 1
    assert "does not carry over" in capsys.readouterr().err


@pytest.mark.parametrize("slim", [False, True])
def test_backbone_layouts_keep_the_output_shapes_and_round_trip(slim):
    conf = LiteNet2.SLIM if slim else {}
    net = LiteNet2(**conf).eval()
    got = LiteNet2.conf_from_state(net.state_dict())
    assert {k: got[k] for k in LiteNet2.SLIM} == {**{k: LiteNet2.default_conf[k] for k in LiteNet2.SLIM}, **conf}
    out = net(torch.rand(2, 1, 64, 96))
    assert out["descriptors"].shape == (2, 64, 8, 12) and out["logits"].shape == (2, 1, 64, 96)
    with pytest.raises(ValueError, match="block4_depth"):
        LiteNet2(block4_depth=3)
