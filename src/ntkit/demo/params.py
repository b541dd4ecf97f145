"""The parameters of one demo run: their ranges, their checks, and the cap on the work one run may start.

Every value the page sends is checked here, at the door, and every failure names the argument, what was expected
and what was received, so that the page can show it beside the control. :data:`SPEC` is the single source of the
ranges: the server sends it to the page (``GET /api/params``), which builds its controls from it.

The work of a run is full-batch gradient descent, whose cost per step is proportional to the number of trainable
parameters P times the task's cost of one step, c_task (:func:`cost_model`: 1 for sin(3x) on 40 points). For a
depth-L MLP of width n on d inputs and O outputs

    P(n, L) = n·(d + 1) + (L − 1)·n·(n + 1) + O·(n + 1).

A run also measures the network's kernel on every streamed frame (a Jacobian over the training and probe points
and its contraction), and each frame costs about as much as k_frame training steps (:func:`cost_model`: 40 with
one hidden layer, 10 with more). The work of a run with F frames after t = 0 (F = min(n_frames, steps)) is

    W = c_task·P·(steps + k_frame·(F + 1)),

which grows like width × depth × steps for one hidden layer and like width² × (depth − 1) × steps for deeper
ones. A run is refused when W exceeds the cap, or when P alone exceeds :data:`MAX_PARAMETERS`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ntkit.regimes import PARAMETERIZATIONS

ACTIVATIONS = ("relu", "erf", "gelu")
TASKS = ("sin", "spirals", "circles")

#: Inputs and outputs of each task's network: sin(3x) is 1 → 1, the two classifications are 2 → 1 (±1 labels).
TASK_SHAPES = {"sin": (1, 1), "spirals": (2, 1), "circles": (2, 1)}

#: The default cap on parameters × steps. Width 8192 at depth 1 (≈ 3·10⁴ parameters) may run the full 5000 steps;
#: width 1024 at depth 4 (≈ 3·10⁶ parameters) about 100.
DEFAULT_WORK_CAP = 3e8

#: Frames streamed per run after t = 0 (one more, at t = 0, opens the run).
DEFAULT_FRAMES = 50

#: One frame's kernel measurement in units of one full-batch training step of the same network, with one hidden
#: layer and with more. Measured on an AMD EPYC core (torch 2.13, one thread) as the time of a frame over the time
#: of a step: 14 to 36 with one hidden layer (widths 256 to 8192), 3.4 to 9.0 with 2 to 4 (widths 256 to 1024),
#: both task shapes; the cap counts the upper ends.
FRAME_COST_STEPS = 40
DEEP_FRAME_COST_STEPS = 10

#: A full-batch step of each task relative to one of sin(3x) at the same parameter count: the 2-D tasks train on
#: 64 points of 2 inputs and draw a 32 × 32 grid. Measured (CPU time, one thread, AMD EPYC): 2.5 to 3.6 with one
#: hidden layer (widths 2048, 8192; their frames 1.9 to 3.5), 1.0 to 1.5 with 2 to 4 (widths 256 to 1024).
TASK_STEP_COST = {"sin": 1.0, "spirals": 3.5, "circles": 3.5}
DEEP_TASK_STEP_COST = {"sin": 1.0, "spirals": 1.5, "circles": 1.5}

#: The largest network one run may build (its parameters, gradients and kernels must fit comfortably in memory).
MAX_PARAMETERS = 20_000_000

SPEC: dict[str, dict[str, Any]] = {
    "width": {"kind": "int", "min": 16, "max": 8192, "default": 32, "scale": "log2",
              "label": "width n", "help": "hidden units per layer"},
    "depth": {"kind": "int", "min": 1, "max": 4, "default": 1, "label": "depth", "help": "hidden layers"},
    "activation": {"kind": "choice", "choices": list(ACTIVATIONS), "default": "relu", "label": "activation",
                   "names": {"relu": "ReLU", "erf": "Erf", "gelu": "GELU"}},
    "parameterization": {"kind": "choice", "choices": list(PARAMETERIZATIONS), "default": "ntk",
                         "label": "parameterization", "names": {"ntk": "NTK", "standard": "standard", "mup": "μP"}},
    "alpha": {"kind": "float", "min": 0.1, "max": 100.0, "default": None, "nullable": True, "scale": "log10",
              "label": "lazy scale α", "help": "train α·(f − f₀) with the loss divided by α² (off: train f)"},
    "learning_rate": {"kind": "float", "min": 1e-4, "max": 10.0, "default": 0.3, "label": "learning rate η",
                      "exclusive_min": 0.0},
    "steps": {"kind": "int", "min": 1, "max": 5000, "default": 400, "label": "steps",
              "help": "full-batch gradient-descent steps"},
    "task": {"kind": "choice", "choices": list(TASKS), "default": "sin", "label": "task",
             "names": {"sin": "1D: sin(3x), 40 points", "spirals": "2D: two spirals", "circles": "2D: two circles"}},
    "seed": {"kind": "int", "min": 0, "max": 2**31 - 1, "default": 0, "label": "seed"},
}  # fmt: skip


class ParamError(ValueError):
    """One or more bad parameters; ``errors`` is a list of ``{"param": name, "message": text}``."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(e["message"] for e in errors))


@dataclass(frozen=True)
class RunParams:
    """One run's settings, already checked (build them with :func:`parse_params`)."""

    width: int = 32
    depth: int = 1
    activation: str = "relu"
    parameterization: str = "ntk"
    alpha: float | None = None
    learning_rate: float = 0.3
    steps: int = 400
    task: str = "sin"
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def n_parameters(width: int, depth: int, in_features: int, out_features: int) -> int:
    """P(n, L) = n·(d + 1) + (L − 1)·n·(n + 1) + O·(n + 1): the trainable parameters of the MLP (with biases)."""
    return width * (in_features + 1) + (depth - 1) * width * (width + 1) + out_features * (width + 1)


