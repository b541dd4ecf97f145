"""Lee et al. 2019's central claim, measured: a wide network trained by gradient descent follows the closed-form
dynamics of its own linearization, and the gap closes like 1/√width.

For a network f(θ) with empirical NTK Θ₀ at initialisation, full-batch gradient descent on
L = ‖f(X) − y‖² / (2N) with step η moves the linearized model's outputs exactly as

    f_X(t) = y + (I − ηΘ₀/N)^t (f_X(0) − y),
    f_*(t) = f_*(0) + Θ₀(*, X) Θ₀⁻¹ (I − (I − ηΘ₀/N)^t) (y − f_X(0))

(Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington, *Wide Neural Networks of Any Depth Evolve as
Linear Models Under Gradient Descent*, NeurIPS 2019, eqs. 8–9 and Theorem 2.1). Nothing here fits the prediction to
the run: :func:`ntkit.predict.gradient_descent_mse` gives it from Θ₀ alone, and the real network is trained with
``torch.optim.SGD``. The distance between the two, ``sup_t ‖f_t − f_t^lin‖``, is O(1/√width) in the NTK
parameterization (their Theorem 2.1), so its log-log slope against width is close to −1/2.

Two architectures are built from ntkit layer specs (``arch.build`` gives the finite network):

* ``mlp``: Linear–ReLU–Linear–ReLU–Linear on the 64 pixels of each image;
* ``cnn``: Conv2d(3×3, "same")–ReLU–GlobalAvgPool2d–Linear on the 8×8 image;

both regressing the digit value, scaled to [−1, 1], of scikit-learn's digits (64 training images, 128 test
images; shipped with scikit-learn, no download). A 1-D input such as the sin(3x) task is a poor case for ReLU
networks: every hidden unit's kink lies inside the data interval, and the measured gap then shrinks much more
slowly than 1/√width (slope about −0.15 from width 64 to 1024, where the 64-pixel digits give −0.58).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ntkit._plotting import pyplot, save_figure
from ntkit._runs import RunFolder, training_bytes
from ntkit._validation import check_memory
from ntkit.data.tasks import Task, digit_value_task
from ntkit.empirical import empirical_ntk
from ntkit.examples.common import log_log_slope, stable_learning_rate
from ntkit.infinite import Conv2d, GlobalAvgPool2d, Linear, ReLU, Sequential
from ntkit.predict import gradient_descent_mse

ARCHITECTURES = ("mlp", "cnn")
DEFAULT_WIDTHS = (64, 256, 1024, 4096)
DEFAULT_TIMES = (10, 30, 100)


@dataclass
class Run:
    """One trained network against its closed-form linearized prediction."""

    architecture: str
    width: int
    seed: int
    learning_rate: float
    times: tuple[int, ...]
    test_gap: list[float]  # RMS over test points of f_t − f_t^lin, at each time
    train_gap: list[float]
    test_mse_network: float  # at the last time
    test_mse_prediction: float
    network_curve: torch.Tensor | None = None  # (T, M) test outputs, kept for the plot
    prediction_curve: torch.Tensor | None = None


def architecture(name: str, width: int) -> Sequential:
    """The layer spec of ``name`` at ``width`` (NTK parameterization)."""
    if name == "mlp":
        return Sequential(Linear(width, b_std=0.1), ReLU(), Linear(width, b_std=0.1), ReLU(), Linear(1, b_std=0.1))
    if name == "cnn":
        return Sequential(Conv2d(width, 3, padding="same", b_std=0.1), ReLU(), GlobalAvgPool2d(), Linear(1))
    raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {name!r}")


def task(name: str, dtype: torch.dtype = torch.float64) -> Task:
    """The digit-value task (:func:`ntkit.data.tasks.digit_value_task`) shaped for ``name``: images (N, 1, 8, 8)
    for ``cnn``, pixels (N, 64) for ``mlp``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {name!r}")
    return digit_value_task(images=name == "cnn", dtype=dtype)


