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

import contextvars
import threading
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

    def map_linear(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...],
                   layer: object | None = None) -> Kernel:  # fmt: skip
        """Apply one linear map of the pair axes to every covariance (pooling, flattening, window means); with
        ``layer`` the self-covariances go through the call's :class:`SelfCovarianceCache`."""

        def self_map(t: torch.Tensor | None) -> torch.Tensor | None:
            if layer is None or t is None:
                return None if t is None else fn(t)
            return cached_self_map(layer, t, lambda v: (fn(v),))[0]

        return self.replace(
            nngp=fn(self.nngp),
            ntk=None if self.ntk is None else fn(self.ntk),
            var1=self_map(self.var1),
            var2=self_map(self.var2),
            shape=shape,
        )


class SelfCovarianceCache:
    """Each example's self-covariances, layer by layer, shared by all the blocks of one ``arch.kernel`` call.

    Block (I, J) needs the self-covariances K(x_a, x_a) of its rows and columns at every layer; computed per block
    they cost a fraction (B1 + B2)/(B1·B2) of the block's work (25 % at B = 8). Here the first block to reach a
    layer with a given row block's self-covariances computes them and stores the result; the other blocks of
    that row or column take it. Entries are keyed by the layer and the identity of the input tensor, and only
    tensors born in this cache (the input's, and outputs of cached layers) are stored, so a layer that does not
    use the cache simply breaks the chain after it. Stored tensors are never written in place (a transform never
    changes the Kernel it is given). At most ``budget`` bytes are kept; past it, results are computed as usual.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self._entries: dict[tuple, tuple] = {}
        self._born: dict[int, torch.Tensor] = {}  # id → tensor, the reference keeps the id unique
        self._lock = threading.Lock()

    def _store(self, key: tuple, value: tuple) -> None:
        size = sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))
        with self._lock:
            if key in self._entries or self.bytes + size > self.budget:
                return
            self._entries[key] = value
            self.bytes += size
            for t in value:
                if isinstance(t, torch.Tensor):
                    self._born[id(t)] = t

    def input(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The input layer's self-covariances of one block of examples (``key`` names the block)."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return hit[0]
        value = compute()
        self._store(key, (value,))
        with self._lock:
            return self._entries.get(key, (value,))[0]

    def map(self, layer: object, cov: torch.Tensor, compute: Callable[[torch.Tensor], tuple]) -> tuple:
        """``compute(cov)`` (a tuple), taken from the cache when ``layer`` has already mapped this tensor."""
        key = (id(layer), id(cov))
        with self._lock:
            hit = self._entries.get(key)
            born = self._born.get(id(cov)) is cov
        if hit is not None:
            return hit
        value = compute(cov)
        if born:
            self._store(key, value)
            with self._lock:
                return self._entries.get(key, value)
        return value


_SELF_CACHE: contextvars.ContextVar[SelfCovarianceCache | None] = contextvars.ContextVar(
    "ntkit_self_cache", default=None
)


def cached_self_map(layer: object, cov: torch.Tensor | None, compute: Callable[[torch.Tensor], tuple]) -> tuple | None:
    """``compute(cov)`` for a layer's map of self-covariances (a tuple of tensors), through the cache of the
    ``arch.kernel`` call in progress if there is one; None for ``cov`` None."""
    if cov is None:
        return None
    cache = _SELF_CACHE.get()
    return compute(cov) if cache is None else cache.map(layer, cov, compute)


def self_covariance(x: torch.Tensor) -> torch.Tensor:
    """K(x_a, x_a) = (1/C) Σ_c x_c x_c at every pair of positions, (N, *pair axes)."""
    letters = "hgwv"[: 2 * (x.ndim - 2)]
    return torch.einsum(f"ac{letters[0::2]},ac{letters[1::2]}->a{letters}", x, x) / x.shape[1]


def input_kernel(x1: torch.Tensor, x2: torch.Tensor | None, *, track_ntk: bool = True,
                 var1: torch.Tensor | None = None, var2: torch.Tensor | None = None) -> Kernel:  # fmt: skip
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

    nngp = torch.einsum(cross, x1, x1 if x2 is None else x2) / channels
    var1 = self_covariance(x1) if var1 is None else var1
    var2 = None if x2 is None else (self_covariance(x2) if var2 is None else var2)
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
