"""Bad input to ``ntkit.empirical_ntk``: a ValueError or TypeError whose message names the offending argument."""

import pytest
import torch
from torch import nn

import ntkit

BAD = (ValueError, TypeError)
NAN_OR_INF = r"(?i)(nan|inf)"


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()


def x(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    after = state(model)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), f"{key} changed by a call that raised"


# --------------------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_model, bad_x1",
    [
        (mlp, lambda: x(3, 5)),  # Linear(4, ·) on 5 features
        (mlp, lambda: x(3, 2, 2)),
        (mlp, lambda: x(4)),  # N = 4 examples with trailing shape ()
        (cnn, lambda: x(3, 3, 4, 4)),  # 3 channels into Conv2d(2, ·)
        (cnn, lambda: x(3, 2, 5, 5)),  # conv fits, the Linear after Flatten does not
    ],
    ids=["mlp_5_features", "mlp_3d", "mlp_1d", "cnn_channels", "cnn_spatial"],
)
def test_x1_that_does_not_fit_the_model(make_model, bad_x1):
    model = make_model()
    with pytest.raises(BAD, match=r"x1"):
        ntkit.empirical_ntk(model, bad_x1())


def test_x2_that_does_not_fit_the_model():
    with pytest.raises(BAD, match=r"x2"):
        ntkit.empirical_ntk(mlp(), x(3, 4), x(2, 5))


@pytest.mark.parametrize(
    "make_model, x1, x2",
    [
        (mlp, lambda: x(3, 4), lambda: x(2, 4, 1)),
        (cnn, lambda: x(3, 2, 4, 4), lambda: x(2, 2, 16)),
        (cnn, lambda: x(3, 2, 4, 4), lambda: x(2, 4, 2, 4)),  # same numel per example, different shape
    ],
    ids=["mlp_extra_dim", "cnn_flattened", "cnn_permuted"],
)
def test_x1_and_x2_trailing_shapes_disagree(make_model, x1, x2):
    with pytest.raises(BAD, match=r"x2"):
        ntkit.empirical_ntk(make_model(), x1(), x2())


@pytest.mark.parametrize(
    "dtype1, dtype2",
    [(torch.float64, torch.float32), (torch.float32, torch.float64)],
    ids=["f64_f32", "f32_f64"],
)
def test_x1_and_x2_dtypes_disagree(dtype1, dtype2):
    model = mlp().to(dtype1)
    with pytest.raises(BAD, match=r"x2"):
        ntkit.empirical_ntk(model, x(3, 4, dtype=dtype1), x(2, 4, dtype=dtype2))


def test_integer_x1_with_float_x2():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).double()
    x1 = torch.randint(0, 10, (3, 3))
    ntkit.empirical_ntk(model, x1, torch.randint(0, 10, (2, 3)))  # integer inputs are fine
    with pytest.raises(BAD, match=r"x2"):
        ntkit.empirical_ntk(model, x1, x1.double())


# --------------------------------------------------------------------------------------------------------------
# Devices: without a GPU, the "meta" device stands in for "another device".
# --------------------------------------------------------------------------------------------------------------


def test_x2_on_another_device():
    with pytest.raises(BAD, match=r"(?i)x2|device"):
        ntkit.empirical_ntk(mlp(), x(3, 4), torch.empty(2, 4, dtype=torch.float64, device="meta"))


def test_x1_on_another_device_than_the_model():
    x1 = torch.empty(3, 4, dtype=torch.float64, device="meta")
    with pytest.raises(BAD, match=r"(?i)x1|device"):
        ntkit.empirical_ntk(mlp(), x1)


# --------------------------------------------------------------------------------------------------------------
# NaN / Inf
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("which", ["x1", "x2"])
def test_non_finite_inputs(which, bad_value):
    x1, x2 = x(3, 4), x(2, 4)
    (x1 if which == "x1" else x2)[1, 2] = bad_value
    with pytest.raises(BAD, match=which) as info:
        ntkit.empirical_ntk(mlp(), x1, x2)
    assert info.match(NAN_OR_INF)


def test_non_finite_x1_with_x2_omitted():
    x1 = x(3, 4)
    x1[0, 0] = float("nan")
    with pytest.raises(BAD, match=r"x1") as info:
        ntkit.empirical_ntk(mlp(), x1)
    assert info.match(NAN_OR_INF)


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


