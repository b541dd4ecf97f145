"""Every run parameter is checked against its range, and every refusal names the parameter, the range and the value."""

from __future__ import annotations

import math

import pytest

from ntkit.demo.params import (
    DEFAULT_WORK_CAP,
    FRAME_COST_STEPS,
    SPEC,
    ParamError,
    RunParams,
    cost_model,
    n_parameters,
    parse_params,
    work,
)

GOOD = {"width": 64, "depth": 2, "activation": "erf", "parameterization": "mup", "alpha": 4.0,
        "learning_rate": 0.2, "steps": 100, "task": "circles", "seed": 7}  # fmt: skip

BAD = [
    ("width", 15, "[16, 8192]"),
    ("width", 8193, "[16, 8192]"),
    ("width", 32.5, "integer"),
    ("width", "32", "integer"),
    ("width", True, "integer"),
    ("width", None, "integer"),
    ("depth", 0, "[1, 4]"),
    ("depth", 5, "[1, 4]"),
    ("activation", "tanh", "relu, erf, gelu"),
    ("activation", 1, "relu, erf, gelu"),
    ("parameterization", "NTK", "ntk, standard, mup"),
    ("alpha", 0.05, "[0.1, 100]"),
    ("alpha", 101, "[0.1, 100]"),
    ("alpha", "big", "finite number"),
    ("alpha", math.inf, "finite number"),
    ("learning_rate", 0, "[0.0001, 10]"),
    ("learning_rate", -1, "[0.0001, 10]"),
    ("learning_rate", 11, "[0.0001, 10]"),
    ("learning_rate", math.nan, "finite number"),
    ("learning_rate", None, "finite number"),
    ("steps", 0, "[1, 5000]"),
    ("steps", 5001, "[1, 5000]"),
    ("steps", 1.5, "integer"),
    ("task", "mnist", "sin, spirals, circles"),
    ("seed", -1, "[0, 2.14748e+09]"),
    ("seed", 2**31, "[0, 2.14748e+09]"),
]


def test_good_parameters_pass_and_defaults_fill_in():
    params = parse_params(GOOD)
    assert params == RunParams(**GOOD)
    assert parse_params({}) == RunParams(**{name: spec["default"] for name, spec in SPEC.items()})
    assert parse_params({**GOOD, "width": 64.0}).width == 64  # a whole float is an integer


@pytest.mark.parametrize(("name", "value", "expected"), BAD)
def test_each_bad_parameter_is_refused_with_a_message_naming_it(name, value, expected):
    with pytest.raises(ParamError) as info:
        parse_params({**GOOD, name: value})
    (error,) = info.value.errors
    assert error["param"] == name
    assert error["message"].startswith(name), error["message"]
    assert expected in error["message"], error["message"]
    assert repr(value) in error["message"], error["message"]


def test_every_parameter_has_a_bad_value_tested():
    assert {name for name, _, _ in BAD} == set(SPEC)


def test_several_bad_parameters_are_all_reported():
    with pytest.raises(ParamError) as info:
        parse_params({"width": 1, "depth": 9, "task": "x"})
    assert [e["param"] for e in info.value.errors] == ["width", "depth", "task"]


def test_unknown_parameters_and_non_objects_are_refused():
    with pytest.raises(ParamError, match="unknown parameter 'widht'"):
        parse_params({"widht": 32})
    with pytest.raises(ParamError, match="JSON object"):
        parse_params([1, 2])


def test_alpha_null_means_plain_training():
    assert parse_params({**GOOD, "alpha": None}).alpha is None


def test_work_is_parameters_times_steps_and_frames():
    # one hidden layer, 1 input, 1 output: n·2 + (n + 1) parameters
    assert n_parameters(32, 1, 1, 1) == 32 * 2 + 33
    assert n_parameters(32, 3, 2, 1) == 32 * 3 + 2 * 32 * 33 + 33
    p = n_parameters(32, 3, 2, 1)
    # 10 steps stream a frame at t = 0 and one after each step (10 ≤ n_frames), each costing FRAME_COST_STEPS steps
    # A 2-D step costs more than a sin(3x) one (the unit); a deeper network's frame costs fewer of its steps.
    assert cost_model("sin", 1) == (1.0, FRAME_COST_STEPS) == (1.0, 40)
    c, k = cost_model("spirals", 3)
    assert c > 1 and k < FRAME_COST_STEPS
    assert work(RunParams(width=32, depth=3, task="spirals", steps=10)) == c * p * (10 + k * 11)
    assert work(RunParams(width=32, depth=3, task="spirals", steps=10), n_frames=4) == c * p * (10 + k * 5)
    assert work(RunParams(width=32, depth=1, task="sin", steps=10)) == n_parameters(32, 1, 1, 1) * (10 + 40 * 11)


def _most_by_search(width: int, depth: int, task: str, cap: float, n_frames: int) -> int:
    """The most steps in [1, 5000] whose work fits the cap, by trying every one (0 if none)."""
    fits = [s for s in range(1, 5001) if work(RunParams(width=width, depth=depth, task=task, steps=s), n_frames) <= cap]
    return max(fits, default=0)


@pytest.mark.parametrize(
    ("width", "depth", "task", "cap", "n_frames"),
    [(1024, 4, "sin", DEFAULT_WORK_CAP, 50), (4096, 1, "sin", 2e7, 10), (512, 2, "sin", 3e7, 50),
     (256, 2, "sin", 2e8, 7), (8192, 1, "spirals", DEFAULT_WORK_CAP, 50), (256, 3, "circles", 1e8, 50),
     (1024, 4, "spirals", DEFAULT_WORK_CAP, 50)],
)  # fmt: skip
def test_the_work_cap_refuses_large_runs_and_says_what_fits(width, depth, task, cap, n_frames):
    most = _most_by_search(width, depth, task, cap, n_frames)
    assert 0 < most < 5000
    raw = {"width": width, "depth": depth, "task": task}
    with pytest.raises(ParamError) as info:
        parse_params({**raw, "steps": most + 1}, work_cap=cap, n_frames=n_frames)
    (error,) = info.value.errors
    assert error["param"] == "steps" and "cap" in error["message"]
    assert f"at most {most:,} step{'s' if most > 1 else ''} at" in error["message"]
    parse_params({**raw, "steps": most}, work_cap=cap, n_frames=n_frames)


def test_the_widest_run_fits_and_the_largest_network_is_refused():
    widest = {"width": 8192, "depth": 1, "steps": 5000}
    assert parse_params(widest).width == 8192  # the widest one-layer run is allowed at full length by default
    with pytest.raises(ParamError, match="smaller width or depth") as info:
        parse_params({"width": 8192, "depth": 2, "steps": 1})
    assert info.value.errors[0]["param"] == "width" and "67," in info.value.errors[0]["message"]
    with pytest.raises(ParamError, match="choose a smaller width or depth"):
        parse_params({"width": 4096, "depth": 2, "steps": 1}, work_cap=2e7)
    with pytest.raises(ParamError, match="too large"):
        parse_params({"width": 64, "steps": 1000}, work_cap=1000)
