"""The finite networks that ``build`` makes converge to ``kernel``: Monte Carlo over random initialisations.

* The relative error ‖Θ_emp − Θ_∞‖_F / ‖Θ_∞‖_F of a single draw is O(1/√width) (Jacot et al. 2018; the
  fluctuations of the empirical NTK around its limit are Gaussian of that order). For each architecture the
  error is averaged over SEEDS draws at four widths a factor 4 apart, and the least-squares slope of
  log(error) against log(width) must lie in [−0.7, −0.3]. The single-draw errors have a relative spread of
  ≈ 0.2–0.6, so each log-mean has a standard error ≲ 0.6/√16 = 0.15 and the slope one of ≲ 0.15/√9.6 ≈ 0.05
  (9.6 = Σ (log w − mean)² for widths 4× apart): the window is about ±4 standard errors around −1/2.
  A wrong limit shows up as a floor that flattens the slope, but only weakly (a 10% error in the limit gives
  ≈ −0.35), so the same draws also check that at the largest width the seed average of Θ_emp is within 5
  standard errors of Θ_∞ (16 draws: a t distribution with 15 degrees of freedom, P(|t| > 5) ≈ 2e-4 per entry).
* Over many seeds, the mean output covariance (1/O) Σ_i f_i(x) f_i(x') and the mean empirical NTK of a ReLU
  MLP equal k.nngp and k.ntk within 5 standard errors of the seed average. Five standard errors are ≈ 4.6% of
  the largest entry here; the O(1/width) finite-width bias of both averages is ≈ 0.5% at width 256 (measured
  with 1500–3000 seeds), about half a standard error.

All in float64. The module runs torch single-threaded: on a busy 2-core machine, 2 OpenMP threads spin-wait
for each other and make these small networks 10–50× slower.
"""

import math

import pytest
import torch

import ntkit as nk

DT = torch.float64
OUT = 8
SEEDS = 16
DENSE_WIDTHS = (16, 64, 256, 1024)
CONV_CHANNELS = (4, 16, 64, 256)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _relu_mlp(w):
    return nk.Sequential(
        nk.Linear(w, W_std=1.4, b_std=0.1), nk.ReLU(), nk.Linear(w, W_std=1.4, b_std=0.1), nk.ReLU(), nk.Linear(OUT)
    )


def _erf_layernorm_mlp(w):
    return nk.Sequential(
        nk.Linear(w, W_std=1.2, b_std=0.3), nk.LayerNorm(), nk.Erf(),
        nk.Linear(w, W_std=1.2, b_std=0.3), nk.LayerNorm(), nk.Erf(), nk.Linear(OUT),
    )  # fmt: skip


