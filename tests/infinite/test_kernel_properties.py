"""Structural properties of ``Layer.kernel`` and closed forms derived by hand.

* kernel(x1, x2) is the off-diagonal block of kernel(concat([x1, x2])), kernel(x2, x1) its transpose;
* with x2=None both kernels are exactly symmetric (examples and position pairs swapped) and positive
  semi-definite; dtype and device follow x1;
* small architectures whose kernels can be written down by hand: affine layers, Identity, one ReLU layer
  (arc-cosine formula written out here), LayerNorm, k=1 convolutions, Flatten, AvgPool, Residual, Parallel;
* networks that are linear in their parameters (one Linear/Conv layer followed by linear maps) have an empirical
  NTK that equals the infinite-width NTK exactly at any width, which pins the padding, stride and window
  conventions of the convolution kernels to what torch's convolutions compute.
"""

import math

import pytest
import torch

import ntkit as nk

DT = torch.float64
#: Hand-written closed forms against the library: each entry is a dot product of length ≤ 8 followed by ≤ ~20
#: flops, in both computations. Every rounding is ≤ ε·|operand| with operands of size ≤ ~10 here, so the two
#: agree to ≤ ~50·ε·10 ≈ 1e-13 in absolute terms whatever the BLAS's summation order (a dot product whose terms
#: cancel can lose all its relative accuracy, so an absolute bound is the honest one); 1e-12 keeps a margin.
CLOSED_FORM_RTOL, CLOSED_FORM_ATOL = 1e-13, 1e-12


def _randn(*shape, seed=0, dtype=DT):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _dense(n, seed):
    return _randn(n, 5, seed=seed)


def _image(n, seed):
    return _randn(n, 2, 5, 4, seed=seed)


def _signal(n, seed):
    return _randn(n, 3, 7, seed=seed)


ARCHS = {
    "relu_mlp": (
        lambda: nk.Sequential(nk.Linear(8, W_std=1.4, b_std=0.1), nk.ReLU(), nk.Linear(1, W_std=1.2, b_std=0.2)),
        _dense,
    ),
    "erf_layernorm": (
        lambda: nk.Sequential(nk.Linear(8, b_std=0.3), nk.LayerNorm(), nk.Erf(), nk.Linear(8), nk.LayerNorm()),
        _dense,
    ),
    "gelu_sin_leaky_tanh": (
        lambda: nk.Sequential(
            nk.Linear(8, W_std=1.5),
            nk.GELU(),
            nk.Linear(8),
            nk.Sin(),
            nk.Linear(8),
            nk.LeakyReLU(-0.3),
            nk.Linear(8),
            nk.Tanh(degree=64),
            nk.Linear(2),
        ),
        _dense,
    ),
    "standard_parameterization": (
        lambda: nk.Sequential(
            nk.Linear(16, W_std=1.3, b_std=0.2, parameterization="standard"),
            nk.ReLU(),
            nk.Linear(3, W_std=1.1, b_std=0.1, parameterization="standard"),
        ),
        _dense,
    ),
    "residual_parallel": (
        lambda: nk.Sequential(
            nk.Linear(6, b_std=0.1),
            nk.Residual(nk.ReLU(), nk.Linear(6, W_std=0.7)),
            nk.Parallel(nk.Linear(6), nk.Sequential(nk.Erf(), nk.Linear(6, b_std=0.2))),
            nk.Parallel(nk.Sequential(nk.ReLU(), nk.Linear(4)), nk.Linear(2), combine="concat"),
            nk.Linear(5),  # a concatenation mixes two Gaussians: a Linear makes one again before LayerNorm
            nk.LayerNorm(),
        ),
        _dense,
    ),
    "conv2d_same_pool_gap": (
        lambda: nk.Sequential(
            nk.Conv2d(4, 3, padding="same", W_std=1.4, b_std=0.1),
            nk.ReLU(),
            nk.AvgPool2d(2, stride=1),
            nk.Conv2d(4, (2, 3), padding="same"),
            nk.LayerNorm(),
            nk.Erf(),
            nk.GlobalAvgPool2d(),
            nk.Linear(1),
        ),
        _image,
    ),
    "conv2d_circular_unreduced": (
        lambda: nk.Sequential(
            nk.Conv2d(4, 3, padding="circular", b_std=0.2), nk.ReLU(), nk.Conv2d(3, 2, padding="valid")
        ),
        _image,
    ),
    "conv1d_valid_stride_flatten": (
        lambda: nk.Sequential(
            nk.Conv1d(4, 3, stride=2, padding="valid", W_std=1.3, b_std=0.1),
            nk.LayerNorm(),
            nk.ReLU(),
            nk.Conv1d(4, 2, padding="same"),
            nk.ReLU(),
            nk.Flatten(),
            nk.Linear(1),
        ),
        _signal,
    ),
}


