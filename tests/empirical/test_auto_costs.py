"""``method="auto"`` prices multiply-adds at measured throughput (``ntkit.empirical._costs``).

Measured on the bench models (bench/empirical.py, Myrtle-5 width 64 at N = 8, 16, 64): the structured method is
1.2-1.3× faster than Jacobian contraction there, although it counts slightly more multiply-adds, so auto must pick
it; on wide MLPs it is faster by orders of magnitude.
"""

import pytest
import torch
from torch import nn

from ntkit.empirical import _common, _costs, structured
from ntkit.empirical.ntk import choose_method


def _myrtle5(width: int = 64) -> nn.Sequential:
    def conv(c_in: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, width, 3, padding=1)

    pool = nn.AvgPool2d(2)
    return nn.Sequential(
        *(conv(3), nn.ReLU(), conv(width), nn.ReLU(), pool),
        *(conv(width), nn.ReLU(), pool),
        *(conv(width), nn.ReLU(), pool, pool, pool),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


def _choice(model, x, symmetric, output="trace"):
    problem = _common.check_request(model, x, None if symmetric else x, "auto", output, None)
    return choose_method(problem, structured.make_plan(problem))


@pytest.mark.parametrize("n", [8, 64])
@pytest.mark.parametrize("symmetric", [False, True])
def test_auto_picks_structured_on_myrtle5(n, symmetric):
    assert _choice(_myrtle5(), torch.randn(n, 3, 32, 32), symmetric) == "structured"


def test_auto_picks_jacobian_contraction_when_nothing_factors():
    model = nn.Sequential(nn.LayerNorm(6), nn.Tanh())
    assert _choice(model, torch.randn(4, 6), True) == "jacobian_contraction"


def test_estimates_rank_methods_independently_of_the_machine_speed(monkeypatch):
    model, x = _myrtle5(8), torch.randn(4, 3, 32, 32)
    problem = _common.check_request(model, x, None, "auto", "trace", None)
    plan = structured.make_plan(problem)
    structured.choose_strategies(plan, problem, 4)
    before = _costs.estimated_seconds(problem, plan)
    faster = {m: {k: 3 * v for k, v in kinds.items()} for m, kinds in _costs.THROUGHPUT.items()}
    monkeypatch.setattr(_costs, "THROUGHPUT", faster)
    after = _costs.estimated_seconds(problem, plan)
    assert sorted(before, key=before.get) == sorted(after, key=after.get)
    assert all(after[m] == pytest.approx(before[m] / 3) for m in before)
