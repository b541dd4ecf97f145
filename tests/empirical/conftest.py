"""A brute-force float64 reference for the empirical NTK, independent of ntkit.

One autograd call per example and output unit gives a row of the Jacobian J (N, O, P) over the parameters with
``requires_grad=True`` (zeros for parameters the output does not use); the kernel is contracted by hand:
``full[a, b, i, j] = Σ_p J1[a, i, p] J2[b, j, p]``. The test modules reach it through the ``reference`` fixture
(pytest's importlib import mode keeps helper modules off ``sys.path``).
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

OUTPUTS = ("full", "diagonal", "trace", "mean")


def brute_force_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J[a, i, p] = ∂ f_i(x_a) / ∂ θ_p, with f(x_a) flattened to O values; shape (N, O, P)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    with torch.enable_grad():
        for a in range(x.shape[0]):
            out = model(x[a : a + 1]).reshape(-1)
            per_unit = []
            for i in range(out.numel()):
                grads = torch.autograd.grad(out[i], params, retain_graph=True, allow_unused=True)
                pairs = zip(grads, params, strict=True)
                flat = [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in pairs]
                per_unit.append(torch.cat(flat))
            rows.append(torch.stack(per_unit))
    return torch.stack(rows).detach()


def brute_force_full(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Θ[a, b, i, j] = Σ_θ ∂f_i(x1_a)/∂θ · ∂f_j(x2_b)/∂θ, shape (N1, N2, O, O)."""
    j1 = brute_force_jacobian(model, x1)
    j2 = j1 if x2 is None else brute_force_jacobian(model, x2)
    return torch.einsum("aip,bjp->abij", j1, j2)


def reduce_full(full: torch.Tensor, output: str) -> torch.Tensor:
    """The ``output`` view of a (N1, N2, O, O) kernel, by hand."""
    n1, n2, o, _ = full.shape
    if output == "full":
        return full
    diagonal = torch.stack([full[:, :, i, i] for i in range(o)], dim=-1)
    if output == "diagonal":
        return diagonal
    if output == "trace":
        return diagonal.sum(-1)
    if output == "mean":
        return diagonal.sum(-1) / o
    raise AssertionError(output)


def brute_force_ntk(model, x1, x2=None, output="full"):
    return reduce_full(brute_force_full(model, x1, x2), output)


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-10) -> None:
    """Relative tolerance ``rel`` elementwise, plus ``rel · max|expected|`` absolute (entries near zero)."""
    assert isinstance(actual, torch.Tensor), type(actual)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


@pytest.fixture(scope="session")
def reference():
    return SimpleNamespace(
        jacobian=brute_force_jacobian,
        full=brute_force_full,
        reduce=reduce_full,
        ntk=brute_force_ntk,
        assert_close=assert_close_to_reference,
        outputs=OUTPUTS,
    )