def test_model_with_all_parameters_frozen():
    model = mlp().requires_grad_(False)
    with pytest.raises(BAD, match=r"(?i)param|model"):
        ntkit.empirical_ntk(model, x(3, 4))


def test_model_without_parameters():
    with pytest.raises(BAD, match=r"(?i)param|model"):
        ntkit.empirical_ntk(nn.Tanh(), x(3, 4))


@pytest.mark.parametrize(
    "make_model, inputs",
    [
        (
            lambda: nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)),
            lambda: x(3, 4),
        ),
        (
            lambda: nn.Sequential(
                nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
            ),
            lambda: x(3, 2, 4, 4),
        ),
        (  # BatchNorm nested deep inside, only it in training mode
            lambda: nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.Tanh(), nn.Sequential(nn.BatchNorm1d(5)))),
            lambda: x(3, 4),
        ),
    ],
    ids=["batchnorm1d", "batchnorm2d", "nested_batchnorm"],
)
def test_batchnorm_in_training_mode(make_model, inputs):
    torch.manual_seed(0)
    model = make_model().double().eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    before = state(model)
    with pytest.raises(BAD, match=r"\.eval\(\)"):
        ntkit.empirical_ntk(model, inputs())
    assert_same_state(model, before)  # no train-mode forward updated the running statistics
    model.eval()
    ntkit.empirical_ntk(model, inputs())  # and in eval mode it works


# --------------------------------------------------------------------------------------------------------------
# method, output, batch_size
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["jacobian", "Structured", "", None, 3])
def test_unknown_method(method):
    with pytest.raises(BAD, match=r"method"):
        ntkit.empirical_ntk(mlp(), x(3, 4), method=method)


@pytest.mark.parametrize("output", ["diag", "Full", "sum", "", None, 0])
def test_unknown_output(output):
    with pytest.raises(BAD, match=r"output"):
        ntkit.empirical_ntk(mlp(), x(3, 4), output=output)


@pytest.mark.parametrize("batch_size", [0, -1, -7, 1.5, "4"])
def test_bad_batch_size(batch_size):
    with pytest.raises(BAD, match=r"batch_size"):
        ntkit.empirical_ntk(mlp(), x(3, 4), batch_size=batch_size)


@pytest.mark.parametrize("method", ["jacobian_contraction", "ntk_vector_products", "structured", "auto"])
def test_bad_batch_size_for_every_method(method):
    with pytest.raises(BAD, match=r"batch_size"):
        ntkit.empirical_ntk(mlp(), x(3, 4), method=method, batch_size=0)


def test_not_a_module_or_not_a_tensor():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ntkit.empirical_ntk(lambda x: x, torch.randn(3, 4))
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        ntkit.empirical_ntk(mlp(), torch.randn(3, 4).numpy())


def test_empty_batch():
    with pytest.raises(ValueError, match="x1 must have a leading batch axis with at least one example"):
        ntkit.empirical_ntk(mlp(), torch.randn(0, 4, dtype=torch.float64))


def test_dropout_in_training_mode():
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.5), nn.Linear(5, 2)).double().train()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Dropout .* training mode.*call model.eval\(\)"):
        ntkit.empirical_ntk(model, x)
    assert ntkit.empirical_ntk(model.eval(), x).shape == (3, 3)


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.lin(x), x


class _PooledOverBatch(_Pair):
    def forward(self, x):
        return self.lin(x).sum(0)


def test_model_must_return_one_batched_tensor():
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="model must return a single tensor"):
        ntkit.empirical_ntk(_Pair(), x)
    with pytest.raises(ValueError, match="model must keep the batch axis"):
        ntkit.empirical_ntk(_PooledOverBatch(), x)


def test_ntk_vector_product_checks_v():
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"v must have shape \(N2, O\) = \(4, 2\)"):
        ntkit.ntk_vector_product(mlp(), x, x[:4], torch.randn(3, 2, dtype=torch.float64))
    v = torch.randn(4, 2, dtype=torch.float64)
    v[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"v contains 1 NaN or infinite value"):
        ntkit.ntk_vector_product(mlp(), x, x[:4], v)
