"""Misuse of the infinite-width specs fails early with a ValueError/TypeError whose message names the problem."""

import re

import pytest
import torch

import ntkit as nk

DT = torch.float64


def _dense(n=3, d=5):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=DT)


def _image(n=3, c=2, h=6, w=6):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0), dtype=DT)


def _signal(n=3, c=2, length=8):
    return torch.randn(n, c, length, generator=torch.Generator().manual_seed(0), dtype=DT)


# --- shapes that do not fit the architecture -------------------------------------------------------------------


@pytest.mark.parametrize("face", ["kernel", "build"])
def test_linear_after_conv_without_flatten_names_the_layer_and_the_fix(face):
    arch = nk.Sequential(nk.Conv2d(4, 3), nk.ReLU(), nk.Linear(3))
    with pytest.raises(ValueError, match=r"layer 2 of Sequential") as info:
        arch.kernel(_image()) if face == "kernel" else arch.build((2, 6, 6))
    message = str(info.value)
    assert "nk.Flatten()" in message and "nk.GlobalAvgPool2d()" in message
    assert "(4, 6, 6)" in message  # the shape it got


def test_linear_on_signals_suggests_the_1d_pool():
    with pytest.raises(ValueError, match=r"needs \(N, D\) features.*nk\.GlobalAvgPool1d\(\)"):
        nk.Linear(3).kernel(_signal())


def test_conv2d_given_dense_data():
    with pytest.raises(ValueError, match=r"Conv2d.*needs \(N, C, H, W\) inputs but gets per-example shape \(5,\)"):
        nk.Sequential(nk.Conv2d(4, 3)).kernel(_dense())


def test_conv1d_given_images():
    with pytest.raises(ValueError, match=r"Conv1d.*needs \(N, C, L\) inputs but gets per-example shape \(2, 6, 6\)"):
        nk.Conv1d(4, 3).kernel(_image())


@pytest.mark.parametrize(
    "arch, x, size",
    [
        (nk.Sequential(nk.Conv2d(4, 7, padding="valid")), _image(), "7 is larger than the 'valid' input size 6"),
        (nk.Conv1d(4, 9, padding="valid"), _signal(), "9 is larger than the 'valid' input size 8"),
        # the second conv sees 8 − 3 + 1 = 6 positions
        (
            nk.Sequential(nk.Conv1d(4, 3, padding="valid"), nk.ReLU(), nk.Conv1d(4, 7, padding="valid")),
            _signal(),
            "7 is larger than the 'valid' input size 6",
        ),
    ],
)
def test_kernel_larger_than_valid_input(arch, x, size):
    with pytest.raises(ValueError, match=re.escape(size)):
        arch.kernel(x)
    with pytest.raises(ValueError, match=re.escape(size)):
        arch.build(tuple(x.shape[1:]))


def test_pool_larger_than_input():
    with pytest.raises(ValueError, match=r"kernel size 9 is larger than the input size 8"):
        nk.AvgPool1d(9).kernel(_signal())


def test_global_pool_of_dense_features():
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d\(\) needs 2 spatial axes"):
        nk.GlobalAvgPool2d().kernel(_dense())


def test_residual_block_that_changes_the_shape():
    arch = nk.Sequential(nk.Linear(8), nk.Residual(nk.ReLU(), nk.Linear(4)))
    with pytest.raises(ValueError, match=r"layer 1 of Sequential.*changes the shape \(8,\) into \(4,\)"):
        arch.kernel(_dense())
    with pytest.raises(ValueError, match=r"changes the shape \(8,\) into \(4,\)"):
        arch.build((5,))


@pytest.mark.parametrize(
    "block",
    [(nk.Linear(5), nk.ReLU()), (nk.ReLU(),), (nk.Linear(5), nk.LayerNorm())],
    ids=["linear-relu", "relu", "linear-layernorm"],
)
def test_residual_block_must_end_with_a_fresh_affine_layer(block):
    with pytest.raises(ValueError, match=r"the block must end with a Linear or Conv layer"):
        nk.Residual(*block).kernel(_dense())


