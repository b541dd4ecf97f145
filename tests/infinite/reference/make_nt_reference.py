"""Reference infinite-width NNGP / NTK kernels from neural-tangents, saved to ``nt_kernels.npz`` next to this file.

Run from the repository root, in the benchmark's neural-tangents venv (not the project's own venv):

    bench/.venv-nt/bin/python tests/infinite/reference/make_nt_reference.py

Every case is built with ``neural_tangents.stax`` (NTK parameterization unless stated), float64 throughout
(``jax_enable_x64``), and evaluated with ``kernel_fn(x1, x2, ("nngp", "ntk"))``. Inputs are made here with
``np.random.default_rng(seed)`` (standard normal, float64) and are stored, and fed to NT, in PyTorch layout:
vectors (N, D), 1-D signals (N, C, L), images (N, C, H, W). NT is told the layout (``dimension_numbers`` for
``Conv``, ``channel_axis=1`` for pooling / ``LayerNorm``); as a check, every case is also rebuilt in NT's
native channels-last layout, run on transposed inputs, and must give the same kernels.

Keys in the npz, for each case ``<case>``:
    <case>/x1       (4, ...)  float64, PyTorch layout
    <case>/x2       (3, ...)  float64, PyTorch layout
    <case>/nngp_11  (4, 4)    kernel_fn(x1, None)
    <case>/ntk_11   (4, 4)
    <case>/nngp_12  (4, 3)    kernel_fn(x1, x2)
    <case>/ntk_12   (4, 3)
    <case>/ntkit    0-d unicode string: the equivalent ntkit spec (same as the comments below)

Accuracy (checked against an independent numpy implementation of every case): ~1e-15 relative, except
  * act_tanh (Gauss-Hermite quadrature, deg 800): ~2e-14;  act_gelu and conv1d (GELU): ~1e-13;
  * the DIAGONAL of ntk_11 in nets with ReLU / LeakyReLU / Abs: NT can be up to ~1e-8 relative off there (seen:
    up to 7.5e-9). NT takes the variance K(x,x) from a separately computed diagonal that can differ from the
    kernel's own diagonal by 1 ulp; the arc-cosine angle sqrt(K11*K22 - K12^2) then becomes ~1e-8 instead of 0,
    and E[relu'(u) relu'(v)] = (pi - angle) / (2 pi) inherits it. An implementation that is exact on the diagonal
    differs from NT there by that much, so compare those entries with rtol ~1e-7.
"""

