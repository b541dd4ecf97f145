"""How far a kernel has moved, and how well it fits the targets.

* relative change ‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F: the size of the move (Lee et al. 2019, fig. 1 of *Wide Neural Networks
  of Any Depth Evolve as Linear Models*, measures it to fall like 1/√width under the NTK parameterization);
* kernel distance 1 − ⟨Θ_0, Θ_t⟩_F / (‖Θ_0‖_F ‖Θ_t‖_F): the change of the kernel's direction only, blind to its
  scale (Fort et al., *Deep learning versus kernel learning*, NeurIPS 2020);
* centered kernel-target alignment ⟨K_c, (yyᵀ)_c⟩_F / (‖K_c‖_F ‖(yyᵀ)_c‖_F) with K_c = HKH, H = I − 11ᵀ/N
  (Cortes, Mohri & Rostamizadeh, *Algorithms for Learning Kernels Based on Centered Alignment*, JMLR 2012).
"""

from __future__ import annotations

import torch


def _check_square(name: str, k) -> torch.Tensor:
    if not isinstance(k, torch.Tensor) or not k.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor; got {getattr(k, 'dtype', type(k))}")
    if k.ndim < 2:
        raise ValueError(f"{name} must be a kernel matrix (N1, N2, ...); got shape {tuple(k.shape)}")
    return k


def _check_pair(k0: torch.Tensor, kt: torch.Tensor) -> None:
    _check_square("k0", k0)
    _check_square("kt", kt)
    if k0.shape != kt.shape:
        raise ValueError(f"kt must have the shape of k0, {tuple(k0.shape)}; got {tuple(kt.shape)}")
    if float(torch.linalg.vector_norm(k0)) == 0.0:
        raise ValueError("k0 is zero, so a change relative to it is undefined")


def relative_change(k0: torch.Tensor, kt: torch.Tensor) -> float:
    """‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F.

    Parameters
    ----------
    k0, kt:
        Kernels of one shape: the reference (usually at initialisation) and the moved one.

    Returns
    -------
    float
        0 when the kernel has not moved; of order 1/√width under the NTK parameterization and of order one
        under μP (Yang & Hu 2021).

    Examples
    --------
    >>> import torch
    >>> relative_change(torch.eye(2), 2 * torch.eye(2))
    1.0
    """
    _check_pair(k0, kt)
    return float(torch.linalg.vector_norm(kt - k0) / torch.linalg.vector_norm(k0))


def kernel_distance(k0: torch.Tensor, kt: torch.Tensor) -> float:
    """1 − ⟨Θ_0, Θ_t⟩_F / (‖Θ_0‖_F ‖Θ_t‖_F), the kernel distance of Fort et al. 2020.

    0 when Θ_t is a positive multiple of Θ_0, whatever the scale; at most 2.

    Examples
    --------
    >>> import torch
    >>> round(kernel_distance(torch.eye(2), torch.ones(2, 2)), 6)
    0.292893
    """
    _check_pair(k0, kt)
    norm_t = torch.linalg.vector_norm(kt)
    if float(norm_t) == 0.0:
        raise ValueError("kt is zero, so its direction (and the kernel distance) is undefined")
    cos = (k0 * kt).sum() / (torch.linalg.vector_norm(k0) * norm_t)
    return float(1.0 - cos)


def centered_alignment(k: torch.Tensor, y: torch.Tensor) -> float:
    """Centered kernel-target alignment A(K, yyᵀ) = ⟨K_c, (yyᵀ)_c⟩_F / (‖K_c‖_F ‖(yyᵀ)_c‖_F).

    K_c = HKH with H = I − 11ᵀ/N removes the mean, so a constant offset in the kernel or the targets does not
    count (Cortes et al., JMLR 2012). In the lazy regime it stays at its value at initialisation; when features
    are learned it moves (towards the task, as often reported, or away from it).

    Parameters
    ----------
    k:
        Kernel matrix (N, N) on the probe points.
    y:
        Targets (N,) or (N, O); for classes give one-hot rows.

    Returns
    -------
    float
        A number in [−1, 1]; 1 when the centered kernel is a positive multiple of the centered yyᵀ.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[1.0], [-1.0], [2.0]])
    >>> round(centered_alignment(y @ y.T + 5.0, y), 6)
    1.0
    """
    _check_square("k", k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square kernel matrix (N, N); got shape {tuple(k.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
    if y.ndim == 0 or y.shape[0] != k.shape[0]:
        raise ValueError(f"y must have one row per kernel row ({k.shape[0]}); got shape {tuple(y.shape)}")
    y = y.reshape(y.shape[0], -1)
    y = y.to(k.dtype)
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    yc = y - y.mean(0, keepdim=True)  # H y yᵀ H = (Hy)(Hy)ᵀ
    target = yc @ yc.T
    denom = torch.linalg.vector_norm(kc) * torch.linalg.vector_norm(target)
    if float(denom) == 0.0:
        raise ValueError("the centered kernel or the centered targets are zero, so their alignment is undefined")
    return float((kc * target).sum() / denom)
