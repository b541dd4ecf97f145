"""The small-data study: its protocol (same outer folds for every method, nested search) checked by recomputing fold
scores independently; the command writes its table, CSV and plot; bad arguments are refused."""

import csv

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ntkit._runs import read_run
from ntkit.cli import main
from ntkit.examples import smalldata as sd
from ntkit.sklearn import InfiniteWidthKernel, default_mlp


def test_fold_scores_are_those_of_an_independent_nested_search():
    results = sd.run(("iris",), ("NTK-SVM", "SVC-RBF"), folds=2, inner_folds=2, grid="tiny", progress=False)
    assert [(r.method, r.fold) for r in results] == [("NTK-SVM", 0), ("NTK-SVM", 1), ("SVC-RBF", 0), ("SVC-RBF", 1)]
    x, y, _ = sd.load("iris")
    outer = list(StratifiedKFold(2, shuffle=True, random_state=0).split(x, y))
    inner = StratifiedKFold(2, shuffle=True, random_state=1)
    for fold, (train, test) in enumerate(outer):
        rbf = GridSearchCV(make_pipeline(StandardScaler(), SVC()), {"svc__gamma": ["scale", 0.01, 0.1]}, cv=inner)
        assert results[2 + fold].score == rbf.fit(x[train], y[train]).score(x[test], y[test])
        # NTK-SVM with the tiny grid (depth 1, no fixed layer, C = 1): an SVC on the precomputed Gram matrix
        scaler = StandardScaler().fit(x[train])
        a, b = scaler.transform(x[train]), scaler.transform(x[test])
        kernel = InfiniteWidthKernel(default_mlp(1), get="ntk", W_std=2**0.5, b_std=0.1)
        svc = SVC(kernel="precomputed").fit(kernel(a), y[train])
        assert results[fold].score == pytest.approx(float(np.mean(svc.predict(kernel(b, a)) == y[test])), abs=0)
        assert results[fold].params == "C=1 depth=1 fixed=0"


def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    code = main(["smalldata", "--datasets", "iris,diabetes", "--methods", "NTK,NNGP,SVC-RBF", "--folds", "2",
                 "--inner-folds", "2", "--grid", "tiny", "--no-progress", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    table = (tmp_path / "smalldata.md").read_text()
    assert table.splitlines()[0] == "| data set (n, metric) | NTK | NNGP | SVC-RBF |"
    assert "| iris (150, accuracy) |" in table and "| diabetes (442, R²) |" in table
    with open(tmp_path / "smalldata.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2
    scores = [float(r["score"]) for r in rows]
    assert all(0.8 < s <= 1 for r, s in zip(rows, scores, strict=True) if r["dataset"] == "iris")  # chance is 1/3
    assert (tmp_path / "smalldata.png").stat().st_size > 10_000
    assert "table:" in capsys.readouterr().out
    assert read_run(tmp_path)["status"] == "complete"


def test_a_rerun_resumes_from_the_stored_cells(tmp_path, monkeypatch):
    argv = ["smalldata", "--datasets", "iris", "--methods", "NTK", "--folds", "2", "--inner-folds", "2", "--grid",
            "tiny", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    first = (tmp_path / "smalldata.csv").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a stored cell was recomputed")

    monkeypatch.setattr(sd, "GridSearchCV", refuse)
    assert main(argv) == 0
    assert (tmp_path / "smalldata.csv").read_text() == first


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset must be one of"):
        sd.load("mnist")
    with pytest.raises(ValueError, match="datasets must be a non-empty subset"):
        sd.run(("iris",), ("XGBoost",), progress=False)
    with pytest.raises(ValueError, match="grid must be one of"):
        sd.run(("iris",), ("NTK",), grid="huge", progress=False)
    with pytest.raises(SystemExit):
        main(["smalldata", "--datasets", "mnist"])
    assert main(["smalldata", "--folds", "1"]) == 2
