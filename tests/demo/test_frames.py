"""The streamed numbers are ntkit's: recomputed here, independently, from the same seed with the library's own
functions (regimes.mlp, gradient descent, mlp_spec(...).kernel, predict.gradient_descent_mse, empirical_ntk)."""

from __future__ import annotations

import httpx
import pytest
import torch

from ntkit import empirical_ntk, regimes
from ntkit.data import sin_regression
from ntkit.demo.experiment import B_STD, W_STD
from ntkit.predict import gradient_descent_mse

from .test_api import run


def reference(width: int, steps: int, lr: float, seed: int, times: list[int], parameterization: str = "ntk",
              alpha: float | None = None) -> list[dict]:  # fmt: skip
    """Outputs, losses, kernel change and NTK prediction at each time, computed from scratch."""
    x, y, xt, yt = sin_regression(seed=seed)
    net = regimes.mlp(1, width, 1, parameterization=parameterization, W_std=W_STD, b_std=B_STD, seed=seed)
    model, scale = (net, 1.0) if alpha is None else (regimes.lazy(net, alpha), 1 / alpha**2)
    base = "ntk" if parameterization == "mup" else parameterization
    spec = regimes.mlp_spec(width, 1, W_std=W_STD, b_std=B_STD, parameterization=base)
    k, kt = spec.kernel(x).ntk, spec.kernel(xt, x).ntk
    rate = lr / width if parameterization == "standard" else lr
    if parameterization == "standard":
        k, kt = k / width, kt / width
    f0, g0 = model(x.float()).double().detach(), model(xt.float()).double().detach()
    predict = gradient_descent_mse(k, y, lr, discrete=True)
    weights = {g["lr"] / lr for g in regimes.mup_param_groups(net, rate)}
    (weight,) = weights  # one rate for every tensor of an MLP of one width
    theta0 = empirical_ntk(model, x.float()).double() * weight * scale
    optimizer = torch.optim.SGD(regimes.mup_param_groups(net, rate))
    out, step = [], 0
    for t in times:
        while step < t:
            optimizer.zero_grad()
            (scale * ((model(x.float()) - y.float()) ** 2).sum() / (2 * len(y))).backward()
            optimizer.step()
            step += 1
        f, g = model(xt.float()).double().detach(), model(x.float()).double().detach()
        p_train, p_test = predict(t, f0, g0, kt)
        theta = empirical_ntk(model, x.float()).double() * weight * scale
        out.append({"f": f[:, 0], "train_loss": float(((g - y) ** 2).sum() / (2 * len(y))),
                    "test_loss": float(((f - yt) ** 2).sum() / (2 * len(yt))), "ntk_f": p_test[:, 0],
                    "ntk_train_loss": float(((p_train - y) ** 2).sum() / (2 * len(y))),
                    "kernel_change": regimes.relative_change(theta0, theta),
                    "gap": float((f - p_test).pow(2).mean().sqrt() / yt.pow(2).mean().sqrt())})  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("parameterization", "alpha", "lr"), [("ntk", None, 0.3), ("standard", None, 0.1), ("mup", 4.0, 0.2)]
)
def test_frames_match_ntkit_for_the_same_seed(live_server, parameterization, alpha, lr):
    params = {"width": 128, "steps": 30, "learning_rate": lr, "task": "sin", "seed": 5,
              "parameterization": parameterization, "alpha": alpha}  # fmt: skip
    init, *frames, done = run(live_server, f"match-{parameterization}", **params)
    assert done["type"] == "done"
    expected = reference(128, 30, lr, 5, init["times"], parameterization, alpha)
    x, y, xt, yt = sin_regression(seed=5)
    assert torch.allclose(torch.tensor(init["task"]["x_train"], dtype=torch.float64), x[:, 0], rtol=1e-4)
    for frame, ref in zip(frames, expected, strict=True):
        close = dict(rtol=2e-3, atol=2e-4)
        assert torch.allclose(torch.tensor(frame["net"]["f"], dtype=torch.float64), ref["f"], **close), frame["step"]
        assert torch.allclose(torch.tensor(frame["ntk"]["f"], dtype=torch.float64), ref["ntk_f"], **close)
        assert frame["net"]["train_loss"] == pytest.approx(ref["train_loss"], rel=2e-3, abs=1e-6)
        assert frame["net"]["test_loss"] == pytest.approx(ref["test_loss"], rel=2e-3, abs=1e-6)
        assert frame["ntk"]["train_loss"] == pytest.approx(ref["ntk_train_loss"], rel=2e-3, abs=1e-6)
        assert frame["kernel"]["relative_change"] == pytest.approx(ref["kernel_change"], rel=2e-2, abs=2e-4)
        assert frame["gap"] == pytest.approx(ref["gap"], rel=2e-2, abs=2e-4)


def test_the_wide_network_tracks_its_prediction_more_closely(live_server):
    """The physics the page shows: the gap to the NTK prediction and the kernel's move shrink with width."""
    narrow = run(live_server, "narrow", width=32, steps=200, learning_rate=0.3, seed=0)[-1]["summary"]
    wide = run(live_server, "wide", width=2048, steps=200, learning_rate=0.3, seed=0)[-1]["summary"]
    assert wide["max_gap"] < narrow["max_gap"] / 3
    assert wide["kernel_change"] < narrow["kernel_change"] / 5


def test_mup_predicts_with_the_ntk_parameterizations_kernel(live_server):
    body = httpx.post(f"{live_server.url}/api/limits", json={"parameterization": "mup", "width": 64}).json()
    ntk = httpx.post(f"{live_server.url}/api/limits", json={"parameterization": "ntk", "width": 64}).json()
    assert body["max_learning_rate"] == pytest.approx(ntk["max_learning_rate"])  # μP's rate-weighted NTK = NTK's
