"""XFeat's released weights: the initializers of the authors' ``xfeat.onnx``, as an :class:`XFeatNet` state dict.

The ONNX graph (exported by the authors with BatchNorm folded into the convolutions) holds 27
``Conv`` nodes. Visited in graph order they are the convolutions of the forward pass, which is the
order :class:`~models.xfeat_net.XFeatNet` declares them in; each node's weight and bias
initializers become that convolution's tensors. Shapes, strides and paddings are checked node by
node, so a different graph is one clear error rather than a silent mis-assignment.

The file comes from verlab/accelerated_features (``weights/xfeat.onnx``, Apache-2.0) and is kept in
``../shared/weights/xfeat``, never committed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .errors import BadInputError, MissingFileError
from .xfeat_net import XFeatNet

WEIGHTS_HINT = (
    "XFeat's weights come from github.com/verlab/accelerated_features (weights/xfeat.onnx, Apache-2.0); "
    "expected in ../shared/weights/xfeat (see third_party/README.md)"
)


def _attr(node, name: str, default: list[int]) -> list[int]:
    """An integer or integer-list attribute of an ONNX node as a list (``default`` when absent)."""
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else [int(a.i)]
    return default


def read_conv_initializers(path: str | Path) -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    """``(node weight name, weight, bias, {"stride", "padding"})`` for each ``Conv`` node of the graph, in order.

    Raises:
        MissingFileError: ``path`` does not exist (the message says where the file comes from).
        BadInputError: not a readable ONNX model, or a convolution without a constant weight/bias.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weight file not found: {path} ({WEIGHTS_HINT})")
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise BadInputError("reading xfeat.onnx needs the onnx package (`pip install onnx`)") from None
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        raise BadInputError(f"cannot read {path} as an ONNX model: {type(err).__name__}: {err}") from None
    inits = {t.name: t for t in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise BadInputError(f"{path}: Conv node {node.name or node.output[0]} has no constant weight and bias")
        weight, bias = (torch.from_numpy(numpy_helper.to_array(inits[n]).copy()) for n in node.input[1:3])
        pads = _attr(node, "pads", [0, 0, 0, 0])
        geometry = {"stride": tuple(_attr(node, "strides", [1, 1])), "padding": tuple(pads[:2])}
        if pads[:2] != pads[2:] or _attr(node, "group", [1]) != [1] or _attr(node, "dilations", [1, 1]) != [1, 1]:
            geometry["unsupported"] = True
        convs.append((node.input[1], weight, bias, geometry))
    return convs


def xfeat_state_dict(path: str | Path, net: XFeatNet | None = None) -> dict[str, torch.Tensor]:
    """The ONNX file's convolutions as a state dict of ``net`` (a fresh :class:`XFeatNet` by default).

    Raises:
        MissingFileError: the file is missing.
        BadInputError: the graph's convolutions do not match XFeatNet's in number, shape or geometry.
    """
    net = net or XFeatNet()
    convs = read_conv_initializers(path)
    ours = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(ours):
        raise BadInputError(f"{path} has {len(convs)} convolutions, XFeatNet has {len(ours)}: not XFeat's graph")
    state = {}
    for (name, conv), (onnx_name, weight, bias, geometry) in zip(ours, convs):
        expected = {"stride": conv.stride, "padding": conv.padding}
        if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape or geometry != expected:
            raise BadInputError(
                f"{path}: convolution {onnx_name} ({tuple(weight.shape)}, {geometry}) does not fit "
                f"XFeatNet.{name} ({tuple(conv.weight.shape)}, {expected})"
            )
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
    return state


def load_xfeat_net(path: str | Path) -> XFeatNet:
    """An :class:`XFeatNet` in eval mode with the weights of ``path`` (the authors' ``xfeat.onnx``)."""
    net = XFeatNet()
    net.load_state_dict(xfeat_state_dict(path, net), strict=True)
    return net.eval()
