"""μP, NTK and standard parameterizations: the multipliers of the table, exact identities between them, the
learning-rate groups, and the errors."""

import math

import pytest
import torch

import ntkit as nk
from ntkit import regimes
from ntkit.modules import NTKLinear

X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_names():
    assert regimes.PARAMETERIZATIONS == ("ntk", "standard", "mup")


@pytest.mark.parametrize("depth", [1, 3])
def test_mup_multipliers_follow_the_table(depth):
    width, d = 32, 3
    model = regimes.mlp(d, width, 2, depth=depth, parameterization="mup", W_std=1.5, b_std=0.2)
    linears = [m for m in model if isinstance(m, NTKLinear)]
    assert len(linears) == depth + 1
    first, *hidden, last = linears
    assert first.weight_multiplier == pytest.approx(1.5 / math.sqrt(d)) and first.bias_multiplier == 0.2
    assert (first.weight_lr_scale, first.bias_lr_scale) == (width, width)
    for h in hidden:
        assert h.weight_multiplier == pytest.approx(1.5 / math.sqrt(width))
        assert (h.weight_lr_scale, h.bias_lr_scale) == (width, width)
    assert last.weight_multiplier == pytest.approx(1.5 / width)
    assert last.bias_multiplier == pytest.approx(0.2 / math.sqrt(width))
    assert (last.weight_lr_scale, last.bias_lr_scale) == (width, width)


@pytest.mark.parametrize("depth", [1, 2])
def test_mup_is_ntk_over_sqrt_width_and_its_lr_weighted_ntk_is_the_ntk_parameterizations(depth):
    """Same seed → same stored weights; f_μP = f_NTK/√n exactly, so Θ_μP = Θ_NTK/n and with every learning rate
    multiplied by n the function-space dynamics start identical."""
    width = 24
    ntk = regimes.mlp(3, width, 2, depth=depth, seed=5, dtype=torch.float64)
    mup = regimes.mlp(3, width, 2, depth=depth, parameterization="mup", seed=5, dtype=torch.float64)
    torch.testing.assert_close(mup(X), ntk(X) / math.sqrt(width), rtol=1e-12, atol=1e-14)
    groups = regimes.mup_param_groups(mup, 0.1)
    assert [g["lr"] for g in groups] == [pytest.approx(0.1 * width)]
    torch.testing.assert_close(nk.empirical_ntk(mup, X) * width, nk.empirical_ntk(ntk, X), rtol=1e-10, atol=1e-12)


def test_build_level_parameterization_overrides_the_layers():
    spec = nk.Sequential(nk.Linear(16), nk.ReLU(), nk.Linear(16), nk.ReLU(), nk.Linear(1))
    built = spec.build((3,), seed=1, dtype=torch.float64, parameterization="mup")
    direct = regimes.mlp(3, 16, 1, depth=2, parameterization="mup", W_std=1.0, b_std=0.0, seed=1,
                         dtype=torch.float64)  # fmt: skip
    assert built[-1].weight_multiplier == pytest.approx(1 / 16)
    assert [m.mup_role for m in built if hasattr(m, "mup_role")] == ["input", "hidden", "output"]
    std = spec.build((3,), seed=1, dtype=torch.float64, parameterization="standard")
    assert std[0].weight_multiplier == 1.0  # the scale went into the stored weights
    ntk = spec.build((3,), seed=1, dtype=torch.float64, parameterization="ntk")  # the same N(0, 1) draws
    torch.testing.assert_close(std[0].weight.detach(), ntk[0].weight.detach() / math.sqrt(3))
    assert direct[-1].weight_multiplier == built[-1].weight_multiplier
    with pytest.raises(ValueError, match=r"parameterization must be one of \('ntk', 'standard', 'mup'\); got 'mu'"):
        spec.build((3,), parameterization="mu")


def test_standard_keeps_its_analytic_kernel_and_its_one_group():
    model = regimes.mlp(3, 2048, 1, parameterization="standard", seed=0, dtype=torch.float64)
    groups = regimes.mup_param_groups(model, 0.3)
    assert len(groups) == 1 and groups[0]["lr"] == 0.3 and len(groups[0]["params"]) == 4
    spec = regimes.mlp_spec(2048, 1, parameterization="standard")
    expected = spec.kernel(X).ntk
    # one draw at width 2048: the NTK/width concentrates with relative fluctuations ~ 1/√2048
    rel = float((nk.empirical_ntk(model, X) - expected).norm() / expected.norm())
    assert rel < 5 / math.sqrt(2048)


def test_mup_kernel_is_refused_with_the_reason():
    spec = regimes.mlp_spec(64, 1, parameterization="mup")
    with pytest.raises(ValueError, match="infinite-width kernels of μP are degenerate"):
        spec.kernel(X)


def test_cnn_builder_in_mup():
    model = regimes.cnn((2, 6, 6), 8, 3, parameterization="mup", dtype=torch.float64)
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    assert model(x).shape == (4, 3)
    assert model[0].weight_lr_scale == 8 and model[-1].weight_multiplier == pytest.approx(1 / 8)


def test_lazy_parameters_are_grouped_without_the_frozen_copy():
    model = regimes.lazy(regimes.mlp(3, 16, 1, parameterization="mup"), 4.0)
    groups = regimes.mup_param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 4
    assert all(name.startswith("model.") for g in groups for name in g["names"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, r"width must be a positive int; got 0"),
        ({"depth": 0}, r"depth must be a positive int; got 0"),
        ({"activation": "softplus"}, r"activation must be one of \('relu', 'erf', 'gelu', 'tanh'\); got 'softplus'"),
        ({"parameterization": "meanfield"}, r"parameterization must be one of .*; got 'meanfield'"),
    ],
)
def test_bad_builder_arguments(kwargs, message):
    args = {"in_features": 3, "width": 8, "out_features": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        regimes.mlp(**args)


def test_a_width_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"width must be a positive int; got 8.5 \(float\)"):
        regimes.mlp(in_features=3, width=8.5, out_features=1)


@pytest.mark.parametrize("lr", [0, -0.1, float("nan")])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        regimes.mup_param_groups(regimes.mlp(2, 4, 1), lr)


def test_to_mup_is_a_pass_over_a_built_ntk_network():
    """μP = the NTK network with its readout divided by √width (issue 13): the pass gives the build's result."""
    spec = nk.Sequential(nk.Linear(16), nk.ReLU(), nk.Linear(16), nk.ReLU(), nk.Linear(1))
    passed = regimes.to_mup(spec.build((3,), seed=1, dtype=torch.float64))
    built = spec.build((3,), seed=1, dtype=torch.float64, parameterization="mup")
    torch.testing.assert_close(passed(X), built(X), rtol=0, atol=0)
    for a, b in zip(passed, built, strict=True):
        assert getattr(a, "mup_role", None) == getattr(b, "mup_role", None)
        assert getattr(a, "weight_lr_scale", 1.0) == getattr(b, "weight_lr_scale", 1.0)
    with pytest.raises(ValueError, match="already in μP"):
        regimes.to_mup(passed)