def test_parallel_branches_that_do_not_fit():
    with pytest.raises(ValueError, match=r"needs branches of one shape; got \[\(3,\), \(4,\)\]"):
        nk.Parallel(nk.Linear(3), nk.Linear(4)).kernel(_dense())
    with pytest.raises(ValueError, match=r"at most one branch may end without a Linear or Conv"):
        nk.Parallel(nk.ReLU(), nk.Erf()).kernel(_dense())
    with pytest.raises(ValueError, match=r"combine='concat'\) needs branches of one spatial shape"):
        nk.Parallel(nk.Conv1d(3, 3, padding="valid"), nk.Conv1d(3, 3), combine="concat").kernel(_signal())


# --- bad data -----------------------------------------------------------------------------------------------------


def test_x1_and_x2_with_different_trailing_shapes():
    with pytest.raises(ValueError, match=r"x2 must have the trailing shape of x1, \(5,\); got \(6,\)"):
        nk.Linear(3).kernel(_dense(d=5), _dense(d=6))


def test_x1_and_x2_with_different_dtypes():
    with pytest.raises(ValueError, match=r"x2 must have the dtype and device of x1"):
        nk.Linear(3).kernel(_dense(), _dense().float())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["x1", "x2"])
def test_non_finite_inputs(bad, which):
    x = _dense()
    x[1, 2] = bad
    args = (x, None) if which == "x1" else (_dense(), x)
    with pytest.raises(ValueError, match=rf"{which} contains NaN or Inf values"):
        nk.Sequential(nk.Linear(3), nk.ReLU(), nk.Linear(1)).kernel(*args)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.ones(2, 3, dtype=torch.long), TypeError, r"x1 must be a floating-point torch.Tensor; got torch.int64"),
        (torch.ones(2, 3, dtype=DT).numpy(), TypeError, r"x1 must be a floating-point torch.Tensor"),
        (torch.ones(3, dtype=DT), ValueError, r"x1 must be \(N, D\), \(N, C, L\) or \(N, C, H, W\) with N ≥ 1"),
        (torch.ones(0, 3, dtype=DT), ValueError, r"with N ≥ 1; got \(0, 3\)"),
    ],
    ids=["int", "numpy", "1d", "empty"],
)
def test_data_that_is_not_a_batch_of_float_tensors(x, error, message):
    with pytest.raises(error, match=message):
        nk.Linear(3).kernel(x)


# --- bad arguments to the specs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [nk.Conv1d, nk.Conv2d])
def test_unknown_padding(cls):
    with pytest.raises(ValueError, match=r"padding must be one of \('same', 'valid', 'circular'\); got 'full'"):
        cls(4, 3, padding="full")


@pytest.mark.parametrize(
    "make", [lambda p: nk.Linear(4, parameterization=p), lambda p: nk.Conv2d(4, 3, parameterization=p)]
)
@pytest.mark.parametrize("name", ["meanfield", "NTK"])
def test_unknown_parameterization(make, name):
    pattern = rf"parameterization must be one of \('ntk', 'standard', 'mup'\); got '{name}'"
    with pytest.raises(ValueError, match=pattern):
        make(name)


def test_parallel_with_unknown_combine():
    with pytest.raises(ValueError, match=r"combine must be one of \('sum', 'concat'\); got 'mean'"):
        nk.Parallel(nk.Linear(3), nk.Linear(3), combine="mean")


