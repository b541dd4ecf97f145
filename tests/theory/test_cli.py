"""`ntkit theory learning-curve` and `ntkit theory phase` write their table and plot; bad options are refused."""

import csv

import pytest

from ntkit.cli import main


def test_learning_curve_command_writes_table_and_plot(tmp_path, capsys):
    args = ["theory", "learning-curve", "--dim", "3", "--ns", "8,16", "--draws", "2", "--ridges", "0.01"]
    assert main([*args, "--no-progress", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "learning_curve.csv")))
    assert [int(r["n"]) for r in rows] == [8, 16]
    assert all(float(r["predicted"]) > 0 and float(r["measured"]) > 0 for r in rows)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert "predicted" in capsys.readouterr().out


def test_phase_command_writes_table_and_plot(tmp_path):
    args = ["theory", "phase", "--activation", "relu", "--w2", "1.0,2.5", "--depths", "2,3", "--width", "8"]
    assert main([*args, "--steps", "3", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "phase_relu.csv")))
    assert len(rows) == 4
    # ReLU: χ1 = σw²/2, up to the rounding of σw = √σw² squared again
    assert sorted({round(float(r["chi1"]), 12) for r in rows}) == [0.5, 1.25]
    assert (tmp_path / "phase_relu.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args",
    [
        ["theory", "phase", "--w2", "0,1"],
        ["theory", "learning-curve", "--ridges", "-1"],
        ["theory", "learning-curve", "--ns", "0,10"],
        ["theory"],
    ],
)
def test_bad_options_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2


def test_phase_run_folder_is_complete_and_resumes(tmp_path):
    from ntkit._runs import read_run

    args = ["theory", "phase", "--activation", "relu", "--w2", "1.0", "--depths", "2", "--width", "8", "--steps", "2"]
    assert main([*args, "--no-progress", "--out", str(tmp_path)]) == 0
    run = read_run(tmp_path)
    assert run["status"] == "complete" and set(run["outputs"]) == {"phase_relu.csv", "phase_relu.png"}
    first = (tmp_path / "phase_relu.csv").read_text()
    assert main([*args, "--no-progress", "--out", str(tmp_path)]) == 0  # resumed from the stored cell
    assert (tmp_path / "phase_relu.csv").read_text() == first
