"""The small-data study of Arora, Du, Li, Salakhutdinov, Wang & Yu, *Harnessing the Power of Infinitely Wide Deep
Nets on Small-data Tasks* (ICLR 2020), on the UCI data sets that ship with scikit-learn.

The paper's claim: on 90 UCI classification data sets, an SVM with the NTK of a fully connected ReLU network
(NTK-SVM; hyperparameters: depth, number of fixed bottom layers, C) is the strongest classifier, ahead of random
forests (the previous best, after Fernández-Delgado et al. 2014), Gaussian-kernel SVMs and trained networks.

Protocol here: every method is a ``Pipeline(StandardScaler(), estimator)``; the *same* outer folds
(stratified K-fold for classification, K-fold for regression, shuffled with ``seed``) give every method its test
scores, and inside each outer training part ``GridSearchCV`` with the same inner folds picks the hyperparameters
(accuracy; R² for regression). Methods:

* ``NTK-SVM`` (the paper's): ``SVC`` (``SVR`` for regression) with ``ntkit.sklearn.InfiniteWidthKernel(get="ntk")``
  of a ReLU MLP; grid over depth, fixed layers and C.
* ``NTK``: :class:`ntkit.sklearn.NTKClassifier`/``NTKRegressor``, the infinitely wide network trained to
  convergence on the MSE (kernel regression); grid over depth, fixed layers and diag_reg.
* ``NNGP``: the same with the NNGP (only the readout trained; for regression the GP posterior mean of
  :class:`ntkit.sklearn.NNGPRegressor`); grid over depth and diag_reg.
* ``RF``: random forest (200 trees); grid over max_features.
* ``SVC-RBF``: Gaussian-kernel SVM (SVR for regression); grid over C and gamma.
* ``MLP``: a trained 2-hidden-layer ReLU network (``MLPClassifier``/``MLPRegressor``, Adam); grid over the L2
  penalty alpha.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from ntkit._plotting import pyplot, save_figure
from ntkit._runs import RunFolder
from ntkit.sklearn import FixedBelow, InfiniteWidthKernel, NNGPRegressor, NTKClassifier, NTKRegressor, default_mlp

CLASSIFICATION = ("iris", "wine", "breast_cancer", "digits")
REGRESSION = ("diabetes",)
DATASETS = CLASSIFICATION + REGRESSION
METHODS = ("NTK-SVM", "NTK", "NNGP", "RF", "SVC-RBF", "MLP")
#: The grids. "full" is closer to the paper's (depth 1–5, every number of fixed layers); "default" keeps the run to a
#: few minutes on two cores.
DEPTHS = {"default": (1, 3, 5), "full": (1, 2, 3, 4, 5), "tiny": (1,)}
CS = {"default": (0.1, 1.0, 10.0, 100.0), "full": tuple(10.0**p for p in range(-2, 5)), "tiny": (1.0,)}
DIAG_REGS = {"default": (1e-3, 1e-2, 1e-1), "full": tuple(10.0**p for p in range(-4, 2)), "tiny": (1e-2,)}


def fixed_layer_counts(depth: int, grid: str) -> list[int]:
    """Numbers of fixed bottom layers searched: all of 0 … depth − 1 ("full"), else none or all but the top one."""
    return list(range(depth)) if grid == "full" else sorted({0, depth - 1})


@dataclass
class FoldResult:
    """One method on one outer fold of one data set."""

    dataset: str
    method: str
    fold: int
    score: float  # accuracy, or R² for regression
    params: str  # the hyperparameters chosen by the inner search
    seconds: float


def load(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """X, y and whether the task is classification, for one of :data:`DATASETS` (bundled with scikit-learn)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {name!r}")
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return x.astype(np.float64), y, name in CLASSIFICATION


def _ntk_kernels(depths: tuple[int, ...], grid: str) -> list[InfiniteWidthKernel]:
    """One NTK per (depth, number of fixed layers) of the ReLU MLP (W_std = √2, b_std = 0.1: the He scale)."""
    return [InfiniteWidthKernel(default_mlp(d, fixed_layers=f), get="ntk", W_std=2**0.5, b_std=0.1)
            for d in depths for f in fixed_layer_counts(d, grid)]  # fmt: skip