def _conv2d_net(c):
    return nk.Sequential(
        nk.Conv2d(c, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool2d(2, stride=1),
        nk.Conv2d(c, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), nk.GlobalAvgPool2d(), nk.Linear(OUT),
    )  # fmt: skip


def _conv1d_net(c):
    return nk.Sequential(
        nk.Conv1d(c, 3, stride=2, padding="valid", W_std=1.4, b_std=0.1), nk.ReLU(),
        nk.Conv1d(c, 2, padding="valid", W_std=1.4), nk.Erf(), nk.Flatten(), nk.Linear(OUT),
    )  # fmt: skip


def _residual_mlp(w):
    return nk.Sequential(
        nk.Linear(w, W_std=1.0, b_std=0.1),
        nk.Residual(nk.ReLU(), nk.Linear(w, W_std=0.8, b_std=0.1)),
        nk.ReLU(),
        nk.Linear(OUT),
    )


def _parallel_concat(w):
    return nk.Sequential(
        nk.Linear(w, W_std=1.2, b_std=0.1),
        nk.Parallel(
            nk.Sequential(nk.ReLU(), nk.Linear(w, W_std=1.4)),
            nk.Sequential(nk.Sin(), nk.Linear(w // 2, W_std=1.0, b_std=0.2)),
            combine="concat",
        ),
        nk.Linear(w, W_std=1.1),  # a concatenation mixes two Gaussians: a Linear makes one again
        nk.ReLU(),
        nk.Linear(OUT),
    )


def _standard_mlp(w):
    return nk.Sequential(
        nk.Linear(w, W_std=1.4, b_std=0.1, parameterization="standard"),
        nk.ReLU(),
        nk.Linear(w, W_std=1.4, b_std=0.1, parameterization="standard"),
        nk.ReLU(),
        nk.Linear(OUT, parameterization="standard"),
    )


# name → (architecture of a width, per-example input shape, widths)
ARCHS = {
    "relu_mlp": (_relu_mlp, (5,), DENSE_WIDTHS),
    "erf_layernorm_mlp": (_erf_layernorm_mlp, (5,), DENSE_WIDTHS),
    "conv2d_same_avgpool_gap": (_conv2d_net, (2, 5, 5), CONV_CHANNELS),
    "conv1d_valid_stride2_flatten": (_conv1d_net, (2, 8), CONV_CHANNELS),
    "residual_mlp": (_residual_mlp, (5,), DENSE_WIDTHS),
    "parallel_concat": (_parallel_concat, (5,), DENSE_WIDTHS),
    "standard_parameterization": (_standard_mlp, (5,), DENSE_WIDTHS),
}


def _slope(widths, errors) -> float:
    lw = torch.log(torch.tensor(widths, dtype=DT))
    le = torch.log(torch.tensor(errors, dtype=DT))
    return float(((lw - lw.mean()) * (le - le.mean())).sum() / ((lw - lw.mean()) ** 2).sum())


@pytest.mark.parametrize("name", list(ARCHS))
def test_empirical_ntk_error_falls_like_one_over_sqrt_width(name):
    make, in_shape, widths = ARCHS[name]
    x = _randn(6, *in_shape, seed=0)
    mean_errors = []
    for i, width in enumerate(widths):
        arch = make(width)  # under the standard parameterization the limit itself depends on the widths
        theta = arch.kernel(x).ntk
        draws = []
        for s in range(SEEDS):
            model = arch.build(in_shape, seed=100 * i + s, dtype=DT)  # independent draws at every width
            draws.append(nk.empirical_ntk(model, x, output="mean"))
        draws = torch.stack(draws)
        errors = torch.linalg.norm(draws - theta, dim=(1, 2)) / torch.linalg.norm(theta)
        mean_errors.append(float(errors.mean()))
    slope = _slope(widths, mean_errors)
    assert -0.7 <= slope <= -0.3, (
        f"slope {slope:.3f}; mean relative errors {dict(zip(widths, mean_errors, strict=True))}"
    )
    # The slope alone barely notices a limit that is off by 10% (a floor at 0.1 turns −0.5 into ≈ −0.35). At the
    # largest width the seed average of Θ_emp must match Θ_∞ within 5 standard errors (≈ 5–13% of max |Θ| here;
    # the finite-width bias is ≲ 0.5%).
    mean, se = _seed_mean_and_se(draws)
    _check_within_five_se(mean, se, theta, relative_power=0.15)


def test_slope_fit_on_exact_power_laws():
    assert _slope((16, 64, 256), [3.0 * w**-0.5 for w in (16, 64, 256)]) == pytest.approx(-0.5, abs=1e-12)
    assert _slope((1, 2, 3, 7), [w**-1.0 for w in (1, 2, 3, 7)]) == pytest.approx(-1.0, abs=1e-12)


def _seed_mean_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entrywise mean over the first axis and its standard error."""
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def _check_within_five_se(mean, se, expected, relative_power):
    """|mean − expected| < 5 SE on every entry, and the test has power: 5 SE < relative_power·max|expected|."""
    assert float((5 * se).max()) < relative_power * float(expected.abs().max())
    z = (mean - expected).abs() / se
    assert float(z.max()) < 5, f"max |z| = {float(z.max()):.2f}\nmean:\n{mean}\nexpected:\n{expected}"


def test_output_covariance_over_seeds_approaches_the_nngp():
    width, outputs, seeds = 256, 64, 768
    arch = nk.Sequential(
        nk.Linear(width, W_std=1.4, b_std=0.1), nk.ReLU(),
        nk.Linear(width, W_std=1.4, b_std=0.3), nk.ReLU(),
        nk.Linear(outputs, W_std=0.9, b_std=0.2),
    )  # fmt: skip
    x = _randn(5, 4, seed=1)
    x[4] = -x[3]  # an anti-correlated pair
    k = arch.kernel(x)
    samples = []
    with torch.no_grad():
        for s in range(seeds):
            f = arch.build((4,), seed=s, dtype=DT)(x)  # (N, O)
            samples.append(f @ f.T / outputs)  # the covariance averaged over the output units of this draw
    mean, se = _seed_mean_and_se(torch.stack(samples))
    _check_within_five_se(mean, se, k.nngp, relative_power=0.06)


def test_empirical_ntk_over_seeds_approaches_the_ntk():
    width, seeds = 256, 192
    arch = nk.Sequential(
        nk.Linear(width, W_std=1.4, b_std=0.1), nk.ReLU(),
        nk.Linear(width, W_std=1.4, b_std=0.3), nk.ReLU(),
        nk.Linear(OUT, W_std=0.9, b_std=0.2),
    )  # fmt: skip
    x = _randn(5, 4, seed=2)
    k = arch.kernel(x)
    samples = torch.stack([nk.empirical_ntk(arch.build((4,), seed=s, dtype=DT), x) for s in range(seeds)])
    mean, se = _seed_mean_and_se(samples)
    _check_within_five_se(mean, se, k.ntk, relative_power=0.06)
