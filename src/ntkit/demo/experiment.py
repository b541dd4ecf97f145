r"""One live experiment: a finite network trained by gradient descent beside its closed-form NTK prediction.

A network f with parameters θ, trained by full-batch gradient descent with step η on

    L = ‖f(X) − y‖² / (2·N·O),

moves its outputs by f ← f − (η/(N·O))·Θ_t·(f − y) to first order, with Θ_t = ∇θf·∇θfᵀ its NTK at step t. When
the width is large Θ_t stays at its value at initialisation, which itself is the deterministic infinite-width
kernel Θ (Jacot et al., 2018); the network then follows the closed form

    f_X(t) = y + (I − ηΘ/(NO))ᵗ (f_X(0) − y),
    f_*(t) = f_*(0) + Θ_{*X} Θ⁻¹ (I − (I − ηΘ/(NO))ᵗ) (y − f_X(0))

of :func:`ntkit.predict.gradient_descent_mse` (``discrete=True``, so that t counts the same steps). The
prediction starts from the network's own outputs f(0), which are random with O(1) variance at every width; the
gap between the two then shrinks like 1/√width (Lee et al., 2019).

Which kernel the prediction uses depends on the parameterization (see :func:`prediction_kernel`), and every run
says so in its first message. Under the lazy scale α (Chizat, Oyallon & Bach, 2019) the trained model is
α·(f − f₀) with the loss divided by α²; its dynamics kernel is α²Θ/α² = Θ, and it starts from 0.

:class:`Experiment` prepares the run (checks that η is stable for the prediction's kernel) and
:meth:`Experiment.frames` trains, yielding JSON-ready frames of real numbers computed by ntkit as it goes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import torch

from ntkit.data.tasks import GRID_LIMIT, GRID_SIZE
from ntkit.data.tasks import interactive_task as make_task
from ntkit.demo.params import DEFAULT_FRAMES, TASK_SHAPES, ParamError, RunParams, n_parameters
from ntkit.empirical import empirical_ntk
from ntkit.examples.common import stable_learning_rate as _stable_rate
from ntkit.predict import gradient_descent_mse, max_learning_rate

#: The network tracks its prediction "closely" when the largest gap over the run, RMS(f − f_NTK)/RMS(y) on the
#: test points, stays at or below this.
TRACK_THRESHOLD = 0.1
#: The kernel moves "a little" when ‖Θ_T − Θ_0‖_F/‖Θ_0‖_F at the end of the run stays at or below this.
KERNEL_THRESHOLD = 0.05
#: Weight and bias scales of every layer: W_std ≈ √2 keeps ReLU activations O(1) through depth, and b_std = 1
#: spreads the hidden units' kinks over the inputs (with a small b_std they crowd at x = 0 in the 1-D task, where
#: the network then leaves its linearization early).
W_STD, B_STD = 1.4, 1.0
#: Which kernel the prediction uses, in the page's words.
KERNEL_LABELS = {
    "ntk": "the analytic infinite-width NTK Θ (in the NTK parameterization it does not depend on the width)",
    "standard": "the analytic NTK of the standard parameterization at width {n}, divided by {n}: that Θ grows like "
    "the width, so the step is η/{n}",
    "mup": "the analytic NTK of the NTK parameterization: μP's network is that one with its output divided by √{n} "
    "and every learning rate multiplied by {n}, so its rate-weighted NTK starts exactly there; it does not stay",
}


def _regimes():
    from ntkit import regimes

    return regimes


def _round(values: torch.Tensor | float, digits: int = 5, flat: bool = True) -> Any:
    """Numbers for JSON with ``digits`` significant digits; non-finite values become None. Tensors become flat
    lists, or nested lists of their shape when ``flat`` is False."""
    if isinstance(values, torch.Tensor) and values.ndim == 0:
        values = values.item()
    if isinstance(values, torch.Tensor):
        values = values.detach().double()
        rows = values.reshape(-1) if flat or values.ndim < 2 else values
        if rows.ndim == 1:
            return [_round(v, digits) for v in rows.tolist()]
        return [_round(row, digits, flat=False) for row in rows]
    v = float(values)
    return float(f"{v:.{digits}g}") if math.isfinite(v) else None


def _mse(f: torch.Tensor, y: torch.Tensor) -> float:
    """The loss convention of ntkit.predict: ‖f − y‖² / (2·N·O)."""
    return float(((f - y) ** 2).sum() / (2 * y.numel()))


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


def prediction_spec(params: RunParams):
    """The infinite-width architecture whose NTK the prediction uses (the NTK parameterization's for μP)."""
    parameterization = "ntk" if params.parameterization == "mup" else params.parameterization
    return _regimes().mlp_spec(params.width, TASK_SHAPES[params.task][1], depth=params.depth,
                               activation=params.activation, W_std=W_STD, b_std=B_STD,
                               parameterization=parameterization)  # fmt: skip


def limit_kernel(params: RunParams, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """The analytic kernel that drives the outputs at this width: Θ (NTK, μP) or Θ_standard(n)/n (standard).

    Under μP the network is the NTK-parameterized one with its output divided by √n and every learning rate
    multiplied by n, so its learning-rate-weighted NTK at initialisation is exactly the NTK parameterization's;
    the difference is that it does not stay there. Under the standard parameterization the NTK grows like n and
    the step is η/n, so the kernel that multiplies η is Θ_standard/n.
    """
    k = prediction_spec(params).kernel(x1, x2).ntk
    return k / params.width if params.parameterization == "standard" else k


def stable_learning_rate(params: RunParams) -> float:
    """The largest stable η for these settings, 2·N·O/λ_max of :func:`limit_kernel` on the training points."""
    task = make_task(params.task, seed=params.seed)
    return _stable_rate(limit_kernel(params, task.x_train), task)


class Experiment:
    """A prepared run: data, network, optimiser, the prediction's kernel and its closed-form outputs.

    Parameters
    ----------
    params:
        Checked settings (:func:`ntkit.demo.params.parse_params`).
    n_frames:
        Frames after t = 0; the kernel is measured on every one, on the training points (≤ 64 of them).
    dtype:
        The network's dtype (float32 trains fast on a CPU). Kernels and predictions are float64.

    Raises
    ------
    ParamError
        When the learning rate is not below the largest stable one of the prediction's kernel, 2·N·O/λ_max.
    """

    def __init__(self, params: RunParams, n_frames: int = DEFAULT_FRAMES, dtype: torch.dtype = torch.float32):
        regimes = _regimes()
        self.params = p = params
        self.dtype = dtype
        self.task = task = make_task(p.task, seed=p.seed)
        d, o = TASK_SHAPES[p.task]
        self.n_parameters = n_parameters(p.width, p.depth, d, o)
        self.base = regimes.mlp(d, p.width, o, depth=p.depth, activation=p.activation,
                                parameterization=p.parameterization, W_std=W_STD, b_std=B_STD, seed=p.seed,
                                dtype=dtype)  # fmt: skip
        if p.alpha is None:
            self.model, self.loss_scale = self.base, 1.0
        else:
            self.model = regimes.lazy(self.base, p.alpha)
            self.loss_scale = float(self.model.loss_scale)
        # One learning rate per parameter group: η (NTK), η/n (standard: its NTK grows like n), η·n (μP's rates).
        rate = p.learning_rate / p.width if p.parameterization == "standard" else p.learning_rate
        self.groups = regimes.mup_param_groups(self.base, rate)
        self.times = sorted({round(s) for s in torch.linspace(0, p.steps, min(n_frames, p.steps) + 1).tolist()})

        x, y = task.x_train, task.y_train
        self.x_eval = task.x_test if task.x_plot is task.x_test else torch.cat([task.x_test, task.x_plot])
        self.n_test = task.x_test.shape[0]
        with torch.no_grad():
            f0_train = self._forward(x)
            f0_eval = self._forward(self.x_eval)

        k_train, k_eval = self.limit_kernel(x), self.limit_kernel(self.x_eval, x)
        label = KERNEL_LABELS[p.parameterization].format(n=p.width)
        if p.alpha is not None:
            label += (f"; with the lazy scale α = {p.alpha:g} the trained model α·(f − f₀) starts from 0 and its "
                      "kernel α²Θ, times the loss's 1/α², is Θ again")  # fmt: skip
        self.kernel_source = {"id": "analytic", "label": label}
        self.max_learning_rate = max_learning_rate(k_train, y.numel())
        if p.learning_rate >= self.max_learning_rate:
            raise ParamError([{"param": "learning_rate", "message": (
                f"learning_rate (learning rate η) must be below {self.max_learning_rate:.3g}, the largest stable "
                f"step for this kernel (2·N/λ_max); got {p.learning_rate:g}")}])  # fmt: skip
        self.k_limit = k_train
        predict = gradient_descent_mse(k_train, y, p.learning_rate, discrete=True)
        t = torch.tensor(self.times, dtype=torch.float64)
        self.pred_train, self.pred_eval = predict(t, fx_train_0=f0_train, fx_test_0=f0_eval, k_test_train=k_eval)
        self.k0, self.slice0 = self._probe_kernels()
        self.slice_limit = self.limit_kernel(task.x0, task.x_slice)[0]
        self.y_scale = _rms(task.y_test)

    # --- the pieces -----------------------------------------------------------------------------------------

    def limit_kernel(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`limit_kernel` of this run's settings."""
        return limit_kernel(self.params, x1, x2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).double()

    def dynamics_kernel(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        r"""The kernel that drives the outputs, Σ_g (η_g/η)·Θ_g scaled by the loss scale, in float64.

        With one learning rate for every parameter this is the empirical NTK of the trained model times the loss
        scale (for α·(f − f₀) that is α²Θ/α² = Θ of the network). With per-layer rates (μP), each parameter
        group's NTK Θ_g = ∇_{θ_g}f·∇_{θ_g}fᵀ counts with its rate relative to η.
        """
        x1 = x1.to(self.dtype)
        x2 = None if x2 is None else x2.to(self.dtype)
        rates = {g["lr"] for g in self.groups}
        if len(rates) == 1:
            k = empirical_ntk(self.model, x1, x2) * (rates.pop() / self.params.learning_rate)
        else:
            params = [q for g in self.groups for q in g["params"]]
            saved = [q.requires_grad for q in params]
            k = 0.0
            try:
                for g in self.groups:
                    for q in params:
                        q.requires_grad_(False)
                    for q in g["params"]:
                        q.requires_grad_(True)
                    k = k + empirical_ntk(self.model, x1, x2).double() * (g["lr"] / self.params.learning_rate)
            finally:
                for q, s in zip(params, saved, strict=True):
                    q.requires_grad_(s)
        return k.double() * self.loss_scale

    def _probe_kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Θ_t on the training points (N, N) and the slice Θ_t(x₀, ·) (S,), from one kernel evaluation."""
        task, n = self.task, self.task.x_train.shape[0]
        k = self.dynamics_kernel(torch.cat([task.x_train, task.x0]), torch.cat([task.x_train, task.x_slice]))
        k_train = k[:n, :n]
        return 0.5 * (k_train + k_train.T), k[n, n:]

    def _eigs(self, k: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(k).flip(0).clamp_min(0)

    # --- the messages ---------------------------------------------------------------------------------------

    def init_message(self) -> dict[str, Any]:
        """Everything the page draws before training: the data, the kernel at t = 0 and in the limit."""
        task, p = self.task, self.params
        data: dict[str, Any] = {"name": task.name, "dims": task.dims,
                                "x_train": _round(task.x_train, flat=task.dims == 1),
                                "y_train": _round(task.y_train), "x0": _round(task.x0[0]),
                                "slice_coord": _round(task.slice_coord), "slice_label": task.slice_label}  # fmt: skip
        if task.dims == 1:
            data.update(x_test=_round(task.x_test), y_test=_round(task.y_test))
        else:
            data.update(grid_axis=_round(torch.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_SIZE)), grid_size=GRID_SIZE)
        limit = {"slice": _round(self.slice_limit), "eigs": _round(self._eigs(self.k_limit))}
        return {"type": "init", "params": p.as_dict(), "n_parameters": self.n_parameters, "times": self.times,
                "kernel_source": self.kernel_source, "max_learning_rate": _round(self.max_learning_rate),
                "task": data, "limit": limit, "loss_scale": self.loss_scale,
                "initial": {"slice": _round(self.slice0), "eigs": _round(self._eigs(self.k0))},
                "thresholds": {"track": TRACK_THRESHOLD, "kernel": KERNEL_THRESHOLD}}  # fmt: skip

    def _frame(self, index: int) -> dict[str, Any]:
        task = self.task
        with torch.no_grad():
            f_train = self._forward(task.x_train)
            f_eval = self._forward(self.x_eval)
        g_train, g_eval = self.pred_train[index], self.pred_eval[index]
        m = self.n_test
        f_test, g_test = f_eval[:m], g_eval[:m]
        f_plot, g_plot = (f_eval, g_eval) if self.x_eval is task.x_test else (f_eval[m:], g_eval[m:])
        net = {"train_loss": _round(_mse(f_train, task.y_train)), "test_loss": _round(_mse(f_test, task.y_test)),
               "f": _round(f_plot, 4)}  # fmt: skip
        ntk = {"train_loss": _round(_mse(g_train, task.y_train)), "test_loss": _round(_mse(g_test, task.y_test)),
               "f": _round(g_plot, 4)}  # fmt: skip
        if task.dims == 2:
            net["test_accuracy"] = _round((torch.sign(f_test) == task.y_test).double().mean())
            ntk["test_accuracy"] = _round((torch.sign(g_test) == task.y_test).double().mean())
        kt, slice_t = self._probe_kernels()
        kernel = {
            "relative_change": _round(_regimes().relative_change(self.k0, kt)),
            "slice": _round(slice_t),
            "eigs": _round(self._eigs(kt)),
        }
        return {"type": "frame", "step": self.times[index], "net": net, "ntk": ntk,
                "gap": _round(_rms(f_test - g_test) / self.y_scale), "kernel": kernel}  # fmt: skip

    def frames(self, cancel: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """Train, yielding a frame at every time in ``self.times`` and a closing ``done`` message.

        Stops early, yielding ``{"type": "stopped"}``, as soon as ``cancel`` is set; yields ``{"type": "error"}``
        if the loss stops being finite.
        """
        cancel = cancel or threading.Event()
        task, p = self.task, self.params
        x, y = task.x_train.to(self.dtype), task.y_train.to(self.dtype)
        optimizer = torch.optim.SGD(self.groups, lr=p.learning_rate)
        gaps, frame = [], self._frame(0)
        gaps.append(frame["gap"])
        yield frame
        index = 1
        for step in range(1, p.steps + 1):
            if cancel.is_set():
                yield {"type": "stopped", "step": step - 1}
                return
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss_scale * ((self.model(x) - y) ** 2).sum() / (2 * y.numel())
            if not torch.isfinite(loss):
                yield {"type": "error", "message": f"training diverged at step {step} (the loss is {loss.item()}); "
                       "lower the learning rate"}  # fmt: skip
                return
            loss.backward()
            optimizer.step()
            if index < len(self.times) and step == self.times[index]:
                frame = self._frame(index)
                gaps.append(frame["gap"])
                index += 1
                yield frame
        last = frame
        max_gap = max((g for g in gaps if g is not None), default=float("inf"))
        change = last["kernel"]["relative_change"]
        yield {
            "type": "done",
            "summary": {"max_gap": _round(max_gap), "final_gap": last["gap"], "kernel_change": change,
                        "net_test_loss": last["net"]["test_loss"], "ntk_test_loss": last["ntk"]["test_loss"]},
            "verdict": {"track": "closely" if max_gap <= TRACK_THRESHOLD else "loosely",
                        "kernel": "a little" if change is not None and change <= KERNEL_THRESHOLD else "a lot"},
        }  # fmt: skip
