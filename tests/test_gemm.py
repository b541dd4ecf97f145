"""The GEMM adapter: every backend gives A·Bᵀ to the rounding bound, and a broken or missing backend falls back.

Reference: each entry summed exactly with ``math.fsum`` over float64 products of the inputs (exact for float32
inputs, correctly rounded sums in float64), so the bound is the dtype's: |C − C_exact| ≤ K·ε·Σ_k |a_mk b_nk|.
"""

import math

import pytest
import torch

from ntkit import _gemm


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    """Each test starts without a forced backend, cached choice or broken backend, and leaves none behind."""
    monkeypatch.delenv(_gemm.ENV_VAR, raising=False)
    monkeypatch.setattr(_gemm, "_forced", None)
    monkeypatch.setattr(_gemm, "_chosen", {})
    monkeypatch.setattr(_gemm, "_broken", set())
    monkeypatch.setattr(_gemm, "_last_rates", {})
    monkeypatch.setattr(_gemm, "CALIBRATION_SHAPES", ((64, 96, 48), (16, 256, 16)))
    monkeypatch.setattr(_gemm, "CALIBRATION_REPEATS", 2)


def _exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a64, b64 = a.double().tolist(), b.double().tolist()
    return torch.tensor(
        [[math.fsum(x * y for x, y in zip(r, c, strict=True)) for c in b64] for r in a64], dtype=torch.float64
    )


def _check(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    eps = torch.finfo(a.dtype).eps
    bound = a.shape[1] * eps * (a.double().abs() @ b.double().abs().T)
    assert c.shape == (a.shape[0], b.shape[0]) and c.dtype == a.dtype
    assert bool(((c.double() - _exact(a, b)).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_backend_matches_the_exact_product(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(23, 70, generator=gen, dtype=dtype)
    b = torch.randn(31, 70, generator=gen, dtype=dtype)
    names = _gemm.available_backends(dtype)
    assert "torch" in names and "openblas" in names
    for name in names:
        _gemm.set_gemm_backend(name)
        assert _gemm.gemm_backend(dtype) == name
        _check(_gemm.matmul_nt(a, b), a, b)
        _check(_gemm.matmul_nt(a[:, ::2], b[:, ::2]), a[:, ::2], b[:, ::2])  # strided views
    assert not _gemm._broken


def test_calibration_chooses_an_available_backend_and_records_rates():
    for dtype in (torch.float32, torch.float64):
        choice = _gemm.gemm_backend(dtype)
        assert choice in _gemm.available_backends(dtype)
        rates = _gemm.gemm_rates(dtype)
        assert set(rates) == set(_gemm.available_backends(dtype)) and all(r > 0 for r in rates.values())


def test_a_backend_that_raises_falls_back_to_torch_and_is_dropped(monkeypatch):
    def broken(a, b):
        raise RuntimeError("entry point removed")

    monkeypatch.setitem(_gemm._IMPLEMENTATIONS, "openblas", broken)
    _gemm.set_gemm_backend("openblas")
    a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    _check(_gemm.matmul_nt(a, b), a, b)
    assert "openblas" in _gemm._broken and _gemm.gemm_backend(torch.float64) == "torch"


def test_a_missing_onednn_entry_point_is_never_used(monkeypatch):
    monkeypatch.setattr(_gemm, "_has_linear_pointwise", lambda: False)
    assert "onednn" not in _gemm.available_backends(torch.float32)
    _gemm.set_gemm_backend("onednn")
    assert _gemm.gemm_backend(torch.float32) == "torch"
    a, b = torch.randn(6, 9), torch.randn(3, 9)
    _check(_gemm.matmul_nt(a, b), a, b)


def test_onednn_is_float32_only():
    assert "onednn" not in _gemm.available_backends(torch.float64)
    _gemm.set_gemm_backend("onednn")
    assert _gemm.gemm_backend(torch.float64) == "torch"


def test_calibration_rejects_a_backend_that_is_fast_but_wrong(monkeypatch):
    monkeypatch.setitem(_gemm._IMPLEMENTATIONS, "openblas", lambda a, b: (a @ b.T) * (1 + 1e-3))
    _gemm.gemm_backend(torch.float64)
    assert "openblas" in _gemm._broken
    assert _gemm.gemm_backend(torch.float64) == "torch"


def test_inputs_needing_gradients_take_the_differentiable_path():
    _gemm.set_gemm_backend("openblas")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, dtype=torch.float64, requires_grad=True, generator=g)
    b = torch.randn(3, 5, dtype=torch.float64, generator=g)
    _gemm.matmul_nt(a, b).sum().backward()
    # a 3-term sum in either order: within 2 roundings of the terms' magnitude
    bound = 3 * torch.finfo(torch.float64).eps * b.abs().sum(0)
    assert bool(((a.grad - b.sum(0)).abs() <= bound).all())


def test_a_callers_shape_mistake_gets_torchs_error_and_blames_no_backend(monkeypatch):
    monkeypatch.setenv(_gemm.ENV_VAR, "openblas")
    a, b = torch.randn(300, 300, dtype=torch.float64), torch.randn(300, 200, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        _gemm.matmul_nt(a, b)
    assert "openblas" not in _gemm._broken


def test_environment_variable_and_setting(monkeypatch):
    monkeypatch.setenv(_gemm.ENV_VAR, "openblas")
    assert _gemm.gemm_backend(torch.float64) == "openblas"
    monkeypatch.setenv(_gemm.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="NTKIT_GEMM"):
        _gemm.gemm_backend(torch.float64)
    with pytest.raises(ValueError, match="GEMM backend"):
        _gemm.set_gemm_backend("mkl")


def test_small_products_do_not_calibrate():
    a, b = torch.randn(8, 8, dtype=torch.float64), torch.randn(8, 8, dtype=torch.float64)
    _check(_gemm.matmul_nt(a, b), a, b)
    assert not _gemm._chosen
    big = torch.randn(300, 300, dtype=torch.float64)
    _check(_gemm.matmul_nt(big[:40], big[:50]), big[:40], big[:50])
    assert not _gemm._chosen
    x = torch.randn(512, 256, dtype=torch.float64)  # 512·256·512 = 2^26 multiply-adds
    _gemm.matmul_nt(x, x)
    assert set(_gemm._chosen) == {(torch.float64, torch.get_num_threads())}


def test_the_choice_needs_a_margin_and_never_takes_a_foreign_thread_pool():
    choose = _gemm.choose_backend
    assert choose({"torch": 1.0, "onednn": 0.97}) == "torch"  # within MARGIN: keep the default
    assert choose({"torch": 1.0, "onednn": 0.6}) == "onednn"
    # OpenBLAS spins its own threads, which fight torch's: however fast it times alone, it is not chosen
    assert choose({"torch": 1.0, "onednn": 0.55, "openblas": 0.3}) == "onednn"
    assert choose({"torch": 1.0, "openblas": 0.3}) == "torch"
