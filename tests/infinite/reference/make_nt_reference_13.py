"""Reference kernels from neural-tangents for issue 13's layers, saved to ``nt_kernels_13.npz`` next to this file.

Run from the repository root, in the benchmark's neural-tangents venv (not the project's own venv):

    bench/.venv-nt/bin/python tests/infinite/reference/make_nt_reference_13.py

Same setup, keys and checks as ``make_nt_reference.py`` (whose helpers this script imports): float64, inputs in
PyTorch layout fed to NT with its channel axis set to 1, every case rebuilt in NT's channels-last layout as a
check, ``kernel_fn(x1, None)`` checked against ``kernel_fn(x1, x1)``; each case stores its ntkit spec in
``<case>/ntkit``. Cases:

* ``act_<name>``: ``Linear(512, W_std=1.3, b_std=0.2), ACT, Linear(1, W_std=1.0, b_std=0.05)`` on vectors (D=5)
  for the activations NT has in closed form (Abs, Sign, Exp, Gaussian, Cos, Rbf, Monomial, RectifiedMonomial,
  ABRelu) and, by NT's Gauss-Hermite ``ElementwiseNumerical`` with deg 800 and exact derivatives, SiLU and
  Softplus; ``act_hermite3`` puts a LayerNorm before Hermite(3) (its closed form needs unit variances).
  ``act_elu`` is NOT from NT: its Gauss-Hermite rule is only ~1e-3 accurate at ELU's kink (deg 500 vs 800), so
  the kernels are computed by hand here, as 1-D adaptive integrals of closed-form conditional expectations
  (``_elu_pair``, ~1e-14).
* ``attn_*``: ``stax.GlobalSelfAttention`` with ``linear_scaling=True`` (ntkit's ``scaling="linear"``), every
  attention mechanism, positional embeddings "SUM" and "CONCAT" (one-hot covariance, ``val_pos_emb=False``), on
  (N, C, L) and (N, C, H, W) inputs, and a transformer block (attention and a 1×1-conv MLP in residuals, each
  followed by LayerNorm).
* ``sumpool_1d`` / ``sumpool_2d``: ``stax.SumPool`` (VALID padding).
* ``conv_transpose_1d`` / ``_2d``: ``stax.ConvTranspose`` with VALID padding (filter ≥ stride, where JAX's and
  torch's output sizes agree).

Accuracy: ~1e-15 relative for the closed forms; the quadrature cases are checked against deg 500 (printed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from make_nt_reference import LN_EPS, N1, N2, D, Layout  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).resolve().parent / "nt_kernels_13.npz"
DEG, DEG_CHECK = 800, 500
VEC, SIG, IMG = (5,), (2, 6), (2, 3, 4)


def _silu(x):
    return x / (1 + jnp.exp(-x))


def _silu_df(x):
    s = 1 / (1 + jnp.exp(-x))
    return s * (1 + x * (1 - s))


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _softplus_df(x):
    return 1 / (1 + jnp.exp(-x))


def _elu_pair(s11: float, s12: float, s22: float) -> tuple[float, float]:
    """E[elu(u) elu(v)] and E[elu'(u) elu'(v)] (α = 1) as a 1-D integral over u of E[· | u]: v | u ~ N(m, s²) with
    m = (Σ12/Σ11) u, s² = Σ22 − Σ12²/Σ11, and for w ~ N(m, s²), t = e^{m + s²/2} Φ(−(m + s²)/s):
    E[elu(w)] = m Φ(m/s) + s ϕ(m/s) + t − Φ(−m/s), E[elu'(w)] = Φ(m/s) + t. scipy's adaptive quad, split at 0."""
    from scipy import integrate, stats

    def inner(u: float, derivative: bool) -> float:
        m, s = s12 / s11 * u, np.sqrt(max(s22 - s12**2 / s11, 0.0))
        if s == 0.0:
            ew, ed = (m, 1.0) if m > 0 else (np.expm1(m), np.exp(m))
        else:
            t = np.exp(m + s * s / 2 + stats.norm.logcdf(-(m + s * s) / s))
            ew = m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s) + t - stats.norm.cdf(-m / s)
            ed = stats.norm.cdf(m / s) + t
        phi, dphi = (u, 1.0) if u > 0 else (np.expm1(u), np.exp(u))
        density = stats.norm.pdf(u / np.sqrt(s11)) / np.sqrt(s11)
        return (dphi * ed if derivative else phi * ew) * density

    def integral(derivative: bool) -> float:
        parts = ((-np.inf, 0.0), (0.0, np.inf))
        return sum(integrate.quad(inner, a, b, args=(derivative,), epsabs=1e-16, epsrel=1e-14, limit=200)[0]
                   for a, b in parts)  # fmt: skip

    return integral(False), integral(True)


def _elu_reference(x1: np.ndarray, x2: np.ndarray) -> dict[str, np.ndarray]:
    """Linear(512, 1.3, 0.2), ELU, Linear(1, 1.0, 0.05) by hand: K1 = 1.3²⟨x, x'⟩/5 + 0.2² = Θ1,
    K = E[φφ] + 0.05², Θ = K + K1·E[φ'φ'] (NT's ElementwiseNumerical is only ~1e-3 accurate at ELU's kink)."""
    out = {}
    for tag, b in (("11", x1), ("12", x2)):
        g = x1 @ b.T / x1.shape[1]
        k1 = 1.3**2 * g + 0.2**2
        v1 = 1.3**2 * np.sum(x1 * x1, 1) / x1.shape[1] + 0.2**2
        v2 = 1.3**2 * np.sum(b * b, 1) / x1.shape[1] + 0.2**2
        pairs = np.array([[_elu_pair(v1[i], k1[i, j], v2[j]) for j in range(b.shape[0])] for i in range(x1.shape[0])])
        out[f"nngp_{tag}"] = pairs[..., 0] + 0.05**2
        out[f"ntk_{tag}"] = out[f"nngp_{tag}"] + k1 * pairs[..., 1]
    return out


def _numerical(fn, df, deg=DEG):
    return stax.ElementwiseNumerical(fn, deg=deg, df=df)


ACTS = {
    "abs": (stax.Abs, "nk.Abs()"),
    "sign": (stax.Sign, "nk.Sign()"),
    "exp": (lambda: stax.Exp(0.7, 0.8), "nk.Exp(0.7, 0.8)"),
    "gaussian": (lambda: stax.Gaussian(1.2, -0.9), "nk.Gaussian(1.2, -0.9)"),
    "gaussian_pos": (lambda: stax.Gaussian(1.0, 0.05), "nk.Gaussian(1.0, 0.05)"),
    "cos": (stax.Cos, "nk.Cos()"),
    "rbf": (lambda: stax.Rbf(0.6), "nk.Rbf(0.6)"),
    "monomial2": (lambda: stax.Monomial(2), "nk.Monomial(2)"),
    "monomial3": (lambda: stax.Monomial(3), "nk.Monomial(3)"),
    "monomial5": (lambda: stax.Monomial(5), "nk.Monomial(5)"),
    "rectified_monomial0": (lambda: stax.RectifiedMonomial(0), "nk.RectifiedMonomial(0)"),
    "rectified_monomial1": (lambda: stax.RectifiedMonomial(1), "nk.RectifiedMonomial(1)"),
    "rectified_monomial2": (lambda: stax.RectifiedMonomial(2), "nk.RectifiedMonomial(2)"),
    "rectified_monomial3": (lambda: stax.RectifiedMonomial(3), "nk.RectifiedMonomial(3)"),
    "abrelu": (lambda: stax.ABRelu(0.3, -1.2), "nk.ABReLU(0.3, -1.2)"),
    "silu": (lambda deg=DEG: _numerical(_silu, _silu_df, deg), "nk.SiLU()"),
    "softplus": (lambda deg=DEG: _numerical(_softplus, _softplus_df, deg), "nk.Softplus()"),
    "elu": (None, "nk.ELU()"),  # not NT: see _elu_reference
}
NUMERICAL = ("silu", "softplus")


def _attention(L: Layout, mechanism="SOFTMAX", pos="NONE", b_std=0.2):
    return stax.GlobalSelfAttention(
        8, 8, 8, 2, linear_scaling=True, W_query_std=1.2, W_key_std=0.9, W_value_std=1.1, W_out_std=1.3,
        b_std=b_std, attention_mechanism=mechanism, pos_emb_type=pos, channel_axis=L.channel_axis,
    )  # fmt: skip


def _ntkit_attention(mechanism="softmax", pos=None, b_std=0.2):
    return (f'nk.SelfAttention(8, n_heads=2, W_query_std=1.2, W_key_std=0.9, W_value_std=1.1, W_out_std=1.3, '
            f'b_std={b_std}, attention="{mechanism}", positional={pos!r})')  # fmt: skip


def _cases():
    cases = {}
    for i, (name, (act, spec)) in enumerate(ACTS.items()):
        cases[f"act_{name}"] = (
            VEC, 100 + i, lambda L, act=act: stax.serial(D(512, 1.3, 0.2), act(), D(1, 1.0, 0.05)),
            f"nk.Sequential(nk.Linear(512, W_std=1.3, b_std=0.2), {spec}, nk.Linear(1, W_std=1.0, b_std=0.05))",
        )  # fmt: skip
    cases["act_hermite3"] = (
        VEC, 130,
        lambda L: stax.serial(D(64, 1.5, 0.1), stax.LayerNorm(axis=-1, eps=LN_EPS), stax.Hermite(3), D(1, 1.0, 0.05)),
        "nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1), nk.LayerNorm(), nk.Hermite(3), "
        "nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip
    head = "nk.Conv1d(8, 1, W_std=1.3, b_std=0.1)"
    tail = "nk.ReLU(), nk.GlobalAvgPool1d(), nk.Linear(1, W_std=1.0, b_std=0.05)"
    variants = [("softmax", "SOFTMAX", None, "NONE"), ("identity", "IDENTITY", None, "NONE"),
                ("relu", "RELU", None, "NONE"), ("abs", "ABS", None, "NONE"),
                ("pos_sum", "SOFTMAX", "sum", "SUM"), ("pos_concat", "SOFTMAX", "concat", "CONCAT")]  # fmt: skip
    for i, (name, mech, pos, nt_pos) in enumerate(variants):
        cases[f"attn_1d_{name}"] = (
            SIG, 140 + i,
            lambda L, mech=mech, nt_pos=nt_pos: stax.serial(
                L.conv(8, (1,), W_std=1.3, b_std=0.1), _attention(L, mech, nt_pos), stax.Relu(), L.gap(),
                D(1, 1.0, 0.05)),
            f"nk.Sequential({head}, {_ntkit_attention(mech.lower(), pos)}, {tail})",
        )  # fmt: skip
    cases["attn_2d_pos_sum"] = (
        IMG, 150,
        lambda L: stax.serial(L.conv(8, (1, 1), W_std=1.3, b_std=0.1), _attention(L, "SOFTMAX", "SUM"),
                              stax.Erf(), L.gap(), D(1, 1.0, 0.05)),
        f"nk.Sequential(nk.Conv2d(8, 1, W_std=1.3, b_std=0.1), {_ntkit_attention('softmax', 'sum')}, nk.Erf(), "
        "nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip

    def residual(branch):
        return stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()), stax.FanInSum())

    cases["attn_transformer_block"] = (
        SIG, 160,
        lambda L: stax.serial(
            L.conv(8, (1,), W_std=1.0, b_std=0.1),
            residual(_attention(L, "SOFTMAX", "NONE", b_std=0.1)), L.layernorm_channels(),
            residual(stax.serial(L.conv(16, (1,), W_std=1.4, b_std=0.1), stax.Relu(),
                                 L.conv(8, (1,), W_std=1.4, b_std=0.1))), L.layernorm_channels(),
            L.gap(), D(1, 1.0, 0.0)),
        f"nk.Sequential(nk.Conv1d(8, 1, W_std=1.0, b_std=0.1), nk.Residual({_ntkit_attention(b_std=0.1)}), "
        "nk.LayerNorm(), nk.Residual(nk.Conv1d(16, 1, W_std=1.4, b_std=0.1), nk.ReLU(), "
        "nk.Conv1d(8, 1, W_std=1.4, b_std=0.1)), nk.LayerNorm(), nk.GlobalAvgPool1d(), "
        "nk.Linear(1, W_std=1.0, b_std=0.0))",
    )  # fmt: skip
    cases["sumpool_1d"] = (
        SIG, 170,
        lambda L: stax.serial(L.conv(8, (3,), W_std=1.4, b_std=0.1), stax.Relu(),
                              stax.SumPool((2,), (2,), "VALID", channel_axis=L.channel_axis), L.gap(), D(1, 1.0, 0.05)),
        'nk.Sequential(nk.Conv1d(8, 3, padding="same", W_std=1.4, b_std=0.1), nk.ReLU(), nk.SumPool1d(2), '
        "nk.GlobalAvgPool1d(), nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip
    cases["sumpool_2d"] = (
        IMG, 171,
        lambda L: stax.serial(L.conv(8, (3, 3), W_std=1.4, b_std=0.1), stax.Erf(),
                              stax.SumPool((2, 2), (1, 2), "VALID", channel_axis=L.channel_axis), L.gap(),
                              D(1, 1.0, 0.05)),
        'nk.Sequential(nk.Conv2d(8, 3, padding="same", W_std=1.4, b_std=0.1), nk.Erf(), '
        "nk.SumPool2d(2, stride=(1, 2)), nk.GlobalAvgPool2d(), nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip

    def conv_transpose(L: Layout, out, k, stride):
        dn = {1: (("NHC", "HIO", "NHC") if L.cl else ("NCH", "IOH", "NCH")),
              2: (("NHWC", "HWIO", "NHWC") if L.cl else ("NCHW", "IOHW", "NCHW"))}[len(k)]  # fmt: skip
        return stax.ConvTranspose(out, k, strides=stride, padding="VALID", W_std=1.3, b_std=0.2, dimension_numbers=dn)

    cases["conv_transpose_1d"] = (
        SIG, 180,
        lambda L: stax.serial(L.conv(8, (1,), W_std=1.2, b_std=0.1), stax.Relu(), conv_transpose(L, 8, (3,), (2,)),
                              stax.Erf(), stax.Flatten(), D(1, 1.0, 0.05)),
        "nk.Sequential(nk.Conv1d(8, 1, W_std=1.2, b_std=0.1), nk.ReLU(), "
        "nk.ConvTranspose1d(8, 3, stride=2, W_std=1.3, b_std=0.2), nk.Erf(), nk.Flatten(), "
        "nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip
    cases["conv_transpose_2d"] = (
        IMG, 181,
        lambda L: stax.serial(L.conv(8, (1, 1), W_std=1.2, b_std=0.1), stax.Relu(),
                              conv_transpose(L, 8, (2, 3), (2, 1)), stax.Relu(), L.gap(), D(1, 1.0, 0.05)),
        "nk.Sequential(nk.Conv2d(8, 1, W_std=1.2, b_std=0.1), nk.ReLU(), "
        "nk.ConvTranspose2d(8, (2, 3), stride=(2, 1), W_std=1.3, b_std=0.2), nk.ReLU(), nk.GlobalAvgPool2d(), "
        "nk.Linear(1, W_std=1.0, b_std=0.05))",
    )  # fmt: skip
    return cases


def _kernels(layer, L: Layout, x1: np.ndarray, x2: np.ndarray) -> dict[str, np.ndarray]:
    """As make_nt_reference._kernels, but NaN is allowed on the diagonal of the x1-vs-x1 kernels: NT's
    RectifiedMonomial differentiates arccos at θ = 0 there (the test skips those entries)."""
    _, _, kernel_fn = layer
    a, b = jnp.asarray(L.to_nt(x1)), jnp.asarray(L.to_nt(x2))
    k11, k12 = kernel_fn(a, None, ("nngp", "ntk")), kernel_fn(a, b, ("nngp", "ntk"))
    out = {"nngp_11": k11[0], "ntk_11": k11[1], "nngp_12": k12[0], "ntk_12": k12[1]}
    out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    off_diagonal = ~np.eye(N1, dtype=bool)
    for k, v in out.items():
        assert np.isfinite(v[off_diagonal] if k.endswith("11") else v).all(), k
    return out


def main() -> int:
    arrays = {}
    for name, (shape, seed, build, spec) in _cases().items():
        rng = np.random.default_rng(seed)
        x1, x2 = rng.standard_normal((N1, *shape)), rng.standard_normal((N2, *shape))
        if name == "act_elu":
            arrays.update({f"{name}/{k}": v for k, v in _elu_reference(x1, x2).items()})
            arrays[f"{name}/x1"], arrays[f"{name}/x2"], arrays[f"{name}/ntkit"] = x1, x2, np.array(spec)
            print(f"{name:28s} by hand (scipy quad), not NT")
            continue
        res = _kernels(build(Layout()), Layout(), x1, x2)
        note = ""
        if len(shape) > 1:
            res_cl = _kernels(build(Layout(channels_last=True)), Layout(channels_last=True), x1, x2)
            err = max(np.nanmax(np.abs(res[k] - res_cl[k]) / np.nanmax(np.abs(res[k]))) for k in res)
            assert err < 1e-12, (name, err)
            note += f" layout-err={err:.1e}"
        act = name.removeprefix("act_")
        if act in NUMERICAL:
            coarse = stax.serial(D(512, 1.3, 0.2), ACTS[act][0](DEG_CHECK), D(1, 1.0, 0.05))
            res_c = _kernels(coarse, Layout(), x1, x2)
            err = max(np.max(np.abs(res[k] - res_c[k]) / np.abs(res[k])) for k in res)
            assert err < 1e-11, (name, err)
            note += f" deg{DEG_CHECK}-vs-deg{DEG}={err:.1e}"
        arrays[f"{name}/x1"], arrays[f"{name}/x2"] = x1, x2
        for k, v in res.items():
            arrays[f"{name}/{k}"] = v
        arrays[f"{name}/ntkit"] = np.array(spec)
        finite = all(np.isfinite(v).all() for v in res.values())  # False: NaN on the x1-vs-x1 diagonal
        print(f"{name:28s} ntk_12[0,0]={res['ntk_12'][0, 0]: .6f} finite={finite}{note}")
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