def run_one(name: str, width: int, seed: int, times: tuple[int, ...], data: Task, learning_rate: float) -> Run:
    """Train ``arch.build`` at ``width`` for max(times) steps of SGD and compare with the closed form from Θ₀."""
    model = architecture(name, width).build(tuple(data.x_train.shape[1:]), seed=seed, dtype=torch.float64)
    x_all = torch.cat([data.x_train, data.x_test])
    n = data.x_train.shape[0]
    theta0 = empirical_ntk(model, x_all)  # (N + M, N + M), one output
    with torch.no_grad():
        f0 = model(x_all)
    predict = gradient_descent_mse(theta0[:n, :n], data.y_train, learning_rate=learning_rate, discrete=True)
    lin_train, lin_test = predict(list(times), f0[:n], f0[n:], theta0[n:, :n])

    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    net_train, net_test = [], []
    for step in range(1, max(times) + 1):
        optimizer.zero_grad()
        loss = ((model(data.x_train) - data.y_train) ** 2).sum() / (2 * n)
        loss.backward()
        optimizer.step()
        if step in times:
            with torch.no_grad():
                out = model(x_all)
            net_train.append(out[:n])
            net_test.append(out[n:])
    net_train, net_test = torch.stack(net_train), torch.stack(net_test)

    def rms(a: torch.Tensor) -> list[float]:
        return a.pow(2).mean(dim=(1, 2)).sqrt().tolist()

    return Run(
        architecture=name,
        width=width,
        seed=seed,
        learning_rate=learning_rate,
        times=tuple(times),
        test_gap=rms(net_test - lin_test),
        train_gap=rms(net_train - lin_train),
        test_mse_network=float((net_test[-1] - data.y_test).pow(2).mean()),
        test_mse_prediction=float((lin_test[-1] - data.y_test).pow(2).mean()),
        network_curve=net_test[:, :, 0],
        prediction_curve=lin_test[:, :, 0],
    )


