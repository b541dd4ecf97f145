"""The fused numba kernels of ``ntkit.infinite._fused`` against the torch path they replace (the reference).

Tolerances from float64 arithmetic: the fused ReLU step evaluates the same formulas in the same order as the
torch path except that libm's and torch's arccos/√ may differ by an ulp, so entries agree to a few ε relative to
the scale √(Σ11Σ22) (K' itself is tiny where cos θ → −1 and loses relative digits by cancellation in both); self
pairs (cos θ = 1) to 1e-13 relative. Window sums add the same k² numbers in another order: |Δ| ≤ k²·ε·Σ|terms|.
"""

import math

import pytest
import torch

import ntkit as nk
from ntkit.infinite import _fused, activations, layers

pytestmark = pytest.mark.skipif(not _fused.NUMBA_AVAILABLE, reason="numba is not installed")
EPS64 = torch.finfo(torch.float64).eps


@pytest.fixture(autouse=True)
def _fused_on(monkeypatch):
    """The fused kernels are opt-in (NTKIT_FUSED=1); every test here turns them on."""
    monkeypatch.setenv(_fused.ENV_VAR, "1")


def _covariances(n1, n2, spatial, dtype=torch.float64, seed=0):
    """A valid (PSD) cross covariance and its variances, from random features at every position."""
    gen = torch.Generator().manual_seed(seed)
    size = (4,) * spatial
    f1 = torch.randn(n1, 5, *size, generator=gen, dtype=dtype)
    f2 = torch.randn(n2, 5, *size, generator=gen, dtype=dtype)
    k = nk.infinite.kernel.input_kernel(f1, f2)
    v1 = nk.infinite.kernel.spatial_diagonal(k.var1, spatial)
    v2 = nk.infinite.kernel.spatial_diagonal(k.var2, spatial)
    left, right = nk.infinite.kernel.pair_variances(v1, v2, spatial)
    return left.unsqueeze(1), k.nngp, right.unsqueeze(0), k


@pytest.mark.parametrize("spatial", [0, 1, 2])
def test_relu_step_matches_the_torch_path(spatial):
    c11, c12, c22, _ = _covariances(3, 4, spatial)
    k1, k0 = _fused.relu_kernels(c11, c12, c22)
    r1, r0 = activations.relu_kernels(c11, c12, c22)
    scale = torch.sqrt(c11 * c22).expand_as(c12)
    assert bool(((k1 - r1).abs() <= 8 * EPS64 * scale).all())
    assert bool(((k0 - r0).abs() <= 8 * EPS64).all())


def test_relu_self_pairs_and_edge_cases_match_exactly_where_the_torch_path_is_exact():
    v = torch.tensor([1e-150, 0.5, 3.0, 7.0], dtype=torch.float64)
    k1, k0 = _fused.relu_kernels(v, v, v)
    torch.testing.assert_close(k1, v / 2, rtol=1e-13, atol=0)  # cos θ = 1: K' = Σ/2, K̇ = 1/2
    torch.testing.assert_close(k0, torch.full_like(v, 0.5), rtol=1e-13, atol=0)
    c11 = torch.tensor([0.0, 0.0, 2.0, 1.0, 1.0], dtype=torch.float64)  # zero variances; cos just past ±1
    c12 = torch.tensor([0.0, 0.0, 0.0, 1.0 + 1e-15, -1.0 - 1e-15], dtype=torch.float64)
    c22 = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    for got, ref in zip(_fused.relu_kernels(c11, c12, c22), activations.relu_kernels(c11, c12, c22), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, rtol=0, atol=4 * EPS64)


