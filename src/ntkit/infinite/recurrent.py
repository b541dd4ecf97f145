"""A recurrent layer with weights shared across time, and its infinite-width kernels (the recurrent NTK of
Alemohammad, Wang, Balestriero & Baraniuk, *The Recurrent Neural Tangent Kernel*, ICLR 2021).

On a sequence x_1..x_T of C channels (layout (N, C, L)), with N(0, 1) weights W (H×H), U (H×C), b (H) shared by
every step and h_0 = 0 (NTK parameterization):

    g_t = (σ_W/√H)·W h_{t−1} + (σ_U/√C)·U x_t + σ_b·b,        h_t = φ(g_t),

and the layer outputs h_T ("last") or (1/T) Σ_t h_t ("mean"), of shape (N, H). As H → ∞ the pre-activations are
Gaussian, independent across units, with covariance between step t of x and step t' of x' (Yang 2019's
gradient-independence: sharing W over time does not change these recursions)

    Σ_{t,t'} = σ_W² E[φ(g_{t−1}) φ(g'_{t'−1})] + σ_U² K^in_{t,t'} + σ_b²,
    Θ_{t,t'} = Σ_{t,t'} + σ_U² Θ^in_{t,t'} + σ_W² E[φ'(g_{t−1}) φ'(g'_{t'−1})] Θ_{t−1,t'−1},

where the terms with t − 1 = 0 or t' − 1 = 0 vanish (h_0 = 0), and K^in, Θ^in are the input's kernels between
positions (the data's (1/C)⟨x_t, x'_{t'}⟩ for a first layer). The NTK recursion sums the weight gradients of
aligned steps only: back-propagation paths of different lengths through W are uncorrelated in the limit.
The output's kernels are E[φ(g_t)φ(g'_{t'})] and Θ_{t,t'}·E[φ'(g_t)φ'(g'_{t'})] at (T, T') ("last") or averaged
over all pairs ("mean").

Sequences of different lengths: pad them at the end and give ``lengths``, or give a boolean ``mask`` (True where
a step is real) to :meth:`RNN.kernel` / :func:`sequence_kernel` and to the module's ``forward``. Masked steps are
skipped: the state is carried over them unchanged, which is the same as removing them, so the kernel between
sequences of different lengths is the kernel of their real steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkit._validation import finite_result, one_of, positive_int, real_number
from ntkit.infinite.activations import Activation, ReLU
from ntkit.infinite.attention import ntk_only_build
from ntkit.infinite.combinators import Sequential
from ntkit.infinite.kernel import Kernel, input_kernel, set_self_pairs
from ntkit.infinite.layers import Layer, _check_inputs

READOUTS = ("last", "mean")


class RNN(Layer):
    """A single-layer Elman RNN with weights shared across time; see the module docstring for its kernels.

    Parameters
    ----------
    hidden:
        Width H of the finite module (irrelevant to the kernel).
    W_std, U_std, b_std:
        Scales of the recurrent weights, input weights and bias (NTK parameterization).
    nonlinearity:
        An activation spec (``nk.ReLU()``, ``nk.Erf()``, ``nk.Identity()``, …) whose kernels give the
        expectations E[φφ] and E[φ'φ'].
    readout:
        "last" (the final state) or "mean" (the mean state over the real steps).

    Raises
    ------
    TypeError
        If nonlinearity is not an activation spec.
    ValueError
        On bad scales, an unknown readout, or inputs that are not (N, C, L) sequences.

    References
    ----------
    Alemohammad, Wang, Balestriero & Baraniuk, *The Recurrent Neural Tangent Kernel*, ICLR 2021.

    Example
    -------
    >>> import torch, ntkit as nk
    >>> arch = nk.Sequential(nk.RNN(64, nonlinearity=nk.Erf()), nk.Linear(1))
    >>> arch.kernel(torch.randn(3, 2, 5, dtype=torch.float64)).ntk.shape
    torch.Size([3, 3])
    """

    fresh = False

    def __init__(self, hidden: int, W_std: float = 1.0, U_std: float = 1.0, b_std: float = 0.0,
                 nonlinearity: Activation | None = None, readout: str = "last"):  # fmt: skip
        self.hidden = positive_int("hidden", hidden)
        self.W_std = real_number("W_std", W_std, positive=True)
        self.U_std = real_number("U_std", U_std, positive=True)
        self.b_std = real_number("b_std", 0.0 if b_std is None else b_std, nonnegative=True)
        nonlinearity = ReLU() if nonlinearity is None else nonlinearity
        if not isinstance(nonlinearity, Activation):
            raise TypeError(f"nonlinearity must be an activation spec such as nk.ReLU() or nk.Erf(); "
                            f"got {nonlinearity!r}")  # fmt: skip
        self.nonlinearity = nonlinearity
        self.readout = one_of("readout", readout, READOUTS)

    def __repr__(self) -> str:
        return (f"RNN({self.hidden}, W_std={self.W_std}, U_std={self.U_std}, b_std={self.b_std}, "
                f"nonlinearity={self.nonlinearity!r}, readout='{self.readout}')")  # fmt: skip

    def out_shape(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(f"{self!r} needs (N, C, L) sequences (channels, then time) but gets per-example shape "
                             f"{in_shape}; images and vectors are not sequences")  # fmt: skip
        return (self.hidden,)

    # --- the kernel ---------------------------------------------------------------------------------------------

    def _expectations(self, s_left, cov, s_right):
        """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for variances s_left, s_right and covariance cov (broadcast)."""
        return self.nonlinearity.kernels(s_left, cov, s_right)

    def _diagonal(self, var_in: torch.Tensor) -> torch.Tensor:
        """Σ_{t,t}(x, x) for every example and step, (N, L): the recursion on the diagonal alone."""
        steps = var_in.shape[-1]
        diag_in = torch.diagonal(var_in, dim1=-2, dim2=-1)
        out = torch.empty_like(diag_in)
        u2, w2, b2 = self.U_std**2, self.W_std**2, self.b_std**2
        out[:, 0] = u2 * diag_in[:, 0] + b2
        for t in range(1, steps):
            prev = out[:, t - 1]
            out[:, t] = w2 * self._expectations(prev, prev, prev)[0] + u2 * diag_in[:, t] + b2
        return out

    def _grid(self, k_in, theta_in, s_left, s_right):
        """Σ and Θ for every pair of steps, (..., L, L'), row by row; s_left (..., L, 1), s_right (..., 1, L')
        broadcastable to the leading axes of k_in."""
        u2, w2, b2 = self.U_std**2, self.W_std**2, self.b_std**2
        sigma = u2 * k_in + b2  # the W terms are added row by row below; row 0 and column 0 have none
        theta = None if theta_in is None else sigma + u2 * theta_in
        for t in range(1, k_in.shape[-2]):
            e, e_dot = self._expectations(s_left[..., t - 1, :], sigma[..., t - 1, :-1], s_right[..., 0, :-1])
            sigma[..., t, 1:] += w2 * e
            if theta is not None:
                theta[..., t, 1:] += w2 * e + w2 * e_dot * theta[..., t - 1, :-1]
        return sigma, theta

    def _readout(self, t: torch.Tensor, len_left: torch.Tensor, len_right: torch.Tensor | None) -> torch.Tensor:
        """(N1, N2, L, L') → (N1, N2), or (N, L, L) → (N,) when len_right is None (each example with itself): the
        entry at the last real steps ("last"), or the mean over pairs of real steps ("mean")."""
        len_left = len_left.to(t.device)
        if len_right is None:
            lengths_l = lengths_r = len_left.view(-1, 1, 1)
        else:
            len_right = len_right.to(t.device)
            lengths_l, lengths_r = len_left.view(-1, 1, 1, 1), len_right.view(1, -1, 1, 1)
        if self.readout == "last":
            rows = torch.arange(t.shape[0], device=t.device)
            if len_right is None:
                return t[rows, len_left - 1, len_left - 1]
            cols = torch.arange(t.shape[1], device=t.device)
            return t[rows[:, None], cols[None, :], (len_left - 1)[:, None], (len_right - 1)[None, :]]
        valid_l = torch.arange(t.shape[-2], device=t.device).view(-1, 1) < lengths_l
        valid_r = torch.arange(t.shape[-1], device=t.device).view(1, -1) < lengths_r
        weights = (valid_l & valid_r).to(t.dtype)
        return (t * weights).sum((-2, -1)) / weights.sum((-2, -1))

    def transform(self, k: Kernel) -> Kernel:
        return self._transform(k, None, None)

    def _transform(self, k: Kernel, lengths1: torch.Tensor | None, lengths2: torch.Tensor | None) -> Kernel:
        shape = self.out_shape(k.shape)
        steps = k.shape[1]
        full = torch.full((k.var1.shape[0],), steps, dtype=torch.long, device=k.var1.device)
        lengths1 = full if lengths1 is None else lengths1
        s1 = self._diagonal(k.var1)
        if k.var2 is None:
            s2, k_var2, lengths2 = s1, k.var1, lengths1
        else:
            s2, k_var2 = self._diagonal(k.var2), k.var2
            if lengths2 is None:
                lengths2 = torch.full((k.var2.shape[0],), steps, dtype=torch.long, device=k.var2.device)

        def out(k_in, theta_in, left, right, len_l, len_r):
            sigma, theta = self._grid(k_in, theta_in, left, right)
            e, e_dot = self._expectations(left, sigma, right)
            return (self._readout(e, len_l, len_r),
                    self._readout(theta * e_dot, len_l, len_r) if theta_in is not None else None)  # fmt: skip

        nngp, ntk = out(k.nngp, k.ntk, s1.view(-1, 1, s1.shape[-1], 1), s2.view(1, -1, 1, s2.shape[-1]),
                        lengths1, lengths2)  # fmt: skip
        var1, _ = out(k.var1, None, s1.unsqueeze(-1), s1.unsqueeze(-2), lengths1, None)
        var2 = None
        if k.var2 is not None:
            var2, _ = out(k_var2, None, s2.unsqueeze(-1), s2.unsqueeze(-2), lengths2, None)
        else:  # self-pairs from the self-covariances, bit for bit (as every layer keeps them)
            set_self_pairs(nngp, var1)
        return Kernel(nngp, ntk, var1, var2, shape, is_gaussian=False)

    def kernel(self, x1, x2=None, *, mask1=None, mask2=None, lengths1=None, lengths2=None, **kwargs) -> Kernel:
        """The NNGP and NTK of this layer's output (see :meth:`Layer.kernel`); with ``mask``/``lengths`` for
        sequences of different lengths (see :func:`sequence_kernel`)."""
        if all(m is None for m in (mask1, mask2, lengths1, lengths2)):
            return super().kernel(x1, x2, **kwargs)
        return sequence_kernel(self, x1, x2, mask1=mask1, mask2=mask2, lengths1=lengths1, lengths2=lengths2)

    # --- the finite module --------------------------------------------------------------------------------------

    def make_module(self, in_shape, generator):
        ntk_only_build(self)
        return RNNModule(self, in_shape[0], generator)


class RNNModule(nn.Module):
    """The finite layer of :class:`RNN`: one set of N(0, 1) weights used at every step (NTK parameterization).

    ``forward(x, mask=None, lengths=None)``: x (N, C, L); mask (N, L) bool, True on real steps, or lengths (N,)
    for sequences padded at the end. Masked steps leave the state unchanged and do not count in the mean.
    """

    def __init__(self, spec: RNN, channels: int, generator: torch.Generator):
        super().__init__()
        self.spec, self.channels = spec, channels
        hidden = spec.hidden
        self.W = nn.Parameter(torch.randn(hidden, hidden, generator=generator))
        self.U = nn.Parameter(torch.randn(hidden, channels, generator=generator))
        self.b = nn.Parameter(torch.randn(hidden, generator=generator)) if spec.b_std > 0 else None
        self.phi = spec.nonlinearity.function

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        n, channels, steps = x.shape
        mask = step_mask(mask, lengths, n, steps, x.device, "mask")
        spec = self.spec
        w = self.W * (spec.W_std / math.sqrt(spec.hidden))
        drive = torch.einsum("hc,ncl->nlh", self.U, x) * (spec.U_std / math.sqrt(channels))
        if self.b is not None:
            drive = drive + spec.b_std * self.b
        h = x.new_zeros(n, spec.hidden)
        total = x.new_zeros(n, spec.hidden)
        for t in range(steps):
            new = self.phi(h @ w.T + drive[:, t])
            if mask is None:
                h = new
            else:
                h = torch.where(mask[:, t, None], new, h)
            if spec.readout == "mean":
                total = total + (h if mask is None else h * mask[:, t, None])
        if spec.readout == "last":
            return h
        count = steps if mask is None else mask.sum(1, keepdim=True).to(x.dtype)
        return total / count


def step_mask(mask, lengths, n: int, steps: int, device, name: str) -> torch.Tensor | None:
    """A (n, steps) bool mask from ``mask`` or ``lengths`` (not both), checked; None when both are None."""
    if mask is not None and lengths is not None:
        raise ValueError(f"give {name} or lengths, not both")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.shape != (n,):
            got = f"{getattr(lengths, 'dtype', type(lengths))} {tuple(getattr(lengths, 'shape', ()))}"
            raise ValueError(f"lengths must be an integer tensor of shape ({n},); got {got}")
        if bool((lengths < 1).any()) or bool((lengths > steps).any()):
            raise ValueError(f"lengths must lie in [1, {steps}]; got {lengths.tolist()}")
        return torch.arange(steps, device=device).view(1, -1) < lengths.to(device).view(-1, 1)
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True on real steps); got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != (n, steps):
        raise ValueError(f"{name} must have shape (N, L) = ({n}, {steps}); got {tuple(mask.shape)}")
    if not bool(mask.any(1).all()):
        raise ValueError(f"{name} must mark at least one real step in every sequence")
    return mask.to(device)


def _compact(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move each sequence's real steps to the front (zeros after) and return it with its lengths."""
    if mask is None:
        return x, None
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real steps first, in their order
    packed = x.gather(2, order.unsqueeze(1).expand_as(x)) * torch.gather(mask, 1, order).unsqueeze(1).to(x.dtype)
    return packed, mask.sum(1)


def sequence_kernel(arch: Layer, x1: torch.Tensor, x2: torch.Tensor | None = None, *, mask1=None, mask2=None,
                    lengths1=None, lengths2=None) -> Kernel:  # fmt: skip
    """The kernels of an architecture that starts with an :class:`RNN`, on sequences of different lengths.

    Parameters
    ----------
    arch:
        An ``RNN`` or a ``Sequential`` whose first layer is one (its later layers see the RNN's (N, H) output).
    x1, x2:
        Sequences (N1, C, L1) and (N2, C, L2) (the padded lengths may differ); x2=None: x1 with itself.
    mask1, mask2:
        Bool (N, L) masks, True on real steps; or lengths1, lengths2: (N,) integer lengths of sequences padded at
        the end. None: every step is real.

    Returns
    -------
    Kernel of the architecture's output.

    Raises
    ------
    ValueError
        If arch does not start with an RNN, or a mask or lengths has the wrong shape or marks no step.
    """
    first = arch.layers[0] if isinstance(arch, Sequential) else arch
    if not isinstance(first, RNN):
        raise ValueError(f"sequence_kernel needs an architecture whose first layer is nk.RNN; got {arch!r}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (not isinstance(x, torch.Tensor) or x.ndim != 3):
            raise ValueError(f"{name} must be (N, C, L) sequences; got {getattr(x, 'shape', type(x))}")
    _check_inputs(x1, None)
    m1 = step_mask(mask1, lengths1, x1.shape[0], x1.shape[2], x1.device, "mask1")
    x1c, len1 = _compact(x1, m1)
    x2c, len2 = (None, None)
    if x2 is not None:
        _check_inputs(x2, None)
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(f"x2 must have the channels of x1, {x1.shape[1]}; got {x2.shape[1]}")
        m2 = step_mask(mask2, lengths2, x2.shape[0], x2.shape[2], x2.device, "mask2")
        x2c, len2 = _compact(x2, m2)
        steps = max(x1.shape[2], x2.shape[2])  # a common padded length, so that the pair grid is rectangular
        x1c = nn.functional.pad(x1c, (0, steps - x1.shape[2]))
        x2c = nn.functional.pad(x2c, (0, steps - x2.shape[2]))
        len1 = torch.full((x1.shape[0],), x1.shape[2]) if len1 is None else len1
        len2 = torch.full((x2.shape[0],), x2.shape[2]) if len2 is None else len2
    elif mask2 is not None or lengths2 is not None:
        raise ValueError("mask2/lengths2 need x2")
    k = first._transform(input_kernel(x1c, x2c), len1, len2)
    rest = arch.layers[1:] if isinstance(arch, Sequential) else ()
    for layer in rest:
        k = layer.transform(k)
    for name in ("nngp", "ntk"):
        finite_result(f"sequence_kernel's {name}", getattr(k, name), "the kernels overflowed; use smaller W_std")
    return k
