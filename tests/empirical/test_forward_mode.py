"""Models without forward-mode AD: ``method="ntk_vector_products"`` says which module blocks it and what works
instead, and ``method="auto"`` never picks it there (issue 10, item 3).

PyTorch has no jvp for ``nn.MultiheadAttention``'s fused kernel (``_native_multi_head_attention``) nor for a
float32 ``nn.LSTM`` on the CPU (``mkldnn_rnn_layer``); the method used to crash there with an AttributeError.
"""

import pytest
import torch
from torch import nn

import ntkit
import ntkit.empirical.ntk as ntk_module
from ntkit.empirical import ntk_vector_product


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(2, 4)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.readout = nn.Linear(4, 2)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], 3, 2))
        a, _ = self.attention(h, h, h, need_weights=False)
        return self.readout(a.mean(1))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 3, batch_first=True)
        self.readout = nn.Linear(3, 2)

    def forward(self, x):
        y, _ = self.lstm(x.reshape(x.shape[0], 3, 2))
        return self.readout(y[:, -1])


def attention():
    torch.manual_seed(0)
    return Attention().double().eval()


def lstm_float32():
    torch.manual_seed(0)
    return Recurrent().float().eval()


CASES = {
    "attention": (attention, torch.float64, r"'attention' \(MultiheadAttention\)"),
    "lstm_float32": (lstm_float32, torch.float32, r"'lstm' \(LSTM\)"),
}


@pytest.mark.parametrize("case", CASES)
def test_ntk_vector_products_names_the_module_and_an_alternative(case):
    make, dtype, module = CASES[case]
    x = torch.randn(3, 6, dtype=dtype)
    with pytest.raises(ValueError, match=rf"(?s)forward-mode.*{module}.*method='structured'"):
        ntkit.empirical_ntk(make(), x, method="ntk_vector_products")


@pytest.mark.parametrize("case", CASES)
def test_ntk_vector_product_operator_names_the_module(case):
    make, dtype, module = CASES[case]
    x = torch.randn(3, 6, dtype=dtype)
    with pytest.raises(ValueError, match=rf"(?s)forward-mode.*{module}.*empirical_ntk"):
        ntk_vector_product(make(), x, x, torch.ones(3, 2, dtype=dtype))


def test_auto_does_not_pick_ntk_vector_products_without_forward_mode(monkeypatch, reference):
    """Even when the cost model prefers NTK-vector products, auto falls back to a reverse-mode method."""
    monkeypatch.setattr(ntk_module, "choose_method", lambda problem, plan: "ntk_vector_products")
    model = attention()
    x = torch.randn(4, 6, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, method="auto", output="full")
    reference.assert_close(k, reference.full(model, x))


def test_auto_keeps_ntk_vector_products_where_forward_mode_works(monkeypatch, reference):
    """The probe does not reject a model that supports jvp (here the float64 LSTM, which avoids mkldnn)."""
    chosen = []
    original = ntk_module.ntk_ntk_vector_products
    monkeypatch.setattr(ntk_module, "choose_method", lambda problem, plan: "ntk_vector_products")
    monkeypatch.setattr(ntk_module, "ntk_ntk_vector_products", lambda *a: chosen.append(1) or original(*a))
    model = lstm_float32().double()
    x = torch.randn(3, 6, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, method="auto", output="trace")
    assert chosen == [1]
    reference.assert_close(k, reference.ntk(model, x, output="trace"))
