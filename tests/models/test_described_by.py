"""models.described_by: one extractor's keypoints with another network's descriptors."""

from __future__ import annotations

import pytest
import torch

import models
from models.described_by import DescribedBy
from models.errors import BadInputError
from models.lite2 import LiteNet2
from models.traqpoint import TraqPoint
from tests.conftest import randomised


def lite2(seed: int) -> TraqPoint:
    net = randomised(LiteNet2, refine_dim=8, refine_kind="mlp")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # another network per seed
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return TraqPoint(net, num_keypoints=50, precision="fp32")


def test_keypoints_of_the_detector_descriptors_of_the_describer():
    a, b = lite2(0), lite2(1)
    img = torch.rand(1, 1, 70, 100)  # padded inside
    fa, fb = a.extract(img)[0], b.extract(img)[0]
    assert len(fa["keypoints"]) > 10 and not torch.equal(fa["keypoints"], fb["keypoints"])
    same = DescribedBy(a, a).extract(img)[0]  # a network described by itself is itself
    for key in ("keypoints", "scores", "descriptors"):
        torch.testing.assert_close(same[key], fa[key])
    mixed = DescribedBy(a, b).extract(img)[0]
    assert torch.equal(mixed["keypoints"], fa["keypoints"]) and torch.equal(mixed["scores"], fa["scores"])
    with torch.no_grad():  # b's dense map, sampled at a's keypoints
        dense = b.net(torch.nn.functional.pad(img, (0, 28, 0, 26), mode="replicate"))["descriptors"]
    expect = models.sampling.sample_descriptors(dense, fa["keypoints"][None], (96, 128))[0]
    torch.testing.assert_close(mixed["descriptors"], expect)
    assert mixed["descriptors"].shape == (len(fa["keypoints"]), b.descriptor_dim)
    ext = DescribedBy(a, b)
    assert ext.default_matcher == b.default_matcher and ext.matcher_settings() == b.matcher_settings()


def test_describer_must_have_a_dense_map():
    with pytest.raises(BadInputError, match="single-scale TraqPoint"):
        DescribedBy(lite2(0), models.build("orb"))
    multi = lite2(1)
    multi.scales = (1.0, 0.5)
    with pytest.raises(BadInputError, match="single-scale TraqPoint"):
        DescribedBy(lite2(0), multi)