def methods(classification: bool, grid: str = "default", seed: int = 0) -> dict[str, tuple]:
    """(estimator, parameter grid) per method name; the grids' keys address the pipeline's ``model`` step."""
    depths, cs, regs = DEPTHS[grid], CS[grid], DIAG_REGS[grid]
    svm = SVC if classification else SVR
    kernel_model = NTKClassifier if classification else NTKRegressor
    with_fixed = [{"model__depth": [d], "model__fixed_layers": fixed_layer_counts(d, grid),
                   "model__diag_reg": list(regs)} for d in depths]  # fmt: skip
    nngp = NTKClassifier(kernel="nngp") if classification else NNGPRegressor()
    forest = (RandomForestClassifier if classification else RandomForestRegressor)(n_estimators=200, random_state=seed)
    mlp = (MLPClassifier if classification else MLPRegressor)(hidden_layer_sizes=(128, 128), max_iter=300,
                                                              random_state=seed)  # fmt: skip
    table = {
        "NTK-SVM": (svm(), {"model__kernel": _ntk_kernels(depths, grid), "model__C": list(cs)}),
        "NTK": (kernel_model(W_std=2**0.5), with_fixed),
        "NNGP": (nngp.set_params(W_std=2**0.5), {"model__depth": list(depths), "model__diag_reg": list(regs)}),
        "RF": (forest, {"model__max_features": ["sqrt", 0.5]}),
        "SVC-RBF": (svm(kernel="rbf"), {"model__C": list(cs), "model__gamma": ["scale", 0.01, 0.1]}),
        "MLP": (mlp, {"model__alpha": [1e-4, 1e-1]}),
    }
    if classification:
        return table
    return {name: _standardized_targets(est, params) for name, (est, params) in table.items()}


def _standardized_targets(estimator, grid):
    """Regression: every method fits standardized targets (the kernel methods have no intercept of their own)."""

    def rename(params: dict) -> dict:
        return {key.replace("model__", "model__regressor__", 1): value for key, value in params.items()}

    wrapped = TransformedTargetRegressor(regressor=estimator, transformer=StandardScaler())
    return wrapped, [rename(g) for g in grid] if isinstance(grid, list) else rename(grid)


def run(datasets_: tuple[str, ...] = DATASETS, method_names: tuple[str, ...] = METHODS, folds: int = 4,
        inner_folds: int = 3, grid: str = "default", seed: int = 0, progress: bool = True,
        folder: RunFolder | None = None) -> list[FoldResult]:  # fmt: skip
    """Every method on every data set, with the same outer and inner folds; one :class:`FoldResult` per fold.

    Parameters
    ----------
    datasets_, method_names:
        Subsets of :data:`DATASETS` and :data:`METHODS`.
    folds, inner_folds:
        Outer folds (test scores) and inner folds (hyperparameter search), both ≥ 2.
    grid:
        "default", "full" (closer to the paper's search) or "tiny" (for tests).
    seed:
        Seed of the fold shuffles, the random forest and the MLP.
    progress:
        A tqdm bar over the (data set, method, fold) cells.
    folder:
        A started ``ntkit._runs.RunFolder``: every cell is stored as it finishes and a rerun computes only the
        missing ones (Ctrl-C keeps the finished cells).

    Raises
    ------
    ValueError
        Unknown data sets, methods or grid; fewer than 2 folds.
    """
    from tqdm.auto import tqdm

    unknown = [d for d in datasets_ if d not in DATASETS] + [m for m in method_names if m not in METHODS]
    if unknown or not datasets_ or not method_names:
        raise ValueError(f"datasets must be a non-empty subset of {DATASETS} and methods of {METHODS}; got {unknown}")
    if grid not in DEPTHS:
        raise ValueError(f"grid must be one of {tuple(DEPTHS)}; got {grid!r}")
    if folds < 2 or inner_folds < 2:
        raise ValueError(f"folds and inner_folds must be ≥ 2; got {folds}, {inner_folds}")
    keys = [[name, method, fold] for name in datasets_ for method in method_names for fold in range(folds)]
    prepared: dict[str, tuple] = {}

    def compute(key: list) -> dict:
        name, method, fold = key
        if name not in prepared:
            x, y, classification = load(name)
            splitter = StratifiedKFold if classification else KFold
            outer = list(splitter(folds, shuffle=True, random_state=seed).split(x, y))
            inner = splitter(inner_folds, shuffle=True, random_state=seed + 1)
            prepared[name] = (x, y, outer, inner, methods(classification, grid, seed))
        x, y, outer, inner, table = prepared[name]
        estimator, grid_params = table[method]
        train, test = outer[fold]
        start = time.perf_counter()
        search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("model", clone(estimator))]), grid_params,
                              cv=inner)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the MLP's max_iter on some folds
            search.fit(x[train], y[train])
        score = float(search.score(x[test], y[test]))
        return asdict(FoldResult(name, method, fold, score, _describe(search.best_params_),
                                 time.perf_counter() - start))  # fmt: skip

    if folder is not None:
        depends_on = {"folds": folds, "inner_folds": inner_folds, "grid": grid, "seed": seed}
        rows = folder.cells(keys, depends_on, compute, progress=progress, desc="smalldata")
    else:
        rows = [compute(key) for key in tqdm(keys, disable=not progress, desc="smalldata")]
    return [FoldResult(**row) for row in rows]


