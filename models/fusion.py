"""Inference-time rewrites of a trained network: BatchNorm folded into its convolution, NHWC layout.

Both are exact up to float rounding and cut the eager CPU forward of LiteNet at KITTI size from
~100 ms to ~37 ms (2 threads, measured in ``frontend/README.md``): oneDNN's convolutions are much
faster in channels-last, and a folded BatchNorm is one full-resolution pass fewer per block.
Training never sees the rewritten module (stage 2 loads the un-fused network).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _graph_capture() -> bool:
    """Tracing, ONNX export or ``torch.compile`` is recording the network: use plain ops there
    (layout tricks and oneDNN-only ops do not export, and the compilers choose layouts themselves)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def channels_last_view(x: torch.Tensor) -> torch.Tensor:
    """``x [B, 1, H, W]`` with channels-last strides ``(H*W, 1, W, 1)``, no copy.

    For one channel both layouts hold the same bytes, so ``contiguous(channels_last)`` keeps the
    NCHW strides and oneDNN then writes the first convolution's output in NCHW: every 8-channel
    layer after it ran 3-4x slower (a depthwise 3x3 at 192x624: 1.0 ms against 0.25 ms). This view
    makes the whole network run channels-last. Other shapes, and graph capture, are returned unchanged.
    """
    if x.dim() != 4 or x.shape[1] != 1 or not x.is_contiguous() or _graph_capture():
        return x
    b, _, h, w = x.shape
    return x.as_strided(x.shape, (h * w, 1, w, 1))


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (running statistics)."""
    scale = (bn.running_var + bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(bias * scale + shift)
    return fused


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential``.

    In place; the BatchNorm becomes ``nn.Identity``. Returns how many pairs were folded.
    """
    folded = 0
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq[i], seq[i + 1] = fold_conv_bn(conv, bn), nn.Identity()
                folded += 1
    return folded


def _pointwise_available() -> bool:
    """oneDNN's fused convolution + element-wise op (what ``torch.compile`` emits on the CPU)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class OneDNNConv(nn.Module):
    """``conv(x)``, or ``relu(conv(x))``, as one oneDNN primitive with a pre-packed weight (CPU).

    Two savings over ``nn.Conv2d`` (+ ``nn.ReLU``), both exact (the same oneDNN kernel):

    - the ReLU is a post-op of the convolution instead of a second full pass over its output
      (``aten::clamp_min_`` was ~10 % of lite2's CPU forward);
    - the weight is reordered into oneDNN's blocked layout once per input shape and kept
      (``mkldnn._reorder_convolution_weight``, what ``torch.compile`` does), instead of at every
      call: 0.5-1.0 ms of lite2's ~8 ms forward at 640x480 (``models/README.md``).

    The packed weights are cached by input shape, layout and dtype, and by the weight's storage
    and version (a new weight, or an in-place update of it, repacks); at most :attr:`max_cached`
    entries are kept.
    Elsewhere (CUDA, autograd, graph capture, other dtypes) it is ``conv`` then ``relu``.

    ``x [B, Cin, H, W]`` -> ``[B, Cout, H', W']``.
    """

    max_cached = 8

    def __init__(self, conv: nn.Conv2d, activation: str = "relu") -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("OneDNNConv needs a zero-padded convolution with numeric padding")
        if activation not in ("relu", "none"):
            raise ValueError(f"activation must be 'relu' or 'none', got {activation!r}")
        self.conv = conv
        self.activation = activation
        self._packed: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.relu(y) if self.activation == "relu" else y

    def _weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The packed weight and the bias for input ``x`` (packed on first use of its shape)."""
        c = self.conv
        weight = c.weight
        version = -1 if weight.is_inference() else weight._version  # inference tensors carry no version counter
        key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last), x.dtype, weight.data_ptr(), version)
        got = self._packed.get(key)
        if got is None:  # detach and convert only here, not on every call
            w, b = weight.detach(), c.bias.detach() if c.bias is not None else None
            if w.dtype != x.dtype:  # under a CPU autocast the input may be bf16 while the weights stay fp32
                w, b = w.to(x.dtype), (b.to(x.dtype) if b is not None else None)
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, list(c.padding), list(c.stride), list(c.dilation), c.groups, list(x.shape)
            )
            if len(self._packed) >= self.max_cached:
                self._packed.clear()
            got = self._packed[key] = (packed, b)
        return got

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.bfloat16)
            or torch.is_grad_enabled()
            or _graph_capture()
        ):
            return self._plain(x)
        c = self.conv
        w, b = self._weights(x)
        return torch.ops.mkldnn._convolution_pointwise(
            x, w, b, list(c.padding), list(c.stride), list(c.dilation), c.groups, self.activation, [], ""
        )


def fuse_convolutions(module: nn.Module) -> int:
    """Replace every zero-padded ``nn.Conv2d`` in ``module`` by a :class:`OneDNNConv`, in place.

    Run after :func:`fold_batchnorm`, which leaves an ``Identity`` where the BatchNorm was. A
    ``Conv2d [Identity]* ReLU`` run inside an ``nn.Sequential`` becomes one convolution with a
    fused ReLU (the ReLU becomes ``nn.Identity``); every other convolution is wrapped without an
    activation, for its packed weight. Returns how many convolutions were wrapped (0 when oneDNN's
    fused op is missing from this torch build).
    """
    if not _pointwise_available():
        return 0

    def plain(m: nn.Module) -> bool:
        return type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)

    fused = 0
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq)):
            if not plain(seq[i]):
                continue
            j = i + 1
            while j < len(seq) and isinstance(seq[j], nn.Identity):
                j += 1
            if j < len(seq) and isinstance(seq[j], nn.ReLU):
                seq[i], seq[j] = OneDNNConv(seq[i], "relu"), nn.Identity()
                fused += 1
    for parent in list(module.modules()):
        if isinstance(parent, OneDNNConv):
            continue
        for name, child in list(parent.named_children()):
            if plain(child):
                setattr(parent, name, OneDNNConv(child, "none"))
                fused += 1
    return fused


def prepare_for_inference(net: nn.Module) -> nn.Module:
    """Eval mode, BatchNorm folded, every convolution a pre-packed oneDNN primitive with its ReLU
    fused on the CPU (:class:`OneDNNConv`), channels-last weights (in place; returns ``net``)."""
    net.eval()
    fold_batchnorm(net)
    fuse_convolutions(net)
    return net.to(memory_format=torch.channels_last)
