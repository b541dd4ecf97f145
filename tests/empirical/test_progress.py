"""``empirical_ntk``'s progress bar (issue 10, item 6): shown on request, also for work that would be one block
(split into row blocks then), never with ``progress=False``; ``progress=None`` shows it after a delay."""

import pytest
import torch
from torch import nn

import ntkit
from ntkit import _progress
from ntkit.empirical import _common


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()


@pytest.mark.parametrize("method", ["jacobian_contraction", "ntk_vector_products", "structured"])
def test_bar_shows_on_request_and_never_when_silenced(capsys, method):
    x = torch.randn(6, 3, dtype=torch.float64)
    ntkit.empirical_ntk(mlp(), x, method=method, batch_size=2, progress=True)
    assert "NTK blocks" in capsys.readouterr().err
    ntkit.empirical_ntk(mlp(), x, method=method, batch_size=2, progress=False)
    assert "NTK blocks" not in capsys.readouterr().err


def test_one_block_of_work_is_split_so_the_bar_moves(capsys, reference):
    """128 examples fit one block; with a bar they run as 4 row blocks, 10 pair blocks of the triangle."""
    model, x = mlp(), torch.randn(_common.SPLIT_FROM, 3, dtype=torch.float64)
    k = ntkit.empirical_ntk(model, x, progress=True)
    assert "/10 " in capsys.readouterr().err
    reference.assert_close(k, reference.ntk(model, x, output="mean"))
    assert torch.equal(k, k.T)


def test_default_shows_the_bar_once_the_delay_has_passed(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "PROGRESS_DELAY", 0.0)
    ntkit.empirical_ntk(mlp(), torch.randn(6, 3, dtype=torch.float64), batch_size=2)
    assert "NTK blocks" in capsys.readouterr().err


def test_progress_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="progress"):
        ntkit.empirical_ntk(mlp(), torch.randn(4, 3, dtype=torch.float64), batch_size=2, progress="yes")