def _describe(params: dict) -> str:
    parts = []
    for key, value in sorted(params.items()):
        key = key.removeprefix("model__").removeprefix("regressor__")
        if isinstance(value, InfiniteWidthKernel):  # default_mlp: FixedBelow sits after the fixed_layers-th Linear
            layers = value.arch.layers
            fixed_at = next((i for i, layer in enumerate(layers) if isinstance(layer, FixedBelow)), -1)
            parts += [f"depth={len(value.arch.affine_layers()) - 1}", f"fixed={(fixed_at + 1) // 2}"]
            continue
        parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


@dataclass
class Summary:
    dataset: str
    method: str
    mean: float
    std: float
    params: str  # the most frequent choice over the outer folds


def summary(results: list[FoldResult]) -> list[Summary]:
    """Mean and standard deviation over the outer folds, per data set and method (in the order of the results)."""
    groups: dict[tuple[str, str], list[FoldResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.method), []).append(r)
    rows = []
    for (dataset, method), rs in groups.items():
        scores = np.array([r.score for r in rs])
        common = Counter(r.params for r in rs).most_common(1)[0][0]
        rows.append(Summary(dataset, method, float(scores.mean()), float(scores.std(ddof=1)) if len(rs) > 1 else 0.0,
                            common))  # fmt: skip
    return rows


def format_table(rows: list[Summary]) -> str:
    """A markdown table: one row per data set, one column per method, mean ± std over folds; the best in bold."""
    datasets_ = list(dict.fromkeys(r.dataset for r in rows))
    methods_ = list(dict.fromkeys(r.method for r in rows))
    cell = {(r.dataset, r.method): r for r in rows}
    lines = ["| data set (n, metric) | " + " | ".join(methods_) + " |", "|---" * (len(methods_) + 1) + "|"]
    for d in datasets_:
        x, _, classification = load(d)
        best = max(cell[(d, m)].mean for m in methods_ if (d, m) in cell)
        entries = []
        for m in methods_:
            r = cell.get((d, m))
            if r is None:
                entries.append("")
                continue
            text = f"{r.mean:.3f} ± {r.std:.3f}"
            entries.append(f"**{text}**" if r.mean == best else text)
        metric = "accuracy" if classification else "R²"
        lines.append(f"| {d} ({len(x)}, {metric}) | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def records(results: list[FoldResult]) -> list[dict]:
    return [asdict(r) for r in results]


def plot(rows: list[Summary], path: Path | str) -> Path:
    """Grouped bars: score per data set and method, with the standard deviation over folds."""
    plt = pyplot()
    datasets_ = list(dict.fromkeys(r.dataset for r in rows))
    methods_ = list(dict.fromkeys(r.method for r in rows))
    cell = {(r.dataset, r.method): r for r in rows}
    fig, ax = plt.subplots(figsize=(1.6 * len(datasets_) + 3, 4))
    width = 0.8 / len(methods_)
    for i, m in enumerate(methods_):
        means = [cell[(d, m)].mean if (d, m) in cell else np.nan for d in datasets_]
        stds = [cell[(d, m)].std if (d, m) in cell else 0.0 for d in datasets_]
        ax.bar(np.arange(len(datasets_)) + (i - (len(methods_) - 1) / 2) * width, means, width, yerr=stds,
               label=m, capsize=2)  # fmt: skip
    ax.set_xticks(np.arange(len(datasets_)), [d + ("" if d in CLASSIFICATION else " (R²)") for d in datasets_])
    ax.set_ylabel("test accuracy (R² for regression)")
    low = min(r.mean - r.std for r in rows)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_title("Small-data study (Arora et al. 2020): same folds for every method")
    ax.legend(ncol=3, fontsize=8)
    return save_figure(fig, path)


def save(results: list[FoldResult], folder: RunFolder) -> dict[str, Path]:
    """smalldata.csv (every fold), smalldata.md (the table) and smalldata.png (the plot) in ``folder``, which is
    then marked complete."""
    table = summary(results)
    paths = {"csv": folder.write_table("smalldata.csv", records(results)),
             "table": folder.write_output("smalldata.md", format_table(table) + "\n")}  # fmt: skip
    with folder.output("smalldata.png") as tmp:
        plot(table, tmp)
    paths["plot"] = folder.out / "smalldata.png"
    folder.complete()
    return paths
