"""The `ntkit regimes` experiment at toy sizes: the report folder, its columns, and the errors."""

import csv

import pytest

from ntkit.cli import main
from ntkit.data.tasks import load_task
from ntkit.examples import regimes_sweep as experiment
from ntkit.examples.regimes_report import jacot_figure

REQUIRED = ["task", "width", "parameterization", "alpha", "seed", "train_loss", "test_loss", "kernel_change",
            "weight_change", "ntk_gap"]  # fmt: skip


def test_sin_report_folder(tmp_path):
    result = experiment.run_regimes("sin", widths=(16, 64), parameterizations=("ntk", "mup", "standard"),
                                    alphas=(1.0, 10.0), seeds=2, out=tmp_path, steps=20, jacot=False,
                                    progress=False)  # fmt: skip
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2 * 2
    assert REQUIRED == list(rows[0])[: len(REQUIRED)]
    assert {r["parameterization"] for r in rows} == {"ntk", "mup", "standard"}
    assert all(float(r["kernel_change"]) > 0 for r in rows)
    for name in ("kernel_change.png", "function_vs_ntk.png"):
        assert (tmp_path / name).stat().st_size > 20_000
    summary = (tmp_path / "summary.md").read_text()
    assert "## What the numbers show" in summary and "log-log slope" in summary
    assert set(result["slopes"]) == {(p, a) for p in ("ntk", "mup", "standard") for a in (1.0, 10.0)}


def test_digits_records_accuracy(tmp_path):
    result = experiment.run_regimes("digits", widths=(32,), parameterizations=("ntk", "mup"), seeds=1,
                                    out=tmp_path, steps=100, jacot=False, progress=False)  # fmt: skip
    accuracies = [r["test_accuracy"] for r in result["rows"]]
    assert all(0.4 < a <= 1 for a in accuracies), accuracies  # 10 classes: chance is 0.1
    assert 0.6 < result["ntk"]["test_accuracy"] <= 1  # the NTK's closed form reaches 0.74 at 100 steps
    assert "test accuracy" in (tmp_path / "summary.md").read_text()


def test_spirals_task_is_balanced_and_classifiable():
    task = load_task("spirals")
    assert task.x_train.shape == (200, 2) and task.classes == 2
    assert float(task.y_train.sum()) == 0.0


def test_jacot_figure_converges_to_the_analytic_limit(tmp_path):
    """At initialisation the empirical Θ(x0, ·) is within O(1/√n) of the limit: 16× the width, ~4× closer."""
    numbers = jacot_figure((16, 256), 3, tmp_path / "jacot.png", steps=5)
    assert numbers[256]["init_gap"] < 0.6 * numbers[16]["init_gap"]
    assert (tmp_path / "jacot.png").stat().st_size > 20_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "mnist"}, r"task must be one of \('sin', 'spirals', 'digits'\); got 'mnist'"),
        ({"widths": (64, 0)}, r"widths must be a non-empty sequence of positive ints; got \(64, 0\)"),
        ({"widths": (64.5,)}, r"widths must be a non-empty sequence of positive ints"),
        ({"alphas": (1.0, 0.0)}, r"alphas must be a non-empty sequence of finite numbers > 0; got \(1.0, 0.0\)"),
        ({"alphas": (-2,)}, r"alphas must be a non-empty sequence of finite numbers > 0"),
        ({"parameterizations": ("ntk", "sp")}, r"parameterization must be one of .*; got 'sp'"),
        ({"seeds": 0}, r"seeds must be a positive int; got 0"),
        ({"lr_fraction": float("nan")}, r"lr_fraction must be finite; got nan"),
        ({"lr_fraction": 2.0}, r"lr_fraction \(of the largest stable rate\) must be ≤ 1; got 2.0"),
        ({"b_std": float("nan")}, r"b_std must be finite; got nan"),
        ({"depth": 0}, r"depth must be a positive int; got 0"),
        ({"widths": (10**12,)}, r"widths 1000000000000: training one network of width .* GiB is available"),
    ],
)
def test_bad_input(tmp_path, kwargs, message):
    with pytest.raises((ValueError, MemoryError), match=message):
        experiment.run_regimes(**{"out": tmp_path, "progress": False, **kwargs})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "64,-4"], "--widths must be positive"),
        (["--widths", "a,b"], "--widths must be comma-separated positive integers"),
        (["--alphas", "0"], "--alphas must be finite numbers > 0"),
        (["--parameterizations", "ntk,muP"], "--parameterizations must be a comma-separated subset of"),
        (["--task", "cifar"], "invalid choice: 'cifar'"),
        (["--seeds", "0"], "--seeds must be a positive integer"),
    ],
)
def test_cli_bad_input(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["regimes", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_runs(tmp_path, capsys):
    assert main(["regimes", "--widths", "8,16", "--seeds", "1", "--steps", "5", "--no-jacot",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "kernel change ∝ width^" in capsys.readouterr().out
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.md").exists()
