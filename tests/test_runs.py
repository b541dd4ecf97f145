"""ntkit._runs: atomic files, the manifest's completion marker, cells stored once and reused, and a reader that
refuses unfinished or mixed folders."""

import json
import os
import subprocess
import sys

import pytest

from ntkit import _runs as runs
from ntkit._runs import FAULT_ENV, RunFolder, RunFolderError, atomic_write, check_writable, read_run


def square_run(out, n=3, config=None, compute=None):
    folder = RunFolder(out, "square", config or {"n": n}).start()
    values = folder.cells([[i] for i in range(n)], {}, compute or (lambda key: {"y": key[0] ** 2}), progress=False)
    folder.write_output("table.txt", " ".join(str(v["y"]) for v in values))
    folder.complete()
    return values


def test_complete_run_reads_back_and_flags_foreign_files(tmp_path):
    assert square_run(tmp_path) == [{"y": 0}, {"y": 1}, {"y": 4}]
    manifest = read_run(tmp_path)
    assert manifest["status"] == "complete" and manifest["config"] == {"n": 3} and manifest["unlisted"] == []
    (tmp_path / "notes.txt").write_text("by hand")
    assert read_run(tmp_path)["unlisted"] == ["notes.txt"]


def test_cells_are_reused_and_results_read_back_through_json(tmp_path):
    square_run(tmp_path)
    computed = []
    values = square_run(tmp_path, compute=lambda key: computed.append(key) or {"y": -1})
    assert computed == [] and values == [{"y": 0}, {"y": 1}, {"y": 4}]
    # a float computed now is the float a resumed run reads back (JSON round-trips floats exactly)
    folder = RunFolder(tmp_path / "f", "floats", {}).start()
    first = folder.cells([[0]], {}, lambda key: {"x": 0.1 + 0.2, "nan": float("nan")}, progress=False)[0]
    again = folder.cells([[0]], {}, lambda key: {"x": 0.0, "nan": 0.0}, progress=False)[0]
    assert first["x"] == again["x"] == 0.1 + 0.2 and again["nan"] != again["nan"]


def test_cells_depend_on_their_settings_and_on_the_code(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path, "square", {}).start()
    folder.cells([[1]], {"steps": 5}, lambda key: {"y": 5}, progress=False)
    assert folder.cells([[1]], {"steps": 6}, lambda key: {"y": 6}, progress=False) == [{"y": 6}]
    folder.close()
    monkeypatch.setattr(runs, "code_digest", lambda: "edited sources")
    edited = RunFolder(tmp_path, "square", {}).start()
    assert edited.fingerprint != folder.fingerprint
    assert edited.cells([[1]], {"steps": 5}, lambda key: {"y": 7}, progress=False) == [{"y": 7}]


@pytest.mark.parametrize("damage", ["missing", "edited", "running", "no manifest"])
def test_reader_refuses_unfinished_or_mixed_folders(tmp_path, damage):
    square_run(tmp_path)
    if damage == "missing":
        (tmp_path / "table.txt").unlink()
    elif damage == "edited":
        (tmp_path / "table.txt").write_text("0 1 5")
    elif damage == "running":
        RunFolder(tmp_path, "square", {"n": 4}).start()  # a new run that has not finished
    else:
        (tmp_path / "manifest.json").unlink()
    with pytest.raises(RunFolderError, match="missing|not written by|not complete|no readable"):
        read_run(tmp_path)


def test_a_new_configuration_removes_the_old_outputs(tmp_path):
    square_run(tmp_path, n=3)
    RunFolder(tmp_path, "square", {"n": 4}).start()
    assert not (tmp_path / "table.txt").exists()  # no old table beside the new run
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "running"


def test_atomic_write_killed_before_the_rename_leaves_the_old_file(tmp_path):
    target = tmp_path / "table.txt"
    target.write_text("old")
    code = f"from ntkit._runs import atomic_write; atomic_write({str(target)!r}, 'new')"
    env = {**os.environ, FAULT_ENV: "write:1"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -9
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.glob(".table.*.tmp.txt")]  # the half-done temporary is left behind...
    RunFolder(tmp_path, "square", {}).start()
    assert not list(tmp_path.glob(".table.*.tmp.txt"))  # ...and removed by the next run
    atomic_write(target, "new")
    assert target.read_text() == "new"


def test_unwritable_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out '.*file/sub' cannot be written"):
        check_writable(tmp_path / "file" / "sub", "--out")


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path):
    first = RunFolder(tmp_path, "square", {"n": 3}).start()
    with pytest.raises(
        RunFolderError, match=rf"out '{tmp_path}' is being written by another run \(pid {os.getpid()}\)"
    ):
        RunFolder(tmp_path, "square", {"n": 4}).start()
    first.close()
    RunFolder(tmp_path, "square", {"n": 4}).start().close()  # free again
