"""The structured method's per-type handlers and its readout reduction, against the float64 brute-force Jacobian.

The readout reduction replaces Σ_i δ_i·δ'_i by one product u·u' (module docstring of
``ntkit.empirical.structured``); it is exact algebra, so it must agree with the brute force to float64 rounding
(rel 1e-10, the tolerance of the other empirical tests).
"""

import pytest
import torch
from torch import nn

import ntkit as nk
from ntkit.empirical import _common, structured
from ntkit.modules import Elementwise


def _plan(model, x):
    return structured.make_plan(_common.check_request(model, x, None, "structured", "trace", None))


def _mlp_with_activations():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 7), nn.GELU(), Elementwise(torch.sin), nn.Linear(7, 3)
    ).double()


@pytest.mark.parametrize("output", ["trace", "mean", "diagonal", "full"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_readout_reduction_matches_brute_force(reference, output, symmetric):
    model = _mlp_with_activations()
    with torch.no_grad():
        model[5].weight[:, 2] = 0  # a hidden unit the readout ignores: s_c = 0
    x1 = torch.randn(5, 4, dtype=torch.float64)
    x2 = None if symmetric else torch.randn(4, 4, dtype=torch.float64)
    plan = _plan(model, x1)
    assert [lp.readout is not None for lp in plan.layers] == [False, True, False]
    got = nk.empirical_ntk(model, x1, x2, method="structured", output=output)
    reference.assert_close(got, reference.ntk(model, x1, x2, output=output))


def test_readout_reduction_with_ntk_multipliers(reference):
    arch = nk.Sequential(nk.Linear(9, W_std=1.3, b_std=0.2), nk.ReLU(), nk.Linear(4, W_std=0.7, b_std=0.5))
    model = arch.build((3,), seed=2, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    assert _plan(model, x).layers[0].readout is not None
    got = nk.empirical_ntk(model, x, method="structured", output="trace")
    reference.assert_close(got, reference.ntk(model, x, output="trace"))


class _Wrapped(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_no_readout_reduction_unless_the_path_is_elementwise(reference):
    torch.manual_seed(3)
    x = torch.randn(4, 5, dtype=torch.float64)
    norm_between = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Linear(6, 2)).double()
    wrapped = _Wrapped(_mlp_with_activations()[:-1].append(nn.Linear(7, 2).double()))
    for model in (norm_between, wrapped):
        x_in = x[:, :4] if model is wrapped else x
        assert all(lp.readout is None for lp in _plan(model, x_in).layers)
        got = nk.empirical_ntk(model, x_in, method="structured", output="trace")
        reference.assert_close(got, reference.ntk(model, x_in, output="trace"))


class _MyLinear(nn.Linear):
    """A subclass: not factored unless a handler is registered for it (it could change forward)."""


def test_registering_a_handler_factors_a_new_type(monkeypatch, reference):
    monkeypatch.setattr(structured, "HANDLERS", dict(structured.HANDLERS))
    torch.manual_seed(4)
    model = nn.Sequential(_MyLinear(3, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert [lp.name for lp in _plan(model, x).layers] == ["2"]
    structured.register_handler(_MyLinear, structured.LinearHandler())
    assert [lp.name for lp in _plan(model, x).layers] == ["0", "2"]
    got = nk.empirical_ntk(model, x, method="structured", output="full")
    reference.assert_close(got, reference.ntk(model, x, output="full"))


def test_register_handler_checks_its_arguments():
    with pytest.raises(TypeError, match="module_type"):
        structured.register_handler(int, structured.LinearHandler())
    with pytest.raises(TypeError, match="handler"):
        structured.register_handler(_MyLinear, object())


def test_grouped_convolutions_are_left_to_the_fallback():
    conv = nn.Sequential(nn.Conv1d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(8, 2))
    assert [lp.name for lp in _plan(conv, torch.randn(2, 4, 4)).layers] == ["2"]


@pytest.mark.parametrize("inplace", [False, True])
def test_linear_input_gradients_through_the_gemm_adapter_match_brute_force(reference, inplace, monkeypatch):
    """Linear layers' backward passes run through ntkit._gemm (_LinearInputGradient), NTKLinear's multiplier
    included; an in-place ReLU after a layer must not touch the node the cotangents are taken at."""
    used = []
    original = structured._linear_input_gradient
    monkeypatch.setattr(structured, "_linear_input_gradient", lambda *a: used.append(original(*a)) or used[-1])
    torch.manual_seed(3)
    spec = nk.Sequential(nk.Linear(7, W_std=1.3, b_std=0.2), nk.ReLU(), nk.Linear(3))
    for model in (
        nn.Sequential(
            nn.Linear(5, 7), nn.ReLU(inplace=inplace), nn.Linear(7, 6), nn.ReLU(inplace=inplace), nn.Linear(6, 3)
        ).double(),  # fmt: skip
        spec.build((5,), seed=0, dtype=torch.float64),
    ):
        x1, x2 = torch.randn(4, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
        got = nk.empirical_ntk(model, x1, x2, method="structured", output="full")
        reference.assert_close(got, reference.ntk(model, x1, x2, output="full"))
    assert any(node is not None for node in used)  # the fast path was taken
