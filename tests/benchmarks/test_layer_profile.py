"""benchmarks.layer_profile: MAC counts and the per-layer table."""

from __future__ import annotations

import torch
import torch.nn as nn

from benchmarks.layer_profile import conv_macs, main, profile_layers
from models.lite2 import LiteNet2


def test_conv_macs_counts_groups_and_kernel():
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    out = conv(torch.rand(1, 8, 10, 12))
    assert conv_macs(conv, out) == 16 * 10 * 12 * 4 * 9


def test_profile_covers_every_convolution():
    net = LiteNet2().eval()
    prof = profile_layers(net, torch.rand(1, 1, 64, 96), rounds=1, precision="fp32")
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(row["name"] for row in prof["layers"]) == sorted(convs)
    assert prof["gmac"] > 0 and prof["forward_ms"] > 0


def test_bad_size_is_one_line(capsys):
    assert main(["--size", "100", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "multiples of 32" in err
