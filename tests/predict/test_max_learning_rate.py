"""``predict.max_learning_rate`` against the bound by hand and against the recursions it is meant to bound.

A discrete step multiplies the residual r = f − y by I − (η/S)·Θ (S = N·O); heavy-ball momentum m gives
r_{k+1} = r_k + m (r_k − r_{k−1}) − (η/S) Θ r_k, stable iff η λ_max/S < 2(1 + m). So η_max = 2(1 + m)·S/λ_max,
computed here from ``torch.linalg.eigvalsh`` (coupled kernels flattened output-major), and the recursions are
iterated by hand at 0.99·η_max (must converge) and 1.01·η_max (must blow up).
"""

import pytest
import torch

from ntkit import predict

DT = torch.float64
N = 6


def _psd(p, seed):
    a = torch.randn(p, p, dtype=DT, generator=torch.Generator().manual_seed(seed))
    return a @ a.T / p + 0.05 * torch.eye(p, dtype=DT)


def _coupled(o, seed):
    b = _psd(N * o, seed)  # output-major B[i·N + a, j·N + b]
    return b, b.reshape(o, N, o, N).permute(1, 3, 0, 2).contiguous()


def _iterate(k, lr, size, momentum, steps=3000, seed=0):
    """‖r_steps‖ / ‖r_0‖ for the (heavy-ball) recursion on the residual."""
    r0 = torch.randn(k.shape[0], dtype=DT, generator=torch.Generator().manual_seed(seed))
    prev, r = r0.clone(), r0.clone()
    for _ in range(steps):
        prev, r = r, r + momentum * (r - prev) - (lr / size) * (k @ r)
    return float(r.norm() / r0.norm())


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_bound_by_hand(momentum):
    k = _psd(N, 1)
    lam = float(torch.linalg.eigvalsh(k)[-1])
    got = predict.max_learning_rate(k, momentum=momentum)
    assert got == pytest.approx(2 * (1 + momentum) * N / lam, rel=1e-12)
    got = predict.max_learning_rate(k, y_train_size=3 * N, momentum=momentum)
    assert got == pytest.approx(2 * (1 + momentum) * 3 * N / lam, rel=1e-12)
    b, k4 = _coupled(2, 2)
    lam4 = float(torch.linalg.eigvalsh(b)[-1])
    got = predict.max_learning_rate(k4, momentum=momentum)  # default size N·O
    assert got == pytest.approx(2 * (1 + momentum) * 2 * N / lam4, rel=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("coupled", [False, True])
def test_recursion_converges_just_below_and_diverges_just_above(coupled, momentum):
    if coupled:
        b, k = _coupled(2, 3)
        matrix, size = b, 2 * N
    else:
        k = _psd(N, 4)
        matrix, size = k, N
    bound = predict.max_learning_rate(k, momentum=momentum)
    assert _iterate(matrix, 0.99 * bound, size, momentum) < 1e-6
    assert _iterate(matrix, 1.01 * bound, size, momentum) > 1e6


@pytest.mark.parametrize("coupled", [False, True])
def test_discrete_gradient_descent_mse_accepts_below_and_rejects_above(coupled):
    o = 2
    y = torch.randn(N, o, dtype=DT, generator=torch.Generator().manual_seed(5))
    k = _coupled(o, 6)[1] if coupled else _psd(N, 6)
    bound = predict.max_learning_rate(k, y_train_size=y.numel())
    p = predict.gradient_descent_mse(k, y, learning_rate=0.99 * bound, discrete=True)
    f0 = torch.zeros(N, o, dtype=DT)
    torch.testing.assert_close(p(3000, f0), y, rtol=1e-6, atol=1e-6)  # converged
    with pytest.raises(ValueError, match="max_learning_rate"):
        predict.gradient_descent_mse(k, y, learning_rate=1.01 * bound, discrete=True)


def test_bound_used_by_gradient_descent_mse_counts_every_output():
    """With an (N, N) kernel and O = 3 outputs the step is η/(N·O)·Θ, so the limit is 2·N·O/λ_max, not 2·N/λ_max."""
    k = _psd(N, 7)
    y = torch.randn(N, 3, dtype=DT, generator=torch.Generator().manual_seed(8))
    per_example = predict.max_learning_rate(k)  # 2·N/λ_max
    lr = 2.0 * per_example  # above 2N/λ, below 2NO/λ
    p = predict.gradient_descent_mse(k, y, learning_rate=lr, discrete=True)
    torch.testing.assert_close(p(2000, torch.zeros_like(y)), y, rtol=1e-6, atol=1e-6)


def test_errors():
    k = _psd(N, 9)
    for momentum in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            predict.max_learning_rate(k, momentum=momentum)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        predict.max_learning_rate(torch.zeros(N, N, dtype=DT))
    with pytest.raises(ValueError, match="square"):
        predict.max_learning_rate(k[:, :-1])
