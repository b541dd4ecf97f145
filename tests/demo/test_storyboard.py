"""The storyboard's JSON is what ``python -m ntkit.demo.storyboard`` makes, and it shows the lazy regime.

Training runs in float64, so a rebuild on another CPU differs from the committed file only by rounding that 400
steps of a contracting recursion do not amplify beyond ~1e-9 relative; 1e-6 leaves room for BLAS differences.
"""

from __future__ import annotations

import json
import math

import pytest

from ntkit.demo.storyboard import BIN_EDGES, PATH, main, weight_moves

BOARD = json.loads(PATH.read_text())


def test_the_file_has_three_widths_and_shared_bins():
    assert [r["width"] for r in BOARD["runs"]] == [32, 512, 8192]
    assert BOARD["bin_edges"] == pytest.approx(BIN_EDGES, rel=1e-15)
    for run in BOARD["runs"]:
        assert len(run["fractions"]) == len(BIN_EDGES) - 1
        assert math.isclose(sum(run["fractions"]) + run["still"], 1.0, abs_tol=1e-12)  # every parameter counted once
        assert run["n_parameters"] == 3 * run["width"] + 1  # w, b of the hidden layer; v and the output bias


@pytest.mark.parametrize("index", [0, 1])  # widths 32 and 512: a rebuild takes a second
def test_a_rebuild_reproduces_the_committed_file(index):
    stored = BOARD["runs"][index]
    fresh = weight_moves(stored["width"], stored["steps"])
    for key in ("learning_rate", "median", "rms", "max", "function_move"):
        assert fresh[key] == pytest.approx(stored[key], rel=1e-6), key
    # A move sitting on a bin edge may fall on either side of it on another CPU: one parameter per edge at most.
    assert fresh["fractions"] == pytest.approx(stored["fractions"], abs=1.5 / stored["n_parameters"])


def test_weights_move_like_one_over_root_width_while_the_function_moves_as_far():
    runs = {r["width"]: r for r in BOARD["runs"]}
    # Lee et al. (2019): ‖θ_T − θ_0‖ stays O(1) while P ∝ n, so the RMS move per parameter is O(1/√n). Between the
    # two wide runs the ratio is √16 = 4, up to O(1/√512) ≈ 4% corrections times constants: 20% covers them.
    assert runs[512]["rms"] / runs[8192]["rms"] == pytest.approx(4.0, rel=0.2)
    # The function moves by O(1) at every width (its start f₀ is random, so the amount varies by tens of percent).
    moves = [r["function_move"] for r in BOARD["runs"]]
    assert max(moves) / min(moves) < 2 and min(moves) > 0.5


def test_the_script_writes_the_file(tmp_path, monkeypatch):
    import ntkit.demo.storyboard as storyboard

    monkeypatch.setattr(storyboard, "build", lambda: {"runs": [weight_moves(32, 20)], "bin_edges": BIN_EDGES})
    out = tmp_path / "board.json"
    assert main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["runs"][0]["width"] == 32
