"""Global self-attention in the infinite-width limit (Hron, Bahri, Sohl-Dickstein & Novak, *Infinite attention:
NNGP and NTK for deep attention networks*, ICML 2020), with neural-tangents' ``stax.GlobalSelfAttention``
conventions.

Every position of a (N, C, L) sequence or a (N, C, H, W) image is a token (images: the H·W pixels in row-major
order). For one head h, with the layer input X (T tokens × C channels), N(0, 1) weight matrices and
C_k = C (+ C with ``positional="concat"``):

    keys  = X_k W_K^h,   queries = keys ("linear") or X_k W_Q^h ("sqrt"),
    G^h   = (σ_Q σ_K / (C_k · d_k^s)) · queries · keysᵀ,   s = 1 ("linear") or 1/2 ("sqrt"),
    head  = attention(G^h) · X W_V^h,
    out   = (σ_O σ_V / √(d_v · n_heads · C)) · concat_h(head) · W_O + b_std · b,

where attention is a row-wise softmax over the key positions, the identity, relu or abs, and X_k = X, X + P
(``positional="sum"``) or [X, P] (``"concat"``) with P a trained N(0, 1) positional embedding of shape (C, T).

Under "linear" scaling the keys and queries are tied (W_Q = W_K), so G^h converges, as d_k → ∞, to the
deterministic matrix G = σ_Q σ_K · K̃, K̃ = the input's own covariance between positions (plus the embedding's,
I, weighted by 1 ("sum") or ½ each ("concat"), neural-tangents' interpolation). With heads and value widths →
∞ the output is Gaussian with

    K'(x, x')  = σ_O²σ_V² · A(x) K(x, x') A(x')ᵀ + b_std²,         A(x) = attention(G(x)),
    Θ'(x, x')  = σ_O²σ_V² · A(x) (Θ(x, x') + 2 K(x, x')) A(x')ᵀ + b_std²,

the factor 2 counting the value and output weights; the key weights' contribution vanishes (neural-tangents
``GlobalSelfAttention.kernel_fn``; Hron et al. 2020, Theorem 3). Under the usual 1/√d_k ("sqrt") scaling G^h
stays random in the limit and the kernel is an integral with no closed form: ``build`` and
``ntkit.monte_carlo_kernel`` support it, and ``kernel`` refuses it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkit._validation import one_of, positive_int, real_number
from ntkit.infinite.kernel import Kernel, set_self_pairs
from ntkit.infinite.layers import _BUILD, Layer

SCALINGS = ("linear", "sqrt")
ATTENTIONS = ("softmax", "identity", "relu", "abs")
POSITIONALS = (None, "sum", "concat")


def ntk_only_build(layer: Layer) -> None:
    """A ValueError when ``arch.build(..., parameterization=)`` asks ``layer`` (NTK parameterization only) for
    another parameterization, instead of silently building the NTK one."""
    ctx = _BUILD.get()
    if ctx is not None and ctx.parameterization not in (None, "ntk"):
        raise ValueError(f"{layer!r} is built in the NTK parameterization only; got "
                         f"build(parameterization={ctx.parameterization!r})")  # fmt: skip


def _attention_fn(attention: str):
    return {
        "softmax": lambda g: torch.softmax(g, dim=-1),
        "identity": lambda g: g,
        "relu": torch.relu,
        "abs": torch.abs,
    }[attention]


def _tokens(t: torch.Tensor, spatial: int, lead: int) -> torch.Tensor:
    """(*lead, h, h', w, w') → (*lead, h·w, h'·w'): pair axes as (token, token') matrices."""
    if spatial == 1:
        return t
    shape = t.shape
    t = t.permute(*range(lead), lead, lead + 2, lead + 1, lead + 3)
    return t.reshape(*shape[:lead], shape[lead] * shape[lead + 2], shape[lead + 1] * shape[lead + 3])


def _untokens(t: torch.Tensor, sizes: tuple[int, ...], lead: int) -> torch.Tensor:
    """The inverse of :func:`_tokens` for spatial sizes ``sizes``."""
    if len(sizes) == 1:
        return t
    h, w = sizes
    t = t.reshape(*t.shape[:lead], h, w, h, w)
    return t.permute(*range(lead), lead, lead + 2, lead + 1, lead + 3)


class SelfAttention(Layer):
    """Global self-attention over the positions of (N, C, L) sequences or (N, C, H, W) images.

    Parameters
    ----------
    out_channels:
        Output channels (the width of the finite output projection; irrelevant to the kernel).
    n_heads:
        Heads of the finite module (≥ 1); the limit has infinitely many.
    key_channels, value_channels:
        d_k and d_v per head of the finite module; None: ``out_channels``.
    W_query_std, W_key_std, W_value_std, W_out_std:
        Weight scales; the kernel depends on σ_Q·σ_K and σ_O·σ_V only (NTK parameterization).
    b_std:
        Scale of the output bias (0: none).
    scaling:
        "linear": 1/d_k with tied keys and queries (closed-form kernel); "sqrt": the usual 1/√d_k with separate
        weights (``build`` and ``monte_carlo_kernel`` only).
    attention:
        "softmax" (over key positions), "identity", "relu" or "abs", applied to the scores G.
    positional:
        None, "sum" or "concat": a trained N(0, 1) positional embedding added to, or concatenated with, the input
        of the keys and queries (not of the values), as neural-tangents' ``pos_emb_type`` with
        ``val_pos_emb=False`` and one-hot (identity) embedding covariance.
    parameterization:
        "ntk" (the only one with this layer).

    The kernel equations are in the module docstring.

    Raises
    ------
    ValueError
        On n_heads < 1, unknown options, inputs without spatial axes and, from ``kernel``, scaling="sqrt".

    References
    ----------
    Hron, Bahri, Sohl-Dickstein & Novak, *Infinite attention: NNGP and NTK for deep attention networks*, ICML 2020;
    neural-tangents 0.6.5, ``stax.GlobalSelfAttention``.

    Example
    -------
    >>> import torch, ntkit as nk
    >>> arch = nk.Sequential(nk.Conv1d(16, 1), nk.SelfAttention(16, n_heads=2), nk.GlobalAvgPool1d(), nk.Linear(1))
    >>> arch.kernel(torch.randn(3, 2, 5, dtype=torch.float64)).ntk.shape
    torch.Size([3, 3])
    """

    fresh = True

    def __init__(self, out_channels: int, n_heads: int = 1, key_channels: int | None = None,
                 value_channels: int | None = None, W_query_std: float = 1.0, W_key_std: float = 1.0,
                 W_value_std: float = 1.0, W_out_std: float = 1.0, b_std: float = 0.0, scaling: str = "linear",
                 attention: str = "softmax", positional: str | None = None, parameterization: str = "ntk"):  # fmt: skip
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_heads = positive_int("n_heads", n_heads)
        self.key_channels = out_channels if key_channels is None else positive_int("key_channels", key_channels)
        self.value_channels = out_channels if value_channels is None else positive_int("value_channels", value_channels)
        self.W_query_std = real_number("W_query_std", W_query_std, positive=True)
        self.W_key_std = real_number("W_key_std", W_key_std, positive=True)
        self.W_value_std = real_number("W_value_std", W_value_std, positive=True)
        self.W_out_std = real_number("W_out_std", W_out_std, positive=True)
        self.b_std = real_number("b_std", 0.0 if b_std is None else b_std, nonnegative=True)
        one_of("scaling", scaling, SCALINGS)
        one_of("attention", attention, ATTENTIONS)
        one_of("positional", positional, POSITIONALS)
        if parameterization != "ntk":
            raise ValueError(f"SelfAttention supports parameterization='ntk' only; got {parameterization!r}")
        self.scaling, self.attention, self.positional = scaling, attention, positional
        self.parameterization = parameterization

    def __repr__(self) -> str:
        return (f"SelfAttention({self.out_channels}, n_heads={self.n_heads}, scaling='{self.scaling}', "
                f"attention='{self.attention}', positional={self.positional!r})")  # fmt: skip

    def out_shape(self, in_shape):
        if len(in_shape) not in (2, 3):
            raise ValueError(f"{self!r} needs (N, C, L) sequences or (N, C, H, W) images, positions as tokens; "
                             f"got per-example shape {in_shape}")  # fmt: skip
        return (self.out_channels, *in_shape[1:])

    # --- the kernel ---------------------------------------------------------------------------------------------

    def _weights(self, var: torch.Tensor, spatial: int) -> torch.Tensor:
        """A(x) = attention(σ_Qσ_K · K̃(x)) for each example: (N, T, T), rows over query tokens."""
        cov = _tokens(var, spatial, 1)
        if self.positional is not None:
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = cov + eye if self.positional == "sum" else 0.5 * (cov + eye)
        return _attention_fn(self.attention)(self.W_query_std * self.W_key_std * cov)

    def transform(self, k: Kernel) -> Kernel:
        if self.scaling == "sqrt":
            raise ValueError(
                f"{self!r}: with the 1/√d_k scaling the attention scores stay random as d_k → ∞ and the kernel is "
                "an expectation over them with no closed form (Hron et al. 2020, §3); use scaling='linear' for the "
                "exact kernel, or estimate this one with nk.monte_carlo_kernel"
            )
        shape = self.out_shape(k.shape)
        s = k.spatial_dims
        a1 = self._weights(k.var1, s)
        a2 = a1 if k.var2 is None else self._weights(k.var2, s)
        ov2, b2 = (self.W_out_std * self.W_value_std) ** 2, self.b_std**2

        def cross(t: torch.Tensor) -> torch.Tensor:  # A(x) t A(x')ᵀ for t (N1, N2, T, T')
            return torch.einsum("apq,abqr,bsr->abps", a1, _tokens(t, s, 2), a2)

        def own(t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return _untokens(torch.einsum("apq,aqr,asr->aps", a, _tokens(t, s, 1), a), shape[1:], 1) * ov2 + b2

        nngp_w = cross(k.nngp)
        nngp = _untokens(nngp_w * ov2 + b2, shape[1:], 2).contiguous()
        ntk = None if k.ntk is None else _untokens((cross(k.ntk) + 2 * nngp_w) * ov2 + b2, shape[1:], 2).contiguous()
        var1 = own(k.var1, a1).contiguous()
        var2 = None if k.var2 is None else own(k.var2, a2).contiguous()
        if k.var2 is None:  # self-pairs from the self-covariances, bit for bit (as every layer keeps them)
            set_self_pairs(nngp, var1)
        return Kernel(nngp, ntk, var1, var2, shape, is_gaussian=True)

    # --- the finite module --------------------------------------------------------------------------------------

    def make_module(self, in_shape, generator):
        ntk_only_build(self)
        return SelfAttentionModule(self, in_shape, generator)


class SelfAttentionModule(nn.Module):
    """The finite layer of :class:`SelfAttention` (its docstring and the module docstring give the equations);
    every tensor is drawn N(0, 1) from ``generator`` and scaled in the forward pass (NTK parameterization)."""

    def __init__(self, spec: SelfAttention, in_shape: tuple[int, ...], generator: torch.Generator):
        super().__init__()
        channels, tokens = in_shape[0], math.prod(in_shape[1:])
        self.spec, self.channels = spec, channels
        key_in = channels * (2 if spec.positional == "concat" else 1)
        heads, d_k, d_v = spec.n_heads, spec.key_channels, spec.value_channels

        def draw(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(shape, generator=generator))

        self.key = draw(heads, key_in, d_k)
        self.query = draw(heads, key_in, d_k) if spec.scaling == "sqrt" else None
        self.value = draw(heads, channels, d_v)
        self.out = draw(heads * d_v, spec.out_channels)
        self.bias = draw(spec.out_channels) if spec.b_std > 0 else None
        self.positional = draw(channels, tokens) if spec.positional is not None else None
        self.score_scale = (
            spec.W_query_std * spec.W_key_std / (key_in * d_k ** (1.0 if spec.scaling == "linear" else 0.5))
        )
        self.out_scale = spec.W_out_std * spec.W_value_std / math.sqrt(d_v * heads * channels)
        self.attention = _attention_fn(spec.attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, *sizes = x.shape
        tokens = x.reshape(n, c, -1).transpose(1, 2)  # (N, T, C)
        keys_in = tokens
        if self.positional is not None:
            pos = self.positional.t().unsqueeze(0)
            keys_in = tokens + pos if self.spec.positional == "sum" else torch.cat([tokens, pos.expand(n, -1, -1)], 2)
        keys = torch.einsum("ntc,hcd->nhtd", keys_in, self.key)
        queries = keys if self.query is None else torch.einsum("ntc,hcd->nhtd", keys_in, self.query)
        scores = self.attention(self.score_scale * queries @ keys.transpose(-1, -2))  # (N, heads, T, T)
        values = torch.einsum("ntc,hcd->nhtd", tokens, self.value)
        heads = (scores @ values).permute(0, 2, 1, 3).reshape(n, tokens.shape[1], -1)  # (N, T, heads·d_v)
        out = self.out_scale * heads @ self.out
        if self.bias is not None:
            out = out + self.spec.b_std * self.bias
        return out.transpose(1, 2).reshape(n, -1, *sizes)
