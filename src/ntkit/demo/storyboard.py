r"""The storyboard behind "a wide network barely moves its weights": |Δθ| histograms from real runs.

The demo's own experiment (:class:`ntkit.demo.experiment.Experiment`: sin(3x) on 40 points, one hidden ReLU
layer, NTK parameterization, float64) is trained at widths 32, 512 and 8192 with the same step η (half the
largest stable one of the analytic kernel) and the same number of steps. For every trainable parameter we record
how far it moved, |θ_T − θ_0|, and for the function how far its outputs moved on the 200 test points,
RMS(f_T − f_0). In the NTK parameterization the function moves by O(1) at every width while each of the
P ∝ n parameters moves by O(1/√n) (Jacot, Gabriel & Hongler, 2018; Lee et al., 2019, Theorem 2.1), so the
histograms slide left by a factor of about √(8192/32) = 16 while the function moves just as far.

The page draws ``static/storyboard.json``, computed once at build time by this module (it takes a few seconds on
one core), so that it needs no server round trip::

    python -m ntkit.demo.storyboard            # rewrites src/ntkit/demo/static/storyboard.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ntkit.demo.experiment import Experiment, stable_learning_rate
from ntkit.demo.params import RunParams

WIDTHS = (32, 512, 8192)
STEPS = 400
#: Shared log-spaced bins of |Δθ|: 10⁻⁷ … 10¹, five per decade. Smaller moves are counted apart as "still": the
#: parameters of hidden units whose ReLU is off on every training point get no gradient at all.
BIN_EDGES = [10 ** (-7 + k / 5) for k in range(41)]
PATH = Path(__file__).resolve().parent / "static" / "storyboard.json"


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values, q))


def weight_moves(width: int, steps: int = STEPS, seed: int = 0) -> dict[str, Any]:
    """Train the demo's network of this width and measure how far its weights and its function moved.

    Returns
    -------
    dict
        ``width``, ``n_parameters``, ``learning_rate``, ``steps``; ``fractions`` (the share of all parameters in
        each :data:`BIN_EDGES` bin), ``still`` (the share below the first edge); ``median``, ``rms`` and ``max`` of
        |Δθ|; ``function_move`` RMS(f_T − f_0) on the test points; ``final_loss`` ‖f − y‖²/(2N).
    """
    base = RunParams(width=width, steps=steps, seed=seed)
    rate = 0.5 * stable_learning_rate(base)
    experiment = Experiment(RunParams(width=width, steps=steps, seed=seed, learning_rate=rate), n_frames=1,
                            dtype=torch.float64)  # fmt: skip
    params = [p for p in experiment.model.parameters() if p.requires_grad]
    theta0 = [p.detach().clone() for p in params]
    x_test = experiment.task.x_test
    with torch.no_grad():
        f0 = experiment._forward(x_test)
    *_, done = experiment.frames()
    if done["type"] != "done":
        raise RuntimeError(f"the width-{width} run did not finish: {done}")
    with torch.no_grad():
        f_t = experiment._forward(x_test)
    moves = torch.cat([(p.detach() - q).abs().reshape(-1) for p, q in zip(params, theta0, strict=True)])
    edges = torch.tensor(BIN_EDGES, dtype=torch.float64)
    moving = moves[moves >= BIN_EDGES[0]]
    index = torch.bucketize(moving.clamp_max(BIN_EDGES[-1] * (1 - 1e-12)), edges, right=True) - 1
    counts = torch.bincount(index, minlength=len(BIN_EDGES) - 1)
    return {
        "width": width,
        "n_parameters": moves.numel(),
        "learning_rate": rate,
        "steps": steps,
        "fractions": (counts.double() / moves.numel()).tolist(),
        "still": 1 - moving.numel() / moves.numel(),
        "median": _quantile(moves, 0.5),
        "rms": float(moves.pow(2).mean().sqrt()),
        "max": float(moves.max()),
        "function_move": float((f_t - f0).pow(2).mean().sqrt()),
        "final_loss": done["summary"]["net_test_loss"],
    }


def build(widths: tuple[int, ...] = WIDTHS, steps: int = STEPS) -> dict[str, Any]:
    """The storyboard: :func:`weight_moves` at every width, with the bins they share."""
    torch.set_num_threads(1)
    runs = [weight_moves(w, steps) for w in widths]
    return {"bin_edges": BIN_EDGES, "runs": runs, "task": "sin(3x), 40 points", "parameterization": "ntk",
            "made_by": "python -m ntkit.demo.storyboard"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compute the demo's storyboard (|Δθ| histograms) into a JSON file")
    parser.add_argument("--out", type=Path, default=PATH, help=f"where to write it (default {PATH})")
    args = parser.parse_args(argv)
    board = build()
    text = json.dumps(board, separators=(",", ":"), allow_nan=False)
    args.out.write_text(text + "\n")
    for run in board["runs"]:
        print(f"width {run['width']:>5}: median |Δθ| {run['median']:.3g}, function moved {run['function_move']:.3g}"
              f", {run['n_parameters']:,} parameters")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