def test_pi_minus_arccos_is_within_one_ulp_of_the_exact_value():
    """The polynomial arc-cosine against 50-digit mpmath, on a grid, near ±1/2 (its branch point) and near ±1."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    tiny = torch.logspace(-16, -1, 300, dtype=torch.float64)
    edges = torch.tensor([0.0, -0.0, 1.0, -1.0], dtype=torch.float64)
    near_half = [0.5 + tiny / 10, 0.5 - tiny / 10, -0.5 + tiny / 10, -0.5 - tiny / 10]
    c = torch.cat([torch.linspace(-1, 1, 2001, dtype=torch.float64), 1 - tiny, tiny - 1, *near_half, edges])
    for value in c.tolist():
        exact = float(mpmath.pi - mpmath.acos(mpmath.mpf(value)))
        got = _fused._pi_minus_arccos(value)
        assert abs(got - exact) <= math.ulp(exact), (value, got, exact)


def _pair_inputs(n1, n2, spatial, seed=0):
    c11, c12, c22, k = _covariances(n1, n2, spatial, seed=seed)
    v1 = nk.infinite.kernel.spatial_diagonal(k.var1, spatial)
    v2 = nk.infinite.kernel.spatial_diagonal(k.var2, spatial)
    ntk = torch.rand(c12.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return c11, c12, c22, v1, v2, ntk, k


@pytest.mark.parametrize("spatial", [0, 1, 2])
def test_relu_pairs_match_the_torch_path(spatial):
    """K' and K̇·Θ of the fused pass against relu_kernels and a product. The cosines are bit-identical (the same
    √ and ÷), the arc-cosines an ulp apart, so K' agrees to a few ε·√(Σ11Σ22) and K̇·Θ to a few ε·|Θ|."""
    c11, c12, c22, v1, v2, ntk, k = _pair_inputs(3, 4, spatial)
    k1, k_dot_ntk = _fused.relu_pairs(v1, c12, v2, ntk, spatial)
    r1, r0 = activations.relu_kernels(c11, c12, c22)
    scale = torch.sqrt(c11 * c22).expand_as(c12)
    assert bool(((k1 - r1).abs() <= 8 * EPS64 * scale).all())
    assert bool(((k_dot_ntk - r0 * ntk).abs() <= 8 * EPS64 * ntk).all())
    k1_again, k0 = _fused.relu_pairs(v1, c12, v2, None, spatial)  # no NTK: K̇ itself
    assert torch.equal(k1_again, k1) and bool(((k0 - r0).abs() <= 8 * EPS64).all())
    # self-covariances: both sides the same example
    s1, s0 = _fused.relu_pairs(v1, k.var1, v1, None, spatial, same_example=True)
    left, right = nk.infinite.kernel.pair_variances(v1, v1, spatial)
    t1, t0 = activations.relu_kernels(left, k.var1, right)
    assert bool(((s1 - t1).abs() <= 8 * EPS64 * torch.sqrt(left * right)).all())
    assert bool(((s0 - t0).abs() <= 8 * EPS64).all())


def test_relu_pairs_propagate_nan_and_take_the_zero_variance_limit():
    v = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    cov = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, float("nan")]], dtype=torch.float64)
    k1, k0 = _fused.relu_pairs(v, cov, v, None, 0)
    r1, r0 = activations.relu_kernels(v[:, None], cov, v[None, :])
    # a NaN covariance stays NaN in both (kernel() then raises), even beside a zero variance
    assert all(bool(torch.isnan(t[2, 2])) for t in (k1, k0, r1, r0))
    finite = ~torch.isnan(cov)
    torch.testing.assert_close(k1[finite], r1[finite], rtol=0, atol=4 * EPS64)
    torch.testing.assert_close(k0[finite], r0[finite], rtol=0, atol=4 * EPS64)
    assert float(k1[0].abs().max()) == 0.0  # a zero-variance unit: K' = 0 exactly


@pytest.mark.parametrize("kernel_size", [(3,), (4,), (5,), (3, 3), (2, 3), (4, 4)])
@pytest.mark.parametrize("with_ntk", [True, False])
@pytest.mark.parametrize("padding", ["same", "circular"])
def test_conv_affine_matches_the_torch_affine_map(kernel_size, with_ntk, padding):
    """K' = w2·S(K) + b2 and Θ' = K' + w2·S(Θ) against the torch path (shifted sums, then the affine map). The
    window sums add the same k² terms in another order: |Δ| ≤ 2·k²·ε·(w2·Σ|terms| + b2) per entry."""
    spatial = len(kernel_size)
    gen = torch.Generator().manual_seed(3)
    t = torch.randn(2, 3, *((6,) * 2 * spatial), generator=gen, dtype=torch.float64)
    u = torch.randn(t.shape, generator=gen, dtype=torch.float64) if with_ntk else None
    w2, b2 = 1.7 / math.prod(kernel_size), 0.3
    got_t, got_u = _fused.conv_affine(t, u, kernel_size, padding, w2, b2)
    conv = (nk.Conv1d if spatial == 1 else nk.Conv2d)(4, kernel_size, padding=padding)

    def window(x, kernel_size, _):  # the torch path's window sum: shifted sums / index_select
        return conv._window_mean(x) * math.prod(kernel_size)

    ref_t = window(t, kernel_size, "same") * w2 + b2
    terms = window(t.abs(), kernel_size, "same") * w2 + b2
    k2 = math.prod(kernel_size)
    assert float(((got_t - ref_t).abs() - 2 * k2 * EPS64 * terms).max()) <= 0
    if with_ntk:
        ref_u = ref_t + w2 * window(u, kernel_size, "same")
        bound = 2 * k2 * EPS64 * (terms + w2 * window(u.abs(), kernel_size, "same"))
        assert float(((got_u - ref_u).abs() - bound).max()) <= 0
    else:
        assert got_u is None


