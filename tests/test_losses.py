"""The CrissCross loss against SPEC section 3: range, stop-gradient, symmetry, switches, the formula, optimisation."""
import numpy as np
import pytest
import torch

from crisscross.losses import VIEWS, LossConfig, crisscross_loss, neg_cosine


def _views(seed, B=8, D=16, grad=False):
    g = torch.Generator().manual_seed(seed)
    z = {k: torch.randn(B, D, generator=g).requires_grad_(grad) for k in VIEWS}
    p = {k: torch.randn(B, D, generator=g).requires_grad_(grad) for k in VIEWS}
    return z, p


def _numpy_formula(z, p, intra=True, sync=True, asyn=True, vid=1.0, aud=1.0, cm=1.0, ct=1.0):
    "An independent float64 computation of SPEC section 3."
    zn = {k: v.detach().double().numpy() for k, v in z.items()}
    pn = {k: v.detach().double().numpy() for k, v in p.items()}

    def D(a, b):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return -(a * b).sum(1).mean()

    def S(x, y):
        return D(pn[x], zn[y]) / 2 + D(pn[y], zn[x]) / 2

    terms = []
    if intra: terms.append((vid * S("v1", "v2") + aud * S("a1", "a2")) / 2)
    if sync: terms.append(cm * (S("v1", "a1") + S("v2", "a2")) / 2)
    if asyn: terms.append(ct * (S("v1", "a2") + S("a1", "v2")) / 2)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("groups", [(1, 1, 1), (1, 1, 0), (1, 0, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1)])
def test_matches_direct_formula(seed, groups):
    z, p = _views(seed)
    i, s, a = map(bool, groups)
    cfg = LossConfig(intra=i, sync=s, async_=a, vid_coeff=0.7, aud_coeff=1.3, cm_coeff=0.5, ct_coeff=2.0)
    got = crisscross_loss(z, p, cfg).total.item()
    want = _numpy_formula(z, p, i, s, a, 0.7, 1.3, 0.5, 2.0)
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_value_in_range(seed):
    z, p = _views(seed, B=2, D=3)
    v = crisscross_loss(z, p).total.item()
    assert -1.0 <= v <= 1.0


def test_minimum_is_minus_one_and_maximum_one():
    d = torch.randn(4, 8)
    z = {k: d for k in VIEWS}
    assert crisscross_loss(z, {k: d for k in VIEWS}).total.item() == pytest.approx(-1.0, abs=1e-6)
    assert crisscross_loss(z, {k: -d for k in VIEWS}).total.item() == pytest.approx(1.0, abs=1e-6)


def test_no_gradient_reaches_targets():
    # z and p share a leaf, as in the model (p = h(z)): the gradient may reach the leaf only through p.
    leaf = {k: torch.randn(6, 10, requires_grad=True) for k in VIEWS}
    W = torch.randn(10, 10, requires_grad=True)
    z = {k: leaf[k] * 1.0 for k in VIEWS}
    p = {k: z[k] @ W for k in VIEWS}
    out = crisscross_loss(z, p)
    grads = torch.autograd.grad(out.total, [leaf[k] for k in VIEWS] + [W])
    # Reference: the same loss with the targets as constants gives identical gradients.
    zc = {k: leaf[k].detach() for k in VIEWS}
    ref = crisscross_loss(zc, {k: leaf[k] @ W for k in VIEWS})
    ref_grads = torch.autograd.grad(ref.total, [leaf[k] for k in VIEWS] + [W])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    # And a target that is a leaf of its own gets no gradient at all.
    z2, p2 = _views(1, grad=True)
    crisscross_loss(z2, p2).total.backward()
    assert all(z2[k].grad is None for k in VIEWS)
    assert all(p2[k].grad is not None for k in VIEWS)


