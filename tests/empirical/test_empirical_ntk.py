"""``ntkit.empirical_ntk`` against the brute-force float64 reference of conftest.py, for every model in the table
below × every method × every output mode, plus the properties the contract promises: batch_size independence,
symmetry when x2 is omitted, float32 ≈ float64, result dtype/device, and a model left exactly as it was.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ntkit

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured", "auto"]
OUTPUTS = ["full", "diagonal", "trace", "mean"]
N1, N2 = 4, 3


# --------------------------------------------------------------------------------------------------------------
# Models. Each factory is called right after torch.manual_seed, so a case always rebuilds the same model.
# --------------------------------------------------------------------------------------------------------------


class Squeeze(nn.Module):
    """(N, 1) -> (N,): a scalar-output model."""

    def forward(self, x):
        return x.squeeze(-1)


class Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Residual(nn.Module):
    """x -> Linear -> h + Linear(GELU(LayerNorm(h))) -> Linear."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.block = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)
        with torch.no_grad():  # non-trivial LayerNorm affine parameters
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.block(F.gelu(self.norm(h)))
        return self.out(h)


class SequenceMeanPool(nn.Module):
    """nn.Linear on (N, T, d) inputs, then the mean over T."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 6)
        self.l2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x))).mean(dim=1)


class LearnedScale(nn.Module):
    """nn.Parameters used by hand in forward: a per-unit scale and a scalar offset."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 5)
        self.scale = nn.Parameter(torch.rand(5) + 0.5)
        self.offset = nn.Parameter(torch.tensor(0.3))
        self.l2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x) * self.scale + self.offset))


class EmbeddingBag(nn.Module):
    """nn.Embedding on integer inputs (N, L), mean over L, then an MLP."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.l1 = nn.Linear(4, 5)
        self.l2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(self.emb(x).mean(dim=1))))


class WeightSharing(nn.Module):
    """One nn.Linear called twice."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class LinearWeightAlsoUsedDirectly(nn.Module):
    """A Linear's weight read again as a plain tensor outside the Linear (as in tied input/output projections)."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 3)
        self.l2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x))) + (x @ self.l1.weight.T)[:, :2]


class ConvBiasAlsoUsedDirectly(nn.Module):
    """A Conv2d's bias read again as a plain tensor outside the Conv2d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1)) * self.conv.bias.sum()


class GRULastState(nn.Module):
    """A recurrent module: nn.GRU on (N, T, d), the last hidden state, then a Linear."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


class UnusedParameter(nn.Module):
    """A trainable layer that forward never touches: it contributes nothing."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 3)

    def forward(self, x):
        return self.used(torch.tanh(x))


class CalledButUnused(nn.Module):
    """A Linear that forward calls but whose output is discarded: its factored term must be exactly zero."""

    def __init__(self):
        super().__init__()
        self.discarded = nn.Linear(4, 5)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        _ = self.discarded(x)
        return self.head(torch.tanh(x))


class WithBuffer(nn.Module):
    """A registered buffer used in forward: it is used as it is, never differentiated."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 5)
        self.register_buffer("shift", torch.randn(5))
        self.l2 = nn.Linear(5, 2)

    def forward(self, x):
        return self.l2(F.softplus(self.l1(x) - self.shift))


def mlp(activation, n_out=3, bias=True):
    return lambda: nn.Sequential(
        nn.Linear(4, 6, bias=bias),
        activation(),
        nn.Linear(6, 5, bias=bias),
        activation(),
        nn.Linear(5, n_out, bias=bias),
    )


def frozen_mlp():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    model[2].requires_grad_(False)
    model[0].bias.requires_grad_(False)
    return model


def frozen_cnn():
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 3, 3), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)
    )
    model[0].requires_grad_(False)
    model[4].weight.requires_grad_(False)
    return model


def _randomize_batchnorm(model, make_batch):
    """Non-trivial affine parameters and running statistics (a few train-mode passes on shifted data), then eval."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.3)
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(make_batch())
    return model.eval()


def batchnorm1d():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).double()
    return _randomize_batchnorm(model, lambda: 2.0 * torch.randn(8, 4, dtype=torch.float64) + 1.0)


def batchnorm2d():
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).double()
    return _randomize_batchnorm(model, lambda: 2.0 * torch.randn(8, 2, 4, 4, dtype=torch.float64) + 1.0)


def normal(*shape):
    return lambda n: torch.randn(n, *shape, dtype=torch.float64)


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], nn.Module]
    inputs: Callable[[int], torch.Tensor]
    n_out: int  # O, the flattened output size per example


