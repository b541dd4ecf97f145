"""A model whose examples interact (batch statistics, randomness in forward) has no per-example NTK: every entry
point refuses it with a clear error (issue 10, item 8), while a model whose batched output differs from the
one-example output only by rounding is accepted."""

import pytest
import torch
from torch import nn

import ntkit
from ntkit.empirical import ntk_vector_product


class Centred(nn.Module):
    """x − x.mean(0): each example's output depends on the whole batch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        return self.layer(x - x.mean(0))


class BatchStandardised(nn.Module):
    """A hand-written batch normalisation (not an nn.BatchNorm, so no module check can see it)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 4)
        self.readout = nn.Linear(4, 2)

    def forward(self, x):
        h = self.layer(x)
        return self.readout((h - h.mean(0)) / (h.std(0) + 1e-3))


class RandomForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        return self.layer(nn.functional.dropout(x, 0.5, training=True))


MODELS = {"centred": Centred, "batch_standardised": BatchStandardised, "random": RandomForward}


def make(name):
    torch.manual_seed(0)
    return MODELS[name]().double()


@pytest.mark.parametrize("method", ["auto", "jacobian_contraction", "ntk_vector_products", "structured"])
@pytest.mark.parametrize("name", MODELS)
def test_interacting_examples_are_refused(name, method):
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="depends on the other examples"):
        ntkit.empirical_ntk(make(name), x, method=method)


def test_cross_kernel_and_operator_refuse_it_too():
    x1, x2 = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="depends on the other examples"):
        ntkit.empirical_ntk(make("centred"), x1, x2)
    with pytest.raises(ValueError, match="depends on the other examples"):
        ntk_vector_product(make("centred"), x1, x2, torch.ones(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_independent_examples_pass_whatever_the_batch_rounding(dtype, reference):
    """Batched and single-example matmuls round differently; that must not be mistaken for interaction."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)).to(dtype)
    x = 100 * torch.randn(6, 3, dtype=dtype)
    k = ntkit.empirical_ntk(model, x, output="trace")
    if dtype == torch.float64:
        reference.assert_close(k, reference.ntk(model, x, output="trace"))
