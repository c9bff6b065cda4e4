import pytest
import torch

from models.keypoints import minmax_normalise, nms_mask, refine_subpixel, select_keypoints


def test_minmax_per_image():
    x = torch.stack([torch.linspace(-3, 5, 64).view(1, 8, 8), torch.full((1, 8, 8), 2.0)])
    y = minmax_normalise(x)
    assert torch.isclose(y[0].min(), torch.tensor(0.0)) and torch.isclose(y[0].max(), torch.tensor(1.0))
    assert torch.isfinite(y[1]).all()  # a constant map must not divide by zero


def test_nms_keeps_isolated_peaks_only():
    s = torch.zeros(1, 1, 20, 20)
    s[0, 0, 5, 5], s[0, 0, 5, 7], s[0, 0, 15, 12] = 1.0, 0.9, 0.8  # 0.9 is within radius 2 of 1.0
    m = nms_mask(s, 2)
    assert m[0, 0, 5, 5] and not m[0, 0, 5, 7] and m[0, 0, 15, 12]


def test_select_topk_order_threshold_border():
    s = torch.zeros(2, 1, 32, 32)
    s[0, 0, 10, 10], s[0, 0, 20, 25], s[0, 0, 1, 1] = 0.5, 0.9, 1.0  # (1,1) lies in the border
    kp, sc = select_keypoints(s, num_keypoints=5, radius=2, threshold=0.1, border=4)
    assert kp[0].tolist() == [[25.0, 20.0], [10.0, 10.0]]  # (x, y), strongest first
    assert torch.allclose(sc[0], torch.tensor([0.9, 0.5]))
    assert kp[1].shape == (0, 2) and sc[1].shape == (0,)  # empty map -> zero keypoints
    kp, _ = select_keypoints(s, num_keypoints=1, radius=2, threshold=0.1)
    assert kp[0].tolist() == [[25.0, 20.0]]


def test_subpixel_centroid_moves_towards_mass():
    s = torch.zeros(1, 9, 9)
    s[0, 4, 4], s[0, 4, 5] = 1.0, 1.0
    out = refine_subpixel(s, torch.tensor([[4.0, 4.0]]), method="centroid")
    assert 4.2 < out[0, 0] < 4.8 and abs(out[0, 1] - 4.0) < 1e-5
    assert refine_subpixel(s, torch.zeros(0, 2)).shape == (0, 2)


@pytest.mark.parametrize("scale", [0.05, 1.0, 40.0])
def test_subpixel_quadratic_recovers_a_gaussian_peak_at_any_logit_scale(scale):
    """The log of an anisotropic, rotated Gaussian is quadratic: the fit is exact, whatever the scale."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    truth = torch.tensor([[7.31, 8.42], [9.77, 6.6]])
    maps, kps = [], []
    for cx, cy in truth.tolist():
        dx, dy = xx - cx, yy - cy
        maps.append(-(1.3 * dx * dx + 0.6 * dx * dy + 0.7 * dy * dy) * scale + 3.0)
        kps.append([round(cx), round(cy)])
    for m, kp, t in zip(maps, kps, truth):
        out = refine_subpixel(m[None], torch.tensor([kp], dtype=torch.float32))
        assert torch.allclose(out[0], t, atol=1e-4), (out, t)
    centroid = refine_subpixel(maps[0][None], torch.tensor([kps[0]], dtype=torch.float32), method="centroid")
    assert (centroid[0] - truth[0]).abs().max() > 1e-2  # the old soft-argmax is biased here


def test_subpixel_quadratic_stays_in_its_pixel_on_flat_and_saddle_windows():
    flat = torch.zeros(1, 5, 5)
    assert refine_subpixel(flat, torch.tensor([[2.0, 2.0]])).tolist() == [[2.0, 2.0]]
    ramp = torch.arange(5.0).repeat(5, 1)[None]  # monotone in x: no vertex, the step is clamped
    out = refine_subpixel(ramp, torch.tensor([[2.0, 2.0]]))
    assert out[0, 0] <= 2.5 and out[0, 1] == 2.0
    with pytest.raises(ValueError, match="sub-pixel method"):
        refine_subpixel(flat, torch.tensor([[2.0, 2.0]]), method="spline")


def test_window_max_equals_max_pool_and_select_equals_brute_force():
    from models.keypoints import window_max

    g = torch.Generator().manual_seed(0)
    s = torch.rand(2, 1, 37, 53, generator=g).round(decimals=2)  # ties included
    for r in (1, 2, 3):
        ref = torch.nn.functional.max_pool2d(s, 2 * r + 1, stride=1, padding=r)
        assert torch.equal(window_max(s, r), ref)
    kp, sc = select_keypoints(s, num_keypoints=20, radius=2, threshold=torch.tensor([0.5, 0.9]), border=3)
    for i in range(2):
        m = (s[i, 0] == torch.nn.functional.max_pool2d(s[i], 5, stride=1, padding=2)[0]) & (s[i, 0] > [0.5, 0.9][i])
        m[:3], m[-3:], m[:, :3], m[:, -3:] = False, False, False, False
        assert torch.equal(sc[i], s[i, 0][m].sort(descending=True).values[: len(sc[i])])
        assert len(sc[i]) == min(20, int(m.sum()))
        assert torch.equal(s[i, 0, kp[i][:, 1].long(), kp[i][:, 0].long()], sc[i])