# Equivalent ntkit specs (``import ntkit as nk``); every W_std / b_std is spelled out, b_std=None means no bias
# (identical to b_std=0.0 in the NTK parameterization, NOT in the standard one), and the NTK parameterization is
# meant unless parameterization="standard" is written. Widths are irrelevant to the NTK-parameterized kernels.
#
# mlp_relu             (vectors, D=5)
#   nk.Sequential(nk.Linear(512, W_std=1.5, b_std=0.1), nk.ReLU(), nk.Linear(512, W_std=1.5, b_std=0.1),
#                 nk.ReLU(), nk.Linear(1, W_std=1.0, b_std=0.0))
# act_<name>           (vectors, D=5), ACT one of ReLU(), LeakyReLU(0.1), Erf(), GELU(), Sin(), Tanh(),
#                      Identity(), Abs():
#   nk.Sequential(nk.Linear(512, W_std=1.3, b_std=0.2), ACT, nk.Linear(1, W_std=1.0, b_std=0.05))
#   (act_abs: |x|; nk.Abs is not in the planned layer list - skip the case if ntkit lacks it.
#    act_tanh: NT has no closed form; computed by Gauss-Hermite quadrature, see TANH_DEG below.)
# deep_erf             (vectors, D=5)
#   nk.Sequential(*[nk.Linear(256, W_std=2.0, b_std=0.3), nk.Erf()] * 4, nk.Linear(1, W_std=1.0, b_std=0.0))
# conv2d_same          (images 2x6x6)
#   nk.Sequential(nk.Conv2d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(),
#                 nk.Conv2d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(),
#                 nk.Flatten(), nk.Linear(1, W_std=1.0, b_std=0.1))
# conv2d_valid_stride  (images 2x9x9; 9 -> 4 after the conv, -> 2 after the pool)
#   nk.Sequential(nk.Conv2d(16, 3, stride=2, padding="valid", W_std=1.4, b_std=0.1), nk.ReLU(),
#                 nk.AvgPool2d(2, stride=2), nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.1))
# conv2d_circular_pool (images 2x6x6; 6 -> 6 -> 3 -> 3)
#   nk.Sequential(nk.Conv2d(8, 3, padding="circular", W_std=1.3, b_std=0.2), nk.Erf(),
#                 nk.AvgPool2d(2, stride=2),
#                 nk.Conv2d(8, 3, padding="circular", W_std=1.5, b_std=0.1), nk.ReLU(),
#                 nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.0))
# conv1d               (signals 2x8; 8 -> 8 -> 4 -> 2)
#   nk.Sequential(nk.Conv1d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool1d(2, stride=2),
#                 nk.Conv1d(16, 3, padding="valid", W_std=1.3, b_std=0.2), nk.GELU(),
#                 nk.GlobalAvgPool1d(), nk.Linear(1, W_std=1.0, b_std=0.05))
# (All LayerNorm cases: no epsilon, no affine; the kernel is K(x,x') / sqrt(K(x,x) K(x',x')) at each position.)
# layernorm_mlp        (vectors, D=5)
#   nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1), nk.LayerNorm(), nk.ReLU(), nk.Linear(1, W_std=1.0, b_std=0.1))
# layernorm_conv       (images 2x6x6) - LayerNorm over the channel axis only, i.e. per pixel
#   nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1), nk.LayerNorm(), nk.ReLU(),
#                 nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.1))
# layernorm_conv_chw   (images 2x6x6) - EXTRA case: LayerNorm over channels AND pixels (C, H, W) jointly,
#                      as torch.nn.LayerNorm([C, H, W]) would; same net otherwise. Skip if ntkit lacks it.
# residual_mlp         (vectors, D=5)
#   nk.Sequential(nk.Linear(64, W_std=1.0, b_std=0.1),
#                 nk.Residual(nk.ReLU(), nk.Linear(64, W_std=1.0, b_std=0.1)),
#                 nk.ReLU(), nk.Linear(1, W_std=1.0, b_std=0.0))
# residual_conv        (images 2x6x6)
#   nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1),
#                 nk.Residual(nk.ReLU(), nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1)),
#                 nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.0))
# parallel_concat      (vectors, D=5)
#   nk.Sequential(nk.Linear(32, W_std=1.5, b_std=0.1),
#                 nk.Parallel(nk.Sequential(nk.ReLU(), nk.Linear(32, W_std=1.2, b_std=0.1)),
#                             nk.Sequential(nk.Erf(), nk.Linear(32, W_std=1.6, b_std=0.2)), combine="concat"),
#                 nk.Linear(1, W_std=1.0, b_std=0.1))
#   (branches of EQUAL width 32: the concatenated kernel is the width-weighted mean of the branch kernels,
#    here the plain mean.)
# parallel_sum         as parallel_concat with combine="sum" (the kernels of the branches add up)
# standard_param       (vectors, D=5) - standard parameterization; the NTK depends on the hidden width 64
#   nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1, parameterization="standard"), nk.ReLU(),
#                 nk.Linear(1, W_std=1.0, b_std=None, parameterization="standard"))
#   (last layer has NO bias; in the standard parameterization a bias, even with b_std=0.0, adds 1 to the NTK.)

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural_tangents imports tensorflow (via tf2jax)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

warnings.filterwarnings("ignore", message=".*FanIn.*")
warnings.filterwarnings("ignore", message=".*Numerical Activation Layer.*")

OUT = Path(__file__).resolve().parent / "nt_kernels.npz"
N1, N2 = 4, 3
LN_EPS = 0.0  # NT's default LayerNorm eps is 1e-12 (added to the variance); 0 gives the exact K / sqrt(K11 K22)
TANH_DEG = 800  # Gauss-Hermite points per dimension for tanh (act_tanh), see _tanh_accuracy
TANH_DEG_CHECK = 500  # the error estimate: deg 500 vs 800


