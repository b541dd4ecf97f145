"""SelfAttention, RNN, monte_carlo_kernel, MaxPool/Softmax: finite networks against their limits, hand-derived
closed forms, and bad input.

Convergence (as tests/infinite/test_monte_carlo_limit.py, whose helpers this reuses): the mean relative error
‖Θ_emp − Θ_∞‖_F/‖Θ_∞‖_F over SEEDS draws at widths 4× apart falls like width^(−1/2); with 16 draws the log of each
mean has a standard error ≲ 0.15 and, for three widths (Σ(log w − mean)² = 2 (log 4)² = 3.84), the slope one of
≲ 0.15/√3.84 ≈ 0.08, so the window [−0.8, −0.2] is ≈ ±3.9 standard errors. At the largest width the seed mean
must match Θ_∞ within 5 standard errors (P(|t₁₅| > 5) ≈ 2e-4 per entry).
"""

import pytest
import torch

import ntkit as nk
from tests.infinite.test_monte_carlo_limit import _check_within_five_se, _seed_mean_and_se, _slope

DT = torch.float64
SEEDS = 16
WIDTHS = (16, 64, 256)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _attention_net(w):
    return nk.Sequential(
        nk.Conv1d(w, 1, W_std=1.3, b_std=0.1),
        nk.SelfAttention(w, n_heads=2, W_query_std=1.2, W_key_std=0.9, W_value_std=1.1, W_out_std=1.3, b_std=0.2),
        nk.ReLU(), nk.GlobalAvgPool1d(), nk.Linear(4),
    )  # fmt: skip


def _attention_image_net(w):
    return nk.Sequential(
        nk.Conv2d(w, 1, W_std=1.2, b_std=0.1), nk.SelfAttention(w, n_heads=2, positional="sum"),
        nk.Erf(), nk.Flatten(), nk.Linear(4),
    )  # fmt: skip


def _rnn_net(w):
    return nk.Sequential(nk.RNN(w, W_std=1.2, U_std=0.9, b_std=0.3, nonlinearity=nk.Erf()), nk.Linear(4))


def _rnn_mean_net(w):
    return nk.Sequential(nk.RNN(w, W_std=1.0, U_std=1.1, b_std=0.2, readout="mean"), nk.Linear(4))


def _conv_transpose_net(w):
    return nk.Sequential(
        nk.Conv1d(w, 1, W_std=1.2, b_std=0.1), nk.ReLU(), nk.ConvTranspose1d(w, 3, stride=2, b_std=0.2), nk.Erf(),
        nk.Flatten(), nk.Linear(4),
    )  # fmt: skip