@pytest.mark.parametrize("padding", ["same", "circular"])
@pytest.mark.parametrize("cls, stride", [(nk.Conv2d, 2), (nk.Conv2d, (1, 2)), (nk.Conv1d, 2)])
def test_padded_convolution_with_stride(cls, stride, padding):
    with pytest.raises(ValueError, match=rf"padding='{padding}' needs stride 1.*use padding='valid'"):
        cls(4, 3, stride=stride, padding=padding)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nk.Linear(0), r"out_features must be a positive int; got 0"),
        (lambda: nk.Conv2d(0, 3), r"out_channels must be a positive int; got 0"),
        (lambda: nk.Conv2d(4, 0), r"kernel_size must be a positive int or 2 positive ints; got 0"),
        (lambda: nk.Conv2d(4, (3, 3, 3)), r"kernel_size must be a positive int or 2 positive ints"),
        (lambda: nk.Conv1d(4, 3, stride=0, padding="valid"), r"stride must be a positive int or 1 positive ints"),
        (lambda: nk.Linear(4, W_std=0.0), r"W_std must be > 0; got 0.0"),
        (lambda: nk.Linear(4, b_std=-0.1), r"b_std must be ≥ 0; got -0.1"),
        (lambda: nk.Linear(4, W_std=float("nan")), r"W_std must be finite; got nan"),
        (lambda: nk.Conv2d(4, 3, b_std=float("inf")), r"b_std must be finite; got inf"),
        (lambda: nk.AvgPool2d(0), r"kernel_size must be a positive int or 2 positive ints"),
    ],
)
def test_bad_layer_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_combinators_need_layer_specs():
    with pytest.raises(TypeError, match=r"layer 1 must be an ntkit layer spec"):
        nk.Sequential(nk.Linear(3), torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"give at least one layer"):
        nk.Sequential()
    with pytest.raises(TypeError, match=r"fn must be a callable on tensors; got int"):
        nk.Elementwise(3)


# --- LayerNorm needs Gaussian inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, x",
    [
        (nk.Sequential(nk.Linear(4), nk.ReLU(), nk.LayerNorm()), _dense()),
        (nk.Sequential(nk.Linear(4), nk.Erf(), nk.LayerNorm(), nk.Linear(1)), _dense()),
        # pooling keeps the status of its input: the average of ReLU features is still not Gaussian
        (nk.Sequential(nk.Conv1d(4, 3), nk.ReLU(), nk.AvgPool1d(2), nk.LayerNorm()), _signal()),
        (nk.Sequential(nk.Linear(5), nk.ReLU(), nk.Residual(nk.Linear(5)), nk.LayerNorm()), _dense()),
    ],
    ids=["relu", "erf", "relu-pool", "relu-residual"],
)
def test_layernorm_after_a_nonlinearity(arch, x):
    with pytest.raises(ValueError, match=r"LayerNorm's infinite-width kernel needs pre-activation \(Gaussian\)"):
        arch.kernel(x)


# --- build() --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_shape", [(), (-1,), (0, 4), (3.0,), (2, "6", 6)])
def test_build_with_a_bad_in_shape(in_shape):
    with pytest.raises(
        ValueError,
        match=re.escape(f"in_shape must be a non-empty tuple of positive ints such as (3, 32, 32); got {in_shape!r}"),
    ):
        nk.Linear(4).build(in_shape)


def test_build_with_an_in_shape_that_does_not_fit():
    with pytest.raises(ValueError, match=r"Conv2d.*needs \(N, C, H, W\) inputs but gets per-example shape \(5,\)"):
        nk.Sequential(nk.Conv2d(4, 3), nk.ReLU()).build((5,))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nk.Linear(4.0), r"out_features must be a positive int; got 4.0 \(float\)"),
        (lambda: nk.Linear(4, W_std="1"), r"W_std must be a real number; got '1' \(str\)"),
        (lambda: nk.Conv1d(4, 3, b_std=True), r"b_std must be a real number; got True \(bool\)"),
        (lambda: nk.Linear(1).build(in_shape=3), r"in_shape must be a tuple of positive ints .*got 3 \(int\)"),
    ],
)
def test_wrong_types_raise_type_errors(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_build_in_shape_values():
    with pytest.raises(ValueError, match=r"in_shape must be a non-empty tuple of positive ints .*got \(3, 0\)"):
        nk.Linear(1).build(in_shape=(3, 0))
