"""Both contraction orders of the structured method (position pairs and per-example weight gradients) against
a float64 brute-force Jacobian, forced layer by layer so that each order is exercised whatever the cost model
would pick."""

import pytest
import torch
from torch import nn

from ntkit.empirical import _common, structured
from ntkit.empirical.ntk import choose_method


def _models():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        nn.Tanh(),
        nn.Conv2d(3, 4, 2, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 2),
    )
    seq = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2), nn.Flatten(), nn.Linear(8, 3))
    return {"cnn": (cnn.double(), (2, 6, 6)), "linear_on_sequences": (seq.double(), (4, 3))}


@pytest.mark.parametrize("name", ["cnn", "linear_on_sequences"])
@pytest.mark.parametrize("strategy", ["pairs", "gradient"])
def test_forced_strategy_matches_brute_force(monkeypatch, reference, name, strategy):
    model, shape = _models()[name]
    x1 = torch.randn(5, *shape, dtype=torch.float64)
    x2 = torch.randn(3, *shape, dtype=torch.float64)

    def force(plan, problem, block):
        for lp in plan.layers:
            lp.strategy = "dense" if lp.positions == 1 else strategy

    monkeypatch.setattr(structured, "choose_strategies", force)
    got = structured.ntk_structured(_common.check_request(model, x1, x2, "structured", "trace", None), None)
    reference.assert_close(got, reference.ntk(model, x1, x2, output="trace"))


def test_cost_model_prefers_structured_for_wide_mlps_and_gradients_for_image_convs():
    mlp = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))
    problem = _common.check_request(mlp, torch.randn(256, 64), None, "auto", "trace", None)
    assert choose_method(problem, structured.make_plan(problem)) == "structured"

    conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16 * 16, 10))
    problem = _common.check_request(conv, torch.randn(32, 3, 16, 16), None, "auto", "trace", None)
    plan = structured.make_plan(problem)
    structured.choose_strategies(plan, problem, 32)
    assert [lp.strategy for lp in plan.layers] == ["gradient", "dense"]