def test_fc_and_pooled_architectures_agree_with_the_torch_path(monkeypatch):
    """The fused ReLU in a deep FC net and in a Myrtle-like CNN with average pooling (zero-padded "same" convs
    through conv_affine), cross and self kernels, against NTKIT_FUSED=0."""
    gen = torch.Generator().manual_seed(5)
    fc = nk.Sequential(*[m for _ in range(6) for m in (nk.Linear(8, W_std=1.5, b_std=0.2), nk.ReLU())], nk.Linear(1))
    cnn = nk.Sequential(
        nk.Conv2d(8, 3, W_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool2d(2), nk.Conv2d(8, 3), nk.ReLU(),
        nk.GlobalAvgPool2d(), nk.Linear(1),
    )  # fmt: skip
    for arch, shape in [(fc, (6,)), (cnn, (2, 8, 8))]:
        x = torch.randn(9, *shape, generator=gen, dtype=torch.float64)
        x2 = torch.randn(4, *shape, generator=gen, dtype=torch.float64)
        fused = [arch.kernel(x, batch_size=4), arch.kernel(x2, x, batch_size=3)]
        monkeypatch.setenv(_fused.ENV_VAR, "0")
        reference = [arch.kernel(x, batch_size=4), arch.kernel(x2, x, batch_size=3)]
        monkeypatch.setenv(_fused.ENV_VAR, "1")
        for got, ref in zip(fused, reference, strict=True):
            for name in ("nngp", "ntk"):
                a, b = getattr(got, name), getattr(ref, name)
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("padding", ["same", "valid", "circular"])
@pytest.mark.parametrize("kernel_size", [(3,), (4,), (3, 3), (2, 3)])
def test_window_sum_matches_the_torch_window_mean(padding, kernel_size):
    spatial = len(kernel_size)
    t = torch.randn(2, 3, *((7,) * 2 * spatial), dtype=torch.float64)
    conv = (nk.Conv1d if spatial == 1 else nk.Conv2d)(4, kernel_size, padding=padding)
    reference = conv._window_mean(t) * math.prod(kernel_size)  # the torch path: shifted sums / index_select
    bound = 2 * math.prod(kernel_size) * EPS64 * t.abs().max() * math.prod(kernel_size)
    got = _fused.window_sum(t, kernel_size, padding)
    assert got.shape == reference.shape
    assert float((got - reference).abs().max()) <= bound


def _cntk_1d():
    return nk.Sequential(
        *[m for _ in range(3) for m in (nk.Conv1d(8, 5, padding="circular", W_std=1.4, b_std=0.1), nk.ReLU())],
        nk.GlobalAvgPool1d(),
        nk.Linear(1, W_std=1.4, b_std=0.1),
    )


def _cnn_2d():
    return nk.Sequential(
        nk.Conv2d(8, 3, W_std=1.4, b_std=0.1), nk.ReLU(), nk.Conv2d(8, 3, padding="valid"), nk.ReLU(),
        nk.Flatten(), nk.Linear(1),
    )  # fmt: skip


@pytest.mark.parametrize("make, shape", [(_cntk_1d, (2, 12)), (_cnn_2d, (2, 6, 6))])
def test_whole_architectures_agree_with_the_torch_path(monkeypatch, make, shape):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, *shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(5, *shape, generator=gen, dtype=torch.float64)
    arch = make()
    fused = [arch.kernel(x, batch_size=3), arch.kernel(x2, x, batch_size=4)]
    monkeypatch.setenv(_fused.ENV_VAR, "0")
    torch_path = [arch.kernel(x, batch_size=3), arch.kernel(x2, x, batch_size=4)]
    for got, ref in zip(fused, torch_path, strict=True):
        for name in ("nngp", "ntk"):
            a, b = getattr(got, name), getattr(ref, name)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    for name in ("nngp", "ntk"):  # self pairs
        a, b = (torch.diagonal(getattr(k, name)) for k in (fused[0], torch_path[0]))
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_float32_agrees_to_float32_rounding():
    c11, c12, c22, _ = _covariances(3, 3, 1, dtype=torch.float32)
    k1, k0 = _fused.relu_kernels(c11, c12, c22)
    r1, r0 = activations.relu_kernels(c11, c12, c22)
    scale = torch.sqrt(c11 * c22).expand_as(c12)
    eps = torch.finfo(torch.float32).eps
    assert k1.dtype == torch.float32 and bool(((k1 - r1).abs() <= 8 * eps * scale).all())
    assert bool(((k0 - r0).abs() <= 8 * eps).all())


def test_without_numba_the_torch_path_is_taken(monkeypatch):
    x = torch.randn(5, 2, 12, dtype=torch.float64)
    monkeypatch.setenv(_fused.ENV_VAR, "0")
    reference = _cntk_1d().kernel(x)
    monkeypatch.setenv(_fused.ENV_VAR, "1")
    monkeypatch.setattr(_fused, "NUMBA_AVAILABLE", False)
    assert _fused.relu_kernels(*_covariances(2, 2, 0)[:3]) is None
    assert _fused.window_sum(torch.zeros(1, 1, 4, 4, dtype=torch.float64), (3,), "same") is None
    got = _cntk_1d().kernel(x)
    assert torch.equal(got.nngp, reference.nngp) and torch.equal(got.ntk, reference.ntk)


def test_defaults_are_the_kernels_measured_faster(monkeypatch):
    t = torch.zeros(2, dtype=torch.float64)
    monkeypatch.delenv(_fused.ENV_VAR)
    assert {k for k in _fused.KERNELS if _fused.enabled(t, k)} == {"relu", "conv_affine", "window_sum_circular"}
    monkeypatch.setenv(_fused.ENV_VAR, "0")
    assert not any(_fused.enabled(t, k) for k in _fused.KERNELS)
    monkeypatch.setenv(_fused.ENV_VAR, "1")
    assert all(_fused.enabled(t, k) for k in _fused.KERNELS)


def test_layers_use_the_fused_kernels(monkeypatch):
    calls = []
    original = _fused.conv_affine
    monkeypatch.setattr(_fused, "conv_affine", lambda *a: calls.append(a[2:4]) or original(*a))
    _cntk_1d().kernel(torch.randn(3, 2, 12, dtype=torch.float64))
    assert calls and all(c == ((5,), "circular") for c in calls)
    sums = []
    window_sum = _fused.window_sum
    monkeypatch.setattr(_fused, "window_sum", lambda *a: sums.append(a[1:]) or window_sum(*a))
    monkeypatch.setattr(_fused, "DEFAULT_KERNELS", frozenset({"window_sum_circular"}))
    monkeypatch.delenv(_fused.ENV_VAR)  # the conv map off: the circular window sum alone
    _cntk_1d().kernel(torch.randn(3, 2, 12, dtype=torch.float64))
    assert sums and all(c == ((5,), "circular") for c in sums)
    assert layers._fused is _fused


def test_tensors_carrying_derivatives_take_the_torch_path():
    import torch.autograd.forward_ad as fwAD

    from ntkit.sklearn import with_scales

    w = torch.tensor(1.3, dtype=torch.float64)
    x = torch.randn(4, 2, 12, dtype=torch.float64)

    def ntk_of(w_std):
        conv = nk.Conv1d(4, 5, padding="circular")
        arch = nk.Sequential(conv, nk.ReLU(), conv, nk.ReLU(), nk.GlobalAvgPool1d())  # the 2nd gets a tangent
        return with_scales(arch, w_std, 0.1).kernel(x, progress=False).ntk

    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ntk_of(fwAD.make_dual(w, torch.ones_like(w)))).tangent
    h = 1e-6  # central difference: error O(h²) ~ 1e-12 relative, rounding ~ ε/h ~ 1e-10
    numeric = (ntk_of(w + h) - ntk_of(w - h)) / (2 * h)
    torch.testing.assert_close(tangent, numeric, rtol=1e-7, atol=1e-7 * float(numeric.abs().max()))


@pytest.mark.parametrize("with_ntk", [True, False])
def test_dense_affine_matches_the_torch_formula(with_ntk):
    """K' = w2·K + b2, Θ' = K' + w2·Θ: the same products and sums as the torch path, which may fuse the last
    multiply-add (torch.add with alpha), so entries agree to 2ε of the terms' magnitudes."""
    gen = torch.Generator().manual_seed(4)
    k = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    theta = torch.randn(5, 7, generator=gen, dtype=torch.float64) if with_ntk else None
    got_k, got_theta = _fused.dense_affine(k, theta, 1.7, 0.3)
    ref_k = 1.7 * k + 0.3
    assert float(((got_k - ref_k).abs() - 2 * EPS64 * (1.7 * k.abs() + 0.3)).max()) <= 0
    if with_ntk:
        ref_theta = ref_k + 1.7 * theta
        bound = 4 * EPS64 * (1.7 * k.abs() + 0.3 + 1.7 * theta.abs())
        assert float(((got_theta - ref_theta).abs() - bound).max()) <= 0
    else:
        assert got_theta is None
