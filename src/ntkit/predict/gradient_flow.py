"""Training as a linear ODE in function space: closed-form predictions of gradient descent, and GP inference.

Conventions are those of neural-tangents' ``predict`` module, so that results carry over. The loss is
L = ‖f(X) − Y‖² / (2·N·O) for N training points and O outputs, so one gradient step of size η moves the
outputs by −(η/(N·O))·Θ·(f − y), and ``t`` counts steps of size ``learning_rate``. In continuous time

    f_X(t) = y + e^{−ηtΘ/(NO)} (f_X(0) − y),
    f_*(t) = f_*(0) + Θ_{*X} Θ^{-1} (I − e^{−ηtΘ/(NO)}) (y − f_X(0))

(Jacot et al. 2018; Lee et al. 2019, eqs. 8–9). One eigendecomposition Θ = V Λ Vᵀ serves every t.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ntkit._validation import boolean, finite_tensor, one_of, positive_int, real_number

_CONTINUOUS, _DISCRETE = "continuous", "discrete"


class Gaussian(NamedTuple):
    """A Gaussian over function values: ``mean`` (…, M, O) and ``covariance`` (…, M, M) or None."""

    mean: torch.Tensor
    covariance: torch.Tensor | None


# ---------------------------------------------------------------------------------------------------------------
# Checks and the (N, N) / (N, N, O, O) kernel layouts


def _check_kernel(k: torch.Tensor, name: str = "k_train_train") -> torch.Tensor:
    if not isinstance(k, torch.Tensor) or not k.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor; got {getattr(k, 'dtype', type(k))}")
    if k.ndim not in (2, 4) or k.shape[0] != k.shape[1] or (k.ndim == 4 and k.shape[2] != k.shape[3]):
        raise ValueError(f"{name} must be square, (N, N) or (N, N, O, O); got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    flat = _as_matrix(k)
    asym = float((flat - flat.T).abs().max())
    if asym > 1e-6 * max(float(flat.abs().max()), 1e-300):
        raise ValueError(f"{name} must be symmetric; max |K − Kᵀ| = {asym:.3g}")
    return k


def _as_matrix(k: torch.Tensor) -> torch.Tensor:
    """(N, N) stays; (N, N, O, O) becomes the (N·O, N·O) matrix of the flattened outputs (n, o) → n·O + o."""
    if k.ndim == 2:
        return k
    n, _, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * o, n * o)


def _as_cross_matrix(k: torch.Tensor, coupled: bool) -> torch.Tensor:
    if not coupled:
        return k
    m, n, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(m * o, n * o)


def _check_targets(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y_train must be a torch.Tensor; got {type(y).__name__}")
    y = y.unsqueeze(1) if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[0] != k.shape[0]:
        raise ValueError(f"y_train must be (N, O) with N = {k.shape[0]} as in the kernel; got {tuple(y.shape)}")
    if k.ndim == 4 and y.shape[1] != k.shape[2]:
        raise ValueError(f"y_train has {y.shape[1]} outputs but the (N, N, O, O) kernel has O = {k.shape[2]}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y_train contains NaN or Inf values")
    return y.to(k.dtype)


def _regularized(k: torch.Tensor, diag_reg: float, absolute: bool) -> torch.Tensor:
    """K + diag_reg · mean(diag K) · I (or diag_reg · I when ``absolute``), as in neural-tangents."""
    diag_reg = real_number("diag_reg", diag_reg, nonnegative=True)
    absolute = boolean("diag_reg_absolute_scale", absolute)
    if not diag_reg:
        return k
    scale = 1.0 if absolute else float(k.diagonal().mean())
    return k + diag_reg * scale * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)


def _momentum(momentum) -> float:
    momentum = real_number("momentum", momentum)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")
    return momentum


def _cholesky(k: torch.Tensor, diag_reg: float) -> torch.Tensor:
    """The Cholesky factor of the (regularised) train kernel, or a ValueError that says to raise ``diag_reg``."""
    factor, info = torch.linalg.cholesky_ex(k)
    if int(info) != 0:
        raise ValueError(
            f"k_train_train{' + diag_reg·I' if diag_reg else ''} is singular or not positive definite "
            f"(Cholesky failed at pivot {int(info)} of {k.shape[0]}, diag_reg={diag_reg}): duplicate or nearly "
            "collinear training points make K singular; pass diag_reg > 0 (e.g. diag_reg=1e-6, relative to the "
            "mean of K's diagonal), or a larger one"
        )
    return factor


def _initial_outputs(name: str, value, shape: tuple[int, int], dtype, device) -> torch.Tensor:
    """Initial outputs (a number or a tensor broadcastable to ``shape`` = (rows, O)), checked finite."""
    if isinstance(value, str | bool) or not isinstance(value, torch.Tensor | float | int):
        raise TypeError(f"{name} must be a number or a tensor broadcastable to {shape}; got {type(value).__name__}")
    value = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value, dtype=dtype, device=device)
    try:
        value = torch.broadcast_to(value, shape)
    except RuntimeError as err:
        raise ValueError(f"{name} must broadcast to {shape}; got shape {tuple(value.shape)}") from err
    return finite_tensor(name, value)


def _times(t, dtype, device) -> tuple[torch.Tensor, bool]:
    """t as a 1-D tensor (∞ for None) and whether the caller gave a vector of times."""
    if t is None:
        return torch.tensor([float("inf")], dtype=dtype, device=device), False
    if isinstance(t, str | bool):
        raise TypeError(f"t must be a number ≥ 0, a sequence of them, or None (t = ∞); got {t!r}")
    try:
        times = torch.as_tensor(t.detach() if isinstance(t, torch.Tensor) else t, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"t must be a number ≥ 0, a sequence of them, or None (t = ∞); got {t!r}") from err
    if not bool((times >= 0).all()) or bool(torch.isnan(times).any()):
        raise ValueError(f"t must be ≥ 0 (None for t = ∞); got {t}")
    return times.reshape(-1), times.ndim > 0


def _range_mask(evals: torch.Tensor) -> torch.Tensor:
    """Eigenvalues that are nonzero beyond rounding: λ > P·ε·λ_max, the cut-off of ``torch.linalg.pinv``."""
    return evals > evals.shape[0] * torch.finfo(evals.dtype).eps * evals.max()


def _eigen(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clipped at 0: a kernel is PSD, negative values are rounding) and eigenvectors."""
    evals, evecs = torch.linalg.eigh(k)
    return evals.clamp_min(0), evecs


