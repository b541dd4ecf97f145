"""``empirical_ntk`` estimates its result and working set before allocating, refuses what would not fit with
advice, and sizes its blocks so that the pair block of ``output="full"`` stays inside the block budget (issue
10, item 5). Available memory is monkeypatched: nothing large is ever allocated here."""

import pytest
import torch
from torch import nn

import ntkit
from ntkit import _validation
from ntkit._validation import MemoryBudgetError
from ntkit.empirical import _common

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured")


def ten_outputs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 10))


def test_the_issue_case_is_refused_before_any_work(monkeypatch):
    """N = 4096, 10 outputs, "full" in float32: the result alone is 4096²·100·4 B = 6.7 GB."""
    monkeypatch.setattr(_validation, "available_memory", lambda device: 4 << 30)
    calls = []
    # every method's first piece of work (patched where each module looks it up): per-example Jacobians, the
    # structured layer factors, and the vjp of NTK-vector products
    for target in ("ntkit.empirical.jacobian.per_example_jacobians", "ntkit.empirical.structured.layer_factors",
                   "ntkit.empirical.products.vjp"):  # fmt: skip
        monkeypatch.setattr(target, lambda *a, **k: calls.append(a))
    x = torch.randn(4096, 3)
    for method in ("auto", *METHODS):
        with pytest.raises(MemoryBudgetError, match=r"6\.2\d GiB") as caught:
            ntkit.empirical_ntk(ten_outputs(), x, method=method, output="full")
        message = str(caught.value)
        for advice in ("fewer rows", "output='mean'", "100×", "batch_size", "ntkit.scale"):
            assert advice in message, (advice, message)
        assert "float32" not in message  # already float32
    assert calls == []


def test_float64_refusal_suggests_float32(monkeypatch):
    monkeypatch.setattr(_validation, "available_memory", lambda device: 1 << 20)  # 1 MiB
    x = torch.randn(64, 3, dtype=torch.float64)  # "full": 64²·100·8 B = 3.3 MB
    with pytest.raises(MemoryBudgetError, match="float32"):
        ntkit.empirical_ntk(ten_outputs().double(), x, output="full")


def test_what_fits_is_computed(monkeypatch, reference):
    """Under the same 1 MiB the advice works: output="mean" (64²·8 B = 32 KiB) goes through."""
    monkeypatch.setattr(_validation, "available_memory", lambda device: 1 << 20)
    model, x = ten_outputs().double(), torch.randn(64, 3, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, output="mean", batch_size=16)
    reference.assert_close(k[:3, :3], reference.ntk(model, x[:3], output="mean"))


@pytest.mark.parametrize("method", METHODS)
def test_block_budget_bounds_the_full_pair_block(monkeypatch, method, reference):
    """With a 256 KiB block budget a "full" pair block of B×B×10×10 float64 numbers, in PAIR_COPIES copies, must
    fit in it: B ≤ sqrt(256 KiB / (3·100·8 B)) = 10, where the Jacobians alone (10·P·8 B an example) would allow
    all 40 examples in one block."""
    budget = 256 << 10
    monkeypatch.setattr(_common, "memory_budget", lambda device: budget)
    sizes = []
    real_slices = _common.block_slices
    monkeypatch.setattr(_common, "block_slices", lambda n, size: sizes.append(size) or real_slices(n, size))
    model, x = ten_outputs().double(), torch.randn(40, 3, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, method=method, output="full")
    block = max(sizes)
    assert _common.PAIR_COPIES * block * block * 100 * 8 <= budget, block
    reference.assert_close(k[:3, -2:], reference.full(model, x[:3], x[-2:]))