CASES = [
    Case("linear", lambda: nn.Linear(4, 3), normal(4), 3),
    Case("mlp_relu_1out", mlp(nn.ReLU, 1), normal(4), 1),
    Case("mlp_tanh_scalar_out", lambda: nn.Sequential(mlp(nn.Tanh, 1)(), Squeeze()), normal(4), 1),
    Case("mlp_gelu_5out", mlp(nn.GELU, 5), normal(4), 5),
    Case("mlp_softplus_3out", mlp(nn.Softplus, 3), normal(4), 3),
    Case("mlp_relu_nobias_3out", mlp(nn.ReLU, 3, bias=False), normal(4), 3),
    Case("mlp_tanh_nobias_1out", mlp(nn.Tanh, 1, bias=False), normal(4), 1),
    Case(
        "cnn_avgpool",
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)
        ),
        normal(2, 6, 6),
        2,
    ),
    Case(
        "cnn_stride2_maxpool",
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)
        ),
        normal(2, 9, 9),
        3,
    ),
    Case(
        "cnn_same_circular_reflect_nobias",
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding="same", padding_mode="circular"),
            nn.GELU(),
            nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect", bias=False),
            nn.Softplus(),
            nn.Flatten(),
            nn.Linear(2 * 5 * 5, 2),
        ),
        normal(2, 5, 5),
        2,
    ),
    Case(
        "cnn_dilation2",
        lambda: nn.Sequential(
            nn.Conv2d(1, 3, 3, dilation=2),
            nn.ReLU(),
            nn.Conv2d(3, 2, 2, stride=2, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(2 * 3 * 3, 1),
        ),
        normal(1, 8, 8),
        1,
    ),
    Case(
        "conv1d",
        lambda: nn.Sequential(
            nn.Conv1d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(4, 3, 3, stride=2),
            nn.Tanh(),
            nn.AvgPool1d(2),
            nn.Flatten(),
            nn.Linear(3 * 2, 3),
        ),
        normal(2, 10),
        3,
    ),
    Case("residual_layernorm", Residual, normal(4), 3),
    Case("linear_on_sequences", SequenceMeanPool, normal(5, 3), 2),
    Case("learned_scale_parameter", LearnedScale, normal(4), 3),
    Case("embedding_integer_inputs", EmbeddingBag, lambda n: torch.randint(0, 10, (n, 5)), 3),
    Case("weight_sharing", WeightSharing, normal(4), 2),
    Case("linear_weight_also_used_directly", LinearWeightAlsoUsedDirectly, normal(4), 2),
    Case("conv_bias_also_used_directly", ConvBiasAlsoUsedDirectly, normal(2, 4, 4), 2),
    Case("unused_parameter", UnusedParameter, normal(4), 3),
    Case("called_but_unused_layer", CalledButUnused, normal(4), 3),
    Case("buffer_in_forward", WithBuffer, normal(4), 2),
    Case("frozen_mlp", frozen_mlp, normal(4), 3),
    Case("frozen_cnn", frozen_cnn, normal(2, 5, 5), 2),
    Case("batchnorm1d_eval", batchnorm1d, normal(4), 2),
    Case("batchnorm2d_eval", batchnorm2d, normal(2, 4, 4), 3),
    Case("output_2x3_flattens", lambda: nn.Sequential(mlp(nn.Tanh, 6)(), Reshape(2, 3)), normal(4), 6),
]
CASE_BY_NAME = {case.name: case for case in CASES}
CASE_IDS = [case.name for case in CASES]


def build(name: str, n1: int = N1, n2: int = N2, seed: int = 0):
    """A fresh float64 model and inputs x1 (n1 examples) and x2 (n2 examples) for a case; deterministic."""
    case = CASE_BY_NAME[name]
    torch.manual_seed(seed)
    model = case.model().double()
    x1, x2 = case.inputs(n1), case.inputs(n2)
    return model, x1, x2


# The reference lives in conftest.py and reaches tests through a fixture; the cache below stores, per case and
# x2 mode, the brute-force kernel so that the 4 methods × 4 outputs of one case share one brute-force run.
_REFERENCE_CACHE: dict[tuple[str, bool], torch.Tensor] = {}


def cached_reference(reference, name: str, x2_given: bool) -> torch.Tensor:
    key = (name, x2_given)
    if key not in _REFERENCE_CACHE:
        model, x1, x2 = build(name)
        _REFERENCE_CACHE[key] = reference.full(model, x1, x2 if x2_given else None)
    return _REFERENCE_CACHE[key]


