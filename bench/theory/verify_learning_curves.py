"""Verification runs for docs/results.md (outside the test suite): real-data learning curves, the ReLU NTK
scaling exponent, and trained networks against the kernel curve.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/theory/verify_learning_curves.py real    --out results/theory
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/theory/verify_learning_curves.py scaling --out results/theory
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/theory/verify_learning_curves.py trained --out results/theory
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/theory/verify_learning_curves.py gap     --out results/theory

Each writes a CSV and a PNG into --out and prints its table.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
from pathlib import Path

import numpy as np
import torch

from ntkit.data import digits, harmonic_target, sphere_points
from ntkit.examples.theory_study import plot_learning_curves, pool_learning_curves, write_csv
from ntkit.predict import gradient_descent_mse, max_learning_rate
from ntkit.regimes import mlp, mlp_spec, mup_param_groups
from ntkit.theory import learning_curve, predicted_exponent, scaling_exponent, sphere_spectrum


def _print(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" ".join(f"{k:>11}" for k in keys))
    for r in rows:
        print(" ".join(f"{v:>11.4g}" if isinstance(v, float) else f"{v!s:>11}" for v in r.values()))


def real(out: Path) -> None:
    from sklearn.datasets import load_diabetes

    arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
    images, labels = digits()
    x = images.reshape(len(images), -1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    y = (labels < 5).to(torch.float64) * 2 - 1
    rows = pool_learning_curves(x, y, arch, (10, 20, 50, 100, 200, 400, 650), ridge=1e-3, pool=800, n_test=300)
    for r in rows:
        r["dataset"] = "digits (<5 vs ≥5)"
    data = load_diabetes()
    xd = torch.as_tensor(data.data, dtype=torch.float64)
    xd = (xd - xd.mean(0)) / xd.std(0)
    rows_d = pool_learning_curves(xd, torch.as_tensor(data.target), arch, (5, 10, 20, 40, 80, 140), ridge=1e-1,
                                  pool=200, n_test=100)  # fmt: skip
    for r in rows_d:
        r["dataset"] = "diabetes"
    _print(rows + rows_d)
    write_csv(rows + rows_d, out / "real_data.csv")
    plot_learning_curves(rows, out / "real_digits.png", "digits: ReLU NTK, Nyström spectrum from 800 points")
    plot_learning_curves(rows_d, out / "real_diabetes.png", "diabetes: ReLU NTK, Nyström spectrum from 200 points")


def scaling(out: Path) -> None:
    """ReLU NTK on S² (d = 3), target power ℓ^{-3} in each degree ℓ = 1…40: per mode index k ~ ℓ², v_k² ~ k^{-2},
    λ_k ~ k^{-3/2}, so α = min(c − 1, 2b) = min(1, 3) = 1."""
    dim, top = 3, 40
    arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
    spec = sphere_spectrum(arch, dim, 400)
    degrees = list(range(1, top + 1))
    powers = [ell**-3.0 for ell in degrees]
    coeffs = np.zeros(401)
    coeffs[degrees] = np.sqrt(powers)
    lam = spec.expanded()
    v = np.repeat(coeffs / np.sqrt(spec.multiplicities), spec.multiplicities)
    top_index = (top + 1) ** 2
    alpha_spectrum = predicted_exponent(lam, v, 10, top_index)
    ns = [20, 40, 80, 160, 320, 640]
    curve = learning_curve(spec.eigenvalues, coeffs, ns, multiplicities=spec.multiplicities, tail_trace=spec.tail)
    f = harmonic_target(dim, degrees, powers, seed=0)
    g = torch.Generator().manual_seed(1)
    x_test = sphere_points(1500, dim, g)
    y_test = f(x_test)
    measured = {n: [] for n in ns}
    for _ in range(10):
        x = sphere_points(ns[-1], dim, g)
        y = f(x)
        k, kt = arch.kernel(x).ntk, arch.kernel(x_test, x).ntk
        for n in ns:
            alpha = torch.linalg.lstsq(k[:n, :n], y[:n].unsqueeze(1)).solution[:, 0]
            measured[n].append(float(((kt[:, :n] @ alpha - y_test) ** 2).mean()))
    mean = np.array([np.mean(measured[n]) for n in ns])
    stderr = [np.std(measured[n], ddof=1) / math.sqrt(10) for n in ns]
    rows = [{"n": n, "predicted": curve.test_mse[i], "measured": mean[i], "stderr": stderr[i], "ridge": 0.0}
            for i, n in enumerate(ns)]  # fmt: skip
    _print(rows)
    b, _ = scaling_exponent(np.arange(10, top_index + 1), np.sort(lam)[::-1][9:top_index])
    print(f"spectrum decay b = {b:.3f} (λ_k ∝ k^-b, k = 10…{top_index}); predicted α = min(c − 1, 2b) = "
          f"{alpha_spectrum:.3f}")  # fmt: skip
    print(f"fitted α: theory curve {scaling_exponent(ns, curve.test_mse)[0]:.3f}, "
          f"measured {scaling_exponent(ns, mean)[0]:.3f}")  # fmt: skip
    write_csv(rows, out / "scaling.csv")
    plot_learning_curves(rows, out / "scaling.png", "ReLU NTK on S², target power ℓ^-3 (ℓ ≤ 40)")


class Centered(torch.nn.Module):
    """f(x) − f₀(x): the network minus a frozen copy of itself at initialisation, so that training starts from the
    zero function as kernel regression does."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.frozen = model, copy.deepcopy(model).requires_grad_(False)

    def forward(self, x):
        return self.model(x) - self.frozen(x)


