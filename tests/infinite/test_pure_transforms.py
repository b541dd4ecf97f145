"""Every spec's ``transform`` leaves the Kernel it is given unchanged (DESIGN.md: "A spec's transform never
changes the Kernel it is given"). Parallel hands one Kernel to all its branches and Residual reuses its input,
so a transform that wrote into its input's tensors would corrupt its siblings silently. Checked bit for bit on
every spec, with x2 given and without (var2 None), and with closed-form activation kernels checked against
Price's theorem (∂E[φ(u)φ(v)]/∂Σ12 = E[φ'(u)φ'(v)]), an identity independent of how each NTK factor is derived.
"""

import pytest
import torch

import ntkit as nk
from ntkit.infinite import activations as act
from ntkit.infinite.kernel import input_kernel

DT = torch.float64
ACTIVATIONS = [
    nk.ReLU(), nk.LeakyReLU(0.2), nk.Erf(), nk.GELU(), nk.Sin(), nk.Tanh(), nk.Identity(), nk.Abs(), nk.Sign(),
    nk.Exp(0.7, 0.4), nk.Gaussian(1.1, -0.6), nk.Cos(), nk.Rbf(0.5), nk.Monomial(3), nk.RectifiedMonomial(2),
    nk.ABReLU(0.3, -1.2), nk.SiLU(), nk.Softplus(), nk.ELU(0.7),
]  # fmt: skip
SPATIAL_1D = [
    nk.Conv1d(4, 3), nk.Conv1d(4, 2, stride=2, padding="valid"), nk.Conv1d(4, 3, padding="circular"),
    nk.AvgPool1d(2), nk.SumPool1d(2, stride=1), nk.GlobalAvgPool1d(), nk.Flatten(), nk.LayerNorm(),
    nk.SelfAttention(4, b_std=0.1), nk.SelfAttention(4, attention="relu", positional="concat"),
    nk.RNN(4, b_std=0.1, readout="mean"), nk.RNN(4, nonlinearity=nk.Erf()), nk.ConvTranspose1d(4, 3, stride=2),
    nk.Residual(nk.ReLU(), nk.Conv1d(3, 3)), nk.Residual(nk.SelfAttention(3)),
    nk.Parallel(nk.Sequential(nk.ReLU(), nk.Conv1d(4, 1)), nk.Sequential(nk.Erf(), nk.Conv1d(4, 3))),
    nk.Parallel(nk.ReLU(), nk.Conv1d(3, 1), nk.LayerNorm(), combine="concat"),
]  # fmt: skip
SPATIAL_2D = [nk.Conv2d(4, 3), nk.ConvTranspose2d(4, (2, 3), stride=(2, 1), parameterization="standard"),
              nk.AvgPool2d(2, stride=1), nk.SumPool2d(2), nk.GlobalAvgPool2d(),
              nk.SelfAttention(4, positional="sum"), nk.Flatten(), nk.LayerNorm()]  # fmt: skip
VECTOR = [nk.Linear(4, b_std=0.2), nk.Linear(4, parameterization="standard"), nk.LayerNorm(),
          nk.Residual(nk.Erf(), nk.Linear(3)),
          nk.Parallel(nk.Identity(), nk.Sequential(nk.ReLU(), nk.Linear(3)))]  # fmt: skip


