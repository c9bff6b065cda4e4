"""Per-layer cost of a dense network: ``python -m benchmarks.layer_profile --methods traqpoint-lite,traqpoint-lite-v1``.

For each convolution of the inference build (BatchNorm folded, channels-last; what ``models.build``
returns) at one image size: output shape, multiply-accumulates and milliseconds (median over
``--rounds`` forward passes, timed by forward hooks), then the whole forward without hooks. The
gap between the sum of the convolutions and the forward is the element-wise work (activations,
upsampling, additions, normalisation). This is the measurement behind the lite v2 design
(``models/lite2.py``, ``models/README.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn

import models
from models.errors import TraqPointError
from models.fusion import OneDNNConv
from models.machine import machine_line
from models.precision import autocast_context

DEFAULT_HW = (384, 1248)  # KITTI 1226x370 padded to a multiple of 32


def conv_macs(conv: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one convolution call (``nn.Conv2d`` or a fused :class:`OneDNNConv`)
    producing ``out [B, C, H, W]``."""
    conv = getattr(conv, "conv", conv)
    kh, kw = conv.kernel_size
    return out.numel() * (conv.in_channels // conv.groups) * kh * kw


def profile_layers(net: nn.Module, image: torch.Tensor, rounds: int, precision: str) -> dict:
    """``{"layers": [{name, shape, mmac, ms}], "conv_ms", "forward_ms", "gmac"}`` for ``net(image)``."""
    times: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    hooks = []

    def before(name):
        def hook(_m, _inp):
            info.setdefault(name, {})["t0"] = time.perf_counter()

        return hook

    def after(name):
        def hook(m, _inp, out):
            times.setdefault(name, []).append(time.perf_counter() - info[name]["t0"])
            info[name].update(shape=list(out.shape), mmac=conv_macs(m, out) / 1e6)

        return hook

    modules = dict(net.named_modules())
    parents = {n: modules[n.rpartition(".")[0]] for n in modules if n}  # a fused conv is timed by its wrapper
    for name, m in net.named_modules():
        if isinstance(m, OneDNNConv) or (isinstance(m, nn.Conv2d) and not isinstance(parents.get(name), OneDNNConv)):
            hooks += [m.register_forward_pre_hook(before(name)), m.register_forward_hook(after(name))]
    with torch.inference_mode(), autocast_context(image.device, precision):
        for _ in range(2):  # warm-up: oneDNN primitive creation
            net(image)
        times.clear()
        for _ in range(rounds):
            net(image)
        for h in hooks:
            h.remove()
        forward = []
        for _ in range(rounds):
            t = time.perf_counter()
            net(image)
            forward.append(time.perf_counter() - t)
    layers = [
        {"name": n, "shape": info[n]["shape"], "mmac": info[n]["mmac"], "ms": 1e3 * statistics.median(t)}
        for n, t in times.items()
    ]
    return {
        "layers": layers,
        "conv_ms": sum(row["ms"] for row in layers),
        "forward_ms": 1e3 * statistics.median(forward),
        "gmac": sum(row["mmac"] for row in layers) / 1e3,
    }


def print_profile(name: str, prof: dict) -> None:
    print(f"\n{name}: {prof['gmac']:.2f} GMAC, forward {prof['forward_ms']:.2f} ms "
          f"(convolutions {prof['conv_ms']:.2f} ms, timed with hooks)")
    print(f"{'layer':26s} {'output':>20s} {'MMAC':>8s} {'ms':>7s} {'GMAC/s':>7s}")
    for row in prof["layers"]:
        rate = row["mmac"] / max(row["ms"], 1e-6)
        print(f"{row['name']:26s} {str(tuple(row['shape'])):>20s} {row['mmac']:8.1f} {row['ms']:7.2f} {rate:7.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.layer_profile", description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="traqpoint-lite,traqpoint-lite-v1", help="TraqPoint methods to profile")
    p.add_argument("--size", type=int, nargs=2, default=DEFAULT_HW, metavar=("H", "W"), help="input size (x32)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=20, help="timed forward passes per layer")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="network precision")
    args = p.parse_args(argv)
    h, w = args.size
    if h <= 0 or w <= 0 or h % 32 or w % 32 or args.threads < 1 or args.rounds < 1:
        print("benchmarks.layer_profile: error: --size must be positive multiples of 32, --threads and "
              "--rounds >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 1, h, w).contiguous(memory_format=torch.channels_last)
    try:
        for name in [n.strip() for n in args.methods.split(",") if n.strip()]:
            ext = models.build(name, precision=args.precision)
            net = getattr(ext, "net", None)
            if net is None:
                raise TraqPointError(f"{name} has no dense network to profile")
            prof = profile_layers(net, image, args.rounds, args.precision)
            print_profile(f"{name} at {w}x{h}, {args.precision}", prof)
    except TraqPointError as err:
        print(f"benchmarks.layer_profile: error: {err}", file=sys.stderr)
        return 2
    print(machine_line(precision=args.precision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
