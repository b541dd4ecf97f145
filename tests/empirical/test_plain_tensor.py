"""Every empirical kernel comes back as a plain tensor: no ``grad_fn``, ``requires_grad=False``, usable as numpy.

The structured method contracts the parameters it cannot factor (norm affines, attention projections, recurrent
weights, shared modules) by per-example Jacobians; those used to stay attached to an autograd graph through the
model's other parameters, which kept the graph's memory alive and made ``k.numpy()`` raise (issue 10, item 2).
The values are checked against the brute-force float64 reference of ``conftest.py``.
"""

import pytest
import torch
from torch import nn

import ntkit
from ntkit.empirical import ntk_vector_product

METHODS = ("auto", "structured", "jacobian_contraction")


class Attention(nn.Module):
    """Linear → nn.MultiheadAttention (SDPA) → mean over tokens → Linear."""

    def __init__(self, tokens: int = 3, width: int = 4):
        super().__init__()
        self.tokens = tokens
        self.embed = nn.Linear(2, width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.readout = nn.Linear(width, 2)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], self.tokens, 2))
        a, _ = self.attention(h, h, h, need_weights=False)
        return self.readout(a.mean(1))


class Recurrent(nn.Module):
    """An LSTM or GRU over 3 steps of 2 features, read out from the last step."""

    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        self.cell = cell(2, 3, batch_first=True)
        self.readout = nn.Linear(3, 2)

    def forward(self, x):
        y, _ = self.cell(x.reshape(x.shape[0], 3, 2))
        return self.readout(y[:, -1])


class Shared(nn.Module):
    """One Linear applied twice: its weight cannot be factored as a single layer."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(6, 6)
        self.readout = nn.Linear(6, 2)

    def forward(self, x):
        return self.readout(torch.tanh(self.layer(torch.tanh(self.layer(x)))))


def batchnorm_eval():
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


MODELS = {
    "layernorm": lambda: nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 2)),
    "batchnorm_eval": batchnorm_eval,
    "groupnorm": lambda: nn.Sequential(nn.Linear(6, 4), nn.GroupNorm(2, 4), nn.Tanh(), nn.Linear(4, 2)),
    "attention": Attention,
    "lstm": lambda: Recurrent(nn.LSTM),
    "gru": lambda: Recurrent(nn.GRU),
    "shared": Shared,
}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().double().eval()


def assert_plain(k: torch.Tensor) -> None:
    assert k.grad_fn is None, k.grad_fn
    assert not k.requires_grad
    k.numpy()  # raises for a tensor that requires grad


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_kernel_is_a_plain_tensor(name, method, reference):
    model = make(name)
    x = torch.randn(3, 6, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, method=method, output="trace")
    assert_plain(k)
    reference.assert_close(k, reference.ntk(model, x, output="trace"))


def test_cross_kernel_and_full_output_are_plain_tensors(reference):
    model = make("layernorm")
    x1, x2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x1, x2, method="structured", output="full")
    assert_plain(k)
    reference.assert_close(k, reference.full(model, x1, x2))


def test_ntk_vector_product_is_a_plain_tensor_even_for_a_vector_that_requires_grad(reference):
    model = make("layernorm")
    x1, x2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    v = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    product = ntk_vector_product(model, x1, x2, v)
    assert_plain(product)
    expected = torch.einsum("abij,bj->ai", reference.full(model, x1, x2), v.detach())
    reference.assert_close(product, expected)
