"""Extraction engine: order, batching, partial batches, inputs, errors, CUDA paths (guarded)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

import models
from frontend.batching import iter_batches, stage_image
from frontend.engine import ExtractionEngine
from frontend.frame import Frame
from frontend.streams import DeviceStreams, PinnedRing, pack_features, unpack_features
from frontend.tracker import Tracker
from models.base import Extractor
from models.conventions import Features

HW = (96, 128)
NUM_IMAGES = 7  # ends mid-batch for batch sizes 3 and 8
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def textured_images(n: int = NUM_IMAGES, hw: tuple[int, int] = HW) -> list[np.ndarray]:
    """Blurred noise with a few bright squares: every extractor finds keypoints on it."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, hw, dtype=np.uint8), (5, 5), 1.5)
        for y, x in rng.integers(8, min(hw) - 24, (6, 2)):
            img[y : y + 12, x : x + 12] = 255
        out.append(img)
    return out


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return models.build("traqpoint-lite", weights="random", num_keypoints=64)


@pytest.fixture(scope="module")
def orb():
    return models.build("orb", num_keypoints=64)


@pytest.fixture(scope="module")
def reference(lite, orb):
    """Direct, one-image-at-a-time extraction of :func:`textured_images` by each extractor."""
    images = textured_images()
    return {name: [ext.extract_numpy(im)[0] for im in images] for name, ext in (("lite", lite), ("orb", orb))}