def _pair_axes_perm(spatial: int) -> list[int]:
    """(N1, N2, h, h', w, w') → (N2, N1, h', h, w', w)."""
    return [1, 0] + [2 + 2 * d + s for d in range(spatial) for s in (1, 0)]


def _as_matrix(t: torch.Tensor, spatial: int) -> torch.Tensor:
    """(N, N, h, h', w, w') → the (N·h·w) × (N·h·w) covariance matrix of all (example, position) pairs."""
    n = t.shape[0]
    left = [0] + [2 + 2 * d for d in range(spatial)]
    right = [1] + [3 + 2 * d for d in range(spatial)]
    t = t.permute(left + right)
    size = n * math.prod(t.shape[1 : 1 + spatial])
    return t.reshape(size, size)


@pytest.mark.parametrize("name", list(ARCHS))
def test_cross_kernel_is_a_block_of_the_joint_kernel(name):
    make, data = ARCHS[name]
    arch = make()
    x1, x2 = data(3, seed=1), data(4, seed=2)
    joint = arch.kernel(torch.cat([x1, x2]))
    cross = arch.kernel(x1, x2)
    swapped = arch.kernel(x2, x1)
    own = arch.kernel(x1)
    spatial = (joint.nngp.ndim - 2) // 2
    for attr in ("nngp", "ntk"):
        full = getattr(joint, attr)
        scale = float(full.abs().max())
        assert getattr(cross, attr).shape == (3, 4, *full.shape[2:])
        torch.testing.assert_close(getattr(cross, attr), full[:3, 3:], rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(getattr(own, attr), full[:3, :3], rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(
            getattr(swapped, attr), getattr(cross, attr).permute(_pair_axes_perm(spatial)), rtol=0, atol=1e-12 * scale
        )


@pytest.mark.parametrize("name", list(ARCHS))
def test_self_kernel_is_exactly_symmetric_and_psd(name):
    make, data = ARCHS[name]
    arch = make()
    x = data(6, seed=3)
    k = arch.kernel(x)
    explicit = arch.kernel(x, x.clone())  # the same data given as x2: equal up to rounding
    spatial = (k.nngp.ndim - 2) // 2
    for attr in ("nngp", "ntk"):
        t = getattr(k, attr)
        assert torch.equal(t, t.permute(_pair_axes_perm(spatial)))
        m = _as_matrix(t, spatial)
        assert torch.equal(m, m.T)
        eig = torch.linalg.eigvalsh(m)
        assert float(eig.min()) >= -1e-10 * float(eig.max())
        scale = float(t.abs().max())
        torch.testing.assert_close(getattr(explicit, attr), t, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("name", list(ARCHS))
def test_dtype_and_device_follow_x1(name):
    make, data = ARCHS[name]
    arch = make()
    x64 = data(3, seed=4)
    k64 = arch.kernel(x64)
    k32 = arch.kernel(x64.float())
    k32_cross = arch.kernel(x64[:2].float(), x64[2:].float())
    for attr in ("nngp", "ntk"):
        assert getattr(k64, attr).dtype == DT
        assert getattr(k32, attr).dtype == torch.float32
        assert getattr(k32_cross, attr).dtype == torch.float32
        assert getattr(k64, attr).device == x64.device
        # float32 computes the same kernel to single precision
        torch.testing.assert_close(getattr(k32, attr).double(), getattr(k64, attr), rtol=1e-4, atol=1e-5)


# --- closed forms by hand ---------------------------------------------------------------------------------------------


def _dot_over_d(x1, x2):
    return x1 @ x2.T / x1.shape[1]


def test_single_linear_layer():
    x1, x2 = _randn(3, 5, seed=5), _randn(4, 5, seed=6)
    k = nk.Sequential(nk.Linear(7, W_std=1.3, b_std=0.2)).kernel(x1, x2)
    expected = 1.69 * (x1 @ x2.T) / 5 + 0.04
    torch.testing.assert_close(k.nngp, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    # the input carries no NTK: Θ = K' + W_std²·0
    torch.testing.assert_close(k.ntk, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_two_linear_layers_with_identity():
    x1, x2 = _randn(3, 5, seed=5), _randn(4, 5, seed=6)
    arch = nk.Sequential(nk.Linear(9, W_std=1.3, b_std=0.2), nk.Identity(), nk.Linear(2, W_std=0.7, b_std=0.5))
    k = arch.kernel(x1, x2)
    k1 = 1.69 * _dot_over_d(x1, x2) + 0.04  # = Θ1
    k2 = 0.49 * k1 + 0.25
    torch.testing.assert_close(k.nngp, k2, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(k.ntk, k2 + 0.49 * k1, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_standard_parameterization_by_hand():
    """W ~ N(0, W_std²/fan_in) and b ~ N(0, b_std²) are the parameters: ∂f/∂W = input, ∂f/∂b = 1."""
    x1, x2 = _randn(3, 5, seed=5), _randn(4, 5, seed=6)
    one = nk.Linear(7, W_std=1.3, b_std=0.2, parameterization="standard").kernel(x1, x2)
    torch.testing.assert_close(
        one.nngp, 1.69 * _dot_over_d(x1, x2) + 0.04, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL
    )
    torch.testing.assert_close(one.ntk, x1 @ x2.T + 1, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    no_bias = nk.Linear(7, W_std=1.3, b_std=None, parameterization="standard").kernel(x1, x2)
    torch.testing.assert_close(no_bias.ntk, x1 @ x2.T, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)

    arch = nk.Sequential(
        nk.Linear(11, W_std=1.3, b_std=0.2, parameterization="standard"),
        nk.Identity(),
        nk.Linear(2, W_std=0.7, b_std=0.5, parameterization="standard"),
    )
    k = arch.kernel(x1, x2)
    k1, theta1 = 1.69 * _dot_over_d(x1, x2) + 0.04, x1 @ x2.T + 1
    torch.testing.assert_close(k.nngp, 0.49 * k1 + 0.25, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    # Θ2 = fan_in·K1 (∂f/∂W2 = h, Σ_j h_j h'_j = 11·K1) + W2²·Θ1 + 1 (bias)
    torch.testing.assert_close(k.ntk, 11 * k1 + 0.49 * theta1 + 1, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_one_relu_hidden_layer_by_hand():
    """Arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009), written out here entry by entry."""
    x1, x2 = _randn(3, 5, seed=7), _randn(2, 5, seed=8)
    arch = nk.Sequential(nk.Linear(9, W_std=1.5, b_std=0.3), nk.ReLU(), nk.Linear(1, W_std=0.8, b_std=0.1))
    k = arch.kernel(x1, x2)
    for a in range(3):
        for b in range(2):
            c11 = 2.25 * float(x1[a] @ x1[a]) / 5 + 0.09
            c22 = 2.25 * float(x2[b] @ x2[b]) / 5 + 0.09
            c12 = 2.25 * float(x1[a] @ x2[b]) / 5 + 0.09
            theta = math.acos(c12 / math.sqrt(c11 * c22))
            j1 = math.sqrt(c11 * c22) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
            j0 = (math.pi - theta) / (2 * math.pi)
            nngp = 0.64 * j1 + 0.01
            ntk = nngp + 0.64 * c12 * j0  # Θ' = K' + W²·(Θ1·E[φ'φ']), Θ1 = c12
            assert float(k.nngp[a, b]) == pytest.approx(nngp, rel=1e-13)
            assert float(k.ntk[a, b]) == pytest.approx(ntk, rel=1e-13)


def test_layernorm_after_linear_by_hand():
    """At infinite width the channel mean vanishes and the channel variance is K1(x, x): both kernels are
    divided by √(K1(x, x) K1(x', x')); the projections in LayerNorm's Jacobian are rank 2 and vanish."""
    x1, x2 = _randn(3, 5, seed=19), _randn(2, 5, seed=20)
    arch = nk.Sequential(nk.Linear(8, W_std=1.2, b_std=0.5), nk.LayerNorm(), nk.Linear(3, W_std=0.8, b_std=0.1))
    k = arch.kernel(x1, x2)
    k1 = 1.44 * _dot_over_d(x1, x2) + 0.25  # = Θ1
    d1 = 1.44 * (x1 * x1).sum(1) / 5 + 0.25
    d2 = 1.44 * (x2 * x2).sum(1) / 5 + 0.25
    normalised = k1 / torch.sqrt(d1[:, None] * d2[None, :])
    k2 = 0.64 * normalised + 0.01
    torch.testing.assert_close(k.nngp, k2, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(k.ntk, k2 + 0.64 * normalised, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


@pytest.mark.parametrize("spatial", [1, 2])
def test_kernel_size_one_conv_then_global_pool_is_a_linear_layer_on_the_mean(spatial):
    """z_p = (W/√C) w·x_p + b β at every position p; the mean over positions of its covariance is
    W²·(1/C) Σ_c x̄_c x̄'_c + b², x̄ the mean over positions, and Θ equals it (one layer from the data)."""
    shape = (3, 5) if spatial == 1 else (3, 4, 5)
    x1, x2 = _randn(2, *shape, seed=9), _randn(3, *shape, seed=10)
    conv = {1: nk.Conv1d, 2: nk.Conv2d}[spatial]
    pool = {1: nk.GlobalAvgPool1d, 2: nk.GlobalAvgPool2d}[spatial]
    k = nk.Sequential(conv(6, 1, padding="valid", W_std=1.3, b_std=0.2), pool()).kernel(x1, x2)
    m1, m2 = x1.flatten(2).mean(2), x2.flatten(2).mean(2)
    expected = 1.69 * m1 @ m2.T / 3 + 0.04
    torch.testing.assert_close(k.nngp, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(k.ntk, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    # the same as pooling first and applying a Linear layer
    other = nk.Sequential(pool(), nk.Linear(6, W_std=1.3, b_std=0.2)).kernel(x1, x2)
    torch.testing.assert_close(other.nngp, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_flatten_then_linear_is_linear_on_flattened_data():
    x1, x2 = _randn(2, 3, 7, seed=11), _randn(3, 3, 7, seed=12)
    k = nk.Sequential(nk.Flatten(), nk.Linear(4, W_std=0.9, b_std=0.4)).kernel(x1, x2)
    expected = 0.81 * x1.flatten(1) @ x2.flatten(1).T / 21 + 0.16
    torch.testing.assert_close(k.nngp, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(k.ntk, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_avgpool_then_flatten_is_the_kernel_of_pooled_data():
    """Pooling is linear, so the input kernel of pooled data (torch's avg_pool2d) is the pooled input kernel."""
    x1, x2 = _randn(2, 2, 6, 5, seed=13), _randn(3, 2, 6, 5, seed=14)
    arch = nk.Sequential(nk.AvgPool2d((3, 2), stride=(2, 1)), nk.Flatten(), nk.Linear(4, W_std=1.1, b_std=0.3))
    k = arch.kernel(x1, x2)
    p1 = torch.nn.functional.avg_pool2d(x1, (3, 2), stride=(2, 1)).flatten(1)
    p2 = torch.nn.functional.avg_pool2d(x2, (3, 2), stride=(2, 1)).flatten(1)
    expected = 1.21 * p1 @ p2.T / p1.shape[1] + 0.09
    torch.testing.assert_close(k.nngp, expected, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)


def test_residual_and_parallel_by_hand():
    x1, x2 = _randn(3, 5, seed=15), _randn(2, 5, seed=16)
    s = _dot_over_d(x1, x2)
    # x + block(x): K' = K + W²K + b², Θ' = Θ + Θ_block = 0 + (W²K + b²)
    res = nk.Residual(nk.Linear(5, W_std=0.6, b_std=0.2)).kernel(x1, x2)
    torch.testing.assert_close(res.nngp, s + 0.36 * s + 0.04, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(res.ntk, 0.36 * s + 0.04, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    # sum of independent branches: kernels add
    par = nk.Parallel(nk.Linear(4, W_std=0.6, b_std=0.2), nk.Linear(4, W_std=1.5)).kernel(x1, x2)
    torch.testing.assert_close(par.nngp, 0.36 * s + 0.04 + 2.25 * s, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    torch.testing.assert_close(par.ntk, par.nngp, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL)
    # concatenation: the channel-weighted mean, 1/4 and 3/4 here
    cat = nk.Parallel(nk.Linear(1, W_std=0.6, b_std=0.2), nk.Linear(3, W_std=1.5), combine="concat").kernel(x1, x2)
    torch.testing.assert_close(
        cat.nngp, 0.25 * (0.36 * s + 0.04) + 0.75 * 2.25 * s, rtol=CLOSED_FORM_RTOL, atol=CLOSED_FORM_ATOL
    )


# --- networks linear in their parameters: the empirical NTK is the infinite one, at any width ---------------------


LINEAR_IN_PARAMETERS = {
    "conv2d_same_odd": (nk.Sequential(nk.Conv2d(3, 3, padding="same", W_std=1.3, b_std=0.2), nk.Flatten()), (2, 5, 4)),
    "conv2d_same_even": (nk.Sequential(nk.Conv2d(3, (2, 4), padding="same", W_std=0.9), nk.Flatten()), (2, 5, 6)),
    "conv2d_circular": (
        nk.Sequential(nk.Conv2d(3, (3, 2), padding="circular", W_std=1.2, b_std=0.1), nk.Flatten()),
        (2, 4, 5),
    ),
    "conv2d_valid_stride": (
        nk.Sequential(nk.Conv2d(3, (3, 2), stride=(2, 3), padding="valid", W_std=1.1, b_std=0.3), nk.Flatten()),
        (2, 7, 8),
    ),
    "conv1d_same_even": (nk.Sequential(nk.Conv1d(4, 4, padding="same", W_std=1.2), nk.Flatten()), (3, 9)),
    "conv1d_circular": (nk.Sequential(nk.Conv1d(4, 3, padding="circular", b_std=0.5), nk.Flatten()), (3, 6)),
    "conv1d_valid_stride_gap": (
        nk.Sequential(nk.Conv1d(4, 3, stride=2, padding="valid", W_std=1.4, b_std=0.2), nk.GlobalAvgPool1d()),
        (3, 10),
    ),
    "conv2d_same_avgpool_gap": (
        nk.Sequential(nk.Conv2d(3, 3, padding="same", W_std=1.3), nk.AvgPool2d(2, stride=1), nk.GlobalAvgPool2d()),
        (2, 5, 5),
    ),
    "conv2d_same_avgpool_flatten": (
        nk.Sequential(nk.Conv2d(3, 3, padding="same", b_std=0.4), nk.AvgPool2d((2, 3)), nk.Flatten()),
        (2, 6, 7),
    ),
    "conv2d_standard": (
        nk.Sequential(nk.Conv2d(3, 3, padding="same", W_std=1.3, b_std=0.2, parameterization="standard"), nk.Flatten()),
        (2, 4, 4),
    ),
    "concat_convs": (
        nk.Sequential(
            nk.Parallel(
                nk.Conv1d(2, 3, padding="same", b_std=0.3), nk.Conv1d(5, 1, padding="same", W_std=2.0), combine="concat"
            ),
            nk.Flatten(),
        ),
        (3, 6),
    ),
    "residual_linear": (nk.Residual(nk.Linear(5, W_std=0.6, b_std=0.2)), (5,)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("name", list(LINEAR_IN_PARAMETERS))
def test_networks_linear_in_parameters_have_the_infinite_ntk_at_any_width(name):
    """f(x) = A(x)·θ: the empirical NTK A(x)A(x')ᵀ (mean over outputs) does not depend on θ, so it must equal
    the infinite-width NTK to rounding, for every seed."""
    arch, in_shape = LINEAR_IN_PARAMETERS[name]
    x1, x2 = _randn(3, *in_shape, seed=17), _randn(2, *in_shape, seed=18)
    k = arch.kernel(x1, x2)
    for seed in (0, 1):
        model = arch.build(in_shape, seed=seed, dtype=DT)
        emp = nk.empirical_ntk(model, x1, x2, output="mean")
        torch.testing.assert_close(emp, k.ntk, rtol=1e-12, atol=1e-12 * float(k.ntk.abs().max()))
