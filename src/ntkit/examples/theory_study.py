"""The studies behind ``ntkit theory``: predicted learning curves against measured kernel regression, and the
order/chaos phase diagram against trained deep networks.

* :func:`sphere_learning_curves`: inputs uniform on S^{d−1}, a target with chosen power in chosen spherical-harmonic
  degrees plus noise (``ntkit.data.harmonic_target``), the infinite-width NTK of an MLP spec. The prediction comes
  from :func:`ntkit.theory.sphere_spectrum` and :func:`ntkit.theory.learning_curve` alone; the measurement is
  kernel ridge regression f̂ = k(x, X)(K + δI)⁻¹y averaged over independent training sets (nested subsets of one
  draw per repetition, so each n sees an i.i.d. sample), each with a fresh test set.
* :func:`pool_learning_curves`: the same for a real dataset, with spectrum and target coefficients estimated by
  Nyström (:func:`ntkit.theory.spectrum`) on a held-out pool and training sets drawn from the rest.
* :func:`phase_training`: deep MLPs trained for a fixed number of steps over a (σ_w², depth) grid at fixed σ_b²,
  against 6ξ and the order/chaos boundary from :func:`ntkit.theory.phase_diagram` (Schoenholz et al. 2017, Fig. 1).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ntkit._plotting import pyplot, save_figure
from ntkit.data import harmonic_target, sphere_points
from ntkit.predict import max_learning_rate
from ntkit.regimes import mlp, mlp_spec
from ntkit.theory import learning_curve, phase_diagram, spectrum, sphere_spectrum


def write_csv(rows: list[dict], path: Path) -> Path:
    """Rows of one dict each to ``path`` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _krr_errors(k_train: torch.Tensor, k_test: torch.Tensor, y: torch.Tensor, y_test: torch.Tensor,
                ns: Sequence[int], ridges: Sequence[float]) -> dict:  # fmt: skip
    """{(ridge, n): test MSE} of kernel ridge regression on the first n points, for every n and ridge.

    α = (K + δI)⁻¹y by Cholesky (n³/3 flops, half of an LU solve and far less than least squares); where K + δI
    is not numerically positive definite (δ = 0 and a rank-deficient K) by least squares instead."""
    out = {}
    for n in ns:
        k, kt, yn = k_train[:n, :n], k_test[:, :n], y[:n]
        for ridge in ridges:
            reg = k + ridge * torch.eye(n, dtype=k.dtype)
            factor, info = torch.linalg.cholesky_ex(reg)
            if int(info) == 0:
                alpha = torch.cholesky_solve(yn.unsqueeze(1), factor)[:, 0]
            else:
                alpha = torch.linalg.lstsq(reg, yn.unsqueeze(1)).solution[:, 0]
            out[(ridge, n)] = float(((kt @ alpha - y_test) ** 2).mean())
    return out


def default_max_degree(dim: int, n_max: int, degrees: Sequence[int] = (), modes_per_sample: int = 10) -> int:
    """The smallest degree L ≥ max(20, max(degrees) + 1) whose harmonics up to L number at least
    ``modes_per_sample``·n_max (so the modes left to ``tail_trace`` all have λ ≪ κ at every n ≤ n_max: on S² with
    n = 1,000 the prediction moves by 2 % from L = 40 to L = 200, and by < 0.1 % beyond)."""
    from ntkit.data.sphere import harmonic_multiplicity

    ell, count = 0, 1
    low = max(20, max(degrees, default=0) + 1)
    while ell < low or count < modes_per_sample * n_max:
        ell += 1
        count += harmonic_multiplicity(dim, ell)
    return ell