def assert_same(frames: list[Frame], images: list[np.ndarray], refs: list) -> None:
    assert [f.index for f in frames] == list(range(len(images)))
    for frame, image, ref in zip(frames, images, refs, strict=True):
        assert frame.image is image
        torch.testing.assert_close(frame.keypoints, ref["keypoints"])
        torch.testing.assert_close(frame.scores, ref["scores"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(frame.descriptors, ref["descriptors"], atol=1e-4, rtol=1e-4)


CASES = [("orb", b, m) for b in (1, 3, 8) for m in ("naive", "pipelined")]
CASES += [("lite", b, "pipelined") for b in (1, 3, 8)] + [("lite", 3, "naive")]


@pytest.mark.parametrize(("method", "batch_size", "mode"), CASES)
def test_results_in_order_equal_direct_extraction(method, batch_size, mode, reference, request):
    extractor = request.getfixturevalue(method)
    images = textured_images()
    engine = ExtractionEngine(extractor, batch_size=batch_size, mode=mode, num_threads=None)
    frames = list(engine.run(iter(images)))  # a one-shot iterator, as a live source
    assert_same(frames, images, reference[method])
    assert [b for b, _ in engine.batch_times] == [min(batch_size, NUM_IMAGES - i) for i in range(0, 7, batch_size)]


def test_frames_and_tensors_as_source_items(orb):
    images = textured_images(4)
    items = [
        Frame(index=10, image=images[0], timestamp=1.5),
        torch.from_numpy(images[1]),  # [H, W] uint8
        torch.from_numpy(images[2])[None].float() / 255,  # [1, H, W] float
        np.repeat(images[3][..., None], 3, axis=2),  # H x W x 3
    ]
    frames = list(ExtractionEngine(orb, batch_size=4, num_threads=None).run(items))
    assert [f.index for f in frames] == [10, 1, 2, 3]
    assert frames[0].timestamp == 1.5
    for frame, image in zip(frames, images):
        np.testing.assert_allclose(frame.keypoints, orb.extract_numpy(image)[0]["keypoints"])


def test_a_size_change_flushes_the_batch():
    small, large = textured_images(2), textured_images(3, (64, 80))
    batches = list(iter_batches(small + large, batch_size=8))
    assert [len(b.frames) for b in batches] == [2, 3]
    assert [f.index for b in batches for f in b.frames] == [0, 1, 2, 3, 4]
    assert stage_image(small[0]).dtype == torch.uint8 and stage_image(small[0]).shape == (1, *HW)


@pytest.mark.parametrize("mode", ["naive", "pipelined"])
def test_zero_keypoint_frames(mode, lite, orb):
    black = np.zeros(HW, np.uint8)
    images = [black, textured_images(1)[0], black]
    frames = list(ExtractionEngine(orb, batch_size=2, mode=mode, num_threads=None).run(images))
    assert [f.num_keypoints for f in frames][::2] == [0, 0] and frames[1].num_keypoints > 0
    assert frames[0].descriptors.shape == (0, orb.descriptor_dim)
    # the untrained lite network finds structure even in black images; ask for zero keypoints instead
    frames = list(ExtractionEngine(lite, batch_size=2, mode=mode, num_keypoints=0, num_threads=None).run(images))
    assert all(f.keypoints.shape == (0, 2) and f.descriptors.shape == (0, lite.descriptor_dim) for f in frames)


def test_single_frame_and_empty_sources(lite):
    (frame,) = ExtractionEngine(lite, batch_size=4, num_threads=None).run([textured_images(1)[0]])
    assert frame.num_keypoints > 0
    assert list(ExtractionEngine(lite, batch_size=4, num_threads=None).run([])) == []


def test_source_errors_surface_after_the_frames_before_them(orb):
    images = textured_images(3)

    def broken():
        yield from images
        raise OSError("camera unplugged")

    got = []
    with pytest.raises(OSError, match="camera unplugged"):
        for frame in ExtractionEngine(orb, batch_size=2, num_threads=None).run(broken()):
            got.append(frame.index)
    assert got == [0, 1, 2]


def test_stopping_early_ends_the_producer(orb):
    import threading

    run = ExtractionEngine(orb, batch_size=1, prefetch=1, num_threads=None).run(textured_images(6))
    next(run)
    run.close()
    assert not [t for t in threading.enumerate() if t.name == "frontend-producer"]


def test_bad_options_and_items_fail_clearly(orb):
    with pytest.raises(ValueError, match="batch_size"):
        ExtractionEngine(orb, batch_size=0)
    with pytest.raises(ValueError, match="mode"):
        ExtractionEngine(orb, mode="fast")
    with pytest.raises(models.BadInputError, match="numpy image, a tensor or a Frame"):
        list(ExtractionEngine(orb, mode="naive").run(["not an image"]))


def test_bf16_autocast_runs_on_cpu(lite):
    frames = list(ExtractionEngine(lite, precision="bf16", num_threads=None).run(textured_images(2)))
    assert frames[1].descriptors.dtype == torch.float32 and frames[1].num_keypoints > 0


def test_cpu_streams_and_ring_are_plain():
    streams = DeviceStreams(torch.device("cpu"))
    assert not streams.cuda
    up = streams.upload(torch.ones(2))
    assert up.event is None
    with streams.computing(up):
        pass
    ring = PinnedRing(2, pin=False)
    slot, buf = ring.acquire(torch.arange(3))
    assert torch.equal(buf, torch.arange(3)) and not buf.is_pinned()
    ring.release(slot)


@requires_cuda
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_pipeline_matches_naive(batch_size, precision):
    torch.manual_seed(0)
    gpu = models.build("traqpoint-lite", weights="random", num_keypoints=64, device="cuda")
    images = textured_images()
    runs = [
        list(ExtractionEngine(gpu, batch_size=batch_size, mode=mode, precision=precision).run(images))
        for mode in ("naive", "pipelined")
    ]
    for naive, piped in zip(*runs, strict=True):
        assert naive.index == piped.index and piped.keypoints.device.type == "cpu"
        torch.testing.assert_close(piped.keypoints, naive.keypoints)
        torch.testing.assert_close(piped.descriptors, naive.descriptors)


@requires_cuda
def test_cuda_ring_is_pinned():
    streams = DeviceStreams(torch.device("cuda"))
    ring = PinnedRing(2, pin=True)
    _, buf = ring.acquire(torch.ones(4, dtype=torch.uint8))
    up = streams.upload(buf)
    assert buf.is_pinned() and up.event is not None
    with streams.computing(up):
        out = up.tensor.float().sum()
    assert out.item() == 4


class ContentExtractor(Extractor):
    """One keypoint per image at (mean, index of the call); optionally waits on ``gate`` per call.

    Features carry the image's content, so a frame delivered with another frame's features fails.
    """

    name = "content"
    descriptor_dim = 4

    def __init__(self) -> None:
        super().__init__(1)
        self.started: list[threading.Event] = [threading.Event() for _ in range(64)]
        self.calls = 0

    def extract(self, images, num_keypoints=None):
        self.started[self.calls].set()
        self.calls += 1
        out = []
        for im in images:
            m = torch.round(im.float().mean() * 255)  # images arrive as float in [0, 1]
            kp = torch.stack([m, torch.tensor(float(self.calls))])[None]
            out.append(
                Features(keypoints=kp, scores=m[None], descriptors=torch.nn.functional.normalize(kp.repeat(1, 2)))
            )
        return out


def flat_images(n: int) -> list[np.ndarray]:
    return [np.full((8, 12), 10 * i, np.uint8) for i in range(n)]


@pytest.mark.parametrize("lookahead", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_lookahead_delivers_every_frame_in_order(lookahead, batch_size):
    frames = list(ExtractionEngine(ContentExtractor(), batch_size, lookahead=lookahead, num_threads=None).run(
        flat_images(7)))  # fmt: skip
    assert [f.index for f in frames] == list(range(7))
    assert [float(f.keypoints[0, 0]) for f in frames] == [10.0 * i for i in range(7)]


def test_lookahead_launches_batch_k_plus_1_before_k_is_tracked():
    ext = ContentExtractor()
    run = ExtractionEngine(ext, batch_size=1, lookahead=1, num_threads=None).run(flat_images(3))
    first = next(run)  # the caller now "tracks" frame 0 ...
    assert first.index == 0 and ext.started[1].wait(timeout=30)  # ... while frame 1 is being extracted
    assert [f.index for f in run] == [1, 2]
    inline = ContentExtractor()
    run = ExtractionEngine(inline, batch_size=1, lookahead=0, num_threads=None).run(flat_images(3))
    next(run)
    assert not inline.started[1].wait(timeout=0.2)  # without lookahead nothing runs behind the caller's back
    run.close()


def test_a_failing_extractor_surfaces_in_order():
    class Failing(ContentExtractor):
        def extract(self, images, num_keypoints=None):
            if self.calls == 2:
                raise RuntimeError("device lost")
            return super().extract(images, num_keypoints)

    got = []
    with pytest.raises(RuntimeError, match="device lost"):
        for f in ExtractionEngine(Failing(), batch_size=1, lookahead=1, num_threads=None).run(flat_images(5)):
            got.append(f.index)
    assert got == [0, 1]
    assert not [t for t in threading.enumerate() if t.name.startswith("frontend-")]


def test_pack_unpack_round_trip_with_empty_images():
    feats = [
        Features(keypoints=torch.rand(3, 2), scores=torch.rand(3), descriptors=torch.rand(3, 5)),
        Features(keypoints=torch.zeros(0, 2), scores=torch.zeros(0), descriptors=torch.zeros(0, 5)),
        Features(keypoints=torch.rand(1, 2), scores=torch.rand(1), descriptors=torch.rand(1, 5).bfloat16()),
    ]
    block, counts, dim = pack_features(feats)
    assert block.shape == (4, 8) and counts == [3, 0, 1] and dim == 5
    for got, ref in zip(unpack_features(block.reshape(-1), counts, dim), feats, strict=True):
        for key in ("keypoints", "scores", "descriptors"):
            torch.testing.assert_close(got[key], ref[key].float())


def test_warm_up_runs_at_the_live_size_and_only_where_it_matters(lite, orb):
    shapes = []
    # the backbone's first layer sees the warm-up batch whether or not the extractor detects first
    hook = lite.net.stem.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    try:
        engine = ExtractionEngine(lite, batch_size=2, num_threads=None)
        assert not engine.specialises_on_shape and engine.warm_up(HW) is None  # eager CPU: nothing to warm
        feats = engine.warm_up(HW, force=True)
    finally:
        hook.remove()
    assert shapes == [(2, 1, *HW)] and len(feats) == 2 and feats[0]["descriptors"].device.type == "cpu"
    assert ExtractionEngine(orb, num_threads=None).warm_up(HW, force=False) is None


def test_no_recompilation_on_the_first_live_frame(monkeypatch):
    """Compiled network + compiled matcher: warmed up at the live size, live frames compile nothing."""
    from functools import partial

    from frontend.backends import accelerate
    from models.fusion import prepare_for_inference
    from models.lite import LiteNet
    from models.traqpoint import TraqPoint

    compiles = []

    def counting_backend(gm, example_inputs):  # dynamo's eager backend, counting each (re)compilation
        compiles.append([tuple(getattr(x, "shape", ())) for x in example_inputs])
        return gm.forward

    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend=counting_backend))
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = TraqPoint(prepare_for_inference(LiteNet()), num_keypoints=64, precision="fp32")  # dense maps of every kind
    engine = ExtractionEngine(accelerate(net, "compile"), batch_size=1, num_threads=None)
    tracker = Tracker(engine.extractor)
    assert tracker.compiled_matcher and engine.specialises_on_shape
    before = len(compiles)
    warm = engine.warm_up(HW)
    assert tracker.warm_up(warm[0]["descriptors"])
    assert len(compiles) > before  # the live size compiled here ...
    warmed = len(compiles)
    for frame in engine.run(textured_images(3)):
        tracker.track(frame)
    assert len(compiles) == warmed  # ... and not on the first live frames
    torch._dynamo.reset()


@requires_cuda
def test_cuda_download_lands_in_pinned_slots_after_its_event():
    streams = DeviceStreams(torch.device("cuda"), result_slots=2)
    feats = [Features(keypoints=torch.rand(5, 2, device="cuda"), scores=torch.rand(5, device="cuda"),
                      descriptors=torch.rand(5, 8, device="cuda"))]  # fmt: skip
    up = streams.upload(torch.zeros(1))
    with streams.computing(up):
        down = streams.download(feats)
    assert down.event is not None and down.host.is_pinned() and down.features is None
    (got,) = streams.finish(down)
    assert got["keypoints"].device.type == "cpu" and not got["keypoints"].is_pinned()
    torch.testing.assert_close(got["descriptors"], feats[0]["descriptors"].cpu())
    assert streams.results.free.qsize() == 2  # the slot went back


@requires_cuda
def test_cuda_engine_defaults_to_lookahead_and_the_tracker_matches_on_the_gpu():
    torch.manual_seed(0)
    gpu = models.build("traqpoint-lite", weights="random", num_keypoints=64, device="cuda", precision="fp32")
    engine = ExtractionEngine(gpu)
    assert engine.lookahead == 1 and engine.specialises_on_shape
    tracker, reference = Tracker(gpu, grid_cell=0), Tracker(gpu, grid_cell=0, match_device="cpu")
    assert tracker.match_device.type == "cuda"
    assert tracker.warm_up(engine.warm_up(HW)[0]["descriptors"])
    for frame in engine.run(textured_images()):
        a, b = tracker.track(frame), reference.track(frame)
        assert a.frame.keypoints.device.type == "cpu"
        # the same matcher on another device: float sums in another order may flip a near-tie or two
        assert abs(a.stats.matches - b.stats.matches) <= 2 and abs(a.stats.inliers - b.stats.inliers) <= 2
    assert tracker.aktl == pytest.approx(reference.aktl, rel=0.05)


def test_frame_record_checks_and_views():
    frame = Frame(index=0, image=np.zeros((4, 6), np.uint8), K=np.eye(3).tolist())
    assert frame.K.dtype == np.float64 and frame.image_hw == (4, 6) and frame.num_keypoints == 0
    with pytest.raises(ValueError, match="no features"):
        _ = frame.features
    with pytest.raises(ValueError, match="3x3"):
        Frame(index=0, image=frame.image, K=np.eye(4))
    assert Frame(index=1, image=torch.zeros(1, 4, 6)).image_hw == (4, 6)