def trained(out: Path, steps: int = 2000, draws: int = 4) -> None:
    """Centered width-1024 NTK, width-64 NTK and width-1024 μP networks on the sphere task (d = 5, degrees 1, 2, 3)
    at n = 30, 100, 300, trained by full-batch GD at half the infinite NTK's largest stable rate for ``steps``
    steps, against the analytic NTK's gradient descent at the same step (ntkit.predict) and at t = ∞ (the
    learning curve).

    Draw ``draw`` at size n uses its own seed (training set: 1000·n + draw; weights: draw), and each finished
    (draw, n) is appended to trained.csv at once: a rerun skips the rows already there, so an interrupted run keeps
    its draws and a longer one (more ``draws``) adds to them. Draws are the outer loop: a partial run holds whole
    draws over all three n."""
    dim, degrees, powers = 5, [1, 2, 3], [1.0, 0.5, 0.25]
    arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
    spec = sphere_spectrum(arch, dim, 20)
    coeffs = np.zeros(21)
    coeffs[degrees] = np.sqrt(powers)
    f = harmonic_target(dim, degrees, powers, seed=0)
    x_test = sphere_points(500, dim, torch.Generator().manual_seed(2))
    y_test = f(x_test).unsqueeze(1)
    path = out / "trained.csv"
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    done = {(int(r["n"]), int(r["draw"])) for r in rows}
    fields = ["n", "draw", "theory_inf", "kernel_gd", "ntk_1024", "ntk_64", "mup_1024"]
    for draw in range(draws):
        for n in (30, 100, 300):
            if (n, draw) in done:
                continue
            theory = learning_curve(spec.eigenvalues, coeffs, n, multiplicities=spec.multiplicities,
                                    tail_trace=spec.tail)  # fmt: skip
            x = sphere_points(n, dim, torch.Generator().manual_seed(1000 * n + draw))
            y = f(x).unsqueeze(1)
            k, kt = arch.kernel(x).ntk, arch.kernel(x_test, x).ntk
            lr = 0.5 * max_learning_rate(k)
            kernel_gd = gradient_descent_mse(k, y, learning_rate=lr, discrete=True)
            _, f_kernel = kernel_gd(steps, fx_train_0=torch.zeros_like(y), fx_test_0=torch.zeros_like(y_test),
                                    k_test_train=kt)  # fmt: skip
            row = {"n": n, "draw": draw, "theory_inf": float(theory.test_mse[0]),
                   "kernel_gd": float(((f_kernel - y_test) ** 2).mean())}  # fmt: skip
            models = (("ntk_1024", 1024, "ntk", 1.0), ("ntk_64", 64, "ntk", 1.0), ("mup_1024", 1024, "mup", 0.2))
            for name, width, param, fraction in models:  # μP diverged at the NTK's rate (its kernel moves): 1/5 of it
                net = Centered(mlp(dim, width, 1, 1, "relu", param, 1.0, 0.1, seed=draw, dtype=torch.float64))
                opt = torch.optim.SGD(mup_param_groups(net.model, fraction * lr))
                for _ in range(steps):
                    opt.zero_grad()
                    (0.5 * ((net(x) - y) ** 2).mean()).backward()  # (1/2N)‖f − y‖²
                    opt.step()
                with torch.no_grad():
                    row[name] = float(((net(x_test) - y_test) ** 2).mean())
            new_file = not path.exists()
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                if new_file:
                    writer.writeheader()
                writer.writerow(row)
            rows.append(row)
            print(row, flush=True)
    summarize_trained(path)