def call(model, x1, x2=None, **kwargs):
    return ntkit.empirical_ntk(model, x1, x2, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# The reference itself, on a closed form: f(x) = W x + b has Θ[a, b, i, j] = δ_ij (x_a · x_b + 1).
# --------------------------------------------------------------------------------------------------------------


def linear_closed_form(x1, x2, n_out, bias):
    gram = x1 @ x2.T + (1.0 if bias else 0.0)
    return gram[:, :, None, None] * torch.eye(n_out, dtype=x1.dtype)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_reference_matches_linear_closed_form(reference, bias):
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=bias).double()
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    expected = linear_closed_form(x1, x2, 3, bias)
    reference.assert_close(reference.full(model, x1, x2), expected, rel=1e-13)
    reference.assert_close(reference.full(model, x1), linear_closed_form(x1, x1, 3, bias), rel=1e-13)
    gram = x1 @ x2.T + (1.0 if bias else 0.0)
    reference.assert_close(reference.ntk(model, x1, x2, "diagonal"), gram[:, :, None].expand(5, 2, 3), rel=1e-13)
    reference.assert_close(reference.ntk(model, x1, x2, "trace"), 3 * gram, rel=1e-13)
    reference.assert_close(reference.ntk(model, x1, x2, "mean"), gram, rel=1e-13)


def test_reference_handles_frozen_and_unused_parameters(reference):
    """Freezing the hidden layer of Linear∘Linear leaves only the output layer: Θ = δ_ij (h_a · h_b + 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)).double()
    model[0].requires_grad_(False)
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        h = model[0](x)
    reference.assert_close(reference.full(model, x), linear_closed_form(h, h, 2, True), rel=1e-13)
    unused = UnusedParameter().double()
    with torch.no_grad():
        t = torch.tanh(x)
    reference.assert_close(reference.full(unused, x), linear_closed_form(t, t, 3, True), rel=1e-13)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_closed_form(reference, method, output, bias):
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=bias).double()
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    expected = reference.reduce(linear_closed_form(x1, x2, 3, bias), output)
    reference.assert_close(call(model, x1, x2, method=method, output=output), expected)


class LinearPlusItsBias(nn.Module):
    """f(x) = W x + 2 b, the bias read once by the Linear and once by hand: Θ[a, b, i, j] = δ_ij (x_a · x_b + 4)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) + self.lin.bias


@pytest.mark.parametrize("method", METHODS)
def test_linear_plus_its_bias_closed_form(reference, method):
    torch.manual_seed(0)
    model = LinearPlusItsBias().double()
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    expected = (x1 @ x2.T + 4.0)[:, :, None, None] * torch.eye(3, dtype=torch.float64)
    reference.assert_close(reference.full(model, x1, x2), expected, rel=1e-13)
    reference.assert_close(call(model, x1, x2, method=method, output="full"), expected)


# --------------------------------------------------------------------------------------------------------------
# Every model × method × output against the brute force, with x2 given (N2 ≠ N1) and with x2 omitted.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x2_given", [True, False], ids=["x2", "x2_none"])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_matches_brute_force(reference, name, method, output, x2_given):
    expected = reference.reduce(cached_reference(reference, name, x2_given), output)
    model, x1, x2 = build(name)
    actual = call(model, x1, x2 if x2_given else None, method=method, output=output)
    reference.assert_close(actual, expected)


