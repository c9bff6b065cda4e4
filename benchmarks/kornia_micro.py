"""Micro-benchmark: the project's hand-written geometry / colour code against kornia's equivalents.

    python -m benchmarks.kornia_micro [--repeats 200]

Cases (shapes as used in training and evaluation):
* ``warp_points`` (training/warping.py) vs ``kornia.geometry.transform_points``: a homography
  applied to ``[4096, 2]`` points (evaluate) and ``[5, 512, 2]`` (a stage-2 batch);
* the depth warp's unproject -> rigid transform -> project (training/warping.py ``depth_warp``)
  vs ``kornia.geometry.unproject_points`` / ``transform_points`` / ``project_points`` on 512 points;
* an image warped by a homography (the augmentation of training/data/homography.py):
  ``cv2.warpPerspective`` vs ``kornia.geometry.warp_perspective``, 240 x 320;
* mutual nearest neighbours of 1024 x 1024 unit descriptors: ``models.matchers`` vs
  ``kornia.feature.match_mnn`` (the same matches: |diff| 0);
* ``models.image_io.rgb_to_grey`` vs ``kornia.color.rgb_to_grayscale`` on ``[4, 3, 240, 320]``.

Each case checks that both give the same numbers, then times them interleaved (A, B, A, B, ...)
and reports the minimum and median over ``--repeats`` runs: on a shared CPU the minimum is the
least disturbed estimate, the median shows the spread.

Measured (2-core EPYC, shared, 1 thread; min us, ours vs kornia 0.9): homography on 4096 points
95 vs 138, on 5 x 512 points 73 vs 103, depth warp 71 vs 151, image warp 177 (OpenCV) vs 1069,
mutual NN 6456 vs 7204, RGB -> grey 226 vs 145 (kornia's three-slice sum; it costs a 0.23-0.49 s
``import kornia`` at start-up, and the same sum is three lines of torch). Kornia was therefore
dropped from the dependencies: it replaced nothing at no loss of speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _time(fn, repeats: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cases():
    """``(name, hand_written, kornia_version)`` closures on fixed inputs."""
    import kornia

    from models.image_io import rgb_to_grey
    from training.warping import warp_points

    g = torch.Generator().manual_seed(0)
    H = torch.tensor([[1.05, 0.02, 3.0], [-0.01, 0.98, -2.0], [1e-4, -2e-4, 1.0]])
    pts = torch.rand(4096, 2, generator=g) * torch.tensor([640.0, 480.0])
    Hb = H.expand(5, 3, 3).contiguous()
    ptsb = torch.rand(5, 512, 2, generator=g) * torch.tensor([320.0, 240.0])
    yield (
        "homography, 4096 points",
        lambda: warp_points(H, pts),
        lambda: kornia.geometry.transform_points(H[None], pts[None])[0],
    )
    yield (
        "homography, 5 x 512 points",
        lambda: warp_points(Hb, ptsb),
        lambda: kornia.geometry.transform_points(Hb, ptsb),
    )

    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    T = torch.eye(4)
    T[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0, -0.05, 0.02], [0.05, 0, -0.03], [-0.02, 0.03, 0]]))
    T[:3, 3] = torch.tensor([0.1, -0.05, 0.3])
    p = torch.rand(512, 2, generator=g) * torch.tensor([320.0, 240.0])
    z = 2 + torch.rand(512, generator=g) * 8

    def hand():
        rays = torch.cat([p, torch.ones_like(p[:, :1])], 1) @ torch.linalg.inv(K).T
        X = (rays * z[:, None]) @ T[:3, :3].T + T[:3, 3]
        proj = X @ K.T
        return proj[:, :2] / X[:, 2:].clamp_min(1e-6)

    def with_kornia():
        X = kornia.geometry.unproject_points(p, z[:, None], K)
        X = kornia.geometry.transform_points(T[None], X[None])[0]
        return kornia.geometry.project_points(X, K)

    yield "depth warp, 512 points", hand, with_kornia
    import cv2

    img = (torch.rand(240, 320, generator=g) * 255).to(torch.uint8)
    H64 = H.double().numpy()
    Hn = torch.from_numpy(H64).float()[None]
    imf = img.float()[None, None] / 255

    def cv_warp():
        return torch.from_numpy(cv2.warpPerspective(img.numpy(), H64, (320, 240), flags=cv2.INTER_LINEAR)).float() / 255

    def kornia_warp():
        return kornia.geometry.warp_perspective(imf, Hn, (240, 320), align_corners=True)[0, 0]

    yield "warp image 240 x 320 (augmentation)", cv_warp, kornia_warp
    from models.matchers import match_pair

    d0 = torch.nn.functional.normalize(torch.randn(1024, 64, generator=g), dim=1)
    d1 = torch.nn.functional.normalize(d0 + 0.3 * torch.randn(1024, 64, generator=g), dim=1)

    def ours_mnn():
        return match_pair(d0, d1, "mnn")[0].float()

    def kornia_mnn():
        m = kornia.feature.match_mnn(d0, d1)[1]
        return m[torch.argsort(m[:, 0])].float()

    yield "mutual NN, 1024 x 1024 x 64", ours_mnn, kornia_mnn
    rgb = torch.rand(4, 3, 240, 320, generator=g)
    yield "RGB -> grey, 4 x 3 x 240 x 320", lambda: rgb_to_grey(rgb), lambda: kornia.color.rgb_to_grayscale(rgb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.kornia_micro",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the data-loader / CPU-test setting)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    try:
        import kornia  # noqa: F401 - not a dependency of the project any more (see the module docstring)
    except ImportError:
        print("error: this benchmark compares against kornia: pip install kornia", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"{'case':34}{'ours min/med us':>20}{'kornia min/med us':>22}{'max |diff|':>12}")
    for name, ours, theirs in cases():
        x, y = ours(), theirs()
        diff = float((x - y).abs().max()) if x.shape == y.shape else float("nan")  # nan: shapes differ
        a, b = [], []
        for _ in range(4):  # interleaved blocks
            a += _time(ours, args.repeats // 4 + 1)
            b += _time(theirs, args.repeats // 4 + 1)
        fa, fb = (f"{1e6 * min(t):8.1f} /{1e6 * statistics.median(t):8.1f}" for t in (a, b))
        print(f"{name:34}{fa:>20}{fb:>22}{diff:12.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
