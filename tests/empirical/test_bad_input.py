"""Bad input to ``empirical_ntk`` gets an error that names the argument and what was expected."""

import pytest
import torch
from torch import nn

import ntkit


def mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


X = torch.randn(5, 3)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"x1": torch.randn(5, 4)}, r"x1 with per-example shape \(4,\) does not fit the model"),
        ({"x2": torch.randn(2, 4)}, r"x2 must have the same trailing shape as x1"),
        ({"x2": torch.randn(2, 3, dtype=torch.float64)}, r"x2 must have the dtype of x1"),
        ({"x1": X.double()}, r"x1 has dtype torch.float64 but the model's parameters are torch.float32"),
        ({"x1": torch.tensor([[0.0, float("nan"), 1.0]])}, r"x1 contains NaN or Inf"),
        ({"x2": torch.tensor([[0.0, float("inf"), 1.0]])}, r"x2 contains NaN or Inf"),
        ({"method": "magic"}, r"method must be one of .*got 'magic'"),
        ({"output": "sum"}, r"output must be one of .*got 'sum'"),
        ({"batch_size": 0}, r"batch_size must be a positive int"),
        ({"batch_size": 2.5}, r"batch_size must be a positive int"),
        ({"x1": torch.randn(0, 3)}, r"x1 must have a leading batch axis with at least one example"),
        ({"x2": torch.randn(2, 3, device="meta")}, r"x2 is on meta but x1 is on cpu"),
        ({"x1": torch.randn(2, 3, device="meta")}, r"x1 is on meta but the model's parameters are on cpu"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    args = {"x1": X, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        ntkit.empirical_ntk(mlp(), args.pop("x1"), **args)


def test_not_a_module_or_tensor():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ntkit.empirical_ntk(lambda x: x, X)
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        ntkit.empirical_ntk(mlp(), X.numpy())


def test_no_trainable_parameters():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        ntkit.empirical_ntk(model, X)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(4), nn.Dropout(0.5)])
def test_training_mode_layers_that_break_per_example_kernels(layer):
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 2)).train()
    with pytest.raises(ValueError, match=r"training mode.*call model.eval\(\)"):
        ntkit.empirical_ntk(model, X)
    ntkit.empirical_ntk(model.eval(), X)  # and eval mode is fine


def test_model_must_return_one_batched_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(TypeError, match="model must return a single tensor"):
        ntkit.empirical_ntk(Pair(), X)

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x).sum(0)

    with pytest.raises(ValueError, match="model must keep the batch axis"):
        ntkit.empirical_ntk(Pooled(), X)


def test_ntk_vector_product_checks_v():
    with pytest.raises(ValueError, match=r"v must have shape \(N2, O\) = \(4, 2\)"):
        ntkit.ntk_vector_product(mlp(), X, X[:4], torch.randn(3, 2))
