"""The practice loop's answers are what the page's own experiment shows (sin(3x), seed 0, 400 steps).

Each check is a scaling law with a margin for one seed's noise, not a fitted number: the kernel change of the NTK
parameterization falls like 1/√n (Lee et al. 2019), so four times the width halves it; μP's does not fall (Yang &
Hu 2021); the lazy scale α divides the weights' travel, and with it the kernel change, by α (Chizat, Oyallon &
Bach 2019), but not the distance between a width-32 kernel and the infinite-width one.
"""

from __future__ import annotations

import pytest

from ntkit.demo.experiment import Experiment
from ntkit.demo.params import RunParams


def _summary(**settings) -> dict:  # single-threaded like the whole suite (tests/conftest.py)
    *_, done = Experiment(RunParams(steps=400, **settings), n_frames=2).frames()
    assert done["type"] == "done"
    return done["summary"]


def test_four_times_the_width_halves_the_kernel_change():
    narrow, wide = _summary(width=512)["kernel_change"], _summary(width=2048)["kernel_change"]
    assert wide / narrow == pytest.approx(0.5, abs=0.2)  # 1/√4, within one seed's spread


def test_mup_keeps_its_kernel_moving_at_every_width():
    narrow = _summary(width=512, parameterization="mup")["kernel_change"]
    wide = _summary(width=4096, parameterization="mup")["kernel_change"]
    assert wide > 0.5 and wide / narrow > 0.7  # O(1), and not shrinking like 1/√8 ≈ 0.35


def test_the_lazy_scale_freezes_the_kernel_but_does_not_make_a_narrow_network_wide():
    plain, lazy = _summary(width=32), _summary(width=32, alpha=100.0)
    assert lazy["kernel_change"] < plain["kernel_change"] / 30  # weights move 1/α = 1/100 as far
    assert lazy["max_gap"] > 0.5 * plain["max_gap"]  # the gap to the infinite-width prediction stays