def summarize_trained(path: Path) -> None:
    """Mean ± standard error over the draws in trained.csv, per n and model."""
    rows = list(csv.DictReader(open(path)))
    for n in sorted({int(r["n"]) for r in rows}):
        sel = [r for r in rows if int(r["n"]) == n]
        cells = []
        for key in ("theory_inf", "kernel_gd", "ntk_1024", "ntk_64", "mup_1024"):
            v = np.array([float(r[key]) for r in sel])
            se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
            cells.append(f"{key} {v.mean():.4g} ± {se:.2g}")
        print(f"n = {n} ({len(sel)} draws): " + "; ".join(cells))


def widths(out: Path, steps: int = 2000, n: int = 300) -> None:
    """The trained study's n = 300 (first draw) at widths 256, 1024 and 4096 (NTK parameterization): does the gap
    between the network and its kernel's gradient descent at the same step shrink as the width grows?"""
    dim, degrees, powers = 5, [1, 2, 3], [1.0, 0.5, 0.25]
    arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
    f = harmonic_target(dim, degrees, powers, seed=0)
    g = torch.Generator().manual_seed(2)
    x_test = sphere_points(500, dim, g)
    y_test = f(x_test).unsqueeze(1)
    for m in (30, 100):  # the trained study's earlier draws from the same stream, so this is its n = 300, draw 0
        for _ in range(2):
            sphere_points(m, dim, g)
    x = sphere_points(n, dim, g)
    y = f(x).unsqueeze(1)
    k, kt = arch.kernel(x).ntk, arch.kernel(x_test, x).ntk
    lr = 0.5 * max_learning_rate(k)
    _, f_kernel = gradient_descent_mse(k, y, learning_rate=lr, discrete=True)(
        steps, fx_train_0=torch.zeros_like(y), fx_test_0=torch.zeros_like(y_test), k_test_train=kt
    )
    rows = []
    for width in (256, 1024, 4096):
        net = Centered(mlp(dim, width, 1, 1, "relu", "ntk", 1.0, 0.1, seed=0, dtype=torch.float64))
        opt = torch.optim.SGD(net.model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * ((net(x) - y) ** 2).mean()).backward()
            opt.step()
        with torch.no_grad():
            f_net = net(x_test)
        gap = float(((f_net - f_kernel) ** 2).mean().sqrt() / y_test.pow(2).mean().sqrt())
        rows.append({"width": width, "kernel_gd": float(((f_kernel - y_test) ** 2).mean()),
                     "network": float(((f_net - y_test) ** 2).mean()), "rms_gap": gap})  # fmt: skip
        print(rows[-1], flush=True)
    write_csv(rows, out / "trained_widths.csv")


