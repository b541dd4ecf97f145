"""The demo's learning-curve panel: the predicted test error of kernel regression with the page's architecture on
its task, from the kernel's spectrum alone, with the measured error at a few n drawn over it.

``POST /api/learning-curve`` takes ``{"depth", "activation", "task", "seed"}`` (the page's own controls, checked
against :data:`ntkit.demo.params.SPEC`; missing keys take their defaults) and answers

``{"n": [...], "predicted": [...], "measured": [{"n", "mean", "stderr"}], "eigenvalues": [...], "ridge", ...}``

or 422 with ``{"errors": [{"param", "message"}]}``. The kernel is the infinite-width NTK of the page's MLP
(``W_std``, ``b_std`` as in the experiment). Its spectrum and the target's coefficients are Nyström estimates on a
pool of :data:`POOL` points from the task's distribution (:func:`ntkit.theory.spectrum`); the curve is
:func:`ntkit.theory.learning_curve` (Bordelon et al. 2020; Simon et al. 2023). The measurement is kernel ridge
regression on :data:`DRAWS` independent training sets per n, tested on :data:`N_TEST` fresh points.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import numpy as np
import torch
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ntkit.data.tasks import sample_interactive
from ntkit.demo.experiment import B_STD, W_STD
from ntkit.demo.params import SPEC, TASK_SHAPES
from ntkit.demo.params import _check_one as check_param
from ntkit.regimes import mlp_spec
from ntkit.theory import learning_curve, spectrum

#: Pool for the spectrum, test points, training-set sizes measured, draws per size, ridge added to the Gram matrix.
POOL, N_TEST, MEASURED_N, DRAWS, RIDGE = 400, 300, (5, 10, 20, 40, 80, 160), 8, 1e-3
PARAMS = ("depth", "activation", "task", "seed")


def check(raw: Any) -> dict:
    """The checked parameters, or a ValueError carrying ``errors`` (one ``{"param", "message"}`` per bad one)."""
    if not isinstance(raw, dict):
        raise _errors([{"param": "body", "message": f"the request body must be a JSON object; got {raw!r:.80}"}])
    errors, out = [], {}
    for name in raw:
        if name not in PARAMS:
            errors.append({"param": name, "message": f"unknown parameter {name!r}; expected {', '.join(PARAMS)}"})
    for name in PARAMS:
        value, message = check_param(name, raw.get(name, SPEC[name]["default"]))
        if message:
            errors.append({"param": name, "message": message})
        out[name] = value
    if errors:
        raise _errors(errors)
    return out


def _errors(errors: list[dict]) -> ValueError:
    err = ValueError("; ".join(e["message"] for e in errors))
    err.errors = errors
    return err


def compute(depth: int = 1, activation: str = "relu", task: str = "sin", seed: int = 0) -> dict:
    """Predicted and measured learning curves of NTK regression for the page's MLP on ``task`` (module docstring).

    Returns plain lists (JSON-ready)."""
    arch = mlp_spec(1024, TASK_SHAPES[task][1], depth, activation, W_STD, B_STD)
    g = torch.Generator().manual_seed(seed)
    x_pool, y_pool = sample_interactive(task, POOL, g)
    s = spectrum(arch, x_pool)
    coeffs = s.coefficients(y_pool).numpy()
    eigenvalues = s.eigenvalues.numpy()
    # what the pool's eigenfunctions miss of E[y²] no mode learns: it enters as noise
    unexplained = max(0.0, float((y_pool**2).mean()) - float(np.sum(coeffs**2)))
    n_grid = np.unique(np.geomspace(2, max(MEASURED_N) * 1.5, 40).round()).astype(int)
    curve = learning_curve(eigenvalues, coeffs, n_grid, ridge=RIDGE, noise=unexplained)
    x_test, y_test = sample_interactive(task, N_TEST, g)
    measured = []
    for n in MEASURED_N:
        errors = []
        for _ in range(DRAWS):
            x, y = sample_interactive(task, n, g)
            k = arch.kernel(x).ntk
            alpha = torch.linalg.solve(k + RIDGE * torch.eye(n, dtype=k.dtype), y)
            errors.append(float(((arch.kernel(x_test, x).ntk @ alpha - y_test) ** 2).mean()))
        errs = np.array(errors)
        measured.append({"n": n, "mean": float(errs.mean()), "stderr": float(errs.std(ddof=1) / math.sqrt(DRAWS))})
    return {
        "n": n_grid.tolist(),
        "predicted": curve.test_mse.tolist(),
        "measured": measured,
        "eigenvalues": eigenvalues[:60].tolist(),
        "ridge": RIDGE,
        "pool": POOL,
        "draws": DRAWS,
        "target_power": float((y_pool**2).mean()),
    }


async def _endpoint(request: Request) -> JSONResponse:
    try:
        raw = await request.json()
    except ValueError:
        raw = None
    try:
        params = check(raw)
    except ValueError as err:
        return JSONResponse({"errors": err.errors}, status_code=422)
    result = await anyio.to_thread.run_sync(lambda: compute(**params))
    return JSONResponse(result)


def learning_curve_route() -> Route:
    """``POST /api/learning-curve``, for the app's route list."""
    return Route("/api/learning-curve", _endpoint, methods=["POST"])