def frame_count(steps: int, n_frames: int = DEFAULT_FRAMES) -> int:
    """Kernel measurements of a run: one at t = 0 and ``min(n_frames, steps)`` during training."""
    return min(n_frames, steps) + 1


def cost_model(task: str, depth: int) -> tuple[float, int]:
    """(c_task, k_frame): a step's cost relative to sin(3x)'s, and a frame's in steps (see the module docstring)."""
    if depth == 1:
        return TASK_STEP_COST[task], FRAME_COST_STEPS
    return DEEP_TASK_STEP_COST[task], DEEP_FRAME_COST_STEPS


def step_cost(params: RunParams) -> float:
    """The work of one training step, c_task·P, in sin-task parameter-steps (see the module docstring)."""
    d, o = TASK_SHAPES[params.task]
    return cost_model(params.task, params.depth)[0] * n_parameters(params.width, params.depth, d, o)


def work(params: RunParams, n_frames: int = DEFAULT_FRAMES) -> float:
    """The work a run starts, c_task·P·(steps + k_frame·(F + 1)) (see the module docstring)."""
    k_frame = cost_model(params.task, params.depth)[1]
    return step_cost(params) * (params.steps + k_frame * frame_count(params.steps, n_frames))


def most_steps(cost_per_step: float, work_cap: float, n_frames: int = DEFAULT_FRAMES,
               k_frame: int = FRAME_COST_STEPS) -> int:  # fmt: skip
    """The most steps whose work fits ``work_cap`` when one step costs ``cost_per_step`` and one frame ``k_frame``
    steps (0 if none does)."""
    budget = work_cap / cost_per_step
    long = math.floor(budget - k_frame * (n_frames + 1))  # runs with at least n_frames steps
    if long >= n_frames:
        return long
    return max(0, math.floor((budget - k_frame) / (1 + k_frame)))  # one frame per step


def _check_one(name: str, value: Any) -> tuple[Any, str | None]:
    spec = SPEC[name]
    label = f"{name} ({spec['label']})" if spec["label"] != name else name
    kind = spec["kind"]
    if value is None and spec.get("nullable"):
        return None, None
    if kind == "choice":
        if not isinstance(value, str) or value not in spec["choices"]:
            return None, f"{label} must be one of {', '.join(spec['choices'])}; got {value!r}"
        return value, None
    if kind == "int":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or isinstance(value, float)
            and (not math.isfinite(value) or value != int(value))
        ):
            return None, f"{label} must be an integer in [{spec['min']}, {spec['max']}]; got {value!r}"
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"{label} must be a finite number in [{spec['min']:g}, {spec['max']:g}]; got {value!r}"
        value = float(value)
    if not spec["min"] <= value <= spec["max"]:
        return None, f"{label} must be in [{spec['min']:g}, {spec['max']:g}]; got {value!r}"
    return value, None


def parse_params(raw: Any, work_cap: float = DEFAULT_WORK_CAP, n_frames: int = DEFAULT_FRAMES) -> RunParams:
    """Check a JSON object of run parameters and return :class:`RunParams`.

    Missing keys take their defaults; unknown keys are refused (a typo should not pass silently). The work,
    parameters × (steps + the frames' kernel cost) for a run streaming ``n_frames`` frames (:func:`work`), must not
    exceed ``work_cap``.

    Raises
    ------
    ParamError
        With one entry per bad parameter, each naming the parameter, the expected range and the received value.
    """
    if not isinstance(raw, dict):
        raise ParamError([{"param": "body", "message": f"the request body must be a JSON object; got {raw!r:.80}"}])
    errors: list[dict[str, str]] = []
    unknown = sorted(set(raw) - set(SPEC) - {"client"})
    for name in unknown:
        errors.append({"param": name, "message": f"unknown parameter {name!r}; expected one of {', '.join(SPEC)}"})
    values = {}
    for name, spec in SPEC.items():
        value, error = _check_one(name, raw.get(name, spec["default"]))
        if error:
            errors.append({"param": name, "message": error})
        values[name] = value
    if errors:
        raise ParamError(errors)
    params = RunParams(**values)
    cost = work(params, n_frames)
    d, o = TASK_SHAPES[params.task]
    p = n_parameters(params.width, params.depth, d, o)
    if p > MAX_PARAMETERS:
        raise ParamError([{"param": "width", "message": (
            f"width {params.width} at depth {params.depth} makes a network of {p:,} parameters, above the cap "
            f"{MAX_PARAMETERS:,} for one run; choose a smaller width or depth")}])  # fmt: skip
    if cost > work_cap:
        c, k_frame = cost_model(params.task, params.depth)
        most = most_steps(step_cost(params), work_cap, n_frames, k_frame)
        task_factor, task_value = (f"the {params.task} task's step cost × ", f"{c:g} × ") if c != 1 else ("", "")
        hint = (
            f"at most {most:,} step{'s' if most != 1 else ''} at this width and depth, or a smaller width or depth"
            if most
            else ("a smaller width or depth")
        )
        errors.append({"param": "steps", "message": (
            f"this run is too large: {task_factor}parameters × (steps + {k_frame} per kernel frame) = "
            f"{task_value}{p:,} × ({params.steps:,} + {k_frame} × {frame_count(params.steps, n_frames)}) = "
            f"{cost:.3g}, above the cap {work_cap:.3g}; choose {hint}")})  # fmt: skip
        raise ParamError(errors)
    return params
