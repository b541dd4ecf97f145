"""One home for argument checks: every public function validates through these, so messages read alike.

Wrong *types* raise ``TypeError`` and wrong *values* raise ``ValueError``; every message names the argument, says
what was expected and shows what came in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

PARAMETERIZATIONS = ("ntk", "standard", "mup")


def real_number(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """``value`` as a finite float; TypeError for non-numbers (bool and str included), ValueError for NaN, ±inf or
    a value outside the range asked for."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be ≥ 0; got {value}")
    return value


def optional_real_number(name: str, value, **kwargs) -> float | None:
    """None, or :func:`real_number`."""
    return None if value is None else real_number(name, value, **kwargs)


def boolean(name: str, value) -> bool:
    """``value`` if it is a bool (numpy's too): a TypeError for anything else, such as the string "False"."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")
    return bool(value)


def positive_int(name: str, value) -> int:
    """``value`` if it is a positive int (not a bool): TypeError for other types, ValueError for values < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def shape_tuple(name: str, value) -> tuple[int, ...]:
    """A per-example shape such as (3,) or (3, 32, 32): a non-empty sequence of positive ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | torch.Size):
        raise TypeError(f"{name} must be a tuple of positive ints such as (3,) or (3, 32, 32); got {value!r} "
                        f"({type(value).__name__})")  # fmt: skip
    if not value or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in value):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints such as (3, 32, 32); got {tuple(value)!r}")
    return tuple(int(s) for s in value)


def one_of(name: str, value, choices: Sequence) -> object:
    """``value`` if it is one of ``choices``, else a ValueError that lists them."""
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def parameterization(value: str, name: str = "parameterization") -> str:
    """The parameterization name, or a ValueError that lists the known ones."""
    return one_of(name, value, PARAMETERIZATIONS)


def kernel_kinds(get) -> tuple[str, ...]:
    """``get`` as a tuple of kernel names: "nngp", "ntk", or a tuple/list of them (no repeats)."""
    kinds = (get,) if isinstance(get, str) else get
    if not isinstance(kinds, tuple | list) or not kinds:
        raise TypeError(f"get must be 'nngp', 'ntk' or a tuple of them; got {get!r}")
    for kind in kinds:
        one_of("get", kind, ("nngp", "ntk"))
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"get names a kernel twice: {get!r}")
    return tuple(kinds)


def finite_tensor(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` if it has no NaN or ±inf entries, else a ValueError that counts them."""
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) out of {x.numel()}")
    return x


def finite_result(name: str, x: torch.Tensor, advice: str) -> torch.Tensor:
    """A computed output checked as strictly as the inputs: a FloatingPointError (never a silent NaN) with advice."""
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise FloatingPointError(f"{name}: {bad} of {x.numel()} entries came out NaN or infinite; {advice}")
    return x


def available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated now: free GPU memory on CUDA, the kernel's MemAvailable (or free physical pages)
    on the CPU; None when the system does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class MemoryBudgetError(MemoryError):
    """A call that would need more memory than is available; raised before anything large is allocated."""


def check_memory(needed: int, device: torch.device, what: str, advice: str) -> None:
    """Refuse (MemoryBudgetError) when ``needed`` bytes exceed what ``device`` has available, saying what would fit."""
    have = available_memory(device)
    if have is not None and needed > have:
        raise MemoryBudgetError(
            f"{what} needs about {needed / 2**30:.2f} GiB but only {have / 2**30:.2f} GiB is available on "
            f"{torch.device(device)}; {advice}"
        )
