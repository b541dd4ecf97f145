"""GPyTorch face: the NNGP (or NTK) of an infinitely wide network as a ``gpytorch.kernels.Kernel``.

W_std and b_std are learnable, positive hyperparameters (GPyTorch's ``Positive`` constraint: a softplus of a raw
parameter), shared by every Linear/Conv layer of ``arch``; the kernel is differentiable in them through torch
autograd, so an ``ExactGP`` trains them on the marginal likelihood with any torch optimizer. With GPyTorch's
default settings exact inference uses a Cholesky factorisation up to N = 800 and BBMM's conjugate gradients above
(Gardner et al. 2018).

Install with ``pip install 'ntkit[gpytorch]'``.

References: Lee et al., *Deep Neural Networks as Gaussian Processes*, ICLR 2018; Gardner, Pleiss, Bindel,
Weinberger & Wilson, *GPyTorch: Blackbox Matrix-Matrix Gaussian Process Inference with GPU Acceleration*,
NeurIPS 2018.
"""

from __future__ import annotations

import torch

try:
    import gpytorch
    from gpytorch.constraints import Positive
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("ntkit.gpytorch needs GPyTorch: pip install 'ntkit[gpytorch]'") from err

from ntkit._validation import real_number
from ntkit.infinite import Layer
from ntkit.sklearn import KERNELS, default_mlp, gram, with_scales


class InfiniteWidthKernel(gpytorch.kernels.Kernel):
    """k(x, x') = ``arch.kernel(x, x').<get>`` with learnable W_std > 0 and b_std > 0 in every Linear/Conv layer.

    Parameters
    ----------
    arch : ntkit layer spec or None
        The network, ending in a Linear layer on (N, D) inputs; None: the 3-layer ReLU MLP of
        :func:`ntkit.sklearn.default_mlp`.
    get : {"nngp", "ntk"}
    W_std, b_std : float
        Initial values (both > 0; they replace arch's own scales).
    **kwargs
        Passed to ``gpytorch.kernels.Kernel`` (``active_dims`` …); batched kernels are not supported.

    Raises
    ------
    TypeError
        ``arch`` is not an ntkit layer spec.
    ValueError
        ``get`` unknown, W_std or b_std not > 0, batched inputs.

    Examples
    --------
    >>> import torch
    >>> k = InfiniteWidthKernel(W_std=1.5, b_std=0.1)
    >>> k(torch.randn(4, 3, dtype=torch.float64)).to_dense().shape
    torch.Size([4, 4])
    """

    has_lengthscale = False

    def __init__(self, arch: Layer | None = None, get: str = "nngp", W_std: float = 1.0, b_std: float = 0.1,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if arch is not None and not isinstance(arch, Layer):
            raise TypeError(f"arch must be an ntkit layer spec such as nk.Sequential(...) or None; "
                            f"got {type(arch).__name__}")  # fmt: skip
        if get not in KERNELS:
            raise ValueError(f"get must be one of {KERNELS}; got {get!r}")
        self.arch, self.get = (default_mlp() if arch is None else arch), get
        for name, value in (("W_std", W_std), ("b_std", b_std)):
            real_number(name, value, positive=True)
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(())))
            self.register_constraint(f"raw_{name}", Positive())
            setattr(self, name, value)

    @property
    def W_std(self) -> torch.Tensor:
        return self.raw_W_std_constraint.transform(self.raw_W_std)

    @W_std.setter
    def W_std(self, value) -> None:
        self._set_positive("raw_W_std", value)

    @property
    def b_std(self) -> torch.Tensor:
        return self.raw_b_std_constraint.transform(self.raw_b_std)

    @b_std.setter
    def b_std(self, value) -> None:
        self._set_positive("raw_b_std", value)

    def _set_positive(self, raw_name: str, value) -> None:
        raw = getattr(self, raw_name)
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
        self.initialize(**{raw_name: getattr(self, f"{raw_name}_constraint").inverse_transform(value)})

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> torch.Tensor:  # fmt: skip
        if last_dim_is_batch or x1.ndim != 2 or x2.ndim != 2:
            raise ValueError(f"InfiniteWidthKernel takes (N, D) inputs without batch dimensions; got "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}")  # fmt: skip
        dtype = x1.dtype
        arch = with_scales(self.arch, self.W_std.to(dtype), self.b_std.to(dtype))
        if diag:
            if self.get == "nngp":  # the output layer's self-covariances, without the N × N matrix
                return arch.kernel(x1, x1[:1]).var1.reshape(-1)
            return torch.stack([gram(arch, row.unsqueeze(0), None, self.get)[0, 0] for row in x1])
        same = x1.shape == x2.shape and torch.equal(x1, x2)
        return gram(arch, x1, None if same else x2, self.get)