@pytest.mark.parametrize("method", METHODS)
def test_recurrent_module(reference, method):
    """nn.GRU is "any nn.Module" too (kept out of the table so that one gap does not fail dozens of tests)."""
    torch.manual_seed(0)
    model = GRULastState().double()
    x1, x2 = torch.randn(3, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    reference.assert_close(call(model, x1, x2, method=method, output="full"), reference.full(model, x1, x2))


@pytest.mark.parametrize("name", CASE_IDS)
def test_output_shapes(name):
    model, x1, x2 = build(name)
    o = CASE_BY_NAME[name].n_out
    expected_shapes = {"full": (N1, N2, o, o), "diagonal": (N1, N2, o), "trace": (N1, N2), "mean": (N1, N2)}
    for output, shape in expected_shapes.items():
        assert tuple(call(model, x1, x2, output=output).shape) == shape, output
    assert tuple(call(model, x1).shape) == (N1, N1)


@pytest.mark.parametrize("name", ["mlp_gelu_5out", "cnn_avgpool", "embedding_integer_inputs"])
def test_defaults_are_auto_and_mean(reference, name):
    model, x1, x2 = build(name)
    expected = reference.reduce(cached_reference(reference, name, True), "mean")
    reference.assert_close(ntkit.empirical_ntk(model, x1, x2), expected)
    reference.assert_close(ntkit.empirical_ntk(model, x1, x2), call(model, x1, x2, method="auto", output="mean"))


# --------------------------------------------------------------------------------------------------------------
# batch_size: the result does not depend on it (N = 5 and 4: not multiples of 3, and smaller than 7).
# --------------------------------------------------------------------------------------------------------------

BATCH_SIZES = [1, 3, 7, None]


@pytest.mark.parametrize("x2_given", [True, False], ids=["x2", "x2_none"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_batch_size_independence(name, method, x2_given):
    model, x1, x2 = build(name, n1=5, n2=4)
    x2 = x2 if x2_given else None
    results = {bs: call(model, x1, x2, method=method, output="full", batch_size=bs) for bs in BATCH_SIZES}
    expected = results[None]
    scale = expected.abs().max().item()
    for bs, result in results.items():
        torch.testing.assert_close(
            result, expected, rtol=1e-12, atol=1e-12 * scale, msg=lambda m, bs=bs: f"batch_size={bs}: {m}"
        )


# --------------------------------------------------------------------------------------------------------------
# x2 omitted: same as x2 = x1, and symmetric.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_symmetric_when_x2_omitted(name, method, output):
    model, x1, _ = build(name, n1=5)
    result = call(model, x1, method=method, output=output)
    transposed = result.permute(1, 0, 3, 2) if output == "full" else result.transpose(0, 1)
    scale = result.abs().max().item()
    torch.testing.assert_close(result, transposed, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_x2_omitted_is_x2_equal_to_x1(name, method):
    model, x1, _ = build(name, n1=5)
    omitted = call(model, x1, method=method, output="full")
    explicit = call(model, x1, x1.clone(), method=method, output="full")
    scale = explicit.abs().max().item()
    torch.testing.assert_close(omitted, explicit, rtol=1e-12, atol=1e-12 * scale)


# --------------------------------------------------------------------------------------------------------------
# float32 ≈ float64; dtype and device of the result.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_float32_close_to_float64(name, method):
    model, x1, x2 = build(name)
    result64 = call(model, x1, x2, method=method, output="full")
    model32 = model.float()
    x1_32, x2_32 = (x.float() if x.is_floating_point() else x for x in (x1, x2))
    result32 = call(model32, x1_32, x2_32, method=method, output="full")
    assert result32.dtype == torch.float32
    scale = result64.abs().max().item()
    torch.testing.assert_close(result32.double(), result64, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", METHODS)
def test_result_dtype_and_device_follow_inputs(method, output, dtype):
    model, x1, x2 = build("cnn_avgpool")
    model, x1, x2 = model.to(dtype), x1.to(dtype), x2.to(dtype)
    for result in (call(model, x1, x2, method=method, output=output), call(model, x1, method=method, output=output)):
        assert result.dtype == dtype
        assert result.device == x1.device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_integer_inputs_give_the_parameters_dtype(dtype):
    """The embedding model: integer inputs, so the result's floating dtype can only come from the parameters."""
    model, x1, x2 = build("embedding_integer_inputs")
    model = model.to(dtype)
    for method in METHODS:
        assert call(model, x1, x2, method=method).dtype == dtype


# --------------------------------------------------------------------------------------------------------------
# The model, the inputs and the gradients are left exactly as they were.
# --------------------------------------------------------------------------------------------------------------


def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
    )


def _assert_unchanged(model, before):
    state, training, requires_grad = before
    after_state, after_training, after_requires_grad = _snapshot(model)
    assert after_state.keys() == state.keys()
    for key in state:
        assert after_state[key].dtype == state[key].dtype, key
        assert torch.equal(after_state[key], state[key]), f"{key} changed"
    assert after_training == training
    assert after_requires_grad == requires_grad


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_model_and_inputs_unchanged(name, method):
    model, x1, x2 = build(name)
    before = _snapshot(model)
    x1_before, x2_before = x1.clone(), x2.clone()
    call(model, x1, x2, method=method, output="full", batch_size=2)
    call(model, x1, method=method, output="mean")
    _assert_unchanged(model, before)
    assert torch.equal(x1, x1_before) and torch.equal(x2, x2_before)
    assert not x1.requires_grad and not x2.requires_grad


@pytest.mark.parametrize("method", METHODS)
def test_no_gradients_left_on_parameters(method):
    model, x1, x2 = build("residual_layernorm")
    call(model, x1, x2, method=method)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_training_mode_model_without_batchnorm(reference, method):
    """A model in training mode is fine when nothing in it behaves differently in training; it stays in training."""
    model, x1, x2 = build("residual_layernorm")
    model.train()
    before = _snapshot(model)
    expected = reference.reduce(cached_reference(reference, "residual_layernorm", True), "full")
    reference.assert_close(call(model, x1, x2, method=method, output="full"), expected)
    _assert_unchanged(model, before)
    assert model.training


@pytest.mark.parametrize("name", ["residual_layernorm", "cnn_avgpool", "mlp_gelu_5out"])
def test_ntk_vector_product_is_the_kernel_times_v(reference, name):
    """Θv without Θ: (Θ v)_a = Σ_b Θ[a, b] v_b, against the brute-force kernel."""
    model, x1, x2 = build(name)
    v = torch.randn(x2.shape[0], CASE_BY_NAME[name].n_out, dtype=torch.float64)
    expected = torch.einsum("abij,bj->ai", cached_reference(reference, name, True), v)
    reference.assert_close(ntkit.ntk_vector_product(model, x1, x2, v), expected)
