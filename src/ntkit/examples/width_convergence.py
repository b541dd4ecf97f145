"""The NTK idea in one experiment: as a network widens, its kernel at initialisation stops depending on the draw
of its weights, and kernel regression with it fits the data.

A two-layer ReLU network in the NTK parameterization (Jacot et al., 2018),

    f(x) = (1/√m) Σ_j a_j · relu(w_j x + b_j),        a_j, w_j, b_j ~ N(0, 1),

has an empirical NTK Θ_m that converges to a fixed kernel as the width m → ∞. Gradient flow on the squared loss
from f ≡ 0 ends at kernel ridge(less) regression with that kernel (Lee et al., 2019):

    f_∞(x) = Θ(x, X) (Θ(X, X) + λI)⁻¹ y.

The network is the layer spec ``Sequential(Linear(m, b_std=1), ReLU(), Linear(1))``: ``arch.build`` gives the
finite network and ``arch.kernel`` its exact limit. Nothing is trained here: the kernel of each width is computed at
initialisation with :func:`ntkit.empirical_ntk`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ntkit._plotting import pyplot, save_figure
from ntkit._runs import RunFolder, training_bytes
from ntkit._validation import check_memory
from ntkit.data import sin_regression
from ntkit.empirical import empirical_ntk
from ntkit.infinite import Linear, ReLU, Sequential

DEFAULT_WIDTHS = (64, 256, 1024, 4096)


def architecture(width: int) -> Sequential:
    """f(x) = (1/√m) · a · relu(W x / √d + b), every parameter N(0, 1) (NTK parameterization), as a layer spec.

    Its limit is the arc-cosine NTK of Jacot et al. 2018: the hidden pre-activations z = w·x/√d + b are Gaussian
    with covariance Σ(x, x') = x·x'/d + 1, so Θ_∞(x, x') = E[relu(z) relu(z')] + Σ(x, x') · E[relu'(z) relu'(z')].
    The readout's bias has b_std = 0: it is not trained and adds nothing to the kernel.
    """
    return Sequential(Linear(width, b_std=1), ReLU(), Linear(1))


@dataclass
class WidthResult:
    width: int
    test_mse: float
    kernel_distance: float  # ‖Θ_m − Θ_widest‖_F / ‖Θ_widest‖_F on train and test points
    analytic_distance: float  # ‖Θ_m − Θ_∞‖_F / ‖Θ_∞‖_F, against the exact infinite-width NTK
    prediction: torch.Tensor  # (n_test, 1) kernel-regression fit on the test grid


def model_seed(seed: int, width: int) -> int:
    """The weights' seed of the network of ``width`` in draw ``seed``: distinct for every (seed, width)."""
    return 1_000_003 * seed + width


