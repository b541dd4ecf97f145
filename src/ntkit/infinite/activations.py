"""Closed-form Gaussian expectations of activations, the building blocks of infinite-width kernels.

For a centred Gaussian pair (u, v) with covariance [[Σ11, Σ12], [Σ12, Σ22]], a layer φ carries the NNGP kernel
to E[φ(u)φ(v)] and the NTK through the derivative kernel E[φ'(u)φ'(v)].
"""

from __future__ import annotations

import math

import torch


def relu_kernels(cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""E[relu(u) relu(v)] and E[relu'(u) relu'(v)], the arc-cosine kernels of degree 1 and 0.

    With θ = arccos(Σ12 / √(Σ11 Σ22)) (Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009):

    .. math::  E[\mathrm{relu}(u)\mathrm{relu}(v)] = \frac{\sqrt{\Sigma_{11}\Sigma_{22}}}{2\pi}
               \big(\sin\theta + (\pi - \theta)\cos\theta\big), \qquad
               E[\mathrm{relu}'(u)\mathrm{relu}'(v)] = \frac{\pi - \theta}{2\pi}.

    The cosine is clipped to [−1, 1] only to undo rounding; inputs are broadcast together.
    """
    norm = torch.sqrt(cov11 * cov22)
    cos = (cov12 / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    k1 = norm / (2 * math.pi) * (torch.sqrt(1 - cos**2) + (math.pi - theta) * cos)
    k0 = (math.pi - theta) / (2 * math.pi)
    return k1, k0
