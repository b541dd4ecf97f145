"""Bad hyperparameters in ``ntkit.predict`` get a clear error naming the argument (issue 10, item 8): TypeError
for a wrong type, ValueError for NaN, ±inf or a value out of range; never a NaN result or a raw library error."""

import math
from types import SimpleNamespace

import pytest
import torch

from ntkit import predict

N = 4


def kernel():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(N, 6, dtype=torch.float64, generator=g)
    return features @ features.T


def targets():
    return torch.randn(N, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


class StubArch:
    def kernel(self, x1, x2=None, **kwargs):
        x2 = x1 if x2 is None else x2
        k = torch.exp(x1 @ x2.T)
        return SimpleNamespace(nngp=k, ntk=2 * k)


def gd_mse(**kw):
    return predict.gradient_descent_mse(kernel(), targets(), **kw)


def gd_mse_at(**kw):
    return predict.gradient_descent_mse(kernel(), targets())(**kw)


def gd(**kw):
    return predict.gradient_descent(lambda f, y: ((f - y) ** 2).sum(), kernel(), targets(), **kw)


def gp(**kw):
    return predict.gp_inference(kernel(), targets(), **kw)


def ensemble(**kw):
    return predict.gradient_descent_mse_ensemble(StubArch(), torch.randn(N, 2, dtype=torch.float64), targets(), **kw)


def max_lr(**kw):
    return predict.max_learning_rate(kernel(), **kw)


NAN, INF = math.nan, math.inf
CASES = [
    # (call, argument, bad value, error)
    *[(f, "learning_rate", v, ValueError) for f in (gd_mse, gd, ensemble) for v in (NAN, INF, -1.0, 0.0)],
    *[(f, "learning_rate", v, TypeError) for f in (gd_mse, gd, ensemble) for v in ("1", None, True)],
    *[(f, "diag_reg", v, ValueError) for f in (gd_mse, gp, ensemble) for v in (NAN, INF, -0.1)],
    *[(f, "diag_reg", "0", TypeError) for f in (gd_mse, gp, ensemble)],
    *[(f, "diag_reg_absolute_scale", "False", TypeError) for f in (gd_mse, gp, ensemble)],
    (gd_mse, "discrete", "no", TypeError),
    (gd, "momentum", NAN, ValueError),
    (gd, "momentum", 1.0, ValueError),
    (gd, "momentum", "0.5", TypeError),
    (max_lr, "momentum", NAN, ValueError),
    (max_lr, "momentum", "0", TypeError),
    (max_lr, "y_train_size", 0, ValueError),
    (max_lr, "y_train_size", 2.5, TypeError),
    (gd_mse_at, "t", NAN, ValueError),
    (gd_mse_at, "t", "soon", TypeError),
    (gd_mse_at, "fx_train_0", NAN, ValueError),
    (gd_mse_at, "fx_train_0", "0", TypeError),
]


def ensemble_at(**kw):
    return ensemble()(**{"t": 1.0, **kw})


def gd_with_loss(loss):
    return predict.gradient_descent(loss, kernel(), targets())


CASES += [
    (ensemble_at, "get", "both", ValueError),
    (ensemble_at, "compute_cov", "yes", TypeError),
    (ensemble_at, "t", NAN, ValueError),
    (gd_with_loss, "loss", "mse", TypeError),
]


@pytest.mark.parametrize("call, argument, value, error", CASES, ids=[f"{c.__name__}-{a}={v!r}" for c, a, v, _ in CASES])
def test_bad_hyperparameter_is_named(call, argument, value, error):
    with pytest.raises(error, match=argument):
        call(**{argument: value})


def test_gp_inference_on_a_singular_kernel_says_to_use_diag_reg():
    # K = 2·11ᵀ has rank 1 and every Cholesky step on it is exact (the second pivot is 2 − 1·2 = 0 on any BLAS),
    # so the factorisation fails everywhere; a random low-rank Gram matrix leaves pivots of ±ε‖K‖ whose sign
    # depends on the rounding.
    k = torch.full((N, N), 2.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"(?s)singular.*diag_reg"):
        predict.gp_inference(k, targets())
    # and the advice works: a small ridge gives the ridge-regression mean K_{*X} (K + εI)⁻¹ y, by a direct solve
    eps = 1e-6 * float(k.diagonal().mean())
    mean = predict.gp_inference(k, targets(), diag_reg=1e-6)(k[:2]).mean
    expected = k[:2] @ torch.linalg.solve(k + eps * torch.eye(N, dtype=torch.float64), targets())
    cond = float(torch.linalg.cond(k + eps * torch.eye(N, dtype=torch.float64)))
    torch.testing.assert_close(mean, expected, rtol=0, atol=10 * N * cond * 2.0**-53 * float(expected.abs().max()))
