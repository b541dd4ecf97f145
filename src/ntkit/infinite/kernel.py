"""The covariances that an infinite-width network carries from layer to layer.

At infinite width the pre-activations of every layer are a Gaussian process, independent across channels, so a
layer is described by how it maps two kernels (Neal 1996; Lee et al. 2018; Jacot et al. 2018):

* ``nngp``  K(x, x') = E[z(x) z(x')], the covariance of one channel between two inputs;
* ``ntk``   Θ(x, x'), the neural tangent kernel of one channel.

Signals and images keep one covariance per pair of positions: a kernel has shape (N1, N2, L, L') for 1-D
signals and (N1, N2, H, H', W, W') for images ("pair axes", one pair per spatial dimension). ``var1`` and
``var2`` are the kernels of each example with itself, (N, *pair axes), which activations need for their
variances. ``var2 is None`` means x2 is x1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Kernel:
    """NNGP and NTK between two batches, with per-example self-covariances and the features' shape."""

    nngp: torch.Tensor | None  # (N1, N2, *pair axes); None only in a returned Kernel that was not asked for it
    ntk: torch.Tensor | None  # (N1, N2, *pair axes), or None when the NTK is not tracked (get="nngp")
    var1: torch.Tensor  # (N1, *pair axes): K(x1_a, x1_a)
    var2: torch.Tensor | None  # (N2, *pair axes), or None when x2 is x1
    shape: tuple[int, ...]  # per-example feature shape (C, *spatial) or (D,)
    #: The features are jointly Gaussian pre-activations (an affine map of the previous layer, or a sum or
    #: average of such): only then do the activations' Gaussian expectations give the network's kernel. The raw
    #: input, an activation's output, Flatten and concatenation are not (Lee et al. 2019; neural-tangents'
    #: ``is_gaussian``).
    is_gaussian: bool = True

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 1

    def replace(self, **changes) -> Kernel:
        return replace(self, **changes)

    def map_linear(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> Kernel:
        """Apply one linear map of the pair axes to every covariance (pooling, flattening, window means)."""
        return self.replace(
            nngp=fn(self.nngp),
            ntk=None if self.ntk is None else fn(self.ntk),
            var1=fn(self.var1),
            var2=None if self.var2 is None else fn(self.var2),
            shape=shape,
        )


def input_kernel(x1: torch.Tensor, x2: torch.Tensor | None, *, track_ntk: bool = True) -> Kernel:
    """The kernel of the data itself: K(x, x') = (1/C) Σ_c x_c x'_c at every pair of positions, Θ = 0.

    When x2 is None the self-pairs K(x_a, x_a) are copied from ``var1`` rather than taken from the cross
    product: the two reductions can round differently (by N and by the CPU's BLAS kernel), and an arc-cosine
    kernel turns a one-ulp error in cos θ = 1 into ~1e-8 (d arccos/dc = −1/√(1 − c²)). Every activation and
    LayerNorm keeps the self-pairs equal to their self-covariances (``set_self_pairs``), so self-pairs are
    exact whatever the batch partition or the BLAS. The raw input is not Gaussian (``is_gaussian=False``).
    """
    spatial = x1.ndim - 2
    letters = "hgwv"[: 2 * spatial]  # pair axes: (h, g) for the first spatial dim, (w, v) for the second
    left, right = letters[0::2], letters[1::2]
    channels = x1.shape[1]
    cross = f"ac{left},bc{right}->ab{letters}"
    self_ = f"ac{left},ac{right}->a{letters}"

    nngp = torch.einsum(cross, x1, x1 if x2 is None else x2) / channels
    var1 = torch.einsum(self_, x1, x1) / channels
    var2 = None if x2 is None else torch.einsum(self_, x2, x2) / channels
    if x2 is None:
        set_self_pairs(nngp, var1)
    ntk = torch.zeros_like(nngp) if track_ntk else None
    return Kernel(nngp, ntk, var1, var2, tuple(x1.shape[1:]), is_gaussian=False)


def set_self_pairs(cross: torch.Tensor, self_cov: torch.Tensor) -> torch.Tensor:
    """Write each example's self-covariance (N, *pair axes) into the example diagonal of a square (N, N, *pair
    axes) kernel, in place: cross[a, a] = self_cov[a]."""
    torch.diagonal(cross, dim1=0, dim2=1).copy_(self_cov.movedim(0, -1))
    return cross


def self_pairs(cross: torch.Tensor) -> torch.Tensor:
    """The example diagonal of a square (N, N, *pair axes) kernel, (N, *pair axes): cross[a, a]."""
    return torch.diagonal(cross, dim1=0, dim2=1).movedim(-1, 0)


def spatial_diagonal(t: torch.Tensor, spatial: int) -> torch.Tensor:
    """(..., h, h', w, w') → (..., h, w): the covariance of each position with itself."""
    for d in range(spatial):
        # torch.diagonal appends the diagonal last: after d steps the first remaining pair starts at −(2(S−d)+d)
        first = -(2 * (spatial - d) + d)
        t = torch.diagonal(t, dim1=first, dim2=first + 1)
    return t


def pair_variances(v_left: torch.Tensor, v_right: torch.Tensor, spatial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcastable variances for a kernel with pair axes: left (..., h, 1, w, 1), right (..., 1, h', 1, w')."""
    left_shape = list(v_left.shape[: v_left.ndim - spatial])
    right_shape = list(v_right.shape[: v_right.ndim - spatial])
    for size in v_left.shape[v_left.ndim - spatial :]:
        left_shape += [size, 1]
    for size in v_right.shape[v_right.ndim - spatial :]:
        right_shape += [1, size]
    return v_left.reshape(left_shape), v_right.reshape(right_shape)
