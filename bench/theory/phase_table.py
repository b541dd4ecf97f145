"""The table and plot of an `ntkit theory phase` run folder, also while it runs or after it stopped part-way: every
network finished so far is a stored cell (``cells/*.json``); networks not yet trained show as "–" (NaN in the plot).

    PYTHONPATH=src python bench/theory/phase_table.py results/theory/phase256_tanh [--plot out.png]

Prints one markdown row per σ_w²: χ₁, 6ξ, the NTK's condition number at the largest depth, and the final training
loss over the best constant's at every depth.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ntkit.data import digits
from ntkit.examples.theory_study import plot_phase
from ntkit.theory import phase_diagram


def load(folder: Path) -> list[dict]:
    cells = [json.loads(p.read_text()) for p in sorted((folder / "cells").glob("*.json"))]
    if not cells:
        raise SystemExit(f"no finished networks in {folder}/cells")
    settings = cells[0]["depends_on"]
    n_train, seed = settings["n_train"], settings["seed"]
    images, labels = digits()  # the same task and baseline as theory_study.phase_training
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n_train]
    y = (labels[idx] < 5).to(torch.float64).mul(2).sub(1)
    baseline = float(1 - y.mean() ** 2)
    w2s = sorted({c["key"][0] for c in cells})
    manifest = json.loads((folder / "manifest.json").read_text())
    config = manifest.get("config", {})
    w2s = sorted(set(w2s) | set(config.get("w2", [])))
    depths = sorted({c["key"][1] for c in cells} | set(config.get("depths", [])))
    pd = phase_diagram(settings["activation"], np.sqrt(w2s), [math.sqrt(settings["b2"])], depth=depths)
    done = {tuple(c["key"]): c["result"] for c in cells}
    rows = []
    for i, w2 in enumerate(w2s):
        for j, depth in enumerate(depths):
            result = done.get((w2, depth))
            rows.append({"activation": settings["activation"], "w2": w2, "b2": settings["b2"], "depth": depth,
                         "width": settings["width"], "steps": settings["steps"],
                         "lr": result["lr"] if result else math.nan,
                         "relative_loss": result["loss"] / baseline if result else math.nan,
                         "chi1": float(pd.chi1[i, 0]), "xi": float(pd.xi[i, 0]), "six_xi": float(6 * pd.xi[i, 0]),
                         "ntk_condition": float(pd.ntk_condition[i, 0, j])})  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    depths = sorted({r["depth"] for r in rows})
    head = f"| σ_w² | χ₁ | 6ξ | NTK cond. (depth {depths[-1]}) | " + " | ".join(f"depth {d}" for d in depths) + " |"
    lines = [head, "| " + " | ".join(["---:"] * (4 + len(depths))) + " |"]
    for w2 in sorted({r["w2"] for r in rows}):
        sel = sorted((r for r in rows if r["w2"] == w2), key=lambda r: r["depth"])
        six = sel[0]["six_xi"]
        cells = [f"{r['relative_loss']:.3g}" if math.isfinite(r["relative_loss"]) else "–" for r in sel]
        lines.append(f"| {w2:g} | {sel[0]['chi1']:.3f} | {six:.1f} | {sel[-1]['ntk_condition']:.3g} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    rows = load(args.folder)
    print(markdown(rows))
    if args.plot:
        plot_phase(rows, args.plot)
        print(f"plot: {args.plot}")
