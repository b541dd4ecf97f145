"""The worked example: its exact infinite-width NTK, its convergence with width, and the command that runs it."""

import math

import torch

from ntkit import empirical_ntk
from ntkit.cli import main
from ntkit.examples.width_convergence import architecture, run

X = torch.tensor([[-1.0], [-0.3], [0.0], [0.4], [0.9]], dtype=torch.float64)


def infinite_width_ntk(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Jacot et al. 2018's NTK of f(x) = a·relu(w·x/√d + b)/√m, written out from the arc-cosine kernels (Cho & Saul
    2009): Σ = x·x'/d + 1, cos φ = Σ12/√(Σ11 Σ22), Θ = √(Σ11 Σ22)(sin φ + (π − φ) cos φ)/(2π) + Σ12 (π − φ)/(2π)."""
    d = x1.shape[1]
    s12 = x1 @ x2.T / d + 1
    s11, s22 = (x1 * x1).sum(1, keepdim=True) / d + 1, (x2 * x2).sum(1, keepdim=True).T / d + 1
    norm = (s11 * s22).sqrt()
    phi = torch.arccos((s12 / norm).clamp(-1, 1))
    return norm * (torch.sin(phi) + (math.pi - phi) * torch.cos(phi)) / (2 * math.pi) + s12 * (math.pi - phi) / (
        2 * math.pi
    )


def network(width: int, seed: int) -> torch.nn.Module:
    return architecture(width).build((1,), seed=seed, dtype=torch.float64)


def test_spec_limit_is_the_two_layer_closed_form():
    """The spec's analytic NTK is the arc-cosine closed form (float64: agreement to rounding)."""
    torch.testing.assert_close(architecture(7).kernel(X).ntk, infinite_width_ntk(X, X), rtol=1e-12, atol=1e-12)


def test_mean_empirical_ntk_converges_to_the_closed_form():
    """Monte Carlo over initialisations: the mean kernel agrees with Θ_∞ within the sampling noise."""
    width, draws = 512, 400
    kernels = torch.stack([empirical_ntk(network(width, s), X) for s in range(draws)])
    mean, standard_error = kernels.mean(0), kernels.std(0) / math.sqrt(draws)
    exact = infinite_width_ntk(X, X)
    # The mean of a finite-width NTK equals its limit for this two-layer net (no 1/m bias): only noise remains.
    assert ((mean - exact).abs() <= 5 * standard_error + 1e-12).all()


def test_single_draw_distance_shrinks_like_one_over_root_width():
    exact = infinite_width_ntk(X, X)
    widths, draws = [64, 1024, 16384], 30
    mean_distance = []
    for w in widths:
        d = [
            torch.linalg.norm(empirical_ntk(network(w, s), X) - exact) / torch.linalg.norm(exact) for s in range(draws)
        ]
        mean_distance.append(float(torch.stack(d).mean()))
    logs_w = torch.log(torch.tensor(widths, dtype=torch.float64))
    logs_d = torch.log(torch.tensor(mean_distance, dtype=torch.float64))
    slope = float(((logs_w - logs_w.mean()) * (logs_d - logs_d.mean())).sum() / ((logs_w - logs_w.mean()) ** 2).sum())
    assert -0.65 < slope < -0.35, (mean_distance, slope)


def test_run_fits_the_target_and_orders_distances():
    results = run(widths=(32, 2048), seeds=4)
    assert [r.width for r in results] == [32, 2048]
    assert results[1].kernel_distance == 0.0  # the widest is the reference
    assert results[1].analytic_distance < results[0].analytic_distance
    assert all(r.test_mse < 1e-2 for r in results)  # sin(3x) on 40 stratified points is easy to interpolate


def test_cli_prints_table_and_writes_plot(tmp_path, capsys):
    assert main(["example", "--widths", "16,64", "--seeds", "2", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "test MSE" in printed and str(tmp_path / "width_convergence.png") in printed
    assert (tmp_path / "width_convergence.png").stat().st_size > 10_000
    assert (tmp_path / "width_convergence.csv").read_text().startswith("width,test_mse")
