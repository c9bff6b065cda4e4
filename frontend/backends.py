"""Network backends for TraqPoint extractors: eager, TorchScript, ``torch.compile``, ONNX Runtime.

Only the pure network changes hands; the policy-logit -> keypoint step (min-max normalisation,
NMS, top-k, descriptor sampling) stays in torch inside :class:`models.traqpoint.TraqPoint`.
The measured choice for the CPU path is recorded in ``frontend/README.md``
(``python -m frontend.profile backends`` re-measures it).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from models.base import Extractor
from models.errors import BadInputError
from models.opencv_features import OpenCVExtractor
from models.precision import autocast_context
from models.traqpoint import network_descriptor_dim

log = logging.getLogger(__name__)

Backend = Literal["auto", "eager", "torchscript", "compile", "onnx"]
BACKENDS = ("auto", "eager", "torchscript", "compile", "onnx")
OUTPUT_KEYS = ("descriptors", "matchability", "logits")  # the dense maps a TraqPoint network may return, in order


def output_keys(net: nn.Module, example: torch.Tensor) -> tuple[str, ...]:
    """The keys of :data:`OUTPUT_KEYS` that ``net`` returns for ``example`` (e.g. LiteNet2 drops
    ``matchability`` when its extractor detects with the policy)."""
    with torch.inference_mode():
        got = net(example)
    return tuple(k for k in OUTPUT_KEYS if k in got)
EXAMPLE_HW = (384, 1248)  # KITTI 1226x370 padded to the stride: the size traced/exported by default


class TupleNet(nn.Module):
    """Dict-returning network -> tuple of ``keys`` (what trace/export need)."""

    def __init__(self, net: nn.Module, keys: tuple[str, ...] = OUTPUT_KEYS) -> None:
        super().__init__()
        self.net = net
        self.keys = keys

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image)
        return tuple(out[k] for k in self.keys)


class BackendNet(nn.Module):
    """Stands in for the network inside a TraqPoint extractor, running a compiled form of it."""

    def __init__(
        self,
        net: nn.Module,
        run: Callable[[torch.Tensor], tuple],
        name: str,
        keep: nn.Module | None,
        keys: tuple[str, ...] = OUTPUT_KEYS,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.stride = net.stride
        self.conf = dict(getattr(net, "conf", {}))
        self.descriptor_dim = network_descriptor_dim(net)
        self.pad_multiple = int(getattr(net, "pad_multiple", 32))
        self.backend = name
        self.compiled = keep  # registered so .to()/.eval() reach it
        self._run = run
        # lite2's sub-pixel head runs eagerly on a few patches after selection, never compiled
        self.refine_head = getattr(net, "refine_head", None)
        self._refine = getattr(net, "refine_keypoints", None)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.keys, self._run(image), strict=True))

    def refine_keypoints(self, image: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """The wrapped network's :meth:`models.lite2.LiteNet2.refine_keypoints`."""
        if self._refine is None:
            raise RuntimeError(f"{self.backend} network has no refinement head")
        return self._refine(image, blocks)


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence the tracer's expected warnings (jit/legacy-export deprecation, shapes read as constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _torchscript(net: nn.Module, example: torch.Tensor) -> BackendNet:
    keys = output_keys(net, example)
    with torch.no_grad(), quiet_tracing():
        traced = torch.jit.freeze(torch.jit.trace(TupleNet(net, keys).eval(), example, check_trace=False))
    return BackendNet(net, traced, "torchscript", traced, keys)


def _compile(net: nn.Module, example: torch.Tensor, precision: str = "fp32") -> BackendNet:
    keys = output_keys(net, example)
    compiled = torch.compile(TupleNet(net, keys).eval(), dynamic=False)
    with torch.inference_mode(), autocast_context(example.device, precision):
        compiled(example)  # compile now (under the extractor's autocast), not inside the first timed frame
    return BackendNet(net, compiled, "compile", None, keys)


