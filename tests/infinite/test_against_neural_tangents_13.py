"""Issue 13's layers against neural-tangents 0.6.5 (JAX, float64): activations, SelfAttention, SumPool, ConvTranspose.

Reference values: tests/infinite/reference/make_nt_reference_13.py (run in NT's own venv), which stores each
case's ntkit spec. ELU's values are computed by hand there (1-D adaptive integrals), NT's quadrature being too
coarse at ELU's kink. Tolerance: 1e-10 relative to the largest entry, above float64 rounding through a few
layers (~1e-15) and the quadratures' errors (SiLU and Softplus: ~1e-14 in NT, ~1e-14 here with 256 Gauss-Hermite
nodes; ELU: ~1e-14 both ways).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit as nk

REFERENCE = np.load(Path(__file__).parent / "reference" / "nt_kernels_13.npz")
CASES = sorted({key.split("/")[0] for key in REFERENCE.files})
RTOL = 1e-10
# neural-tangents takes each input's variance from a separately rounded diagonal; behind kinked activations the
# angle on the x1-vs-x1 diagonal then comes out ~1e-8 instead of 0 (tests/infinite/reference/README.md).
NT_DIAGONAL_ROUNDING = 1e-7


def _close(got: torch.Tensor, expected: np.ndarray, diagonal_rtol: float | None = None):
    expected = torch.from_numpy(expected)
    known = torch.isfinite(expected)  # NT's RectifiedMonomial is NaN on the x1-vs-x1 diagonal (arccos' at 1)
    scale = float(expected[known].abs().max())
    err = torch.where(known, (got - expected).abs(), torch.zeros_like(got))
    if diagonal_rtol is not None:
        assert float(err.diagonal().max()) <= diagonal_rtol * scale
        err = err - torch.diag(err.diagonal())
    assert float(err.max()) <= RTOL * scale, float(err.max()) / scale
    assert bool(torch.isfinite(got).all())


@pytest.mark.parametrize("case", CASES)
def test_matches_neural_tangents(case):
    arch = eval(str(REFERENCE[f"{case}/ntkit"]).split("  #")[0], {"nk": nk, "torch": torch})
    x1, x2 = torch.from_numpy(REFERENCE[f"{case}/x1"]), torch.from_numpy(REFERENCE[f"{case}/x2"])
    k11, k12 = arch.kernel(x1), arch.kernel(x1, x2)
    assert k11.nngp.shape == (4, 4) and k12.ntk.shape == (4, 3)
    _close(k11.nngp, REFERENCE[f"{case}/nngp_11"], diagonal_rtol=NT_DIAGONAL_ROUNDING)
    _close(k11.ntk, REFERENCE[f"{case}/ntk_11"], diagonal_rtol=NT_DIAGONAL_ROUNDING)
    _close(k12.nngp, REFERENCE[f"{case}/nngp_12"])
    _close(k12.ntk, REFERENCE[f"{case}/ntk_12"])