class Layout:
    """Layer factories for one data layout: PyTorch's channels-first (default) or NT's native channels-last."""

    def __init__(self, channels_last: bool = False):
        self.cl = channels_last
        self.channel_axis = -1 if channels_last else 1

    def conv(self, out, k, *, stride=None, padding="SAME", W_std, b_std):
        if len(k) == 1:
            dn = ("NHC", "HIO", "NHC") if self.cl else ("NCH", "OIH", "NCH")
        else:
            dn = ("NHWC", "HWIO", "NHWC") if self.cl else ("NCHW", "OIHW", "NCHW")
        return stax.Conv(out, k, strides=stride, padding=padding, W_std=W_std, b_std=b_std, dimension_numbers=dn)

    def avgpool(self, k, stride):
        return stax.AvgPool(k, strides=stride, padding="VALID", channel_axis=self.channel_axis)

    def gap(self):
        return stax.GlobalAvgPool(channel_axis=self.channel_axis)

    def layernorm_channels(self):
        return stax.LayerNorm(axis=self.channel_axis, eps=LN_EPS, channel_axis=self.channel_axis)

    def layernorm_chw(self):
        axes = (1, 2, 3)  # all non-batch axes, in either layout
        return stax.LayerNorm(axis=axes, eps=LN_EPS, channel_axis=self.channel_axis)

    def to_nt(self, x: np.ndarray) -> np.ndarray:
        """PyTorch layout -> the layout these layers expect."""
        return np.moveaxis(x, 1, -1) if (self.cl and x.ndim > 2) else x


def D(out, W_std, b_std, **kw):
    return stax.Dense(out, W_std=W_std, b_std=b_std, **kw)


def _tanh(deg: int | None = None):
    return stax.ElementwiseNumerical(jnp.tanh, deg=deg or TANH_DEG, df=lambda x: 1.0 - jnp.tanh(x) ** 2)


ACTS = {
    "relu": (stax.Relu, "nk.ReLU()"),
    "leaky_relu": (lambda: stax.LeakyRelu(0.1), "nk.LeakyReLU(0.1)"),
    "erf": (stax.Erf, "nk.Erf()"),
    "gelu": (lambda: stax.Gelu(approximate=False), "nk.GELU()"),
    "sin": (stax.Sin, "nk.Sin()"),
    "tanh": (_tanh, "nk.Tanh()"),
    "identity": (stax.Identity, "nk.Identity()"),
    "abs": (stax.Abs, "nk.Abs()"),
}

VEC = (5,)
IMG = (2, 6, 6)
SIG = (2, 8)


