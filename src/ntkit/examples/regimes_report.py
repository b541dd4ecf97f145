"""Plots and the markdown summary of ``ntkit regimes`` (see :mod:`ntkit.examples.regimes_sweep`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ntkit._plotting import pyplot, save_figure
from ntkit.data.tasks import Task
from ntkit.empirical import empirical_ntk
from ntkit.examples.common import log_log_slope, stable_learning_rate
from ntkit.regimes import mlp, mlp_spec

NAMES = {"ntk": "NTK", "mup": "μP", "standard": "standard"}


def _label(p: str, alpha: float) -> str:
    return NAMES[p] if alpha == 1 else f"{NAMES[p]}, α={alpha:g}"


def _groups(rows):
    keys = []
    for r in rows:
        key = (r["parameterization"], r["alpha"])
        if key not in keys:
            keys.append(key)
    return keys


def geometric_means(rows, key, column="kernel_change"):
    """(widths, geometric mean over seeds of ``column``) for the runs of one (parameterization, α)."""
    widths = sorted({r["width"] for r in rows if (r["parameterization"], r["alpha"]) == key})
    means = []
    for w in widths:
        vals = [r[column] for r in rows if (r["parameterization"], r["alpha"]) == key and r["width"] == w]
        vals = [v for v in vals if v > 0 and math.isfinite(v)]
        means.append(math.exp(np.mean(np.log(vals))) if vals else math.nan)
    return np.array(widths, dtype=float), np.array(means)


def fit_slopes(rows) -> dict:
    """(parameterization, α) → least-squares slope of log(kernel change) against log(width), over the geometric
    means across seeds (NaN with fewer than two widths)."""
    slopes = {}
    for key in _groups(rows):
        w, m = geometric_means(rows, key)
        ok = np.isfinite(m)
        slopes[key] = log_log_slope(w[ok], m[ok]) if ok.sum() >= 2 else math.nan
    return slopes


def plot_kernel_change(rows, slopes, path: Path) -> Path:
    """Kernel change at the end of training against width, log-log, one colour per (parameterization, α)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, key in enumerate(_groups(rows)):
        color = f"C{i}"
        pts = [(r["width"], r["kernel_change"]) for r in rows if (r["parameterization"], r["alpha"]) == key]
        ax.scatter(*zip(*pts, strict=True), color=color, alpha=0.35, s=14)
        w, m = geometric_means(rows, key)
        ax.plot(w, m, "o-", color=color, label=f"{_label(*key)}: slope {slopes[key]:+.2f}")
    widths = np.array(sorted({r["width"] for r in rows}), dtype=float)
    ntk = [m for k in _groups(rows) if k[0] == "ntk" for m in [geometric_means(rows, k)[1]]]
    if ntk and len(widths) > 1 and np.isfinite(ntk[0][0]):
        ax.plot(widths, ntk[0][0] * (widths / widths[0]) ** -0.5, "k:", label="slope −1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F")
    ax.set_title("How far the NTK moves during training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=130)


def plot_function_vs_ntk(task, curves, widths, path: Path) -> Path:
    """The network's test function (solid) and the NTK prediction (dashed) at the snapshot steps, for the
    narrowest and widest network of each parameterization (seed 0, first α)."""
    plt = pyplot()
    keys = []
    for p, a, _ in curves:
        if (p, a) not in keys and all(k[0] != p for k in keys):
            keys.append((p, a))
    cols = [widths[0], widths[-1]] if len(widths) > 1 else [widths[0]]
    fig, axes = plt.subplots(len(keys), len(cols), figsize=(5.2 * len(cols), 3.6 * len(keys)), squeeze=False)
    one_d = task.x_test.shape[1] == 1
    for i, (p, a) in enumerate(keys):
        for j, w in enumerate(cols):
            ax = axes[i][j]
            c = curves[(p, a, w)]
            steps = sorted(c["net"])
            cmap = plt.get_cmap("viridis")
            for k, s in enumerate(steps):
                color = cmap(k / max(1, len(steps) - 1))
                net, ntk = c["net"][s][:, 0].numpy(), c["ntk"][s][:, 0].numpy()
                if one_d:
                    x = task.x_test[:, 0].numpy()
                    ax.plot(x, net, "-", color=color, lw=1.6, label=f"step {s}")
                    ax.plot(x, ntk, "--", color="k", lw=0.9, alpha=0.7)
                else:
                    ax.scatter(ntk, net, s=5, color=color, alpha=0.6, label=f"step {s}")
            if one_d:
                ax.scatter(task.x_train[:, 0], task.y_train[:, 0], s=12, color="crimson", zorder=5, label="train")
                ax.set_xlabel("x")
                ax.set_ylabel("f(x)  (dashed: NTK prediction)")
            else:
                lim = [float(min(ax.get_xlim()[0], ax.get_ylim()[0])), float(max(ax.get_xlim()[1], ax.get_ylim()[1]))]
                ax.plot(lim, lim, "k--", lw=0.8)
                ax.set_xlabel("NTK prediction, first output")
                ax.set_ylabel("network, first output")
            ax.set_title(f"{_label(p, a)}, width {w}")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{task.name}: network (solid / points) against the infinite-width NTK prediction over training")
    return save_figure(fig, path, dpi=110)


def _jacot_setup(depth: int) -> dict:
    """The circle, x0, the 8 training points on the circle, the spec and its analytic Θ(x0, ·), and the rate."""
    dtype = torch.float64
    gamma = torch.linspace(-math.pi, math.pi, 121, dtype=dtype)
    circle = torch.stack([torch.cos(gamma), torch.sin(gamma)], 1)
    x0 = torch.tensor([[1.0, 0.0]], dtype=dtype)
    angles = 2 * math.pi * torch.rand(8, generator=torch.Generator().manual_seed(1), dtype=dtype)
    x_train = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    y_train = x_train[:, :1] * x_train[:, 1:]
    spec = mlp_spec(1, 1, depth, "relu", math.sqrt(2), 0.1)
    lr = stable_learning_rate(spec, Task("jacot", x_train, y_train, circle, circle[:, :1] * circle[:, 1:]), 0.5)
    return {"gamma": gamma, "circle": circle, "x0": x0, "x_train": x_train, "y_train": y_train, "lr": lr,
            "limit": spec.kernel(x0, circle).ntk[0]}  # fmt: skip


def jacot_run(width: int, seed: int, depth: int = 3, steps: int = 200) -> dict:
    """One network of Jacot et al.'s figure 1 (see :func:`jacot_figure`): Θ(x0, ·) on the circle before and after
    ``steps`` of gradient descent, as lists (JSON-ready)."""
    setup = _jacot_setup(depth)
    x0, circle, x_train, y_train = setup["x0"], setup["circle"], setup["x_train"], setup["y_train"]
    model = mlp(2, width, 1, depth, "relu", "ntk", math.sqrt(2), 0.1, seed=seed, dtype=torch.float64)
    before = empirical_ntk(model, x0, circle)[0].detach()
    opt = torch.optim.SGD(model.parameters(), lr=setup["lr"])
    for _ in range(steps):
        loss = 0.5 * ((model(x_train) - y_train) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = empirical_ntk(model, x0, circle)[0].detach()
    return {"before": before.tolist(), "after": after.tolist()}


def jacot_plot(widths: Sequence[int], runs: Sequence[dict], path: Path, depth: int = 3, steps: int = 200) -> dict:
    """Draw the runs of :func:`jacot_run` (``widths[i]`` is the width of ``runs[i]``) over the analytic limit, and
    return per width the means over seeds of max_γ |Θ − Θ∞| / max Θ∞ at initialisation and at the end, and of the
    relative change of Θ(x0, ·) in training."""
    plt = pyplot()
    setup = _jacot_setup(depth)
    gamma, limit = setup["gamma"], setup["limit"]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    numbers: dict = {}
    labelled = set()
    for w, run in zip(widths, runs, strict=True):
        before, after = torch.tensor(run["before"]), torch.tensor(run["after"])
        color = "C0" if w == widths[0] else "C1"
        first = w not in labelled
        labelled.add(w)
        ax.plot(gamma, before, "--", color=color, lw=0.9, alpha=0.8, label=f"n={w}, t=0" if first else None)
        ax.plot(gamma, after, "-", color=color, lw=0.9, alpha=0.8, label=f"n={w}, t={steps}" if first else None)
        scale = float(limit.abs().max())
        d = numbers.setdefault(w, {"init_gap": [], "end_gap": [], "change": []})
        d["init_gap"].append(float((before - limit).abs().max()) / scale)
        d["end_gap"].append(float((after - limit).abs().max()) / scale)
        d["change"].append(float(torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before)))
    seeds = len(runs) // max(1, len(numbers))
    ax.plot(gamma, limit, "k-", lw=2.2, label="n = ∞ (analytic)")
    ax.set_xlabel("γ,  x = (cos γ, sin γ)")
    ax.set_ylabel("Θ(x0, x)")
    ax.set_title(f"Jacot et al. 2018, fig. 1: ReLU, {depth + 1} layers, {seeds} seeds per width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=130)
    return {w: {k: float(np.mean(v)) for k, v in d.items()} for w, d in numbers.items()}


def jacot_figure(widths, seeds: int, path: Path, depth: int = 3, steps: int = 200, progress: bool = False) -> dict:
    """Jacot, Gabriel & Hongler 2018, figure 1: Θ(x0, x) for x = (cos γ, sin γ) on the unit circle and x0 = (1, 0),
    at initialisation (dashed) and after ``steps`` of gradient descent (solid), for each width and ``seeds``
    initialisations, over the analytic limit (black). ReLU, ``depth`` hidden layers (L = depth + 1 = 4 as in the
    paper), W_std = √2, b_std = 0.1, trained on f*(x) = x1·x2 at 8 points of the circle.

    Returns, per width, the mean over seeds of max_γ |Θ − Θ∞| / max Θ∞ at initialisation and at the end, and of
    the relative change of Θ(x0, ·) in training (:func:`jacot_plot`).
    """
    from tqdm.auto import tqdm

    jobs = [(w, s) for w in widths for s in range(seeds)]
    runs = [jacot_run(w, s, depth, steps) for w, s in tqdm(jobs, desc="Jacot figure 1", disable=not progress)]
    return jacot_plot([w for w, _ in jobs], runs, path, depth, steps)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def summary_table(rows) -> list[dict]:
    """Means over seeds, one row per (parameterization, α, width)."""
    table = []
    for key in _groups(rows):
        for w in sorted({r["width"] for r in rows}):
            rs = [r for r in rows if (r["parameterization"], r["alpha"]) == key and r["width"] == w]
            if not rs:
                continue
            mean = {c: float(np.mean([r[c] for r in rs])) for c in ("train_loss", "test_loss", "kernel_change",
                    "weight_change", "ntk_gap", "test_accuracy", "kernel_alignment_0", "kernel_alignment")}  # fmt: skip
            table.append({"parameterization": key[0], "alpha": key[1], "width": w, "runs": len(rs), **mean})
    return table


def write_summary(rows, slopes, ntk_ref, jacot_numbers, settings, path: Path) -> Path:
    """The markdown summary: settings, what the numbers show, and the table of means over seeds."""
    lines = [f"# Lazy training against feature learning: `{settings['task']}`", ""]
    widths = ", ".join(map(str, settings["widths"]))
    lines.append(f"MLP with {settings['depth']} hidden ReLU layer(s) (W_std = 1, b_std = {settings['b_std']:g}), "
                 f"widths {widths}; "
                 f"{settings['seeds']} seed(s) each; {settings['steps']} steps of full-batch gradient descent at "
                 f"η = {settings['lr']:.4g} ({settings['lr_fraction']:g} × the NTK's largest stable rate; μP: η·n "
                 f"per tensor, standard: η/n); {settings['n_train']} training and {settings['n_test']} test "
                 "points. Every run trains the centered model α·(f − f0).")  # fmt: skip
    lines += ["", "## What the numbers show", ""]
    for (p, a), s in slopes.items():
        rs = [r for r in rows if (r["parameterization"], r["alpha"]) == (p, a)]
        w_lo, w_hi = min(r["width"] for r in rs), max(r["width"] for r in rs)
        lo = np.mean([r["kernel_change"] for r in rs if r["width"] == w_lo])
        hi = np.mean([r["kernel_change"] for r in rs if r["width"] == w_hi])
        if hi < 0.05:
            verdict = "under 5% at the widest width: the lazy (kernel) regime"
        elif s > -0.15:
            verdict = "order one at every width: features are learned"
        else:
            verdict = "large, but it falls with width"
        lines.append(f"- **{_label(p, a)}**: the kernel moves by {_fmt(lo)} at width {w_lo} and {_fmt(hi)} at width "
                     f"{w_hi} (×{_fmt(hi / lo) if lo > 0 else '–'}); log-log slope {s:+.2f}: {verdict}.")  # fmt: skip
    ntk_rows = [r for r in rows if r["parameterization"] == "ntk" and r["alpha"] == 1]
    if ntk_rows:
        ws = sorted({r["width"] for r in ntk_rows})
        gaps = [np.mean([r["ntk_gap"] for r in ntk_rows if r["width"] == w]) for w in ws]
        lines.append(
            f"- Under the NTK parameterization the trained network's distance to the infinite-width NTK "
            f"prediction goes {' → '.join(_fmt(g) for g in gaps)} over widths {', '.join(map(str, ws))}."
        )
    mup_rows = [r for r in rows if r["parameterization"] == "mup" and r["alpha"] == 1]
    if mup_rows:
        ws = sorted({r["width"] for r in mup_rows})
        gaps = [np.mean([r["ntk_gap"] for r in mup_rows if r["width"] == w]) for w in ws]
        trend = "it shrinks with width" if gaps[-1] < 0.5 * gaps[0] else "it does not shrink with width"
        lines.append(f"- μP's distance to the NTK prediction goes {' → '.join(_fmt(g) for g in gaps)} over the same "
                     f"widths: {trend}.")  # fmt: skip
    if any(a != 1 for _, a in slopes):
        for p in dict.fromkeys(p for p, _ in slopes):
            pts = sorted({r["alpha"] for r in rows if r["parameterization"] == p})
            if len(pts) > 1:
                w_hi = max(r["width"] for r in rows)
                ch = [np.mean([r["kernel_change"] for r in rows if (r["parameterization"], r["alpha"], r["width"])
                               == (p, a, w_hi)]) for a in pts]  # fmt: skip
                lines.append(
                    f"- {NAMES[p]} at width {w_hi}: kernel change {' → '.join(_fmt(c) for c in ch)} for "
                    f"α = {', '.join(f'{a:g}' for a in pts)}: ×{_fmt(ch[0] / ch[-1])} smaller over ×"
                    f"{pts[-1] / pts[0]:g} in α (a kernel smooth in θ moves ∝ 1/α; ReLU's also jumps where "
                    "activation patterns flip)."
                )
    if math.isfinite(ntk_ref["test_accuracy"]):
        lines.append(
            f"- The infinite-width NTK itself reaches test accuracy {ntk_ref['test_accuracy']:.4f} "
            f"(test MSE {ntk_ref['test_loss']:.4g}) after the same training time."
        )
        for key in _groups(rows):
            rs = [r for r in rows if (r["parameterization"], r["alpha"]) == key]
            best = max(sorted({r["width"] for r in rs}), key=lambda w: w)
            acc = np.mean([r["test_accuracy"] for r in rs if r["width"] == best])
            lines.append(f"  - {_label(*key)}, width {best}: test accuracy {acc:.4f}")
    else:
        lines.append(f"- The infinite-width NTK prediction itself has test MSE {ntk_ref['test_loss']:.4g}.")
    if jacot_numbers:
        for w, d in jacot_numbers.items():
            lines.append(f"- Jacot figure (4 layers, unit circle), width {w}: Θ(x0, ·) is within {_fmt(d['init_gap'])} "
                         f"of the analytic limit at initialisation and {_fmt(d['end_gap'])} after training (max "
                         f"relative error, mean over seeds); training moved it by {_fmt(d['change'])}.")  # fmt: skip
    lines += ["", "## Means over seeds", ""]
    head = ["param.", "α", "width", "train MSE", "test MSE", "test acc.", "kernel change", "weight change",
            "NTK gap", "alignment t=0 → T"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in summary_table(rows):
        lines.append(f"| {NAMES[t['parameterization']]} | {t['alpha']:g} | {t['width']} | {_fmt(t['train_loss'])} | "
                     f"{_fmt(t['test_loss'])} | {_fmt(t['test_accuracy'])} | {_fmt(t['kernel_change'])} | "
                     f"{_fmt(t['weight_change'])} | {_fmt(t['ntk_gap'])} | {t['kernel_alignment_0']:.3f} → "
                     f"{t['kernel_alignment']:.3f} |")  # fmt: skip
    lines += [
        "",
        "Plots: `kernel_change.png`, `function_vs_ntk.png`, `jacot_figure1.png`; every run: `results.csv`.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path