def export_onnx(net: nn.Module, path: str | Path, example: torch.Tensor, opset: int = 17) -> Path:
    """Export ``net`` with dynamic batch/height/width to ``path`` (needs the ``onnx`` package)."""
    path = Path(path)
    try:
        import onnx  # noqa: F401 - required by torch.onnx.export
    except ImportError:
        raise BadInputError("the onnx backend needs `pip install onnx onnxruntime`") from None
    keys = output_keys(net, example)
    dyn = {"image": {0: "batch", 2: "height", 3: "width"}} | {k: {0: "batch", 2: "h", 3: "w"} for k in keys}
    model = TupleNet(net, keys).eval()
    was_training = net.training
    with quiet_tracing():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=list(keys),
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
        )
    net.train(was_training)  # export restores the wrapper's mode, which may be training
    return path


def _onnx(net: nn.Module, example: torch.Tensor, cache_dir: str | Path | None) -> BackendNet:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BadInputError("the onnx backend needs `pip install onnxruntime`") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="traqpoint-onnx-") as tmp:  # the session keeps the model in memory
        path = export_onnx(net, Path(cache_dir or tmp) / "traqpoint_net.onnx", example)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = session.run(None, {"image": image.detach().float().contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outs)

    return BackendNet(net, run, "onnx", None, output_keys(net, example))


def add_backend_argument(parser) -> None:
    """The ``--backend`` option shared by the commands that run TraqPoint networks."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="network backend of TraqPoint methods: auto = eager (BatchNorm-folded, channels-last, bf16 "
        "backbone where native); compile = torch.compile, ~25%% faster per frame after a ~20 s compile",
    )


def onnx_available() -> bool:
    """Both ``onnx`` (export) and ``onnxruntime`` (inference) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve_backend(extractor: Extractor, backend: Backend) -> str:
    """``auto`` -> ``eager``, the measured winner on the CPU since TraqPoint networks are built
    BatchNorm-folded and channels-last (with bf16 where native; see ``frontend/README.md``) and on
    CUDA, where nothing else was measured; any other name passes through."""
    return "eager" if backend == "auto" else backend


def accelerate(
    extractor: Extractor,
    backend: Backend = "eager",
    example_hw: tuple[int, int] = EXAMPLE_HW,
    cache_dir: str | Path | None = None,
) -> Extractor:
    """Return ``extractor`` running its network on ``backend`` (a shallow copy; the input is untouched).

    ``eager`` and OpenCV baselines return ``extractor`` itself. ``onnx`` runs on the CPU only;
    ``auto`` picks as :func:`resolve_backend`.

    Raises:
        BadInputError: unknown backend, a non-TraqPoint learned extractor, onnx off the CPU, or a
            backend whose compile/export fails (the cause in one line).
    """
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    backend = resolve_backend(extractor, backend)
    if backend == "eager" or isinstance(extractor, OpenCVExtractor):
        return extractor
    from models.traqpoint import TraqPoint

    net = getattr(extractor, "net", None)
    if not isinstance(extractor, TraqPoint) or not isinstance(net, nn.Module):
        raise BadInputError(f"backend {backend!r} needs a TraqPoint extractor, got {extractor!r}")
    device = torch.device(extractor.device)
    if backend == "onnx" and device.type != "cpu":
        raise BadInputError("the onnx backend runs on the CPU only; use torchscript or compile on CUDA")
    example = torch.rand(1, 1, *example_hw, device=device)
    try:
        if backend == "compile":
            wrapped = _compile(net.eval(), example, getattr(extractor, "precision", "fp32"))
        elif backend == "torchscript":
            wrapped = _torchscript(net.eval(), example)
        else:
            wrapped = _onnx(net.eval(), example, cache_dir)
    except BadInputError:
        raise
    except Exception as err:  # a compiler/exporter failure deep inside torch: one line for the user
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise BadInputError(
            f"{extractor.name}: the {backend} backend failed ({type(err).__name__}: {detail}); use --backend eager"
        ) from err
    fast = copy.copy(extractor)
    fast.net = wrapped
    log.info("%s: network runs on the %s backend", extractor.name, backend)
    return fast