def kernel_regression(k_train: torch.Tensor, k_test_train: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Θ(test, X) (Θ(X, X) + ridge · mean(diag Θ) · I)⁻¹ y, by a Cholesky solve."""
    reg = ridge * k_train.diagonal().mean()
    chol = torch.linalg.cholesky(k_train + reg * torch.eye(k_train.shape[0], dtype=k_train.dtype))
    return k_test_train @ torch.cholesky_solve(y, chol)


def run(
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    seeds: int = 10,
    ridge: float = 1e-6,
    seed: int = 0,
    progress: bool = False,
    folder: RunFolder | None = None,
) -> list[WidthResult]:
    """Empirical NTK and kernel-regression fit at each width, averaged over ``seeds`` initialisations.

    One draw of a finite kernel fluctuates by O(1/√m) in a few directions (the overall scale above all), so a
    single seed gives a noisy table; the mean over a few seeds shows the 1/√m trend. ``prediction`` is the fit
    of the first seed. Distances are to the widest network of the same seed, and to the exact limit Θ_∞. With a
    started :class:`ntkit._runs.RunFolder`, each seed (all widths, since they are compared with its widest
    network) is a cell stored as it finishes, and seeds stored by an earlier run with the same settings are loaded.
    """
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be positive integers; got {widths!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer; got {seeds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0; got {seed!r}")
    x_train, y_train, x_test, y_test = sin_regression(seed=seed)
    x_all = torch.cat([x_train, x_test])
    exact = architecture(1).kernel(x_all).ntk
    widths = tuple(widths)

    def compute(key: list) -> dict:
        return run_seed(key[0], widths, x_all, y_train, y_test, exact, ridge)

    keys = [[s] for s in range(seed, seed + seeds)]
    if folder is None:
        cells = [compute(k) for k in tqdm(keys, desc="seeds", disable=not progress)]
    else:
        cells = folder.cells(keys, {"widths": widths, "ridge": ridge, "data_seed": seed}, compute, progress, "seeds")
    return [
        WidthResult(w, _mean([c["test_mse"][i] for c in cells]), _mean([c["to_widest"][i] for c in cells]),
                    _mean([c["to_exact"][i] for c in cells]), torch.tensor(cells[0]["fit"][i], dtype=torch.float64))
        for i, w in enumerate(widths)
    ]  # fmt: skip


def run_seed(s: int, widths: tuple[int, ...], x_all: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
             exact: torch.Tensor, ridge: float) -> dict:  # fmt: skip
    """Draw ``s`` at every width: test MSE, distances to the widest kernel and to Θ_∞, and the fit (JSON lists)."""
    n = y_train.shape[0]
    kernels, cell = {}, {"test_mse": [], "to_exact": [], "to_widest": [], "fit": []}
    for width in widths:
        model = architecture(width).build((1,), seed=model_seed(s, width), dtype=torch.float64)
        k = kernels[width] = empirical_ntk(model, x_all)
        fit = kernel_regression(k[:n, :n], k[n:, :n], y_train, ridge)
        cell["fit"].append(fit.tolist())
        cell["test_mse"].append(float(((fit - y_test) ** 2).mean()))
        cell["to_exact"].append(_relative_distance(k, exact))
    cell["to_widest"] = [_relative_distance(kernels[w], kernels[max(widths)]) for w in widths]
    return cell


def check_fits(widths: tuple[int, ...], option: str = "widths") -> None:
    """Refuse, before building anything, a width whose kernel cannot be computed in the memory free now: the
    network has 3m + 1 parameters and m hidden values for each of the 240 inputs (:func:`ntkit._runs.training_bytes`).
    """
    for m in widths:
        what = f"{option} {m}: the network of width {m} ({3 * m + 1:,} parameters)"
        check_memory(training_bytes(3 * m + 1, 240 * m), torch.device("cpu"), what, "choose smaller widths")


def save(results: list[WidthResult], folder: RunFolder, seed: int = 0) -> dict[str, Path]:
    """Write width_convergence.csv and width_convergence.png into ``folder`` and mark the run complete."""
    paths = {"csv": folder.write_table("width_convergence.csv", records(results))}
    with folder.output("width_convergence.png") as tmp:
        plot(results, tmp, seed=seed)
    paths["plot"] = folder.out / "width_convergence.png"
    folder.complete()
    return paths


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def format_table(results: list[WidthResult]) -> str:
    lines = [f"{'width':>7}  {'test MSE':>10}  {'‖Θ_m − Θ_widest‖/‖Θ_widest‖':>28}  {'‖Θ_m − Θ_∞‖/‖Θ_∞‖':>18}"]
    lines += [
        f"{r.width:>7}  {r.test_mse:>10.2e}  {r.kernel_distance:>28.4f}  {r.analytic_distance:>18.4f}" for r in results
    ]
    return "\n".join(lines)


def plot(results: list[WidthResult], path: Path, seed: int = 0) -> Path:
    """The data, the target and each width's kernel-regression fit, saved as a PNG."""
    plt = pyplot()

    x_train, y_train, x_test, y_test = sin_regression(seed=seed)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(x_test[:, 0], y_test[:, 0], color="black", lw=2, label="sin(3x)")
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(results)).tolist())
    for r, c in zip(results, colors, strict=True):
        ax.plot(x_test[:, 0], r.prediction[:, 0], color=c, lw=1.3, label=f"NTK regression, width {r.width}")
    ax.scatter(x_train[:, 0], y_train[:, 0], color="crimson", s=18, zorder=3, label="40 training points")
    ax.set(xlabel="x", ylabel="f(x)", title="Kernel regression with the empirical NTK at initialisation")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def records(results: list[WidthResult]) -> list[dict]:
    """The table as plain dicts (no tensors), for CSV or pandas."""
    return [{k: v for k, v in asdict(r).items() if k != "prediction"} for r in results]
