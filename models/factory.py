"""``models.build(name)``: the one place that turns a method name into an extractor."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .allocator import keep_freed_memory
from .base import Extractor
from .errors import BadInputError, MissingFileError
from .weights_io import PACKAGE_WEIGHTS, load_checkpoint, load_into

log = logging.getLogger(__name__)

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
#: dual-softmax threshold of the lite networks for one two-view estimate: on homography pairs of the
#: training photographs, their matches with P >= 0.2 are right more often than wrong, for both
#: shipped networks and zoom ranges 0.75-1.35 and 0.5-2 (``python -m training.calibrate_matcher
#: [--method traqpoint-lite-v1]``; recalibrate after retraining). Tracking and SfM keep 0.01.
LITE_TWO_VIEW_THRESHOLD = 0.2
LITE_WEIGHTS = PACKAGE_WEIGHTS / "traqpoint_lite.pt"  # the default: v2 network (models/lite2.py) + sub-pixel head
LITE_V1_WEIGHTS = PACKAGE_WEIGHTS / "traqpoint_lite_v1.pt"  # the first lite network (models/lite.py)
METHODS = (
    "traqpoint-lite", "traqpoint-lite-ms", "traqpoint-lite-v1", "traqpoint",
    "orb", "sift", "alike-t", "alike-n", "xfeat",
)
# extractors with a precision option
PRECISION_METHODS = ("traqpoint-lite", "traqpoint-lite-ms", "traqpoint-lite-v1", "traqpoint")
#: methods matched by the dual-softmax, whose two-view threshold ``build(two_view_threshold=...)`` sets
TWO_VIEW_THRESHOLD_METHODS = PRECISION_METHODS
RENAMED = {"traqpoint-lite2": "traqpoint-lite"}  # earlier names: one clear error naming the new one
PYRAMID = (1.0, 0.71, 0.5, 0.35)  # traqpoint-lite-ms: half-octave steps down to ~1/3 (zoom up to ~3x)


def _lite(
    weights: str | Path | None, device: str, name: str = "traqpoint-lite", version: int = 2, **kw
) -> Extractor:
    """A lite extractor; a checkpoint's tensors pick v1 or v2, ``version`` only for ``weights="random"``."""
    from .fusion import prepare_for_inference
    from .lite import LiteNet
    from .lite2 import LiteNet2
    from .traqpoint import TraqPoint

    if weights == "random":
        log.warning("%s: running with RANDOM weights (requested explicitly)", name)
        net = LiteNet2() if version == 2 else LiteNet()
    else:
        path = Path(weights) if weights else LITE_WEIGHTS
        hint = "train them with `python -m training.stage1` then `training.stage2` (training/README.md)"
        state = load_checkpoint(path, hint)
        arch = LiteNet2 if LiteNet2.fits_state(state) else LiteNet  # v2 checkpoints have a stem
        net = arch(**arch.conf_from_state(state))
        load_into(net, state, str(path))
    kw.setdefault("precision", "auto")  # bf16 backbone where the CPU runs it natively; policy stays fp32
    kw.setdefault("two_view_threshold", LITE_TWO_VIEW_THRESHOLD)
    return TraqPoint(prepare_for_inference(net), name=name, device=device, **kw)


def _lite_pyramid(weights: str | Path | None, device: str, **kw) -> Extractor:
    """The same network detecting on an image pyramid, for wide-baseline pairs with scale change."""
    kw.setdefault("scales", PYRAMID)
    return _lite(weights, device, name="traqpoint-lite-ms", **kw)


def _lite_v1(weights: str | Path | None, device: str, **kw) -> Extractor:
    """The first lite network (``models.lite``, 1.9 GMAC at KITTI size) with its shipped weights."""
    return _lite(weights or LITE_V1_WEIGHTS, device, name="traqpoint-lite-v1", version=1, **kw)


def _paper(weights: str | Path | None, device: str, **kw) -> Extractor:
    from .paper import build_paper_extractor

    return build_paper_extractor(weights, device=device, **kw)


def _alike(variant: str):
    def make(weights: str | Path | None, device: str, **kw) -> Extractor:
        from .alike import build_alike

        path = Path(weights) if weights else SHARED_WEIGHTS / "alike" / f"alike-{variant}.pth"
        return build_alike(variant, path, device=device, **kw)

    return make


def _xfeat(weights: str | Path | None, device: str, **kw) -> Extractor:
    from .xfeat import build_xfeat

    return build_xfeat(Path(weights) if weights else SHARED_WEIGHTS / "xfeat" / "xfeat.onnx", device=device, **kw)


def _opencv(cls_name: str):
    def make(weights: str | Path | None, device: str, **kw) -> Extractor:
        from . import opencv_features

        return getattr(opencv_features, cls_name)(**kw)

    return make


BUILDERS = {
    "traqpoint-lite": _lite,
    "traqpoint-lite-ms": _lite_pyramid,
    "traqpoint-lite-v1": _lite_v1,
    "traqpoint": _paper,
    "orb": _opencv("ORB"),
    "sift": _opencv("SIFT"),
    "alike-t": _alike("t"),
    "alike-n": _alike("n"),
    "xfeat": _xfeat,
}


def build(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    two_view_threshold: float | None = None,
    **kwargs,
) -> Extractor:
    """Build an extractor by name.

    Args:
        name: one of :data:`METHODS`.
        weights: a weight file; ``None`` uses the default location (package weights for
            ``traqpoint-lite``, ``../shared/weights`` for ALIKE and XFeat, ``third_party/`` for
            ``traqpoint``); ``"random"`` explicitly runs untrained TraqPoint networks.
        device: torch device for learned methods.
        precision: network precision (:mod:`models.precision`) of the methods in
            :data:`PRECISION_METHODS`; the others run as they are and ignore it (``None``: the default).
        two_view_threshold: dual-softmax threshold for one two-view estimate of the methods in
            :data:`TWO_VIEW_THRESHOLD_METHODS` (e.g. from ``training.calibrate_matcher`` for retrained
            weights); the others ignore it (``None``: the method's default).
        **kwargs: extractor options, e.g. ``num_keypoints=1024``.

    Raises:
        BadInputError: unknown name, or weights that do not fit.
        MissingFileError: a weight file is missing (the message says where to get it).

    The first build tunes glibc's allocator to keep freed activations (:mod:`models.allocator`).
    """
    if name in RENAMED:
        raise BadInputError(f"method {name!r} is now called {RENAMED[name]!r} (the default); the first lite "
                            "network is 'traqpoint-lite-v1'")
    if name not in BUILDERS:
        raise BadInputError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    if precision is not None and name in PRECISION_METHODS:
        kwargs["precision"] = precision
    if two_view_threshold is not None and name in TWO_VIEW_THRESHOLD_METHODS:
        kwargs["two_view_threshold"] = two_view_threshold
    keep_freed_memory()  # every method, so all of them run on the same allocator (models/allocator.py)
    return BUILDERS[name](weights, str(device), **kwargs)


__all__ = ["build", "METHODS", "MissingFileError", "BadInputError"]
