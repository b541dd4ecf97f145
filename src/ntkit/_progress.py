"""One progress bar for every long computation in ntkit (kernel blocks, NTK blocks, tiles)."""

from __future__ import annotations

#: Seconds a call runs before its progress bar appears when ``progress=None``.
PROGRESS_DELAY = 2.0


def progress_bar(total: int, desc: str, progress: bool | None, unit: str = "block"):
    """A tqdm bar over ``total`` steps: ``progress=None`` shows it once the call has run for ``PROGRESS_DELAY``
    seconds, True at once, False never (nor for a single step)."""
    from tqdm.auto import tqdm

    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None; got {progress!r} ({type(progress).__name__})")
    return tqdm(
        total=total, desc=desc, unit=unit, disable=progress is False or total < 2,
        delay=0 if progress else PROGRESS_DELAY, leave=False,
    )  # fmt: skip
