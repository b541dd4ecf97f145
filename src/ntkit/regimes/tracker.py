r"""``KernelTracker``: watch a network's NTK move during any PyTorch training loop.

One call per step, after ``optimizer.step()``::

    tracker = KernelTracker(model, x_probe, every=10, y_probe=y_probe)
    for x, y in batches:
        loss = loss_fn(model(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()
        tracker.step()

At step 0 and then at the chosen steps it records, on the probe set:

* the empirical NTK Θ_t (``ntkit.empirical_ntk``, output "mean");
* ``kernel_change`` ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F and ``kernel_distance`` 1 − ⟨Θ_0, Θ_t⟩/(‖Θ_0‖‖Θ_t‖);
* ``kernel_alignment``, the centered kernel-target alignment of Θ_t with ``y_probe`` (Cortes et al. 2012);
* ``weight_change`` ‖θ_t − θ_0‖/‖θ_0‖ over all trainable parameters, and per module as
  ``weight_change:<module name>``;
* ``relu_flips``, the fraction of ReLU units (probe points × units of every ReLU/LeakyReLU module) whose sign
  of the pre-activation differs from step 0;
* ``linear_gap`` ‖f_t − f_t^lin‖/√(N·O) on the probe set, where f^lin = f0 + J0(θ − θ0) (``ntkit.linearize``)
  is trained alongside with the same loss and a copy of the optimizer (Lee et al. 2019), and
  ``linear_gap_rel`` = ‖f_t − f_t^lin‖/‖f_t^lin − f_0‖.

Under the NTK parameterization all of these vanish as the width grows (the lazy regime: Jacot et al. 2018, Lee
et al. 2019); under μP they stay of order one (Yang & Hu 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ntkit.empirical import empirical_ntk
from ntkit.modules import Elementwise
from ntkit.predict import linearize
from ntkit.regimes.metrics import centered_alignment, kernel_distance, relative_change

COLUMNS = ("step", "kernel_change", "kernel_distance", "kernel_alignment", "weight_change", "relu_flips",
           "linear_gap", "linear_gap_rel", "probe_loss")  # fmt: skip


def _is_relu(module: nn.Module) -> bool:
    return isinstance(module, (nn.ReLU, nn.LeakyReLU)) or (
        isinstance(module, Elementwise) and module.name in ("ReLU", "LeakyReLU")
    )


def _trained_relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """ReLU modules outside frozen submodules (e.g. the reference copy inside ``regimes.lazy``): a submodule
    whose parameters all have requires_grad=False computes the same pattern at every step."""
    frozen = [
        name + "."
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())
    ]
    return [(n, m) for n, m in model.named_modules() if _is_relu(m) and not any(n.startswith(f) for f in frozen)]


def _ratio(squared_num: float, squared_den: float) -> float:
    """√(num/den), NaN when the reference norm is zero."""
    return math.sqrt(squared_num / squared_den) if squared_den > 0 else math.nan


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


class KernelTracker:
    """Records how far a network is from the lazy (kernel) regime as it trains.

    Parameters
    ----------
    model:
        Any ``nn.Module`` at its initial parameters; the tracker reads it, never changes it.
    x_probe:
        Probe inputs (N, ...) that fit the model; keep N small (the NTK costs N² Jacobian products).
    every:
        Record every ``every`` steps (int ≥ 1), or at the steps listed (an iterable of ints ≥ 0). Step 0 (the
        state at construction) is always recorded.
    y_probe:
        Targets (N,) or (N, O) for the alignment and ``probe_loss`` (mean squared error); optional.
    loss_fn, optimizer:
        Give both to train the linearization alongside: at each ``step(x, y)`` the linear model takes one step of
        ``loss_fn(f_lin(x), y)`` (times ``model.loss_scale`` if the model has one, as :func:`ntkit.regimes.lazy`
        models do) with an optimizer of the same class and per-group hyperparameters as ``optimizer``.
    method:
        Passed to ``ntkit.empirical_ntk``.
    keep_kernels:
        Keep every recorded kernel in ``self.kernels`` (step → tensor); Θ_0 is always in ``self.kernel0``.

    Attributes
    ----------
    records: list of dict
        One record per recorded step, with the keys of ``COLUMNS`` and ``weight_change:<module>`` (NaN where a
        number does not apply, e.g. ``relu_flips`` for a model without ReLU modules).

    Examples
    --------
    >>> import torch
    >>> from ntkit.regimes import mlp
    >>> model = mlp(1, 64, 1, dtype=torch.float64)
    >>> x = torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None]
    >>> tracker = KernelTracker(model, x, every=5, y_probe=torch.sin(3 * x))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for _ in range(10):
    ...     loss = ((model(x) - torch.sin(3 * x)) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    ...     _ = tracker.step()
    >>> [r["step"] for r in tracker.records]
    [0, 5, 10]
    """

    def __init__(self, model: nn.Module, x_probe: torch.Tensor, every: int | Iterable[int] = 1,
                 y_probe: torch.Tensor | None = None, *, loss_fn: Callable | None = None,
                 optimizer: torch.optim.Optimizer | None = None, method: str = "auto",
                 keep_kernels: bool = True):  # fmt: skip
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model, self.method, self.keep_kernels = model, method, keep_kernels
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self._params:
            raise ValueError("model has no trainable parameters (requires_grad=True) to track")
        self.x_probe = self._check_probe(x_probe)
        self.y_probe = self._check_targets(y_probe)
        self._every, self._steps = self._check_every(every)
        if (loss_fn is None) != (optimizer is None):
            raise ValueError(
                "give both loss_fn and optimizer to train the linearization alongside, or neither; "
                f"got loss_fn={'set' if loss_fn else None}, optimizer={'set' if optimizer else None}"
            )
        self.loss_fn = loss_fn
        self.t = 0
        self.records: list[dict] = []
        self.kernels: dict[int, torch.Tensor] = {}
        self._theta0 = {n: p.detach().clone() for n, p in self._params.items()}
        self._groups = self._module_groups()
        self._relus = _trained_relus(model)
        self._masks0 = None
        self._f0 = None
        self.linear = None
        if optimizer is not None:
            self.linear, self._linear_opt = self._make_linear(optimizer)
        self.kernel0 = self._kernel()
        if float(torch.linalg.vector_norm(self.kernel0)) == 0.0:
            raise ValueError("the model's NTK on x_probe is zero at initialisation; nothing to measure against")
        self._record(self.kernel0)

    # --- checks -------------------------------------------------------------------------------------------------

    def _check_probe(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x_probe must be a floating-point torch.Tensor; got {getattr(x, 'dtype', type(x))}")
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"x_probe must be (N, ...) with N ≥ 2 examples; got shape {tuple(x.shape)}")
        p = next(iter(self._params.values()))
        if x.dtype != p.dtype or x.device != p.device:
            raise ValueError(f"x_probe must have the model's dtype and device ({p.dtype}, {p.device}); "
                             f"got {x.dtype}, {x.device}")  # fmt: skip
        try:
            with torch.no_grad():
                out = self.model(x[:2])
        except Exception as err:  # noqa: BLE001 - any failure means the probe does not fit
            raise ValueError(f"x_probe of shape {tuple(x.shape)} does not fit the model: {err}") from None
        if not isinstance(out, torch.Tensor) or out.shape[0] != 2:
            raise ValueError(f"the model must map x_probe (N, ...) to a tensor (N, ...); got {type(out).__name__} "
                             f"of shape {tuple(getattr(out, 'shape', ()))} for N=2")  # fmt: skip
        return x.detach()

    def _check_targets(self, y) -> torch.Tensor | None:
        if y is None:
            return None
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y_probe must be a torch.Tensor; got {type(y).__name__}")
        if y.ndim == 0 or y.shape[0] != self.x_probe.shape[0]:
            raise ValueError(f"y_probe must have one row per probe example ({self.x_probe.shape[0]}); "
                             f"got shape {tuple(y.shape)}")  # fmt: skip
        return y.detach()

    @staticmethod
    def _check_every(every):
        if isinstance(every, bool):
            raise ValueError(f"every must be an int ≥ 1 or an iterable of steps ≥ 0; got {every!r}")
        if isinstance(every, int):
            if every < 1:
                raise ValueError(f"every must be an int ≥ 1 or an iterable of steps ≥ 0; got {every!r}")
            return every, None
        try:
            steps = {int(s) for s in every}
        except (TypeError, ValueError):
            raise ValueError(f"every must be an int ≥ 1 or an iterable of steps ≥ 0; got {every!r}") from None
        if any(s < 0 for s in steps):
            raise ValueError(f"every must be an int ≥ 1 or an iterable of steps ≥ 0; got {sorted(steps)}")
        return None, steps

    # --- pieces ---------------------------------------------------------------------------------------------------

    def _module_groups(self) -> dict[str, list[str]]:
        """Parameter names grouped by the module that owns them directly (the "layers")."""
        groups: dict[str, list[str]] = {}
        for name in self._params:
            groups.setdefault(name.rpartition(".")[0] or "(root)", []).append(name)
        return groups

    def _make_linear(self, optimizer: torch.optim.Optimizer):
        lin = linearize(self.model)
        index = {id(p): i for i, p in enumerate(self._params.values())}
        groups = []
        for group in optimizer.param_groups:
            params = [lin.theta[index[id(p)]] for p in group["params"] if id(p) in index]
            if params:
                groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
        try:
            opt = type(optimizer)(groups, **optimizer.defaults)
        except TypeError:
            opt = type(optimizer)(groups)
        return lin, opt

    def _kernel(self) -> torch.Tensor:
        return empirical_ntk(self.model, self.x_probe, method=self.method).detach()

    def _forward_with_masks(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        masks: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, inp, _out: masks.append(inp[0].detach() > 0))
                 for _, m in self._relus]  # fmt: skip
        try:
            with torch.no_grad():
                out = self.model(self.x_probe)
        finally:
            for h in hooks:
                h.remove()
        return _flat(out.detach()), masks

    def _record(self, kernel: torch.Tensor) -> dict:
        out, masks = self._forward_with_masks()
        if self._masks0 is None:
            self._masks0, self._f0 = masks, out
        rec: dict = {"step": self.t}
        rec["kernel_change"] = relative_change(self.kernel0, kernel)
        rec["kernel_distance"] = kernel_distance(self.kernel0, kernel)
        rec["kernel_alignment"] = math.nan
        if self.y_probe is not None:
            try:
                rec["kernel_alignment"] = centered_alignment(kernel, self.y_probe)
            except ValueError:  # constant targets on the probe set: the alignment is undefined
                pass
        with torch.no_grad():  # ‖θ_t − θ_0‖² and ‖θ_0‖² per layer; the totals are their sums
            moved = {n: float(((p - self._theta0[n]) ** 2).sum()) for n, p in self._params.items()}
            start = {n: float((p0**2).sum()) for n, p0 in self._theta0.items()}
        rec["weight_change"] = _ratio(sum(moved.values()), sum(start.values()))
        per_layer = {
            f"weight_change:{layer}": _ratio(sum(moved[n] for n in names), sum(start[n] for n in names))
            for layer, names in self._groups.items()
        }
        if masks and len(masks) == len(self._masks0):
            flips = sum(int((m != m0).sum()) for m, m0 in zip(masks, self._masks0, strict=True))
            rec["relu_flips"] = flips / sum(m.numel() for m in masks)
        else:
            rec["relu_flips"] = math.nan
        rec["linear_gap"] = rec["linear_gap_rel"] = math.nan
        if self.linear is not None:
            with torch.no_grad():
                f_lin = _flat(self.linear(self.x_probe))
            gap = torch.linalg.vector_norm(out - f_lin)
            rec["linear_gap"] = float(gap / math.sqrt(out.numel()))
            moved = float(torch.linalg.vector_norm(f_lin - self._f0))
            rec["linear_gap_rel"] = float(gap) / moved if moved > 0 else 0.0
        rec["probe_loss"] = math.nan
        if self.y_probe is not None:
            rec["probe_loss"] = float(((out - _flat(self.y_probe).to(out.dtype)) ** 2).mean())
        rec.update(per_layer)
        if self.keep_kernels:
            self.kernels[self.t] = kernel
        self.records.append(rec)
        return rec

    # --- the public face ------------------------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether ``step`` is one of the recorded steps."""
        return step % self._every == 0 if self._every is not None else step in self._steps

    def step(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> dict | None:
        """Advance the step counter (call once per optimizer step, after it) and record if the step is due.

        Parameters
        ----------
        x, y:
            The batch this step trained on; needed only when the linearization trains alongside.

        Returns
        -------
        dict or None
            The new record, or None when the step is not recorded.
        """
        if self.linear is not None:
            if x is None or y is None:
                raise ValueError("this tracker trains the linearization alongside (loss_fn and optimizer were "
                                 "given), so step(x, y) needs the batch the model trained on")  # fmt: skip
            loss = self.loss_fn(self.linear(x), y) * getattr(self.model, "loss_scale", 1.0)
            self._linear_opt.zero_grad()
            loss.backward()
            self._linear_opt.step()
        self.t += 1
        if not self.due(self.t):
            return None
        return self._record(self._kernel())

    def to_pandas(self):
        """The records as a ``pandas.DataFrame`` (one row per recorded step). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas (pip install pandas); .records is the same table as a "
                              "list of dicts") from None  # fmt: skip
        return pd.DataFrame.from_records(self.records)

    def plot(self, path=None):
        """A figure of the records against the step: kernel change and distance, weight change per layer, ReLU
        flips, linear gap and alignment. Saved to ``path`` when given; returns the matplotlib figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in self.records]
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
        ax = axes[0]
        ax.plot(steps, [r["kernel_change"] for r in self.records], "o-", label="‖Θt−Θ0‖/‖Θ0‖")
        ax.plot(steps, [r["kernel_distance"] for r in self.records], "s--", label="1 − cos(Θ0, Θt)")
        ax.set_title("kernel movement")
        ax.legend()
        ax = axes[1]
        for layer in self._groups:
            ax.plot(steps, [r[f"weight_change:{layer}"] for r in self.records], label=layer)
        ax.plot(steps, [r["weight_change"] for r in self.records], "k-", lw=2, label="all")
        ax.set_title("relative weight change ‖θt−θ0‖/‖θ0‖")
        ax.legend(fontsize=7)
        ax = axes[2]
        ax.plot(steps, [r["relu_flips"] for r in self.records], "o-", label="ReLU patterns flipped")
        ax.plot(steps, [r["linear_gap_rel"] for r in self.records], "s--", label="‖f − f_lin‖/‖f_lin − f0‖")
        ax.set_title("nonlinearity")
        ax.legend()
        ax = axes[3]
        ax.plot(steps, [r["kernel_alignment"] for r in self.records], "o-")
        ax.set_title("centered kernel-target alignment")
        for ax in axes:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig
