"""Issue 10's infinite-width promises: exact self-pairs on any CPU and batch partition, exact limits at zero
variance, no silent NaN or overflow, Gaussian inputs for activations, ``get=``, memory refusal, progress, threads
scoped to the call, and transforms that never change their input.

Tolerances. Two computations of the same kernel that differ only in how the example axis is cut (batch_size, a
cross kernel against its block of the joint kernel) perform the same operations on the same numbers except for
the input reductions x·x', whose rounding depends on the matrix sizes (a few ulps, ~1e-16 relative). Away from
cos θ = ±1 every layer's map is Lipschitz with constants O(1) in these small networks, so the kernels agree to
~1e-15; 1e-13 leaves two orders of magnitude for depth and for the BLAS. Self-pairs come from the
self-covariances alone and are compared bit for bit.
"""

import math
import threading

import pytest
import torch

import ntkit as nk
from ntkit._validation import MemoryBudgetError
from ntkit.infinite.kernel import input_kernel

DT = torch.float64


def _randn(*shape, seed=0, dtype=DT):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


ARCHS = {
    "deep_relu": (
        lambda: nk.Sequential(*[m for _ in range(6) for m in (nk.Linear(8, b_std=0.1), nk.ReLU())], nk.Linear(1)),
        (7,),
    ),  # fmt: skip
    "cntk_erf": (
        lambda: nk.Sequential(
            nk.Conv2d(4, 3, W_std=1.4, b_std=0.1),
            nk.ReLU(),
            nk.Conv2d(4, 3),
            nk.Erf(),
            nk.GlobalAvgPool2d(),
            nk.Linear(1),
        ),  # fmt: skip
        (2, 5, 5),
    ),
    "valid_stride_ln": (
        lambda: nk.Sequential(
            nk.Conv2d(4, 3, stride=2, padding="valid", W_std=1.3, b_std=0.2),
            nk.LayerNorm(),
            nk.ReLU(),
            nk.AvgPool2d(2, stride=1),
            nk.GlobalAvgPool2d(),
            nk.Linear(1),
        ),  # fmt: skip
        (2, 9, 9),
    ),
    "conv1d_flatten": (
        lambda: nk.Sequential(
            nk.Conv1d(4, 3, stride=2, padding="valid", b_std=0.1),
            nk.ReLU(),
            nk.Flatten(),
            nk.Linear(3),
            nk.LeakyReLU(0.2),
            nk.Linear(1),
        ),  # fmt: skip
        (3, 11),
    ),
}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(ARCHS))
def test_self_pairs_agree_for_every_batch_size(name):
    """Self-pairs come from each example's own reduction x·x (length ≤ C·|window|, rounding ≤ that many ε,
    possibly different by block shape on another BLAS) and then from well-conditioned maps only; 1e-13 relative is
    the issue's bound (before the fix the arc-cosine step turned the rounding into ~1e-9)."""
    make, shape = ARCHS[name]
    arch, x = make(), _randn(9, *shape, seed=1)
    ref = arch.kernel(x, batch_size=9)
    for batch in (1, 2, 4):
        k = arch.kernel(x, batch_size=batch)
        for kind in ("nngp", "ntk"):
            a, b = getattr(k, kind), getattr(ref, kind)
            da, db = torch.diagonal(a, dim1=0, dim2=1), torch.diagonal(b, dim1=0, dim2=1)
            assert float(((da - db).abs() / db.abs()).max()) < 1e-13
            assert _relative(a, b) < 1e-13


@pytest.mark.parametrize("name", list(ARCHS))
def test_cross_kernel_is_its_block_of_the_joint_kernel(name):
    make, shape = ARCHS[name]
    arch = make()
    x1, x2 = _randn(4, *shape, seed=2), _randn(5, *shape, seed=3)
    joint, cross = arch.kernel(torch.cat([x1, x2]), batch_size=3), arch.kernel(x1, x2)
    for kind in ("nngp", "ntk"):
        assert _relative(getattr(cross, kind), getattr(joint, kind)[:4, 4:]) < 1e-13


@pytest.mark.parametrize("name", list(ARCHS))
def test_one_ulp_on_every_input_moves_no_self_pair_by_more_than_1e_12(name):
    """Stands in for another CPU: a one-ulp change of the data is what a different BLAS rounding does to the
    input covariances. Self-pairs depend smoothly on the data (through ‖x‖² only, for these networks), so they may
    move by O(ulp); before the fix the arc-cosine step turned the ulp into ~1e-9."""
    make, shape = ARCHS[name]
    arch, x = make(), _randn(6, *shape, seed=4)
    nudged = torch.nextafter(x, torch.full_like(x, math.inf))
    for batch in (1, 6):
        a, b = arch.kernel(x, batch_size=batch), arch.kernel(nudged, batch_size=batch)
        for kind in ("nngp", "ntk"):
            da = torch.diagonal(getattr(a, kind), dim1=0, dim2=1)
            db = torch.diagonal(getattr(b, kind), dim1=0, dim2=1)
            assert float(((da - db).abs() / da.abs()).max()) < 1e-12


def test_identical_inputs_given_as_x2_take_the_self_pair_value():
    arch = ARCHS["deep_relu"][0]()
    x = _randn(5, 7, seed=5)
    own, explicit = arch.kernel(x), arch.kernel(x, x.clone())
    for kind in ("nngp", "ntk"):
        d_own = torch.diagonal(getattr(own, kind))
        d_explicit = torch.diagonal(getattr(explicit, kind))
        assert float(((d_own - d_explicit).abs() / d_own).max()) < 1e-13


# --- zero variance, overflow and NaN ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "layers",
    [
        lambda: [nk.Linear(6), nk.ReLU()],
        lambda: [nk.Linear(6), nk.Tanh()],
        lambda: [nk.Linear(6), nk.LayerNorm()],
        lambda: [nk.Linear(6), nk.Erf()],
        lambda: [nk.Linear(6), nk.GELU()],
        lambda: [nk.Linear(6), nk.LeakyReLU(0.1)],
        lambda: [nk.Conv1d(3, 3), nk.ReLU(), nk.Conv1d(3, 3), nk.LayerNorm(), nk.GlobalAvgPool1d()],
    ],
    ids=["relu", "tanh", "layernorm", "erf", "gelu", "leaky", "conv_ln"],
)
def test_an_all_zero_input_takes_the_exact_limit(layers, dtype):
    """Without a bias an all-zero input is 0 in every unit of the finite network, so its kernels are exactly 0
    (its gradient is 0 too), and the other rows are those of the kernel without it."""
    spec = layers()
    arch = nk.Sequential(*spec, nk.Linear(1))
    shape = (4,) if isinstance(spec[0], nk.Linear) else (2, 5)
    x = _randn(4, *shape, seed=6, dtype=dtype)
    x[1] = 0.0
    k = arch.kernel(x)
    rest = arch.kernel(x[[0, 2, 3]])
    for kind in ("nngp", "ntk"):
        t = getattr(k, kind)
        assert bool(torch.isfinite(t).all())
        assert torch.equal(t[1], torch.zeros_like(t[1])) and torch.equal(t[:, 1], torch.zeros_like(t[:, 1]))
        tol = 1e-13 if dtype == torch.float64 else 1e-5
        assert _relative(t[[0, 2, 3]][:, [0, 2, 3]], getattr(rest, kind)) < tol
    # the finite network agrees: its NTK row of the zero input is exactly 0
    net = arch.build(shape, seed=0, dtype=dtype)
    theta = nk.empirical_ntk(net, x)
    assert torch.equal(theta[1], torch.zeros_like(theta[1]))


@pytest.mark.parametrize("activation", [nk.Erf, nk.GELU])
@pytest.mark.parametrize("norm", [1e3, 1e4, 1e6])
def test_erf_and_gelu_stay_accurate_in_float32_at_large_inputs(activation, norm):
    """float32 results are the float64 kernel rounded: relative error ~1e-7, here within 1e-5."""
    arch = nk.Sequential(nk.Linear(4), activation(), nk.Linear(1))
    x = _randn(5, 3, seed=7)
    x = x / x.norm(dim=1, keepdim=True) * norm
    exact = arch.kernel(x)
    single = arch.kernel(x.float())
    for kind in ("nngp", "ntk"):
        assert bool(torch.isfinite(getattr(single, kind)).all())
        assert _relative(getattr(single, kind).double(), getattr(exact, kind)) < 1e-5


def test_sin_at_large_variances_is_finite_and_exact():
    """E[sin u sin v] = e^{−(a+b)/2} sinh c: at a = b = c = 2000 both factors overflow (0 · inf); the limit is 1/2."""
    arch = nk.Sequential(nk.Linear(1, W_std=math.sqrt(2000.0)), nk.Sin())
    k = arch.kernel(torch.ones(2, 1, dtype=DT))
    assert torch.allclose(k.nngp, torch.full((2, 2), 0.5, dtype=DT), rtol=1e-15, atol=0)


def test_an_overflowing_kernel_raises_instead_of_returning_inf():
    arch = nk.Sequential(nk.Linear(3, W_std=1e150), nk.Linear(1, W_std=1e150))
    with pytest.raises(FloatingPointError, match=r"kernel\(...\).nngp: .* NaN or infinite.*float64"):
        arch.kernel(_randn(3, 2))


@pytest.mark.parametrize("variance, tol", [(0.5, 1e-13), (15.0, 1e-13), (40.0, 1e-13), (80.0, 1e-13), (1e4, 1e-10)])
@pytest.mark.parametrize("closed_form, fn", [("erf", torch.erf), ("gelu", torch.nn.functional.gelu)])
def test_quadrature_holds_its_accuracy_at_any_variance(closed_form, fn, variance, tol):
    """Against the closed forms, on self, correlated, anti-correlated and unequal-variance pairs. The closed forms
    are themselves accurate to ~1e-15 up to variance 100 and to ~1e-11 at 1e4 (arcsin near 1 amplifies the
    rounding of its argument by 1/√(1 − r²) ~ √variance)."""
    from ntkit.infinite import activations

    exact = {"erf": activations.erf_kernels, "gelu": activations.gelu_kernels}[closed_form]
    v = torch.full((5,), variance, dtype=DT)
    c22 = v * torch.tensor([1.0, 0.5, 1.0, 1.0, 0.01], dtype=DT)
    c12 = v * torch.tensor([1.0, 0.3, -0.9, 0.999, 0.05], dtype=DT)
    got = activations.quadrature_kernels(fn)(v, c12, c22)
    for a, b in zip(got, exact(v, c12, c22), strict=True):
        assert float(((a - b).abs() / b.abs()).max()) < tol


# --- activations need Gaussian inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, shape",
    [
        (lambda: nk.Sequential(nk.ReLU(), nk.Linear(1)), (4,)),
        (lambda: nk.Sequential(nk.Linear(8), nk.ReLU(), nk.ReLU(), nk.Linear(1)), (4,)),
        (lambda: nk.Sequential(nk.Conv2d(8, 3), nk.Flatten(), nk.Erf(), nk.Linear(1)), (2, 4, 4)),
        (
            lambda: nk.Sequential(nk.Parallel(nk.Linear(4), nk.Linear(12), combine="concat"), nk.ReLU(), nk.Linear(1)),
            (4,),
        ),  # fmt: skip
    ],
    ids=["raw_input", "relu_relu", "flatten_erf", "concat_relu"],
)
def test_an_activation_on_a_non_gaussian_input_is_refused(arch, shape):
    with pytest.raises(ValueError, match=r"needs Gaussian pre-activations.*put an nk.Linear or nk.Conv layer"):
        arch().kernel(_randn(3, *shape))


def test_a_linear_after_a_concatenation_makes_it_gaussian_again():
    arch = nk.Sequential(nk.Parallel(nk.Linear(4), nk.Linear(12), combine="concat"), nk.Linear(5), nk.ReLU())
    assert bool(torch.isfinite(arch.kernel(_randn(3, 4)).ntk).all())


# --- get=, memory, progress -----------------------------------------------------------------------------------------


def test_get_computes_only_what_is_asked():
    arch = ARCHS["cntk_erf"][0]()
    x = _randn(5, 2, 5, 5, seed=8)
    both = arch.kernel(x, batch_size=2)
    nngp = arch.kernel(x, get="nngp", batch_size=2)
    ntk = arch.kernel(x, get=("ntk",), batch_size=2)
    assert nngp.ntk is None and ntk.nngp is None
    assert torch.equal(nngp.nngp, both.nngp) and torch.equal(ntk.ntk, both.ntk)


@pytest.mark.parametrize("get", ["ntkk", ("nngp", "nngp"), 3])
def test_bad_get(get):
    with pytest.raises((TypeError, ValueError), match="get"):
        nk.Linear(1).kernel(_randn(2, 3), get=get)


def test_a_kernel_that_cannot_fit_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr("ntkit._validation.available_memory", lambda device: 1 << 20)
    arch = nk.Sequential(nk.Linear(8), nk.ReLU(), nk.Linear(1))
    with pytest.raises(MemoryBudgetError, match=r"needs about .* GiB .*fewer rows, get='nngp'.*ntkit.scale"):
        arch.kernel(torch.zeros(1000, 3, dtype=DT))


def test_progress_bar_shows_on_request_and_never_when_silenced(capsys):
    arch = nk.Sequential(nk.Linear(8), nk.ReLU(), nk.Linear(1))
    x = _randn(8, 3)
    arch.kernel(x, batch_size=2, progress=True)
    assert "kernel blocks" in capsys.readouterr().err
    arch.kernel(x, batch_size=2, progress=False)
    assert "kernel blocks" not in capsys.readouterr().err


# --- threads ----------------------------------------------------------------------------------------------------------


def test_the_threaded_block_path_agrees_and_leaves_the_callers_threads_alone():
    """The suite runs single-threaded; here two intra-op threads make the driver run blocks in a worker pool.
    The caller's thread count, and that of threads created afterwards, must be what it was."""
    arch = ARCHS["cntk_erf"][0]()
    x = _randn(9, 2, 5, 5, seed=9)
    serial = arch.kernel(x, batch_size=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        watcher = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        threaded = arch.kernel(x, batch_size=2)
        assert torch.get_num_threads() == 2
        watcher.start()
        watcher.join()
        assert seen == [2]
    finally:
        torch.set_num_threads(before)
    for kind in ("nngp", "ntk"):
        assert torch.equal(getattr(threaded, kind), getattr(serial, kind))


# --- purity -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHS))
def test_a_transform_never_changes_the_kernel_it_is_given(name):
    make, shape = ARCHS[name]
    arch = make()
    for x2 in (None, _randn(2, *shape, seed=11)):
        k = input_kernel(_randn(3, *shape, seed=10), x2)
        k = k.replace(is_gaussian=True)  # as if after an affine layer, so that the first activation accepts it
        for layer in arch.layers:
            before = {
                n: None if getattr(k, n) is None else getattr(k, n).clone() for n in ("nngp", "ntk", "var1", "var2")
            }
            out = layer.transform(k)
            for n, t in before.items():
                assert t is None or torch.equal(getattr(k, n), t), f"{layer!r} changed {n}"
            k = out
