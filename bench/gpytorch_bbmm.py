"""GPyTorch's conjugate-gradient inference (BBMM) on ntkit's NNGP kernel at N = 10,000.

Above max_cholesky_size (800) an ExactGP solves (K + σ²I)⁻¹y and estimates log|K + σ²I| with preconditioned CG and
stochastic Lanczos quadrature (Gardner et al. 2018). This script checks that this path runs on
``ntkit.gpytorch.InfiniteWidthKernel`` at N = 10,000 and reports time and memory, and how close the posterior mean
on a few test points is to the exact Cholesky solve of the same float64 system (computed here, one 10k × 10k
factorisation). It runs one marginal-likelihood evaluation with its gradient with respect to W_std and b_std
(what one step of training costs) unless --no-grad.

    python bench/gpytorch_bbmm.py [--n 10000] [--test 100] [--no-grad] [--device cpu|cuda]

Memory: the kernel matrix is N² float64 (800 MB at N = 10,000); its autograd graph keeps a few of them per layer.
"""

from __future__ import annotations

import argparse
import resource
import time

import gpytorch
import torch

from ntkit.gpytorch import InfiniteWidthKernel
from ntkit.sklearn import default_mlp, with_scales

DT = torch.float64


class GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood):
        super().__init__(x, y, likelihood)
        self.mean, self.cov = gpytorch.means.ZeroMean(), InfiniteWidthKernel(W_std=1.2, b_std=0.2)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.cov(x))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--no-grad", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 8, generator=g, dtype=DT)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(args.n, generator=g, dtype=DT)
    x_test = torch.randn(args.test, 8, generator=g, dtype=DT)
    x, y, x_test = (t.to(args.device) for t in (x, y, x_test))
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DT).to(args.device)
    likelihood.noise = 0.01
    model = GP(x, y, likelihood).to(DT).to(args.device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    print(f"N = {args.n}, CG path: {args.n > gpytorch.settings.max_cholesky_size.value()}, device {args.device}")

    if not args.no_grad:
        model.train()
        start = time.perf_counter()
        loss = -mll(model(x), y)
        loss.backward()
        print(f"marginal likelihood and its gradient: {time.perf_counter() - start:.1f} s; "
              f"loss {float(loss.detach()):.4f}; "
              f"dL/dW_std {float(model.cov.raw_W_std.grad):.4g}; peak RSS {peak_rss_gib():.1f} GiB")  # fmt: skip
        model.zero_grad()

    model.eval()
    likelihood.eval()
    start = time.perf_counter()
    with torch.no_grad():
        mean = model(x_test).mean
    print(f"posterior mean at {args.test} points by CG: {time.perf_counter() - start:.1f} s; "
          f"peak RSS {peak_rss_gib():.1f} GiB")  # fmt: skip

    start = time.perf_counter()
    with torch.no_grad():
        arch = with_scales(default_mlp(), float(model.cov.W_std), float(model.cov.b_std))
        k = arch.kernel(x).nngp
        k.diagonal().add_(float(likelihood.noise))
        chol = torch.linalg.cholesky(k)
        del k
        exact = arch.kernel(x_test, x).nngp @ torch.cholesky_solve(y.unsqueeze(1), chol)[:, 0]
    error = float((mean - exact).abs().max() / exact.abs().max())
    print(f"exact Cholesky reference: {time.perf_counter() - start:.1f} s; max |CG − exact| / max |exact| = "
          f"{error:.2e}; peak RSS {peak_rss_gib():.1f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
