"""Network backends give the eager network's features; misuse fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from frontend.backends import accelerate, onnx_available, resolve_backend
from frontend.engine import ExtractionEngine

HW = (64, 96)  # traced/exported at one size, run at another: shapes must stay dynamic


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return models.build("traqpoint-lite", weights="random", num_keypoints=32, precision="fp32")


def image(hw=(70, 100)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, hw, dtype=np.uint8)


@pytest.mark.parametrize(
    "backend",
    [
        "torchscript",
        pytest.param(
            "onnx",
            marks=pytest.mark.skipif(
                not onnx_available(),
                reason="the onnx backend needs the onnx and onnxruntime packages",
            ),
        ),
    ],
)
def test_backend_matches_eager(lite, backend, tmp_path):
    fast = accelerate(lite, backend, example_hw=HW, cache_dir=tmp_path)
    assert fast is not lite and fast.net.backend == backend and lite.net is not fast.net
    assert not lite.net.training
    (ref,) = lite.extract_numpy(image())
    (got,) = fast.extract_numpy(image())
    torch.testing.assert_close(got["keypoints"], ref["keypoints"])
    torch.testing.assert_close(got["descriptors"], ref["descriptors"], atol=1e-4, rtol=1e-4)


def test_eager_and_opencv_pass_through(lite):
    sift = models.build("sift")
    assert accelerate(lite, "eager") is lite
    assert accelerate(sift, "torchscript") is sift
    assert ExtractionEngine(sift, backend="onnx", num_threads=None).extractor is sift


def test_unknown_backend_fails_clearly(lite):
    with pytest.raises(models.BadInputError, match="unknown backend"):
        accelerate(lite, "tensorrt")


def test_auto_prefers_onnx_on_cpu_for_traqpoint(lite):
    assert resolve_backend(models.build("orb"), "auto") == "eager"
    assert resolve_backend(lite, "auto") == "eager"
    assert resolve_backend(lite, "torchscript") == "torchscript"


def test_a_failing_backend_is_one_clear_error(lite, monkeypatch):
    import frontend.backends as backends

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no C++ compiler found\nlong traceback text")

    monkeypatch.setattr(backends, "_compile", broken)
    with pytest.raises(
        models.BadInputError,
        match=r"compile backend failed \(RuntimeError: InductorError: no C\+\+ compiler found\); use --backend eager",
    ):
        accelerate(lite, "compile")


@pytest.mark.parametrize("backend", ["torchscript", "onnx"])
def test_lite2_without_matchability_runs_through_backends(backend):
    """LiteNet2 detecting with its policy returns no matchability map; the backends follow its keys."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 128), 3, 1, 1)
    ref = models.build("traqpoint-lite", num_keypoints=64, precision="fp32").extract(img)[0]
    ext = accelerate(models.build("traqpoint-lite", num_keypoints=64, precision="fp32"), backend)
    got = ext.extract(img)[0]
    nearest = (got["keypoints"][:, None] - ref["keypoints"][None]).norm(dim=-1).min(dim=1).values
    assert len(got["keypoints"]) == len(ref["keypoints"]) and (nearest < 0.05).float().mean() > 0.95
