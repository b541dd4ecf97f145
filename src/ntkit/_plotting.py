"""Headless matplotlib for every figure ntkit writes: one place that picks the backend and saves a figure."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (unless the user already chose one)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path | str, dpi: int | None = None) -> Path:
    """Lay ``fig`` out, write it to ``path`` (creating its folder), close it, and return the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
