"""The store against the in-memory kernels, its fingerprint, and its errors (issue 12).

References: ``arch.kernel(x1, x2, batch_size=tile)``, the in-memory driver cutting the same blocks (and computing
diagonal blocks with x2=None, like the store), which the store must equal bit for bit, since each tile is the
same deterministic computation; and ``arch.kernel(x1, x2)`` with its own block size, which cuts the matrix
differently: self-pairs are bit-identical whatever the partition, the rest agrees to float64 rounding (1e-12
relative to the largest entry, far above the ~1e-15 a reordered sum can cost).
"""

import errno
import os
import socket
import time

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit import scale
from ntkit.scale import _store
from ntkit.scale.kernel import TILE_LOG

FC = nk.Sequential(nk.Linear(256, W_std=1.5, b_std=0.1), nk.ReLU(), nk.Linear(256, W_std=1.5, b_std=0.1), nk.ReLU(),
                   nk.Linear(1, W_std=1.5, b_std=0.1))  # fmt: skip
CONV = nk.Sequential(nk.Conv2d(8, 3, W_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool2d(2), nk.Flatten(),
                     nk.Linear(1, W_std=1.4))  # fmt: skip


def _gen(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dense(k: scale.TiledKernel, kind: str) -> torch.Tensor:
    return torch.from_numpy(getattr(k, kind).compute(scheduler="sync"))


@pytest.mark.parametrize("arch, x", [(FC, _gen(23, 4)), (CONV, _gen(9, 2, 4, 4, seed=1))], ids=["fc", "conv"])
def test_symmetric_store_equals_in_memory_kernel(tmp_path, client, arch, x):
    tile = 5
    k = scale.kernel(arch, x, path=tmp_path / "K.zarr", tile=tile, dtype=torch.float64, client=client, progress=False)
    assert k.done == k.total == sum(range(1, -(-x.shape[0] // tile) + 1))  # the tiles I ≤ J only
    ref = arch.kernel(x, batch_size=tile)
    default = arch.kernel(x)
    for kind in ("nngp", "ntk"):
        got = _dense(k, kind)
        assert torch.equal(got, getattr(ref, kind))
        assert torch.equal(got, got.T)
        # self-pairs: the per-example reductions may round differently by block shape (≤ C·ε), nothing amplifies
        diag, ref_diag = got.diagonal(), getattr(default, kind).diagonal()
        assert float(((diag - ref_diag).abs() / ref_diag.abs()).max()) < 1e-13
        torch.testing.assert_close(got, getattr(default, kind), rtol=0, atol=1e-12 * float(got.abs().max()))


def test_cross_store_float32_and_one_kind(tmp_path, client):
    x1, x2 = _gen(17, 3), _gen(11, 3, seed=2)
    k = scale.kernel(FC, x1, x2, path=tmp_path / "K.zarr", get="ntk", tile=4, client=client, progress=False)
    assert k.layout.kinds == ("ntk",) and k.total == 5 * 3
    assert k.ntk.dtype == np.float32
    with pytest.raises(ValueError, match="holds ntk, not 'nngp'"):
        _dense(k, "nngp")
    assert torch.equal(_dense(k, "ntk"), FC.kernel(x1.float(), x2.float(), batch_size=4).ntk)


def test_module_store_equals_empirical_ntk(tmp_path, client):
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
    x = _gen(13, 3, seed=3)
    k = scale.kernel(model, x, path=tmp_path / "K.zarr", tile=4, dtype=torch.float64, client=client, progress=False)
    ref = nk.empirical_ntk(model, x)
    got = _dense(k, "ntk")
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert torch.equal(got, got.T)


def test_rerun_computes_nothing_and_a_different_setting_is_refused(tmp_path, client, monkeypatch):
    log = tmp_path / "tiles.log"
    monkeypatch.setenv(TILE_LOG, str(log))
    x = _gen(12, 3)
    path = tmp_path / "K.zarr"
    first = scale.kernel(FC, x, path=path, tile=5, client=client, progress=False)
    assert len(log.read_text().split("\n")) - 1 == first.total == 6
    again = scale.kernel(FC, x, path=path, tile=5, client=client, progress=False)
    assert len(log.read_text().split("\n")) - 1 == 6  # nothing recomputed
    assert torch.equal(_dense(again, "ntk"), _dense(first, "ntk"))
    for change, words in [({"tile": 4}, "tile size: store has 5, this call 4"),
                          ({"dtype": torch.float64}, "dtype: store has 'float32'"),
                          ({"x1": x + 1e-9}, "x1 (hash)"),
                          ({"arch": nk.Sequential(nk.Linear(8), nk.Erf(), nk.Linear(1))}, "architecture")]:  # fmt: skip
        args = {"arch": FC, "x1": x, "tile": 5, "dtype": torch.float32} | change
        with pytest.raises(ValueError, match="holds a different kernel") as err:
            scale.kernel(args.pop("arch"), args.pop("x1"), path=path, client=client, progress=False, **args)
        assert words in str(err.value)


def test_bad_input(tmp_path, client):
    x = _gen(6, 3)
    with pytest.raises(ValueError, match="tile must be a positive int"):
        scale.kernel(FC, x, path=tmp_path / "a.zarr", tile=0, client=client)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "file.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists but is not an ntkit kernel store"):
        scale.kernel(FC, x, path=tmp_path / "notes", client=client)
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(ValueError, match="not an ntkit kernel store"):
        scale.kernel(FC, x, path=tmp_path / "other.zarr", client=client)
    with pytest.raises(TypeError, match="x1 must be a floating-point torch.Tensor"):
        scale.kernel(FC, x.numpy(), path=tmp_path / "b.zarr", client=client)
    with pytest.raises(ValueError, match="x2 must have the trailing shape"):
        scale.kernel(FC, x, _gen(4, 2), path=tmp_path / "b.zarr", client=client)
    with pytest.raises(ValueError, match="end it with nk.Flatten"):
        scale.kernel(nk.Conv1d(4, 3), _gen(4, 2, 5), path=tmp_path / "b.zarr", client=client)
    with pytest.raises(TypeError, match="client must be None, a scheduler address"):
        scale.kernel(FC, x, path=tmp_path / "b.zarr", client=42)
    with pytest.raises(FileNotFoundError, match="no ntkit kernel store"):
        scale.TiledKernel(tmp_path / "missing.zarr")


def test_unreachable_scheduler_fails_within_seconds(tmp_path):
    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the dask scheduler at 'tcp://127.0.0.1:{port}'"):
        scale.kernel(FC, _gen(6, 3), path=tmp_path / "K.zarr", client=f"tcp://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - start < 10


def test_full_disk_is_reported_and_leaves_the_tile_absent(tmp_path, client, monkeypatch):
    x = _gen(10, 3)
    path = tmp_path / "K.zarr"
    real = _store.write_tile

    def full_after_first_kind(layout, i, j, blocks):  # the disk fills up after the first kind of tile (1, 1)
        if (i, j) != (1, 1):
            return real(layout, i, j, blocks)
        _store._array(layout, "nngp")[layout.row_slice(i), layout.col_slice(j)] = blocks["nngp"]
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise _store.disk_full(layout.path, f"tile ({i}, {j})", exc) from exc

    monkeypatch.setattr(_store, "write_tile", full_after_first_kind)
    with pytest.raises(OSError, match="no space left on the device holding the store") as err:
        scale.kernel(FC, x, path=path, tile=5, client=client, progress=False)
    assert err.value.errno == errno.ENOSPC
    assert not _store.is_done(scale.TiledKernel(path).layout, 1, 1)  # marker absent: the tile counts as missing
    with pytest.raises(ValueError, match=r"is incomplete \(1 tiles missing\); rerun scale.kernel"):
        scale.solve(scale.TiledKernel(path).ntk, torch.ones(10), diag_reg=1e-3)
    monkeypatch.setattr(_store, "write_tile", real)
    k = scale.kernel(FC, x, path=path, tile=5, client=client, progress=False)  # the rerun finishes it
    assert torch.equal(_dense(k, "ntk"), FC.kernel(x.float(), batch_size=5).ntk)
