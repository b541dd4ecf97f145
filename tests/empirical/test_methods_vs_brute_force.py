"""Every method and every output mode of ``empirical_ntk`` against the float64 brute-force Jacobian of
reference.py, which shares no code with ntkit."""

import pytest
import torch
from torch import nn

import ntkit
from tests.empirical.reference import brute_force_full

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured", "auto"]
OUTPUTS = ["full", "diagonal", "trace", "mean"]


def reduce(full: torch.Tensor, output: str) -> torch.Tensor:
    diagonal = torch.diagonal(full, dim1=2, dim2=3)
    return {"full": full, "diagonal": diagonal, "trace": diagonal.sum(-1), "mean": diagonal.mean(-1)}[output]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.norm, self.block, self.out = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.block(torch.nn.functional.gelu(self.norm(h)))
        return self.out(h)


class SharedAndCustom(nn.Module):
    """A Linear called twice (weight sharing) and a hand-used parameter: both must fall back exactly."""

    def __init__(self):
        super().__init__()
        self.shared, self.scale, self.head = nn.Linear(4, 4), nn.Parameter(torch.tensor([0.7, 1.3, 0.9, 1.1])), None
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))) * self.scale)


class EmbeddingBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(10, 5), nn.Linear(5, 2)

    def forward(self, idx):
        return self.out(torch.relu(self.emb(idx)).mean(1))


def _frozen_mlp():
    m = nn.Sequential(nn.Linear(4, 8), nn.Softplus(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    m[2].weight.requires_grad_(False)
    m[4].bias.requires_grad_(False)
    return m


def _batchnorm_cnn():
    m = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 2)
    )
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(8, 2, 5, 5))  # non-trivial running statistics
    return m.eval()


class ThreeDOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 6)

    def forward(self, x):
        return torch.tanh(self.lin(x)).reshape(-1, 2, 3)


MODELS = {
    "mlp_tanh_relu_3_outputs": (
        lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), (4,)
    ),
    "mlp_gelu_no_bias_scalar": (lambda: nn.Sequential(nn.Linear(4, 8, bias=False), nn.GELU(), nn.Linear(8, 1)), (4,)),
    "mlp_flat_output": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1), nn.Flatten(0)), (3,)),
    "cnn_pool_stride_padding": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2, stride=2, bias=False),
            nn.AvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
        ),
        (2, 6, 6),
    ),
    "cnn_same_reflect_dilation": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding="same", dilation=2), nn.Tanh(),
            nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(2 * 5 * 5, 3),
        ),
        (2, 5, 5),
    ),
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular"), nn.GELU(),
                              nn.Conv1d(3, 2, 3, stride=2), nn.Flatten(), nn.Linear(2 * 3, 2)),
        (2, 8),
    ),
    "residual_layernorm": (Residual, (4,)),
    "shared_weights_and_custom_parameter": (SharedAndCustom, (4,)),
    "frozen_parameters": (_frozen_mlp, (4,)),
    "batchnorm_eval": (_batchnorm_cnn, (2, 5, 5)),
    "three_d_output": (ThreeDOutput, (3,)),
}  # fmt: skip


def _inputs(shape, n, dtype=torch.float64):
    return torch.randn(n, *shape, dtype=dtype)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MODELS))
def test_matches_brute_force(name, method, output):
    torch.manual_seed(0)
    factory, shape = MODELS[name]
    model = factory().double()
    x1, x2 = _inputs(shape, 5), _inputs(shape, 3)
    for second, reference in [(x2, brute_force_full(model, x1, x2)), (None, brute_force_full(model, x1, x1))]:
        expected = reduce(reference, output)
        got = ntkit.empirical_ntk(model, x1, second, method=method, output=output)
        assert got.dtype == torch.float64 and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_integer_inputs_embedding(method):
    torch.manual_seed(0)
    model = EmbeddingBag().double()
    x1, x2 = torch.randint(0, 10, (4, 3)), torch.randint(0, 10, (2, 3))
    expected = reduce(brute_force_full(model, x1, x2), "full")
    torch.testing.assert_close(ntkit.empirical_ntk(model, x1, x2, method=method, output="full"), expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("output", ["full", "trace"])
def test_independent_of_batch_size(method, output):
    torch.manual_seed(1)
    factory, shape = MODELS["cnn_pool_stride_padding"]
    model = factory().double()
    x1, x2 = _inputs(shape, 7), _inputs(shape, 5)
    for second in (x2, None):
        results = [
            ntkit.empirical_ntk(model, x1, second, method=method, output=output, batch_size=b) for b in (1, 3, None)
        ]
        for r in results[1:]:
            torch.testing.assert_close(r, results[0], rtol=1e-12, atol=1e-12 * float(results[0].abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_case_is_exactly_symmetric(method):
    torch.manual_seed(2)
    factory, shape = MODELS["mlp_tanh_relu_3_outputs"]
    model = factory()
    x = _inputs(shape, 9, torch.float32)
    full = ntkit.empirical_ntk(model, x, method=method, output="full", batch_size=4)
    assert torch.equal(full, full.permute(1, 0, 3, 2))


def test_float32_close_to_float64_and_model_untouched():
    torch.manual_seed(3)
    factory, shape = MODELS["batchnorm_eval"]
    model = factory()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs(shape, 6, torch.float32)
    k32 = ntkit.empirical_ntk(model, x)
    assert k32.dtype == torch.float32 and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    k64 = ntkit.empirical_ntk(model.double(), x.double())
    torch.testing.assert_close(k32.double(), k64, rtol=1e-4, atol=1e-4 * float(k64.abs().max()))


def test_single_linear_layer_closed_form():
    """f(x) = W x + b: Θ[a, b, i, j] = δ_ij (x_a · x_b + 1), for every method."""
    torch.manual_seed(4)
    model = nn.Linear(5, 3).double()
    x1, x2 = _inputs((5,), 4), _inputs((5,), 6)
    expected = torch.einsum("ab,ij->abij", x1 @ x2.T + 1, torch.eye(3, dtype=torch.float64))
    for method in METHODS:
        torch.testing.assert_close(ntkit.empirical_ntk(model, x1, x2, method=method, output="full"), expected)


def test_ntk_vector_product_matches_kernel():
    torch.manual_seed(5)
    factory, shape = MODELS["residual_layernorm"]
    model = factory().double()
    x1, x2 = _inputs(shape, 4), _inputs(shape, 6)
    v = torch.randn(6, 3, dtype=torch.float64)
    full = brute_force_full(model, x1, x2)
    torch.testing.assert_close(ntkit.ntk_vector_product(model, x1, x2, v), torch.einsum("abij,bj->ai", full, v))