def _kernel(shape, with_x2: bool, seed: int = 0):
    """A Gaussian kernel with a nonzero NTK: the data's kernel after one affine layer."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(3, *shape, generator=g, dtype=DT)
    x2 = torch.randn(2, *shape, generator=g, dtype=DT) if with_x2 else None
    first = (
        nk.Linear(shape[0], b_std=0.3) if len(shape) == 1 else {2: nk.Conv1d, 3: nk.Conv2d}[len(shape)](3, 1, b_std=0.3)
    )
    return first.transform(input_kernel(x1, x2))


def _snapshot(k):
    return [None if t is None else t.clone() for t in (k.nngp, k.ntk, k.var1, k.var2)]


CASES = [(s, (3,)) for s in VECTOR + ACTIVATIONS] + [(s, (3, 4)) for s in SPATIAL_1D + ACTIVATIONS]
CASES += [(s, (3, 3, 2)) for s in SPATIAL_2D + ACTIVATIONS[:4]]


@pytest.mark.parametrize("with_x2", [False, True])
@pytest.mark.parametrize(("spec", "shape"), CASES, ids=[f"{s!r}-{len(sh)}" for s, sh in CASES])
def test_transform_never_changes_its_input(spec, shape, with_x2):
    k = _kernel(shape, with_x2)
    before = _snapshot(k)
    out = spec.transform(k)
    for b, a in zip(before, (k.nngp, k.ntk, k.var1, k.var2), strict=True):
        assert (b is None and a is None) or torch.equal(b, a)
    assert all(t is None or bool(torch.isfinite(t).all()) for t in (out.nngp, out.ntk, out.var1, out.var2))


@pytest.mark.parametrize("phi", [a for a in ACTIVATIONS if not isinstance(a, (nk.Sign, nk.Identity))], ids=repr)
def test_activation_ntk_factor_is_the_derivative_of_the_nngp_in_the_covariance(phi):
    """Central differences in Σ12 with step h = 1e-4: truncation ~h²·|∂³E/∂Σ12³| ≈ 1e-8 and rounding
    ~1e-16/h ≈ 1e-12 (quadratures ~1e-14/h ≈ 1e-10), so agreement to 1e-6 relative checks every factor."""
    c11 = torch.tensor([0.7, 1.1, 0.9, 0.45], dtype=DT)
    c22 = torch.tensor([1.1, 0.5, 0.9, 0.6], dtype=DT)
    c12 = torch.tensor([0.3, -0.6, 0.5, 0.05], dtype=DT)
    h = 1e-4
    derivative = (phi.kernels(c11, c12 + h, c22)[0] - phi.kernels(c11, c12 - h, c22)[0]) / (2 * h)
    k_dot = phi.kernels(c11, c12, c22)[1]
    torch.testing.assert_close(k_dot, derivative, rtol=1e-6, atol=1e-6 * float(k_dot.abs().max()))


def test_special_cases_agree_with_the_existing_closed_forms():
    c11 = torch.tensor([0.7, 1.1, 0.9], dtype=DT)
    c22 = torch.tensor([1.1, 0.5, 0.9], dtype=DT)
    c12 = torch.tensor([0.3, -0.6, 0.9], dtype=DT)
    relu, leaky = act.relu_kernels(c11, c12, c22), act.leaky_relu_kernels(c11, c12, c22, 0.2)
    tol = dict(rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(nk.RectifiedMonomial(1).kernels(c11, c12, c22), relu, **tol)
    torch.testing.assert_close(nk.ABReLU(0.0, 1.0).kernels(c11, c12, c22), relu, **tol)
    torch.testing.assert_close(nk.ABReLU(0.2, 1.0).kernels(c11, c12, c22), leaky, **tol)
    # |x| = relu(x) + relu(−x): E = 2 J(Σ12) + 2 J(−Σ12) with J the ReLU kernel; E[sign u sign v] likewise
    flipped = act.relu_kernels(c11, -c12, c22)
    torch.testing.assert_close(nk.Abs().kernels(c11, c12, c22)[0], 2 * (relu[0] + flipped[0]), **tol)
    torch.testing.assert_close(nk.Sign().kernels(c11, c12, c22)[0], 2 * (relu[1] - flipped[1]), **tol)
    # x² : E[u²v²] = Σ11Σ22 + 2Σ12² (Isserlis)
    torch.testing.assert_close(nk.Monomial(2).kernels(c11, c12, c22)[0], c11 * c22 + 2 * c12**2, **tol)