def run(
    architectures: tuple[str, ...] = ARCHITECTURES,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    seeds: int = 3,
    times: tuple[int, ...] = DEFAULT_TIMES,
    progress: bool = True,
    folder: RunFolder | None = None,
) -> list[Run]:
    """Every (architecture, width, seed) run, with a progress bar.

    With a started :class:`ntkit._runs.RunFolder`, each run is a cell stored as it finishes, and runs stored by an
    earlier (killed) invocation with the same settings are loaded instead of trained again.
    """
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be positive integers; got {widths!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be a positive integer; got {seeds!r}")
    if not times or any(not isinstance(t, int) or t < 1 for t in times):
        raise ValueError(f"times must be positive step counts; got {times!r}")
    for name in architectures:
        architecture(name, 1)  # unknown names fail before any work
    times = tuple(sorted(set(times)))
    data = {a: task(a) for a in architectures}
    rates = {a: stable_learning_rate(architecture(a, 1), data[a], 0.5) for a in architectures}
    keys = [[a, w, s] for a in architectures for w in widths for s in range(seeds)]

    def compute(key: list) -> dict:
        a, w, s = key
        return to_cell(run_one(a, w, s, times, data[a], rates[a]))

    if folder is None:
        return [run_one(a, w, s, times, data[a], rates[a]) for a, w, s in tqdm(keys, desc="training", unit="net",
                                                                               disable=not progress)]  # fmt: skip
    return [from_cell(c) for c in folder.cells(keys, {"times": times}, compute, progress=progress, desc="training")]


def check_fits(architectures: tuple[str, ...], widths: tuple[int, ...], option: str = "widths") -> None:
    """Refuse, before building anything, a width whose network cannot train in the memory free now.

    The MLP has P = 64·n + n + n² + n + n + 1 parameters and 2·n hidden values per example, the CNN P = 9n + n + n + 1
    and 64·n (one per pixel and channel); 192 examples (:func:`ntkit._runs.training_bytes`).
    """
    for name in architectures:
        for n in widths:
            params, hidden = (n * n + 67 * n + 1, 2 * n) if name == "mlp" else (11 * n + 1, 64 * n)
            what = f"{option} {n}: training the {name} of width {n} ({params:,} parameters)"
            check_memory(training_bytes(params, 192 * hidden), torch.device("cpu"), what, "choose smaller widths")


def to_cell(r: Run) -> dict:
    """A :class:`Run` as plain JSON values (curves as nested lists)."""
    cell = asdict(r)
    cell["times"] = list(r.times)
    for name in ("network_curve", "prediction_curve"):
        cell[name] = None if cell[name] is None else cell[name].tolist()
    return cell


def from_cell(cell: dict) -> Run:
    """The :class:`Run` of :func:`to_cell`'s output."""
    curves = {n: None if cell[n] is None else torch.tensor(cell[n], dtype=torch.float64)
              for n in ("network_curve", "prediction_curve")}  # fmt: skip
    return Run(**{**cell, **curves, "times": tuple(cell["times"])})


def save(runs: list[Run], folder: RunFolder) -> dict[str, Path]:
    """Write linearized_dynamics.csv and linearized_dynamics.png into ``folder`` and mark the run complete."""
    paths = {"csv": folder.write_table("linearized_dynamics.csv", records(runs))}
    with folder.output("linearized_dynamics.png") as tmp:
        plot(runs, tmp)
    paths["plot"] = folder.out / "linearized_dynamics.png"
    folder.complete()
    return paths


def summary(runs: list[Run]) -> list[dict]:
    """Per architecture and width: the seed-mean gap at each time and the test MSEs."""
    rows = []
    for a in dict.fromkeys(r.architecture for r in runs):
        for w in dict.fromkeys(r.width for r in runs if r.architecture == a):
            group = [r for r in runs if r.architecture == a and r.width == w]
            row = {"architecture": a, "width": w, "seeds": len(group), "learning_rate": group[0].learning_rate}
            for i, t in enumerate(group[0].times):
                row[f"test_gap_t{t}"] = _mean([r.test_gap[i] for r in group])
            row["train_gap_final"] = _mean([r.train_gap[-1] for r in group])
            row["test_mse_network"] = _mean([r.test_mse_network for r in group])
            row["test_mse_prediction"] = _mean([r.test_mse_prediction for r in group])
            rows.append(row)
    return rows


def slopes(rows: list[dict]) -> dict[str, float]:
    """Fitted log-log slope of the final-time test gap against width, per architecture."""
    out = {}
    for a in dict.fromkeys(r["architecture"] for r in rows):
        group = [r for r in rows if r["architecture"] == a]
        last = [k for k in group[0] if k.startswith("test_gap_t")][-1]
        if len(group) > 1:
            out[a] = log_log_slope([r["width"] for r in group], [r[last] for r in group])
    return out


def format_table(rows: list[dict]) -> str:
    gap_keys = [k for k in rows[0] if k.startswith("test_gap_t")]
    head = f"{'arch':>5} {'width':>6} " + " ".join(f"{'gap t=' + k[10:]:>11}" for k in gap_keys)
    head += f" {'MSE net':>9} {'MSE lin':>9}"
    lines = [head]
    for r in rows:
        gaps = " ".join(f"{r[k]:>11.2e}" for k in gap_keys)
        mses = f"{r['test_mse_network']:>9.2e} {r['test_mse_prediction']:>9.2e}"
        lines.append(f"{r['architecture']:>5} {r['width']:>6} {gaps} {mses}")
    for a, s in slopes(rows).items():
        lines.append(f"{a}: log-log slope of the final test gap against width = {s:+.2f} (theory: −0.5)")
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> Path:
    """Left: gap against width (log-log) with a 1/√width guide. Right: trained network against the closed-form
    prediction on every test point, for the narrowest and the widest network (seed 0)."""
    plt = pyplot()

    rows = summary(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    ax = axes[0]
    for a in dict.fromkeys(r["architecture"] for r in rows):
        group = [r for r in rows if r["architecture"] == a]
        widths = [r["width"] for r in group]
        for key in [k for k in group[0] if k.startswith("test_gap_t")]:
            ax.loglog(widths, [r[key] for r in group], "o-", label=f"{a}, t = {key[10:]} steps")
        ref = group[0][[k for k in group[0] if k.startswith("test_gap_t")][-1]]
        ax.loglog(widths, [ref * math.sqrt(widths[0] / w) for w in widths], "k:", lw=1)
    ax.set(xlabel="width", ylabel="RMS test gap ‖f_t − f_t^lin‖", title="Network vs its linearization (dotted: 1/√w)")
    ax.legend(fontsize=7)

    ax = axes[1]
    first = [r for r in runs if r.architecture == runs[0].architecture and r.seed == 0]
    for r, color in ((first[0], "tab:red"), (first[-1], "tab:blue")):
        ax.scatter(r.prediction_curve[-1], r.network_curve[-1], s=10, color=color, label=f"width {r.width}")
    lo = min(float(c.min()) for r in first for c in (r.network_curve, r.prediction_curve))
    hi = max(float(c.max()) for r in first for c in (r.network_curve, r.prediction_curve))
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set(xlabel="closed-form prediction f_t^lin(x)", ylabel="trained network f_t(x)",
           title=f"{runs[0].architecture}, test points after {runs[0].times[-1]} steps")  # fmt: skip
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def records(runs: list[Run]) -> list[dict]:
    """One plain dict per run, for CSV."""
    out = []
    for r in runs:
        row = {k: v for k, v in asdict(r).items() if k not in ("network_curve", "prediction_curve", "times")}
        row.pop("test_gap"), row.pop("train_gap")
        for t, g, h in zip(r.times, r.test_gap, r.train_gap, strict=True):
            row[f"test_gap_t{t}"], row[f"train_gap_t{t}"] = g, h
        out.append(row)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
