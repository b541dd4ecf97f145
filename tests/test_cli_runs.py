"""`ntkit example`, `ntkit dynamics` and `ntkit regimes` as an unlucky user meets them: killed with SIGKILL at
several points and rerun, pointed at a folder that cannot be written, given NaN or impossible sizes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ntkit
from ntkit._runs import FAULT_ENV, RunFolderError, read_run
from ntkit.cli import main
from ntkit.examples import linearized_dynamics, regimes_sweep, width_convergence  # noqa: F401 (imported before timing)

SRC = str(Path(ntkit.__file__).resolve().parents[1])
# command line, a different earlier configuration whose outputs sit in the folder first, and the tables to compare
COMMANDS = {
    "example": (["example", "--widths", "8,16", "--seeds", "3"], ["--widths", "8,32"], ["width_convergence.csv"]),
    "dynamics": (["dynamics", "--architectures", "mlp", "--widths", "8,16", "--seeds", "2", "--times", "1,2"],
                 ["--times", "1,3"], ["linearized_dynamics.csv"]),
    "regimes": (["regimes", "--widths", "8,16", "--seeds", "1", "--steps", "5", "--parameterizations", "ntk,mup"],
                ["--steps", "4"], ["results.csv", "summary.md"]),
}  # fmt: skip


def run_killed(argv: list[str], fault: str) -> int:
    """Run ``ntkit argv`` in a fresh process that SIGKILLs itself at ``fault`` (see ntkit._runs)."""
    env = {**os.environ, FAULT_ENV: fault, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "ntkit.cli", *argv], env=env, capture_output=True, timeout=300
    ).returncode


@pytest.mark.parametrize("command", COMMANDS)
def test_kill_at_several_points_then_rerun_equals_an_uninterrupted_run(tmp_path, command, capsys):
    argv, other, tables = COMMANDS[command]
    reference, work = tmp_path / "reference", tmp_path / "work"
    assert main([*argv, "--out", str(reference)]) == 0
    assert main([*argv, *other, "--out", str(work)]) == 0  # an earlier, different run in the same folder
    old = read_run(work)["fingerprint"]
    argv = [*argv, "--out", str(work)]
    # after the 2nd stored cell; between a cell's temporary file and its rename; after the first output
    for fault in ("cell:2", "write:2", "output:1"):
        assert run_killed(argv, fault) == -9, fault
        with pytest.raises(RunFolderError, match="not complete"):
            read_run(work)  # never reported complete: neither the old run nor the killed one
        assert not any((work / name).exists() and name not in read_outputs(work) for name in tables), fault
    # every cell is stored now: a rerun that would SIGKILL itself on computing any cell must finish
    assert run_killed(argv, "cell:1") == 0
    manifest = read_run(work)
    assert manifest["fingerprint"] != old and manifest["unlisted"] == []
    for name in tables:
        assert (work / name).read_bytes() == (reference / name).read_bytes(), name
    capsys.readouterr()


def read_outputs(folder: Path) -> set[str]:
    """Outputs of the folder's current manifest (written so far by the running or killed run)."""
    import json

    return set(json.loads((folder / "manifest.json").read_text())["outputs"])


@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_out_fails_in_under_a_second(tmp_path, command, capsys):
    """Timed in this process, whose modules are imported already: what is timed is the command's own checks (a
    fresh interpreter spends its first seconds importing torch, before any ntkit code runs)."""
    (tmp_path / "file").write_text("")
    start = time.perf_counter()
    assert main([*COMMANDS[command][0], "--out", str(tmp_path / "file" / "results")]) == 2
    assert time.perf_counter() - start < 1.0
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["regimes", "--lr-fraction", "nan"], "--lr-fraction must be a finite number (0, 1]; got 'nan'"),
        (["regimes", "--lr-fraction", "1.5"], "--lr-fraction must be a finite number (0, 1]"),
        (["regimes", "--b-std", "nan"], "--b-std must be a finite number ≥ 0; got 'nan'"),
        (["example", "--seeds", "0"], "--seeds must be a positive integer; got '0'"),
        (["example", "--seed", "-1"], "--seed must be an integer ≥ 0; got '-1'"),
        (["dynamics", "--times", "0"], "--times must be positive; got '0'"),
        (["dynamics", "--times", "x"], "--times must be comma-separated positive integers"),
    ],
)
def test_bad_options_are_named_and_nothing_is_created(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_widths_that_cannot_fit_are_refused_before_anything_is_built(tmp_path, capsys, command):
    start = time.perf_counter()
    assert main([command, "--widths", "500000000", "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - start < 1.0
    assert "--widths 500000000" in (err := capsys.readouterr().err) and "GiB is available" in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_keeps_the_finished_cells_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from ntkit.examples import linearized_dynamics as ld

    argv = [*COMMANDS["dynamics"][0], "--out", str(tmp_path)]
    train, calls = ld.run_one, []

    def interrupted_on_the_second_network(*args):
        calls.append(args[:3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(*args)

    monkeypatch.setattr(ld, "run_one", interrupted_on_the_second_network)
    assert main(argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="not complete"):
        read_run(tmp_path)
    calls.clear()
    monkeypatch.setattr(ld, "run_one", lambda *args: calls.append(args[:3]) or train(*args))
    assert main(argv) == 0
    assert calls == [("mlp", 8, 1), ("mlp", 16, 0), ("mlp", 16, 1)]  # the first network was not trained again
    assert read_run(tmp_path)["status"] == "complete"