def sphere_learning_curves(
    dim: int = 5,
    degrees: Sequence[int] = (1, 2, 3),
    powers: Sequence[float] = (1.0, 0.5, 0.25),
    noise: float = 0.01,
    ridges: Sequence[float] = (0.0, 1e-3, 1e-2),
    ns: Sequence[int] = (10, 30, 100, 300, 1000),
    draws: int = 20,
    depth: int = 1,
    activation: str = "relu",
    max_degree: int | None = None,
    n_test: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Predicted against measured test MSE (noisy test labels: + ε²) of NTK regression on the sphere.

    Returns one row per (ridge, n): predicted MSE, measured mean and standard error over ``draws``, relative error,
    and the noise floor ε² (the MSE of the perfect predictor). ``max_degree`` (default
    :func:`default_max_degree`) is the last degree of the spectrum given explicitly; the rest is its tail."""
    arch = mlp_spec(1024, 1, depth, activation, 1.0, 0.1)
    ns = sorted(int(n) for n in ns)
    max_degree = max_degree or default_max_degree(dim, ns[-1], degrees)
    spec = sphere_spectrum(arch, dim, max_degree)
    coeffs = np.zeros(max_degree + 1)
    coeffs[list(degrees)] = np.sqrt(powers)
    f = harmonic_target(dim, degrees, powers, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    measured = {key: [] for key in ((r, n) for r in ridges for n in ns)}
    for _ in tqdm(range(draws), desc="draws", unit="draw", disable=not progress):
        x = sphere_points(ns[-1], dim, g)
        y = f(x) + math.sqrt(noise) * torch.randn(ns[-1], generator=g, dtype=torch.float64)
        x_test = sphere_points(n_test, dim, g)  # a fresh test set per draw: its sampling error averages out too
        y_test = f(x_test)
        errors = _krr_errors(arch.kernel(x).ntk, arch.kernel(x_test, x).ntk, y, y_test, ns, ridges)
        for key, err in errors.items():
            measured[key].append(err + noise)
    rows = []
    for ridge in ridges:
        curve = learning_curve(spec.eigenvalues, coeffs, ns, ridge=ridge, noise=noise,
                               multiplicities=spec.multiplicities, tail_trace=spec.tail)  # fmt: skip
        for i, n in enumerate(ns):
            errs = np.array(measured[(ridge, n)])
            mean, stderr = errs.mean(), errs.std(ddof=1) / math.sqrt(len(errs)) if len(errs) > 1 else math.nan
            rows.append({"dim": dim, "ridge": ridge, "n": n, "predicted": curve.test_mse[i], "measured": mean,
                         "stderr": stderr, "rel_error": (mean - curve.test_mse[i]) / curve.test_mse[i],
                         "noise_floor": noise, "draws": draws})  # fmt: skip
    return rows


def pool_learning_curves(x: torch.Tensor, y: torch.Tensor, arch, ns: Sequence[int], ridge: float = 1e-3,
                         pool: int = 600, draws: int = 20, n_test: int = 300, seed: int = 0,
                         progress: bool = True) -> list[dict]:  # fmt: skip
    """Real data: Nyström spectrum and target coefficients on a held-out pool of ``pool`` points, predicted curve,
    and measured KRR test MSE over ``draws`` training sets from the remaining points (test set: ``n_test`` of them).

    The target's power not captured by the pool's eigenfunctions (E[y²] − Σ v_i²) is reported as unexplained and
    is added to the predicted MSE as if it were noise (it is learned by no mode of the pool spectrum)."""
    y = y.to(torch.float64).reshape(-1)
    y = (y - y.mean()) / y.std()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    pool_idx, test_idx, rest = order[:pool], order[pool : pool + n_test], order[pool + n_test :]
    s = spectrum(arch, x[pool_idx])
    v = s.coefficients(y[pool_idx]).numpy()
    unexplained = max(0.0, float((y[pool_idx] ** 2).mean()) - float(np.sum(v**2)))
    ns = sorted(int(n) for n in ns if n <= len(rest))
    curve = learning_curve(s.eigenvalues.numpy(), v, ns, ridge=ridge, noise=unexplained)
    x_test, y_test = x[test_idx], y[test_idx]
    measured = {n: [] for n in ns}
    for _ in tqdm(range(draws), desc="draws", unit="draw", disable=not progress):
        idx = rest[torch.randperm(len(rest), generator=g)[: ns[-1]]]
        errors = _krr_errors(arch.kernel(x[idx]).ntk, arch.kernel(x_test, x[idx]).ntk, y[idx], y_test,
                             ns, [ridge])  # fmt: skip
        for n in ns:
            measured[n].append(errors[(ridge, n)])
    rows = []
    for i, n in enumerate(ns):
        errs = np.array(measured[n])
        rows.append({"ridge": ridge, "n": n, "predicted": curve.test_mse[i], "measured": errs.mean(),
                     "stderr": errs.std(ddof=1) / math.sqrt(len(errs)),
                     "rel_error": (errs.mean() - curve.test_mse[i]) / curve.test_mse[i], "unexplained": unexplained,
                     "pool": pool, "draws": draws})  # fmt: skip
    return rows


def plot_learning_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Predicted (lines) and measured (points with 2-standard-error bars) test MSE against n, one colour per ridge."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, ridge in enumerate(sorted({r["ridge"] for r in rows})):
        sel = [r for r in rows if r["ridge"] == ridge]
        n = [r["n"] for r in sel]
        ax.plot(n, [r["predicted"] for r in sel], color=f"C{i}", label=f"theory, δ={ridge:g}")
        ax.errorbar(n, [r["measured"] for r in sel], yerr=[2 * r["stderr"] for r in sel], fmt="o", color=f"C{i}",
                    ms=4, capsize=2, label=f"measured, δ={ridge:g}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="training samples n", ylabel="test MSE", title=title)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _train_loss(x, y, depth, width, w2, b2, activation, steps, seed) -> tuple[float, float]:
    """(final training MSE, learning rate) of one deep MLP trained at half the largest stable rate of its
    infinite-width NTK (so every point of the grid is trained as fast as its own kernel allows)."""
    from ntkit.infinite import Linear, Sequential, Tanh
    from ntkit.regimes.parameterization import ACTIVATIONS

    phi = (lambda: Tanh(degree=64)) if activation == "tanh" else ACTIVATIONS[activation]
    layers = []
    for _ in range(depth):
        layers += [Linear(width, W_std=math.sqrt(w2), b_std=math.sqrt(b2)), phi()]
    kernel = Sequential(*layers, Linear(1, W_std=math.sqrt(w2), b_std=math.sqrt(b2))).kernel(x).ntk
    if not bool(torch.isfinite(kernel).all()):
        return math.nan, math.nan
    lr = 0.5 * max_learning_rate(kernel)
    torch.manual_seed(seed)
    model = mlp(x.shape[1], width, 1, depth, activation, "ntk", math.sqrt(w2), math.sqrt(b2), seed, torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).mean()  # (1/2N)‖f − y‖², max_learning_rate's loss
        if not bool(torch.isfinite(loss)):
            return math.inf, lr
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean()), lr


def phase_training(activation: str = "tanh", w2_grid: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                   depths: Sequence[int] = (10, 20, 40, 80), b2: float = 0.05, width: int = 64, steps: int = 100,
                   n_train: int = 32, seed: int = 0, progress: bool = True, folder=None) -> list[dict]:  # fmt: skip
    """Train deep MLPs on a (σ_w², depth) grid at fixed σ_b²; rows with the final training loss relative to the best
    constant's (1 − ȳ²), ξ and 6ξ from :func:`ntkit.theory.phase_diagram`, and χ₁.

    ``folder`` (an ``ntkit._runs.RunFolder``) stores each network's result as a cell, so that a rerun after an
    interruption trains only the networks that are missing. The task: ``n_train`` points of scikit-learn's digits
    (64 pixels scaled to unit per-feature variance), label +1 for digits < 5 and −1 otherwise."""
    from ntkit.data import digits

    images, labels = digits()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:n_train]
    x = images[idx].reshape(n_train, -1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt()
    y = (labels[idx] < 5).to(torch.float64).mul(2).sub(1).unsqueeze(1)
    baseline = float(1 - y.mean() ** 2)
    pd = phase_diagram(activation, np.sqrt(w2_grid), [math.sqrt(b2)], depth=list(depths))
    rows = []
    jobs = [(i, w2, j, d) for i, w2 in enumerate(w2_grid) for j, d in enumerate(depths)]
    settings = {"activation": activation, "b2": b2, "width": width, "steps": steps, "n_train": n_train, "seed": seed}

    def train(key):
        loss, lr = _train_loss(x, y, key[1], width, key[0], b2, activation, steps, seed)
        return {"loss": loss, "lr": lr}

    keys = [[w2, depth] for _, w2, _, depth in jobs]
    if folder is None:  # no results folder: compute every network
        results = [train(k) for k in tqdm(keys, desc=f"training {activation}", unit="net", disable=not progress)]
    else:  # one stored cell per network: an interrupted run resumes where it stopped
        results = folder.cells(keys, settings, train, progress=progress, desc=f"training {activation}")
    for (i, w2, j, depth), result in zip(jobs, results, strict=True):
        loss, lr = result["loss"], result["lr"]
        rows.append({"activation": activation, "w2": w2, "b2": b2, "depth": depth, "width": width, "steps": steps,
                     "lr": lr, "relative_loss": loss / baseline, "chi1": float(pd.chi1[i, 0]),
                     "xi": float(pd.xi[i, 0]), "six_xi": float(6 * pd.xi[i, 0]),
                     "ntk_condition": float(pd.ntk_condition[i, 0, j])})  # fmt: skip
    return rows


def plot_phase(rows: list[dict], path: Path, b2_grid: Sequence[float] = tuple(np.linspace(0.01, 0.3, 12))) -> Path:
    """Left: relative training loss over (σ_w², depth) with the 6ξ curve and the order/chaos boundary χ₁ = 1 at this
    σ_b². Right: χ₁ over (σ_w², σ_b²) with the
    order/chaos boundary χ₁ = 1 (and the q* = ∞ region for ReLU)."""
    plt = pyplot()
    activation, b2 = rows[0]["activation"], rows[0]["b2"]
    w2s, depths = sorted({r["w2"] for r in rows}), sorted({r["depth"] for r in rows})
    loss = np.array([[next(r["relative_loss"] for r in rows if r["w2"] == w and r["depth"] == d) for w in w2s]
                     for d in depths])  # fmt: skip
    fine = np.linspace(min(w2s), max(w2s), 60)
    pd = phase_diagram(activation, np.sqrt(fine), np.sqrt(np.asarray(b2_grid)), depth=1)
    pd_line = phase_diagram(activation, np.sqrt(fine), [math.sqrt(b2)], depth=1)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    mesh = ax.pcolormesh(w2s, depths, np.clip(np.nan_to_num(loss, nan=1.5, posinf=1.5), 0, 1.5), shading="nearest",
                         cmap="viridis_r", vmin=0, vmax=1.2)  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="train loss / best constant's")
    ax.plot(fine, 6 * pd_line.xi[:, 0], "w--", label="6ξ")
    chi_line = np.log(pd_line.chi1[:, 0])
    cross = np.flatnonzero(np.isfinite(chi_line[:-1]) & (np.sign(chi_line[:-1]) != np.sign(chi_line[1:])))
    for i in cross[:1]:  # the order/chaos boundary at this σ_b², interpolated between grid points
        w_c = fine[i] - chi_line[i] * (fine[i + 1] - fine[i]) / (chi_line[i + 1] - chi_line[i])
        ax.axvline(w_c, color="r", ls=":", label="χ₁ = 1")
    ax.set(xlabel="σ_w²", ylabel="depth", yscale="log", ylim=(min(depths) * 0.8, max(depths) * 1.25),
           title=f"{activation}, σ_b² = {b2:g}: trained {rows[0]['steps']} steps")  # fmt: skip
    ax.legend(loc="upper right", fontsize=8)
    chi = np.log(np.where(np.isfinite(pd.chi1), pd.chi1, np.nan)).T
    img = ax2.pcolormesh(fine, b2_grid, chi, shading="nearest", cmap="coolwarm", vmin=-1, vmax=1)
    fig.colorbar(img, ax=ax2, label="log χ₁ (< 0 ordered, > 0 chaotic)")
    ax2.contour(fine, b2_grid, chi, levels=[0.0], colors="k")
    ax2.set(xlabel="σ_w²", ylabel="σ_b²", title="order/chaos boundary χ₁ = 1")
    return save_figure(fig, path)