def gap(out: Path, dims=(3, 4, 5, 6, 8, 10), draws: int = 40, n_test: int = 3000) -> None:
    """Is the low-d gap of the sphere learning curves the theory's or the code's? At each d, at n = 6·M(d) with M(d)
    the number of harmonics of degree ≤ 3 (where the d = 3 and d = 5 sphere runs missed most: the degree-3 modes
    are being learned), three measurements against ``learning_curve``:

    * sphere: ReLU-NTK ridge regression on uniform S^{d−1} (as ``ntkit theory learning-curve``);
    * Gaussian design: the *same* spectrum (degrees ≤ L, each of the Σ N(d, ℓ) modes a N(0, 1) feature, the
      target's degree-ℓ power split evenly over its modes, the degrees above L as tail·I, the white-noise kernel
      that ``tail_trace`` stands for), the setting in which the eigenlearning equations are
      exact as n → ∞ and accurate at finite n; its test MSE is exact (‖ŵ − v‖² + ε², no test set);
    * per-degree learnability of the sphere runs, ⟨f̂, Y_ℓ⟩/(√p_ℓ⟨Y_ℓ, Y_ℓ⟩) on the test set, against
      L_ℓ = λ_ℓ/(λ_ℓ + κ): whether the *mean* predictor is right and the excess is in its fluctuation.
    """
    from ntkit.data.sphere import HarmonicTarget, harmonic_multiplicity

    degrees, powers, noise = [1, 2, 3], [1.0, 0.5, 0.25], 0.01
    arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
    rows = []
    for dim in dims:
        modes3 = sum(harmonic_multiplicity(dim, ell) for ell in range(4))
        n = 6 * modes3
        spec = sphere_spectrum(arch, dim, 60 if dim <= 4 else 20)
        coeffs = np.zeros(spec.eigenvalues.size)
        coeffs[degrees] = np.sqrt(powers)
        # Gaussian design: degrees up to the first L with ≥ 4n modes
        top, count = 0, 1
        while count < 4 * n:
            top += 1
            count += harmonic_multiplicity(dim, top)
        lam = np.repeat(spec.eigenvalues[: top + 1], spec.multiplicities[: top + 1])
        v = np.repeat(coeffs[: top + 1] / np.sqrt(spec.multiplicities[: top + 1]), spec.multiplicities[: top + 1])
        lam_t, v_t = torch.tensor(lam), torch.tensor(v)
        tail = spec.trace - float(lam.sum())  # the degrees above L: ≈ tail·I on the training set, ≈ 0 off it
        f = harmonic_target(dim, degrees, powers, seed=0)
        parts = [HarmonicTarget(dim, (f.degrees[i],), (1.0,), (f.centres[i],), (f.weights[i],)) for i in range(3)]
        g = torch.Generator().manual_seed(100 + dim)
        for ridge in (0.0, 0.01):
            theory = learning_curve(spec.eigenvalues, coeffs, n, ridge=ridge, noise=noise,
                                    multiplicities=spec.multiplicities, tail_trace=spec.tail)  # fmt: skip
            theory_g = learning_curve(spec.eigenvalues[: top + 1], coeffs[: top + 1], n, ridge=ridge, noise=noise,
                                      multiplicities=spec.multiplicities[: top + 1], tail_trace=tail)  # fmt: skip
            sphere, gauss, learn = [], [], []
            for _ in range(draws):
                x = sphere_points(n, dim, g)
                y = f(x) + math.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
                x_test = sphere_points(n_test, dim, g)
                y_parts = torch.stack([part(x_test) for part in parts], 1)  # unit-power components
                y_test = y_parts @ torch.tensor(np.sqrt(powers))
                k, kt = arch.kernel(x).ntk, arch.kernel(x_test, x).ntk
                reg = k + ridge * torch.eye(n, dtype=k.dtype)
                pred = kt @ torch.cholesky_solve(y.unsqueeze(1), torch.linalg.cholesky(reg))[:, 0]
                sphere.append(float(((pred - y_test) ** 2).mean()) + noise)
                proj = (y_parts * pred[:, None]).mean(0) / (y_parts**2).mean(0) / torch.tensor(np.sqrt(powers))
                learn.append(proj.numpy())
                feats = torch.randn(n, lam.size, generator=g, dtype=torch.float64)
                yg = feats @ v_t + math.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
                scaled = feats * lam_t
                kg = scaled @ feats.T + (ridge + tail) * torch.eye(n, dtype=torch.float64)
                w = scaled.T @ torch.cholesky_solve(yg.unsqueeze(1), torch.linalg.cholesky(kg))[:, 0]
                gauss.append(float(((w - v_t) ** 2).sum()) + noise)
            sphere, gauss, learn = np.array(sphere), np.array(gauss), np.array(learn)
            row = {"dim": dim, "n": n, "modes_deg_le3": modes3, "ridge": ridge,
                   "sphere_pred": float(theory.test_mse[0]), "sphere_meas": sphere.mean(),
                   "sphere_se": sphere.std(ddof=1) / math.sqrt(draws),
                   "sphere_rel": sphere.mean() / theory.test_mse[0] - 1,
                   "gauss_pred": float(theory_g.test_mse[0]), "gauss_meas": gauss.mean(),
                   "gauss_se": gauss.std(ddof=1) / math.sqrt(draws),
                   "gauss_rel": gauss.mean() / theory_g.test_mse[0] - 1, "gauss_modes": lam.size}  # fmt: skip
            for i, ell in enumerate(degrees):
                row[f"L{ell}_theory"] = float(theory.learnability[0, ell])
                row[f"L{ell}_meas"] = float(learn[:, i].mean())
                row[f"L{ell}_se"] = float(learn[:, i].std(ddof=1) / math.sqrt(draws))
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    write_csv(rows, out / "gap.csv")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("study", choices=("real", "scaling", "trained", "widths", "gap"))
    parser.add_argument("--out", default="results/theory")
    parser.add_argument("--draws", type=int, default=4, help="trained: draws per n (resumes from trained.csv)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.study == "trained":
        trained(out, draws=args.draws)
    else:
        {"real": real, "scaling": scaling, "widths": widths, "gap": gap}[args.study](out)
