"""The independent reference for empirical NTKs: one autograd call per example and output unit, contracted by
hand. It shares no code with ntkit."""

import torch
from torch import nn


def brute_force_full(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Θ[a, b, i, j] = Σ_θ ∂f_i(x1_a)/∂θ · ∂f_j(x2_b)/∂θ over parameters with requires_grad=True."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x):
        rows = []
        for a in range(x.shape[0]):
            out = model(x[a : a + 1]).reshape(-1)
            per_output = []
            for i in range(out.numel()):
                grads = torch.autograd.grad(out[i], params, retain_graph=True, allow_unused=True)
                per_output.append(
                    torch.cat(
                        [
                            (torch.zeros_like(p) if g is None else g).reshape(-1)
                            for g, p in zip(grads, params, strict=True)
                        ]
                    )
                )
            rows.append(torch.stack(per_output))
        return torch.stack(rows)

    return torch.einsum("aip,bjp->abij", jacobian(x1), jacobian(x2))
