import pytest
import torch
import torch.nn.functional as F

from models.matchers import dual_softmax, match_pair, mutual_nn, ratio_test


def naive_dual_softmax(d0, d1, temperature=20.0, threshold=0.01):
    """Loop-based reference of the DESIGN §2 definition."""
    s = (d0 @ d1.T) * temperature
    p = torch.softmax(s, 1) * torch.softmax(s, 0)
    out = []
    for i in range(len(d0)):
        j = int(p[i].argmax())
        if int(p[:, j].argmax()) == i and p[i, j] >= threshold:
            out.append((i, j, float(p[i, j])))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dual_softmax_matches_naive_reference(seed):
    g = torch.Generator().manual_seed(seed)
    d0 = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    perm = torch.randperm(50, generator=g)[:40]
    d1 = F.normalize(d0[perm] + 0.3 * torch.randn(40, 16, generator=g), dim=1)
    m, s = match_pair(d0, d1, "dual_softmax")
    ref = naive_dual_softmax(d0, d1)
    assert [(int(a), int(b)) for a, b in m] == [(i, j) for i, j, _ in ref]
    assert torch.allclose(s, torch.tensor([p for *_, p in ref]), atol=1e-6)
    assert len(ref) > 10  # the case is not trivially empty


def test_batched_equals_unbatched():
    d0 = F.normalize(torch.randn(3, 30, 8), dim=-1)
    d1 = F.normalize(torch.randn(3, 25, 8), dim=-1)
    m0, _ = dual_softmax(d0, d1, threshold=0.0)
    for b in range(3):
        m, _ = match_pair(d0[b], d1[b], threshold=0.0)
        ref = torch.full((30,), -1)
        ref[m[:, 0]] = m[:, 1]
        assert torch.equal(m0[b], ref)


@pytest.mark.parametrize("method", ["dual_softmax", "mnn", "ratio"])
@pytest.mark.parametrize("n0,n1", [(0, 5), (5, 0), (0, 0), (1, 1)])
def test_empty_and_tiny_inputs(method, n0, n1):
    m, s = match_pair(torch.zeros(n0, 8), F.normalize(torch.ones(n1, 8), dim=1), method)
    assert m.shape[1] == 2 and m.dtype == torch.long and len(m) == len(s) <= min(n0, n1)


def test_identity_descriptors_match_themselves():
    d = F.normalize(torch.randn(20, 32), dim=1)
    for fn in (mutual_nn, ratio_test, dual_softmax):
        m0, _ = fn(d[None], d[None])
        assert torch.equal(m0[0], torch.arange(20))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="descriptors must be"):
        match_pair(torch.zeros(3, 8), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="unknown matcher"):
        match_pair(torch.zeros(3, 8), torch.zeros(3, 8), "nope")


def test_dual_softmax_batched_equals_full_matrix():
    from models.matchers import _mutual, dual_softmax_matrix

    g = torch.Generator().manual_seed(3)
    d0 = torch.nn.functional.normalize(torch.randn(3, 50, 16, generator=g), dim=-1)
    d1 = torch.nn.functional.normalize(
        d0[:, torch.randperm(50, generator=g)[:40]] + 0.2 * torch.randn(3, 40, 16, generator=g), dim=-1
    )
    m, s = dual_softmax(d0, d1, threshold=0.05)
    m_ref, s_ref = _mutual(dual_softmax_matrix(d0, d1), 0.05)
    assert torch.equal(m, m_ref) and (m >= 0).sum() > 60
    assert torch.allclose(s, s_ref, atol=1e-6)


def test_row_max_equals_max_on_the_two_level_path():
    """row_max's block path (M a multiple of 64) returns torch.max's values, and an index of the max."""
    from models.matchers import row_max

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 1024, generator=g)
    x[0, 5, 100] = x[0, 5, 900] = 10.0  # a tie: the first maximum wins
    val, idx = row_max(x)
    ref = x.max(dim=2)
    assert torch.equal(val, ref.values)
    assert torch.equal(x.gather(2, idx[..., None])[..., 0], ref.values)
    assert int(idx[0, 5]) == 100
    unique = (x == ref.values[..., None]).sum(2) == 1
    assert torch.equal(idx[unique], ref.indices[unique])


@pytest.mark.parametrize("method", ["mnn", "dual_softmax"])
def test_tied_rows_give_one_to_one_matches(method):
    """Binary (ORB-like) descriptors take few similarity values: rows tied for a column's maximum
    (here exact duplicates) must not all match that column."""
    g = torch.Generator().manual_seed(1)
    bits = torch.randint(0, 2, (1024, 256), generator=g).float() * 2 - 1
    d1 = bits / 16.0  # unit norm
    d0 = d1[torch.randperm(1024, generator=g)[:512]].clone()
    d0[1::2] = d0[0::2]  # every odd row duplicates the row before it
    m, _ = match_pair(d0, d1, method)
    assert len(m) > 200
    assert len(torch.unique(m[:, 1])) == len(m) and len(torch.unique(m[:, 0])) == len(m)
    assert (m[:, 0] % 2 == 0).all()  # of each duplicated pair the first row is kept
    sim = d0 @ d1.T  # every kept match is a row and a column maximum
    assert torch.equal(sim[m[:, 0], m[:, 1]], sim.amax(1)[m[:, 0]])
    assert torch.equal(sim[m[:, 0], m[:, 1]], sim.amax(0)[m[:, 1]])