# ---------------------------------------------------------------------------------------------------------------
# Closed-form MSE dynamics


def max_learning_rate(k_train_train: torch.Tensor, y_train_size: int | None = None, momentum: float = 0.0) -> float:
    """The largest stable learning rate of discrete gradient descent on the MSE.

    A step multiplies the residual by I − (η/S)Θ with S = ``y_train_size`` (N·O), and heavy-ball momentum m
    keeps it bounded while η λ_max / S < 2(1 + m), so η_max = 2 (1 + m) S / λ_max. ``y_train_size`` defaults
    to N for an (N, N) kernel and N·O for an (N, N, O, O) one.
    """
    k = _as_matrix(_check_kernel(k_train_train))
    momentum = _momentum(momentum)
    size = k.shape[0] if y_train_size is None else positive_int("y_train_size", y_train_size)
    lam_max = float(torch.linalg.eigvalsh(k)[-1])
    if lam_max <= 0:
        raise ValueError("k_train_train has no positive eigenvalue; any learning rate is stable")
    return 2 * (1 + momentum) * size / lam_max


def gradient_descent_mse(
    k_train_train: torch.Tensor,
    y_train: torch.Tensor,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    discrete: bool = False,
) -> Callable:
    """Closed-form outputs of gradient descent on the MSE at any time t, from the train-train kernel.

    Returns ``predict(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)``, which gives ``fx_train_t``
    and, when ``k_test_train`` (M, N) or (M, N, O, O) is given, ``(fx_train_t, fx_test_t)``. ``t=None`` is
    t = ∞; a vector of T times gives a leading time axis (T, N, O). With ``discrete=True`` t counts whole steps
    of plain gradient descent, whose factor (1 − ηλ/(NO))^t replaces e^{−ηtλ/(NO)}; the learning rate must then
    be below :func:`max_learning_rate`.

    The (N, N) kernel acts on each output column alone; a (N, N, O, O) kernel couples them.
    """
    k = _check_kernel(k_train_train)
    y = _check_targets(y_train, k)
    coupled = k.ndim == 4
    n, o = y.shape
    size = n * o
    k_mat = _regularized(_as_matrix(k), diag_reg, diag_reg_absolute_scale)
    learning_rate = real_number("learning_rate", learning_rate, positive=True)
    if boolean("discrete", discrete):
        bound = max_learning_rate(k_mat, size)
        if learning_rate >= bound:
            raise ValueError(f"learning_rate {learning_rate:g} ≥ max_learning_rate {bound:g}: discrete gradient "
                             "descent diverges; lower it or use discrete=False")  # fmt: skip
    evals, evecs = _eigen(k_mat)
    rate = learning_rate / size
    positive = _range_mask(evals).unsqueeze(0)  # (1, P): directions in the kernel's range

    def residual_factor(times: torch.Tensor) -> torch.Tensor:
        """(T, P): the factor each eigen-direction of the residual keeps after time t.

        At t = ∞ a direction in the kernel's range has decayed to 0 and one in its null space keeps all of its
        residual, so that t = None is exactly the limit of large finite t (the train outputs tend to
        f(0) + P(y − f(0)) with P the projection on the range, not to y, when Θ is singular).
        """
        lam = evals.unsqueeze(0)
        tt = times.unsqueeze(1)
        finite = torch.where(torch.isinf(tt), torch.zeros_like(tt), tt)
        keep = (1 - rate * lam) ** finite if discrete else torch.exp(-rate * lam * finite)
        return torch.where(torch.isinf(tt), (~positive).to(lam.dtype), keep)

    def fit_factor(times: torch.Tensor) -> torch.Tensor:
        """(T, P): (1 − keep)/λ, the operator Θ⁻¹(I − e^{−ηtΘ}) in the eigenbasis; λ → 0 taken as a limit."""
        keep = residual_factor(times)
        lam = evals.unsqueeze(0)
        safe = torch.where(positive, lam, torch.ones_like(lam))
        ratio = (1 - keep) / safe
        small = rate * times.unsqueeze(1)  # (1 − e^{−rtλ})/λ and (1 − (1 − rλ)^t)/λ both → r·t as λ → 0
        small = torch.where(torch.isinf(small), torch.zeros_like(small), small)  # t = ∞: pseudo-inverse
        return torch.where(positive, ratio, small)

    def predict(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        times, vector = _times(t, k_mat.dtype, k_mat.device)
        f0 = _initial_outputs("fx_train_0", fx_train_0, (n, o), k_mat.dtype, k_mat.device)
        r0 = _flatten(f0 - y, coupled)  # (P, C): C = O columns, or one column of all N·O outputs
        proj = evecs.T @ r0
        fx_train = _flatten(y, coupled) + torch.einsum("pi,ti,ic->tpc", evecs, residual_factor(times), proj)
        fx_train = _unflatten(fx_train, n, o, coupled)
        if k_test_train is None:
            return fx_train if vector else fx_train[0]
        cross = _check_cross(k_test_train, n, o, coupled, k_mat)
        m = cross.shape[0] // (o if coupled else 1)
        g0 = 0.0 if fx_test_0 is None else fx_test_0
        g0 = _initial_outputs("fx_test_0", g0, (m, o), k_mat.dtype, k_mat.device)
        change = torch.einsum("mp,pi,ti,ic->tmc", cross, evecs, fit_factor(times), -proj)
        fx_test = _unflatten(_flatten(g0, coupled) + change, m, o, coupled)
        if vector:
            return fx_train, fx_test
        return fx_train[0], fx_test[0]

    return predict


def _flatten(f: torch.Tensor, coupled: bool) -> torch.Tensor:
    return f.reshape(-1, 1) if coupled else f


def _unflatten(f: torch.Tensor, m: int, o: int, coupled: bool) -> torch.Tensor:
    return f.reshape(*f.shape[:-2], m, o) if coupled else f


def _check_cross(k: torch.Tensor, n: int, o: int, coupled: bool, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k_test_train must be a torch.Tensor; got {type(k).__name__}")
    expected = "(M, N, O, O)" if coupled else "(M, N)"
    if k.ndim != (4 if coupled else 2) or k.shape[1] != n or (coupled and k.shape[2:] != (o, o)):
        raise ValueError(f"k_test_train must be {expected} with N = {n}; got {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError("k_test_train contains NaN or Inf values")
    return _as_cross_matrix(k.to(like.dtype), coupled)


# ---------------------------------------------------------------------------------------------------------------
# Gaussian process inference and the ensemble of infinitely wide networks


def gp_inference(
    k_train_train: torch.Tensor, y_train: torch.Tensor, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False
) -> Callable:
    """Exact Bayesian posterior of a GP with prior covariance K (the NNGP, or the NTK as a kernel).

    Returns ``predict(k_test_train, k_test_test=None) -> Gaussian`` with

        mean = K_{*X} (K + σ²I)⁻¹ y,        cov = K_{**} − K_{*X} (K + σ²I)⁻¹ K_{X*}

    (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, eqs. 2.23–2.24), σ² from
    ``diag_reg`` as in :func:`gradient_descent_mse`. ``covariance`` is None unless ``k_test_test`` is given.
    """
    k = _check_kernel(k_train_train)
    if k.ndim != 2:
        raise ValueError("gp_inference takes an (N, N) kernel; outputs are independent GPs with that covariance")
    y = _check_targets(y_train, k)
    chol = _cholesky(_regularized(k, diag_reg, diag_reg_absolute_scale), diag_reg)
    alpha = torch.cholesky_solve(y, chol)

    def predict(k_test_train: torch.Tensor, k_test_test: torch.Tensor | None = None) -> Gaussian:
        cross = _check_cross(k_test_train, k.shape[0], y.shape[1], False, k)
        mean = cross @ alpha
        if k_test_test is None:
            return Gaussian(mean, None)
        if k_test_test.shape != (cross.shape[0], cross.shape[0]):
            raise ValueError(f"k_test_test must be (M, M) = {(cross.shape[0],) * 2}; got {tuple(k_test_test.shape)}")
        cov = k_test_test.to(k.dtype) - cross @ torch.cholesky_solve(cross.T, chol)
        return Gaussian(mean, cov)

    return predict


def gradient_descent_mse_ensemble(
    arch,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable:
    """Mean and covariance over random initialisations of infinitely wide networks trained by gradient flow.

    With f(0) ~ GP(0, K) (the NNGP), dynamics kernel D (Θ when every layer trains, ``get="ntk"``; K when only
    the readout trains, ``get="nngp"``) and A(t) = D_{*X} D̃⁻¹ (I − e^{−ηtD̃/(NO)}) (Lee et al. 2019, eqs. 15–16):

        mean(t) = A(t) y,
        cov(t)  = K_{**} + A(t) K̃_{XX} A(t)ᵀ − A(t) K_{X*} − K_{*X} A(t)ᵀ.

    Regularisation, one convention for every t and both ``get``: ``diag_reg`` ε acts as independent noise on the
    *training* outputs, so every train-train kernel is regularised, D̃ = D_{XX} + ε·s_D·I and
    K̃_{XX} = K_{XX} + ε·s_K·I (s the mean of the kernel's diagonal, or 1 with ``diag_reg_absolute_scale``),
    while the test-train and test-test kernels are not. For ``get="nngp"`` at t = ∞ the covariance is then
    exactly the GP posterior of :func:`gp_inference`, K_{**} − K_{*X} (K_{XX} + εI)⁻¹ K_{X*}, and at any t it
    is K_{**} − K_{*X} K̃⁻¹ (I − e^{−2ηtK̃/(NO)}) K_{X*}, as in neural-tangents. (For ``get="ntk"``
    neural-tangents puts the unregularised K_{XX} in the A K Aᵀ term; the two differ by ε·s_K·A Aᵀ.)

    Returns ``predict(t=None, x_test=None, get="ntk", compute_cov=False) -> Gaussian``; ``x_test=None`` predicts
    on the training points, the same as ``x_test=x_train``. ``arch`` is an ntkit architecture
    (``arch.kernel(x1, x2)`` gives ``.nngp`` and ``.ntk``).
    """
    if not callable(getattr(arch, "kernel", None)):
        raise TypeError(f"arch must be an ntkit architecture with a .kernel(x1, x2) method; got {type(arch).__name__}")
    k_train = arch.kernel(x_train)
    if k_train.nngp.ndim != 2:
        raise ValueError("arch must end with a reduction (Flatten / GlobalAvgPool + Linear): its kernel is not (N, N)")
    y = _check_targets(y_train, k_train.nngp)
    n, o = y.shape
    rate = real_number("learning_rate", learning_rate, positive=True) / (n * o)
    regularized = {
        get: _regularized(getattr(k_train, get), diag_reg, diag_reg_absolute_scale) for get in ("ntk", "nngp")
    }
    eig = {get: _eigen(d) for get, d in regularized.items()}

    def predict(t=None, x_test: torch.Tensor | None = None, get: str = "ntk", compute_cov: bool = False) -> Gaussian:
        one_of("get", get, ("ntk", "nngp"))
        compute_cov = boolean("compute_cov", compute_cov)
        times, vector = _times(t, y.dtype, y.device)
        if x_test is None:
            d_cross, k_cross, k_test = getattr(k_train, get), k_train.nngp, k_train.nngp
        else:
            k_tx = arch.kernel(x_test, x_train)
            d_cross, k_cross = getattr(k_tx, get), k_tx.nngp
            k_test = arch.kernel(x_test).nngp if compute_cov else None
        evals, evecs = eig[get]
        lam = evals.unsqueeze(0)
        positive = _range_mask(evals).unsqueeze(0)
        keep = torch.exp(-rate * lam * times.unsqueeze(1)).nan_to_num(0.0)
        small = torch.where(torch.isinf(times), torch.zeros_like(times), rate * times).unsqueeze(1)
        factor = torch.where(positive, (1 - keep) / torch.where(positive, lam, torch.ones_like(lam)), small)
        a = torch.einsum("mp,pi,ti,qi->tmq", d_cross, evecs, factor, evecs)  # A(t): (T, M, N)
        mean = a @ y
        cov = None
        if compute_cov:
            ak = a @ k_cross.T.unsqueeze(0) if x_test is not None else a @ k_train.nngp
            cov = k_test + a @ regularized["nngp"] @ a.transpose(1, 2) - ak - ak.transpose(1, 2)
        if not vector:
            return Gaussian(mean[0], None if cov is None else cov[0])
        return Gaussian(mean, cov)

    return predict


# ---------------------------------------------------------------------------------------------------------------
# Any loss: the function-space ODE, integrated numerically


def gradient_descent(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    k_train_train: torch.Tensor,
    y_train: torch.Tensor,
    learning_rate: float = 1.0,
    momentum: float | None = None,
) -> Callable:
    """Outputs of gradient descent on any differentiable ``loss(fx, y) -> scalar``, from the NTK, by an ODE solver.

    In function space (Lee et al. 2019, eq. 6), with ∇L the gradient of the loss with respect to the train
    outputs (computed by autograd),

        df_X/dt = −η Θ ∇L(f_X),        df_*/dt = −η Θ_{*X} ∇L(f_X).

    For the MSE with L = ‖f − y‖²/(2NO) this is :func:`gradient_descent_mse`. With heavy-ball ``momentum`` m the
    ODE is second order and, as in neural-tangents, is solved in units τ = √η·t: d²f/dτ² = −Θ∇L + ((m − 1)/√η)
    df/dτ. Returns ``predict(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`` like
    :func:`gradient_descent_mse`; ``t`` must be finite here. Integrated with SciPy's DOP853 at rtol 1e-10.
    """
    from scipy.integrate import solve_ivp

    if not callable(loss):
        raise TypeError(f"loss must be a callable loss(fx, y) -> scalar tensor; got {type(loss).__name__}")

    k = _check_kernel(k_train_train)
    y = _check_targets(y_train, k)
    coupled = k.ndim == 4
    n, o = y.shape
    learning_rate = real_number("learning_rate", learning_rate, positive=True)
    momentum = None if momentum is None else _momentum(momentum)
    # The integrator works on NumPy float64 arrays; the kernel goes to the CPU once, results go back at the end.
    device, dtype = k.device, k.dtype
    k_mat = _as_matrix(k).detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64)
    scale = learning_rate**0.5 if momentum is not None else learning_rate
    friction = None if momentum is None else (momentum - 1.0) / learning_rate**0.5

    def loss_gradient(f_train: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            f = f_train.detach().requires_grad_(True)
            value = loss(f, y)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError("loss must return a scalar tensor")
            (grad,) = torch.autograd.grad(value, f)
        return grad

    def predict(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if t is None:
            raise ValueError("t must be finite for gradient_descent (an ODE is integrated up to it)")
        times, vector = _times(t, torch.float64, "cpu")
        if bool(torch.isinf(times).any()):
            raise ValueError("t must be finite for gradient_descent")
        unique_times, where = torch.unique(times, return_inverse=True)  # sorted; repeated times solved once
        f0 = _initial_outputs("fx_train_0", fx_train_0, (n, o), torch.float64, "cpu").clone()
        cross = None
        if k_test_train is not None:
            cross = _check_cross(k_test_train, n, o, coupled, k_mat).detach().cpu()
        m = 0 if cross is None else cross.shape[0] // (o if coupled else 1)
        g0 = _initial_outputs("fx_test_0", 0.0 if fx_test_0 is None else fx_test_0, (m, o), torch.float64, "cpu")
        g0 = g0.clone()
        sizes = [n * o, m * o]

        def velocity(grad: torch.Tensor) -> torch.Tensor:
            flat = _flatten(grad, coupled)
            train = -_unflatten(k_mat @ flat, n, o, coupled)
            test = -_unflatten(cross @ flat, m, o, coupled) if cross is not None else torch.zeros(0, o)
            return torch.cat([train.reshape(-1), test.reshape(-1)])

        def rhs(_, state):
            state = torch.as_tensor(state, dtype=torch.float64)
            f_train = state[: n * o].reshape(n, o)
            v = velocity(loss_gradient(f_train))
            if momentum is None:
                return (scale * v).numpy()
            q = state[sum(sizes) :]
            return torch.cat([q, v + friction * q]).numpy()

        state0 = torch.cat([f0.reshape(-1), g0.reshape(-1)])
        if momentum is not None:
            state0 = torch.cat([state0, torch.zeros_like(state0)])
        t_eval = unique_times.numpy() * (1.0 if momentum is None else learning_rate**0.5)
        if t_eval[-1] == 0:  # nothing to integrate: every requested time is t = 0
            solved = state0.unsqueeze(0)
        else:
            sol = solve_ivp(rhs, (0.0, float(t_eval[-1])), state0.numpy(), method="DOP853", t_eval=t_eval,
                            rtol=1e-10, atol=1e-12)  # fmt: skip
            if not sol.success:
                raise RuntimeError(f"the ODE solver failed: {sol.message}")
            solved = torch.as_tensor(sol.y.T, dtype=torch.float64)
        states = solved[where].to(device, dtype)
        fx_train = states[:, : n * o].reshape(-1, n, o)
        if cross is None:
            return fx_train if vector else fx_train[0]
        fx_test = states[:, n * o : sum(sizes)].reshape(-1, m, o)
        return (fx_train, fx_test) if vector else (fx_train[0], fx_test[0])

    return predict