def test_swapping_views_leaves_loss_unchanged():
    z, p = _views(3)
    swap = {"v1": "v2", "v2": "v1", "a1": "a2", "a2": "a1"}
    out = crisscross_loss(z, p)
    sw = crisscross_loss({k: z[swap[k]] for k in VIEWS}, {k: p[swap[k]] for k in VIEWS})
    for name in ("total", "intra", "sync", "async_"):
        torch.testing.assert_close(getattr(out, name), getattr(sw, name))


def test_swapping_one_modality_changes_sync_and_async_but_not_total():
    z, p = _views(4)
    swap = {"v1": "v1", "v2": "v2", "a1": "a2", "a2": "a1"}
    out = crisscross_loss(z, p)
    sw = crisscross_loss({k: z[swap[k]] for k in VIEWS}, {k: p[swap[k]] for k in VIEWS})
    # Swapping the audio views exchanges the synchronous and asynchronous pairs.
    torch.testing.assert_close(sw.sync, out.async_)
    torch.testing.assert_close(sw.async_, out.sync)
    assert not torch.allclose(out.sync, out.async_)


def test_disabled_group_changes_nothing():
    z, p = _views(5, grad=True)
    base = crisscross_loss(z, p, LossConfig(async_=False))
    # The weight of a disabled group is irrelevant ...
    torch.testing.assert_close(base.total, crisscross_loss(z, p, LossConfig(async_=False, ct_coeff=7.0)).total)
    # ... and so are the inputs only that group sees: with the cross-modal groups off, no gradient crosses
    # modalities, so the audio predictions get exactly zero gradient once the audio half of L_intra is weighted 0.
    crisscross_loss(z, p, LossConfig(sync=False, async_=False)).total.backward()
    gv = p["v1"].grad.clone()
    assert p["a1"].grad.abs().sum() > 0
    for k in VIEWS:
        p[k].grad = None
    crisscross_loss(z, p, LossConfig(sync=False, async_=False, aud_coeff=0.0)).total.backward()
    torch.testing.assert_close(p["v1"].grad, gv)
    assert p["a1"].grad.abs().sum() == 0


def test_without_async_equals_mean_of_intra_and_sync():
    z, p = _views(6)
    full = crisscross_loss(z, p)
    no_async = crisscross_loss(z, p, LossConfig(async_=False))
    torch.testing.assert_close(no_async.total, (full.intra + full.sync) / 2)
    torch.testing.assert_close(full.total, (full.intra + full.sync + full.async_) / 3)


def test_loss_decreases_under_optimisation():
    torch.manual_seed(0)
    B, Din, D = 32, 12, 16
    x = {k: torch.randn(B, Din) for k in VIEWS}
    # Correlated views: the second view of each clip is a noisy copy of the first.
    x["v2"] = x["v1"] + 0.1 * torch.randn(B, Din)
    x["a1"] = x["v1"] @ torch.randn(Din, Din) * 0.3 + 0.1 * torch.randn(B, Din)
    x["a2"] = x["a1"] + 0.1 * torch.randn(B, Din)
    enc = {m: torch.nn.Sequential(torch.nn.Linear(Din, D), torch.nn.BatchNorm1d(D)) for m in "va"}
    pred = {m: torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.ReLU(), torch.nn.Linear(8, D)) for m in "va"}
    params = [q for m in "va" for q in list(enc[m].parameters()) + list(pred[m].parameters())]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(30):
        z = {k: enc[k[0]](x[k]) for k in VIEWS}
        p = {k: pred[k[0]](z[k]) for k in VIEWS}
        loss = crisscross_loss(z, p).total
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


def test_bad_inputs_are_named():
    z, p = _views(0)
    with pytest.raises(ValueError, match=r"missing views \['a2'\]"):
        crisscross_loss({k: z[k] for k in ("v1", "v2", "a1")}, p)
    with pytest.raises(ValueError, match="must equal target shape"):
        neg_cosine(torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least one"):
        LossConfig(intra=False, sync=False, async_=False)
    with pytest.raises(ValueError, match="vid_coeff=nan"):
        LossConfig(vid_coeff=float("nan"))
