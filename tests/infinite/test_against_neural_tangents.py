"""Analytic kernels against neural-tangents 0.6.5 (JAX, float64) on the same architectures and inputs.

The reference values were computed by neural-tangents itself (tests/infinite/reference/make_nt_reference.py,
run in its own venv; see the README there). Each case stores the equivalent ntkit spec as a string.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit as nk

REFERENCE = np.load(Path(__file__).parent / "reference" / "nt_kernels.npz")
# Not compared: "act_abs" (ntkit has no Abs layer) and "layernorm_conv_chw" (ntkit's LayerNorm normalises over
# channels only, as DESIGN.md fixes).
CASES = sorted({key.split("/")[0] for key in REFERENCE.files} - {"act_abs", "layernorm_conv_chw"})
# neural-tangents computes each input's own variance apart from the kernel matrix; behind ReLU-like layers the
# two differ in the last bit and the arc-cosine angle on the diagonal of Θ(x, x) comes out ~1e-8 instead of 0.
NT_DIAGONAL_ROUNDING = 1e-8
QUADRATURE = {"act_tanh": 1e-8}  # Gauss-Hermite with 256 nodes at these variances


def _close(got: torch.Tensor, expected: np.ndarray, rtol: float, diagonal_rtol: float | None = None):
    expected = torch.from_numpy(expected)
    scale = float(expected.abs().max())
    err = (got - expected).abs()
    if diagonal_rtol is not None:
        assert float(err.diagonal().max()) <= diagonal_rtol * scale
        err = err - torch.diag(err.diagonal())
    assert float(err.max()) <= rtol * scale, float(err.max()) / scale


@pytest.mark.parametrize("case", CASES)
def test_matches_neural_tangents(case):
    arch = eval(str(REFERENCE[f"{case}/ntkit"]).split("  #")[0], {"nk": nk, "torch": torch})
    x1 = torch.from_numpy(REFERENCE[f"{case}/x1"])
    x2 = torch.from_numpy(REFERENCE[f"{case}/x2"])
    rtol = QUADRATURE.get(case, 1e-12)
    k11, k12 = arch.kernel(x1), arch.kernel(x1, x2)
    assert k11.nngp.dtype == torch.float64 and k11.nngp.shape == (4, 4) and k12.ntk.shape == (4, 3)
    _close(k11.nngp, REFERENCE[f"{case}/nngp_11"], rtol)
    _close(k11.ntk, REFERENCE[f"{case}/ntk_11"], rtol, diagonal_rtol=max(rtol, NT_DIAGONAL_ROUNDING))
    _close(k12.nngp, REFERENCE[f"{case}/nngp_12"], rtol)
    _close(k12.ntk, REFERENCE[f"{case}/ntk_12"], rtol)