ARCHS = {
    "attention_1d": (_attention_net, (2, 3)),
    "attention_2d_positional": (_attention_image_net, (2, 2, 2)),
    "rnn_erf_last": (_rnn_net, (2, 4)),
    "rnn_relu_mean": (_rnn_mean_net, (2, 4)),
    "conv_transpose_1d": (_conv_transpose_net, (2, 3)),
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_empirical_ntk_of_built_networks_converges_to_the_kernel(name):
    make, in_shape = ARCHS[name]
    x = _randn(4, *in_shape, seed=3)
    mean_errors = []
    for i, width in enumerate(WIDTHS):
        arch = make(width)
        theta = arch.kernel(x).ntk
        draws = torch.stack(
            [nk.empirical_ntk(arch.build(in_shape, seed=100 * i + s, dtype=DT), x) for s in range(SEEDS)]
        )
        mean_errors.append(float((torch.linalg.norm(draws - theta, dim=(1, 2)) / torch.linalg.norm(theta)).mean()))
    slope = _slope(WIDTHS, mean_errors)
    assert -0.8 <= slope <= -0.2, f"slope {slope:.3f}; errors {dict(zip(WIDTHS, mean_errors, strict=True))}"
    mean, se = _seed_mean_and_se(draws)
    _check_within_five_se(mean, se, theta, relative_power=0.25)


@pytest.mark.parametrize("name", list(ARCHS))
def test_nngp_alone_and_exact_self_pairs_whatever_the_blocks(name):
    make, in_shape = ARCHS[name]
    arch, x = make(8), _randn(5, *in_shape, seed=14)
    full, blocked = arch.kernel(x), arch.kernel(x, batch_size=2)
    assert torch.equal(full.nngp.diagonal(), blocked.nngp.diagonal())  # self-pairs bit for bit
    torch.testing.assert_close(blocked.ntk, full.ntk, rtol=1e-13, atol=0)
    only = arch.kernel(x, _randn(2, *in_shape, seed=15), get="nngp")
    assert only.ntk is None
    torch.testing.assert_close(only.nngp, arch.kernel(x, _randn(2, *in_shape, seed=15)).nngp, rtol=1e-14, atol=0)


# --- RNN: closed forms derived by hand ----------------------------------------------------------------------------


def _linear_rnn(readout):
    return nk.RNN(8, W_std=1.2, U_std=0.9, b_std=0.3, nonlinearity=nk.Identity(), readout=readout)


def _hand_linear_rnn(x1, x2, w, u, b):
    """A linear RNN, g_t = W g_{t−1} + U x_t + b, by hand. With G_ij = ⟨x_i, x'_j⟩/C and independent W, U, b:
    1 step:  K = u²G₁₁ + b²,  Θ = K (gradients of U and b).
    2 steps: K = w²(u²G₁₁ + b²) + u²G₂₂ + b²,  Θ = K + w²·(u²G₁₁ + b²) (the step-1 Θ carried through W).
    1 step against 2 steps: W·g₁' has mean zero and is independent of the rest, so K = Θ = u²G₁₂ + b²."""
    g = lambda i, j: x1[:, :, i] @ x2[:, :, j].T / x1.shape[1]  # noqa: E731
    k1 = u**2 * g(0, 0) + b**2
    k2 = w**2 * k1 + u**2 * g(1, 1) + b**2
    return {"1": (k1, k1), "2": (k2, k2 + w**2 * k1), "12": (u**2 * g(0, 1) + b**2,) * 2}


def test_linear_rnn_matches_the_hand_derived_one_and_two_step_kernels():
    x1, x2 = _randn(3, 2, 2, seed=4), _randn(2, 2, 2, seed=5)
    hand = _hand_linear_rnn(x1, x2, 1.2, 0.9, 0.3)
    rnn = _linear_rnn("last")
    tol = dict(rtol=1e-13, atol=1e-14)
    k = rnn.kernel(x1[:, :, :1], x2[:, :, :1])
    torch.testing.assert_close((k.nngp, k.ntk), hand["1"], **tol)
    k = rnn.kernel(x1, x2)
    torch.testing.assert_close((k.nngp, k.ntk), hand["2"], **tol)
    # different lengths: x1 stops after one step, x2 runs two
    k = rnn.kernel(x1, x2, lengths1=torch.ones(3, dtype=torch.long))
    torch.testing.assert_close((k.nngp, k.ntk), hand["12"], **tol)
    # the mean readout of two steps: (1/4) Σ over the four step pairs; the (2, 1) pair is the mirror of (1, 2)
    k = _linear_rnn("mean").kernel(x1, x2)
    g21 = 1.2**0 * 0.9**2 * (x1[:, :, 1] @ x2[:, :, 0].T) / 2 + 0.3**2
    nngp = (hand["1"][0] + hand["2"][0] + hand["12"][0] + g21) / 4
    ntk = (hand["1"][1] + hand["2"][1] + hand["12"][1] + g21) / 4
    torch.testing.assert_close((k.nngp, k.ntk), (nngp, ntk), **tol)


def test_masks_and_lengths_are_the_kernel_of_the_real_steps():
    arch = nk.Sequential(nk.RNN(8, b_std=0.2, nonlinearity=nk.Erf(), readout="mean"), nk.Linear(1, b_std=0.1))
    x = _randn(3, 2, 4, seed=6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    k = nk.sequence_kernel(arch, x, mask1=mask)
    real = [x[0:1], x[1:2, :, :2], x[2:3][:, :, [0, 2]]]
    for i in range(3):
        for j in range(3):
            ref = arch.kernel(real[i], real[j]) if real[i].shape == real[j].shape else None
            if ref is None:  # different lengths: zero-pad the shorter one and give its length
                n = max(real[i].shape[2], real[j].shape[2])
                pad = [torch.nn.functional.pad(r, (0, n - r.shape[2])) for r in (real[i], real[j])]
                ref = nk.sequence_kernel(arch, pad[0], pad[1], lengths1=torch.tensor([real[i].shape[2]]),
                                         lengths2=torch.tensor([real[j].shape[2]]))  # fmt: skip
            torch.testing.assert_close(k.ntk[i, j], ref.ntk[0, 0], rtol=1e-13, atol=0)
            torch.testing.assert_close(k.nngp[i, j], ref.nngp[0, 0], rtol=1e-13, atol=0)
    lengths = torch.tensor([4, 2, 1])
    by_lengths = nk.sequence_kernel(arch, x, lengths1=lengths)
    by_mask = nk.sequence_kernel(arch, x, mask1=torch.arange(4).view(1, -1) < lengths.view(-1, 1))
    torch.testing.assert_close(by_lengths.ntk, by_mask.ntk, rtol=0, atol=0)


def test_sequences_padded_to_different_lengths():
    arch = nk.Sequential(nk.RNN(8, nonlinearity=nk.Erf()), nk.Linear(1))
    x1, x2 = _randn(2, 2, 3, seed=16), _randn(3, 2, 5, seed=17)
    k = nk.sequence_kernel(arch, x1, x2, lengths2=torch.tensor([5, 2, 3]))
    for j, length in enumerate((5, 2, 3)):
        short, long_ = (x1, x2[j : j + 1, :, :length]) if length <= 3 else (x1, x2[j : j + 1])
        pad = max(short.shape[2], long_.shape[2])
        ref = nk.sequence_kernel(arch, torch.nn.functional.pad(short, (0, pad - 3)),
                                 torch.nn.functional.pad(long_, (0, pad - long_.shape[2])),
                                 lengths1=torch.tensor([3, 3]), lengths2=torch.tensor([length]))  # fmt: skip
        torch.testing.assert_close(k.ntk[:, j], ref.ntk[:, 0], rtol=1e-13, atol=0)
    # the same real steps give the same kernel whatever the padding
    same = nk.sequence_kernel(arch, x1, torch.nn.functional.pad(x1, (0, 4)), lengths2=torch.tensor([3, 3]))
    torch.testing.assert_close(same.nngp, arch.kernel(x1).nngp, rtol=1e-13, atol=0)


def test_masked_forward_is_the_forward_of_the_real_steps():
    rnn = nk.RNN(16, b_std=0.2, nonlinearity=nk.Erf(), readout="mean").build((2, 4), seed=1, dtype=DT)
    x = _randn(2, 2, 4, seed=7)
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    out = rnn(x, mask=mask)
    torch.testing.assert_close(out[0], rnn(x[0:1][:, :, [0, 2, 3]])[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(out[1], rnn(x[1:2, :, 1:3])[0], rtol=1e-14, atol=1e-15)


def test_rnn_weights_are_shared_across_time():
    model = nk.RNN(16).build((3, 7), seed=0)
    assert sorted(name for name, _ in model.named_parameters()) == ["U", "W"]  # b_std=0: no bias


@pytest.mark.parametrize("method", ["structured", "jacobian_contraction"])
def test_empirical_ntk_of_attention_and_rnn_modules_is_detached(method):
    x = _randn(3, 2, 3, seed=13)
    for arch in (_attention_net(8), _rnn_net(8)):
        theta = nk.empirical_ntk(arch.build((2, 3), dtype=DT), x, method=method)
        assert not theta.requires_grad and theta.grad_fn is None


# --- monte_carlo_kernel ---------------------------------------------------------------------------------------------


def test_monte_carlo_kernel_converges_to_the_exact_kernel_within_three_standard_errors():
    """Width 512 and 48 samples: the standard error (≈ 1–3% of the entries) is ≥ 4× the O(1/width) finite-width
    bias (≈ 0.3%, test_monte_carlo_limit.py). 18 entries: a Bonferroni bound of 4 standard errors keeps the
    family-wise false-alarm rate below 18·P(|t₄₇| > 4) ≈ 0.4% whatever the seed or RNG."""
    arch = nk.Sequential(nk.Linear(512, W_std=1.4, b_std=0.1), nk.Erf(), nk.Linear(16, b_std=0.1))
    x = _randn(3, 4, seed=8)
    mc, k = nk.monte_carlo_kernel(arch, x, n_samples=48, progress=False), arch.kernel(x)
    for kind in ("nngp", "ntk"):
        z = (getattr(mc, kind) - getattr(k, kind)).abs() / getattr(mc, f"{kind}_stderr")
        assert float(z.max()) < 4, (kind, z)
        assert float(getattr(mc, f"{kind}_stderr").max()) < 0.1 * float(getattr(k, kind).abs().max())


def test_monte_carlo_kernel_ignores_batch_and_is_exactly_symmetric():
    arch = nk.Sequential(nk.Conv1d(8, 3), nk.ReLU(), nk.MaxPool1d(2), nk.Flatten(), nk.Linear(3))
    x = _randn(5, 2, 4, seed=9)
    a = nk.monte_carlo_kernel(arch, x, n_samples=3, batch=8, progress=False)
    b = nk.monte_carlo_kernel(arch, x, n_samples=3, batch=2, progress=False)
    for kind in ("nngp", "ntk", "nngp_stderr", "ntk_stderr"):
        t = getattr(a, kind)
        assert torch.equal(t, t.T)
        torch.testing.assert_close(t, getattr(b, kind), rtol=1e-12, atol=1e-14)
    only = nk.monte_carlo_kernel(arch, x, _randn(2, 2, 4, seed=10), n_samples=2, get="nngp", progress=False)
    assert only.ntk is None and only.nngp.shape == (5, 2)


def test_monte_carlo_kernel_takes_a_factory_and_checks_it():
    def factory(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).to(DT)

    mc = nk.monte_carlo_kernel(factory, _randn(4, 3, seed=11), n_samples=4, progress=False)
    assert mc.ntk.shape == (4, 4) and bool((mc.ntk_stderr > 0).all())
    with pytest.raises(ValueError, match="different architecture"):
        nk.monte_carlo_kernel(lambda s: torch.nn.Linear(3, 2 + s % 2).to(DT), _randn(4, 3, seed=0), n_samples=3,
                              progress=False)  # fmt: skip
    with pytest.raises(TypeError, match="nn.Module"):
        nk.monte_carlo_kernel(lambda s: "model", _randn(4, 3, seed=0), n_samples=2, progress=False)
    with pytest.raises(ValueError, match="n_samples must be ≥ 2"):
        nk.monte_carlo_kernel(factory, _randn(4, 3, seed=0), n_samples=1)
    with pytest.raises(TypeError, match="arch_or_factory"):
        nk.monte_carlo_kernel(42, _randn(4, 3, seed=0))


def test_sqrt_attention_maxpool_and_softmax_are_refused_by_kernel_but_built_and_estimated():
    x = _randn(3, 2, 4, seed=12)
    for layer, reason in ((nk.SelfAttention(8, scaling="sqrt"), "no closed form"), (nk.MaxPool1d(2), "max"),
                          (nk.Softmax(), "couples all channels")):  # fmt: skip
        arch = nk.Sequential(nk.Conv1d(8, 1), layer, nk.Flatten(), nk.Linear(2))
        if isinstance(layer, nk.Softmax):
            arch = nk.Sequential(nk.Conv1d(8, 1), nk.Flatten(), nk.Linear(4), layer)
        with pytest.raises(ValueError, match=reason) as err:
            arch.kernel(x)
        assert "monte_carlo_kernel" in str(err.value)
        mc = nk.monte_carlo_kernel(arch, x, n_samples=2, progress=False)
        assert bool(torch.isfinite(mc.ntk).all())


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, C, L\) sequences or \(N, C, H, W\) images"):
        nk.Sequential(nk.Linear(4), nk.SelfAttention(4)).kernel(_randn(3, 5, seed=0))
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        nk.SelfAttention(4, n_heads=0)
    with pytest.raises(ValueError, match="attention must be one of"):
        nk.SelfAttention(4, attention="sigmoid")
    with pytest.raises(ValueError, match="needs \\(N, C, L\\) sequences"):
        nk.Sequential(nk.RNN(4), nk.Linear(1)).kernel(_randn(2, 3, 4, 4, seed=0))
    with pytest.raises(ValueError, match=r"mask1 must have shape \(N, L\) = \(2, 4\)"):
        nk.sequence_kernel(nk.RNN(4), _randn(2, 3, 4, seed=0), mask1=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(N, L\) = \(2, 4\)"):
        nk.RNN(4).build((3, 4))(_randn(2, 3, 4, seed=0).float(), mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        nk.sequence_kernel(nk.RNN(4), _randn(2, 3, 4, seed=0), mask1=torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least one real step"):
        nk.sequence_kernel(nk.RNN(4), _randn(2, 3, 4, seed=0), mask1=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        nk.sequence_kernel(nk.RNN(4), _randn(2, 3, 4, seed=0), lengths1=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="first layer is nk.RNN"):
        nk.sequence_kernel(nk.Sequential(nk.Conv1d(4, 1), nk.RNN(4)), _randn(2, 3, 4, seed=0))
    with pytest.raises(ValueError, match=r"ConvTranspose1d.*needs \(N, C, L\) inputs"):
        nk.Sequential(nk.ConvTranspose1d(4, 2), nk.Flatten()).kernel(_randn(3, 5, seed=0))
    with pytest.raises(TypeError, match="activation spec"):
        nk.RNN(4, nonlinearity=torch.tanh)
    for layer in (nk.SelfAttention(4), nk.RNN(4)):
        with pytest.raises(ValueError, match="NTK parameterization only"):
            nk.Sequential(nk.Conv1d(4, 1), layer, nk.Flatten(), nk.Linear(1)).build((2, 3), parameterization="mup")


def test_hermite_needs_unit_variance_and_gaussian_a_finite_expectation():
    x = _randn(3, 5, seed=0)
    with pytest.raises(ValueError, match="LayerNorm"):
        nk.Sequential(nk.Linear(8, W_std=2.0), nk.Hermite(2)).kernel(x)
    with pytest.raises(ValueError, match="infinite"):
        nk.Sequential(nk.Linear(8, W_std=3.0), nk.Gaussian(1.0, 0.5)).kernel(x)