def _cases():
    """name -> (input shape without batch, seed, builder(Layout) -> stax layer, ntkit spec string)."""
    cases = {}
    cases["mlp_relu"] = (
        VEC,
        1,
        lambda L: stax.serial(D(512, 1.5, 0.1), stax.Relu(), D(512, 1.5, 0.1), stax.Relu(), D(1, 1.0, 0.0)),
        "nk.Sequential(nk.Linear(512, W_std=1.5, b_std=0.1), nk.ReLU(), nk.Linear(512, W_std=1.5, b_std=0.1), "
        "nk.ReLU(), nk.Linear(1, W_std=1.0, b_std=0.0))",
    )
    for i, (name, (act, spec)) in enumerate(ACTS.items()):
        cases[f"act_{name}"] = (
            VEC,
            10 + i,
            lambda L, act=act: stax.serial(D(512, 1.3, 0.2), act(), D(1, 1.0, 0.05)),
            f"nk.Sequential(nk.Linear(512, W_std=1.3, b_std=0.2), {spec}, nk.Linear(1, W_std=1.0, b_std=0.05))",
        )
    cases["deep_erf"] = (
        VEC,
        20,
        lambda L: stax.serial(*[stax.serial(D(256, 2.0, 0.3), stax.Erf()) for _ in range(4)], D(1, 1.0, 0.0)),
        "nk.Sequential(*[nk.Linear(256, W_std=2.0, b_std=0.3), nk.Erf()] * 4, nk.Linear(1, W_std=1.0, b_std=0.0))",
    )
    cases["conv2d_same"] = (
        IMG,
        30,
        lambda L: stax.serial(
            L.conv(16, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
            stax.Relu(),
            L.conv(16, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
            stax.Relu(),
            stax.Flatten(),
            D(1, 1.0, 0.1),
        ),
        'nk.Sequential(nk.Conv2d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), '
        'nk.Conv2d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), nk.Flatten(), '
        "nk.Linear(1, W_std=1.0, b_std=0.1))",
    )
    cases["conv2d_valid_stride"] = (
        (2, 9, 9),
        31,
        lambda L: stax.serial(
            L.conv(16, (3, 3), stride=(2, 2), padding="VALID", W_std=1.4, b_std=0.1),
            stax.Relu(),
            L.avgpool((2, 2), (2, 2)),
            L.gap(),
            D(1, 1.0, 0.1),
        ),
        'nk.Sequential(nk.Conv2d(16, 3, stride=2, padding="valid", W_std=1.4, b_std=0.1), nk.ReLU(), '
        "nk.AvgPool2d(2, stride=2), nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.1))",
    )
    cases["conv2d_circular_pool"] = (
        IMG,
        32,
        lambda L: stax.serial(
            L.conv(8, (3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2),
            stax.Erf(),
            L.avgpool((2, 2), (2, 2)),
            L.conv(8, (3, 3), padding="CIRCULAR", W_std=1.5, b_std=0.1),
            stax.Relu(),
            L.gap(),
            D(1, 1.0, 0.0),
        ),
        'nk.Sequential(nk.Conv2d(8, 3, padding="circular", W_std=1.3, b_std=0.2), nk.Erf(), '
        'nk.AvgPool2d(2, stride=2), nk.Conv2d(8, 3, padding="circular", W_std=1.5, b_std=0.1), nk.ReLU(), '
        "nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.0))",
    )
    cases["conv1d"] = (
        SIG,
        33,
        lambda L: stax.serial(
            L.conv(16, (3,), padding="SAME", W_std=1.4, b_std=0.1),
            stax.Relu(),
            L.avgpool((2,), (2,)),
            L.conv(16, (3,), padding="VALID", W_std=1.3, b_std=0.2),
            stax.Gelu(approximate=False),
            L.gap(),
            D(1, 1.0, 0.05),
        ),
        'nk.Sequential(nk.Conv1d(16, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), '
        'nk.AvgPool1d(2, stride=2), nk.Conv1d(16, 3, padding="valid", W_std=1.3, b_std=0.2), nk.GELU(), '
        "nk.GlobalAvgPool1d(), nk.Linear(1, W_std=1.0, b_std=0.05))",
    )
    cases["layernorm_mlp"] = (
        VEC,
        40,
        lambda L: stax.serial(D(64, 1.5, 0.1), stax.LayerNorm(axis=-1, eps=LN_EPS), stax.Relu(), D(1, 1.0, 0.1)),
        "nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1), nk.LayerNorm(), nk.ReLU(), "
        "nk.Linear(1, W_std=1.0, b_std=0.1))",
    )
    cases["layernorm_conv"] = (
        IMG,
        41,
        lambda L: stax.serial(
            L.conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
            L.layernorm_channels(),
            stax.Relu(),
            L.gap(),
            D(1, 1.0, 0.1),
        ),
        'nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1), nk.LayerNorm(), nk.ReLU(), '
        "nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.1))  # LayerNorm over channels, per pixel",
    )
    cases["layernorm_conv_chw"] = (
        IMG,
        42,
        lambda L: stax.serial(
            L.conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
            L.layernorm_chw(),
            stax.Relu(),
            L.gap(),
            D(1, 1.0, 0.1),
        ),
        'nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1), nk.LayerNorm(<over C, H, W>), '
        "nk.ReLU(), nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.1))  # extra case",
    )
    cases["residual_mlp"] = (
        VEC,
        50,
        lambda L: stax.serial(
            D(64, 1.0, 0.1),
            stax.serial(
                stax.FanOut(2),
                stax.parallel(stax.serial(stax.Relu(), D(64, 1.0, 0.1)), stax.Identity()),
                stax.FanInSum(),
            ),
            stax.Relu(),
            D(1, 1.0, 0.0),
        ),
        "nk.Sequential(nk.Linear(64, W_std=1.0, b_std=0.1), "
        "nk.Residual(nk.ReLU(), nk.Linear(64, W_std=1.0, b_std=0.1)), nk.ReLU(), nk.Linear(1, W_std=1.0, b_std=0.0))",
    )
    cases["residual_conv"] = (
        IMG,
        51,
        lambda L: stax.serial(
            L.conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
            stax.serial(
                stax.FanOut(2),
                stax.parallel(
                    stax.serial(stax.Relu(), L.conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1)), stax.Identity()
                ),
                stax.FanInSum(),
            ),
            L.gap(),
            D(1, 1.0, 0.0),
        ),
        'nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1), '
        'nk.Residual(nk.ReLU(), nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1)), '
        "nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.0))",
    )
    fan_ins = (("parallel_concat", stax.FanInConcat, "concat"), ("parallel_sum", stax.FanInSum, "sum"))
    for name, fan_in, combine in fan_ins:
        cases[name] = (
            VEC,
            60 if combine == "concat" else 61,
            lambda L, fan_in=fan_in: stax.serial(
                D(32, 1.5, 0.1),
                stax.FanOut(2),
                stax.parallel(stax.serial(stax.Relu(), D(32, 1.2, 0.1)), stax.serial(stax.Erf(), D(32, 1.6, 0.2))),
                fan_in(),
                D(1, 1.0, 0.1),
            ),
            "nk.Sequential(nk.Linear(32, W_std=1.5, b_std=0.1), "
            "nk.Parallel(nk.Sequential(nk.ReLU(), nk.Linear(32, W_std=1.2, b_std=0.1)), "
            f'nk.Sequential(nk.Erf(), nk.Linear(32, W_std=1.6, b_std=0.2)), combine="{combine}"), '
            "nk.Linear(1, W_std=1.0, b_std=0.1))",
        )
    cases["standard_param"] = (
        VEC,
        70,
        lambda L: stax.serial(
            D(64, 1.5, 0.1, parameterization="standard"), stax.Relu(), D(1, 1.0, None, parameterization="standard")
        ),
        'nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1, parameterization="standard"), nk.ReLU(), '
        'nk.Linear(1, W_std=1.0, b_std=None, parameterization="standard"))  # hidden width 64 matters for the NTK',
    )
    return cases


def _kernels(layer, L: Layout, x1: np.ndarray, x2: np.ndarray) -> dict[str, np.ndarray]:
    _, _, kernel_fn = layer
    a, b = jnp.asarray(L.to_nt(x1)), jnp.asarray(L.to_nt(x2))
    k11 = kernel_fn(a, None, ("nngp", "ntk"))
    k12 = kernel_fn(a, b, ("nngp", "ntk"))
    out = {"nngp_11": k11[0], "ntk_11": k11[1], "nngp_12": k12[0], "ntk_12": k12[1]}
    out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    for k, v in out.items():
        assert v.shape == (x1.shape[0], x1.shape[0] if k.endswith("11") else x2.shape[0]), (k, v.shape)
        assert v.dtype == np.float64 and np.isfinite(v).all(), k
    return out


# --- hand-written closed forms for a few cases, as a check of the setup -------------------------------------------


def _relu_pair(k12, k11, k22):
    """E[relu(u)relu(v)] and E[1(u>0)1(v>0)] for a centred Gaussian pair."""
    s = np.sqrt(np.maximum(k11 * k22 - k12**2, 0.0))
    t = np.arctan2(s, k12)  # the angle; arccos(k12 / sqrt(k11 k22)) loses half the digits near the diagonal
    return (s + (np.pi - t) * k12) / (2 * np.pi), (np.pi - t) / (2 * np.pi)


def _hand_check(name, x1, x2, res):
    if name not in ("act_identity", "mlp_relu", "standard_param", "act_erf"):
        return None
    xs = np.concatenate([x1, x2])
    d = xs.shape[1]
    g = xs @ xs.T / d
    if name == "act_identity":
        k1 = 1.3**2 * g + 0.2**2
        nngp = k1 + 0.05**2
        ntk = nngp + k1
    elif name == "mlp_relu":
        k, t = 1.5**2 * g + 0.1**2, 1.5**2 * g + 0.1**2
        for w, b in ((1.5, 0.1), (1.0, 0.0)):
            dg = np.diag(k)
            r, r0 = _relu_pair(k, dg[:, None], dg[None, :])
            k, t = w**2 * r + b**2, w**2 * r + b**2 + w**2 * t * r0
        nngp, ntk = k, t
    elif name == "standard_param":
        k1 = 1.5**2 * g + 0.1**2
        t1 = d * g + 1.0  # d(z)/d(W) = x (sum over the 5 inputs), d(z)/d(b) = 1
        dg = np.diag(k1)
        r, r0 = _relu_pair(k1, dg[:, None], dg[None, :])
        nngp = 1.0**2 * r  # no bias in the last layer
        # width 64 times the mean post-activation product, plus W_std^2 * Theta * E[phi' phi']
        ntk = 64 * r + 1.0**2 * t1 * r0
    elif name == "act_erf":
        k1 = 1.3**2 * g + 0.2**2
        dg = np.diag(k1)
        den = np.sqrt((1 + 2 * dg[:, None]) * (1 + 2 * dg[None, :]))
        e = 2 / np.pi * np.arcsin(2 * k1 / den)
        ed = 4 / np.pi / np.sqrt(den**2 - 4 * k1**2)
        nngp = e + 0.05**2
        ntk = nngp + k1 * ed
    else:
        return None
    n1 = x1.shape[0]
    errs = []
    for kind, ref in (("nngp", nngp), ("ntk", ntk)):
        errs.append(np.max(np.abs(res[f"{kind}_11"] - ref[:n1, :n1]) / np.abs(ref[:n1, :n1])))
        errs.append(np.max(np.abs(res[f"{kind}_12"] - ref[:n1, n1:]) / np.abs(ref[:n1, n1:])))
    return max(errs)


def main() -> int:
    cases = _cases()
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, seed, build, spec) in cases.items():
        rng = np.random.default_rng(seed)
        x1 = rng.standard_normal((N1, *shape))
        x2 = rng.standard_normal((N2, *shape))
        res = _kernels(build(Layout()), Layout(), x1, x2)

        # Same network in NT's native channels-last layout, on transposed inputs: must agree.
        if len(shape) > 1:
            res_cl = _kernels(build(Layout(channels_last=True)), Layout(channels_last=True), x1, x2)
            layout_err = max(np.max(np.abs(res[k] - res_cl[k]) / np.max(np.abs(res[k]))) for k in res)
            assert layout_err < 1e-12, (name, layout_err)
        else:
            layout_err = None

        # kernel_fn(x1, None) must equal kernel_fn(x1, x1).
        _, _, kfn = build(Layout())
        k11b = kfn(jnp.asarray(x1), jnp.asarray(x1), ("nngp", "ntk"))
        self_err = max(
            np.max(np.abs(res["nngp_11"] - np.asarray(k11b[0]))) / np.max(np.abs(res["nngp_11"])),
            np.max(np.abs(res["ntk_11"] - np.asarray(k11b[1]))) / np.max(np.abs(res["ntk_11"])),
        )
        assert self_err < 1e-10, (name, self_err)

        # act_tanh is a quadrature: estimate its error from a coarser rule.
        tanh_err = None
        if name == "act_tanh":
            coarse = stax.serial(D(512, 1.3, 0.2), _tanh(TANH_DEG_CHECK), D(1, 1.0, 0.05))
            res_c = _kernels(coarse, Layout(), x1, x2)
            tanh_err = max(np.max(np.abs(res[k] - res_c[k]) / np.abs(res[k])) for k in res)
            assert tanh_err < 1e-12, tanh_err

        hand = _hand_check(name, x1, x2, res)
        if hand is not None:
            # 1e-7, not 1e-12: NT's ReLU NTK on the x1-vs-x1 diagonal can be ~1e-8 off (see the README).
            assert hand < 1e-7, (name, hand)

        arrays[f"{name}/x1"] = x1
        arrays[f"{name}/x2"] = x2
        for k, v in res.items():
            arrays[f"{name}/{k}"] = v
        arrays[f"{name}/ntkit"] = np.array(spec)
        print(
            f"{name:22s} x1{tuple(x1.shape)} x2{tuple(x2.shape)}  "
            f"nngp_11[0,0]={res['nngp_11'][0, 0]:.6f} ntk_11[0,0]={res['ntk_11'][0, 0]:.6f}"
            + ("" if layout_err is None else f"  layout-err={layout_err:.1e}")
            + f"  x1-vs-None-err={self_err:.1e}"
            + ("" if hand is None else f"  hand-check-err={hand:.1e}")
            + ("" if tanh_err is None else f"  deg{TANH_DEG_CHECK}-vs-deg{TANH_DEG}={tanh_err:.1e}")
        )

    np.savez_compressed(OUT, **arrays)
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases); "
        f"neural-tangents {nt.__version__}, jax {jax.__version__}, numpy {np.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
