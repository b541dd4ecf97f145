"""How tiles reach the store (issue 12, overhead work): the O_DIRECT chunk writer, the pipelined tasks, the inputs
they carry.

References: zarr's own LocalStore writes the same chunks (the files must be byte-identical, whatever path the
bytes took); the blocks handed to the store (read back exactly); the tile log and markers (what is committed).
"""

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit.scale import _store
from ntkit.scale.kernel import TILE_LOG, TileFunction, compute_tiles, task_args, task_groups

FC = nk.Sequential(nk.Linear(64, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
#: (tile, dtype, n): full 4 KiB-aligned chunks, chunks with an unaligned tail, chunks smaller than one block
CASES = [(64, "float32", 131), (50, "float64", 107), (7, "float64", 16)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_all_tiles(path: Path, tile: int, dtype: str, n: int) -> tuple[_store.Layout, dict]:
    layout = _store.Layout(str(path), n, n, tile, False, ("ntk",), dtype)
    _store.create(layout, {"test": 1})
    _store._array.cache_clear()
    rng = np.random.default_rng(0)
    blocks = {}
    for i, j in layout.stored_tiles():
        r, c = layout.row_slice(i), layout.col_slice(j)
        blocks[i, j] = rng.standard_normal((r.stop - r.start, c.stop - c.start)).astype(dtype)
        _store.write_tile(layout, i, j, {"ntk": blocks[i, j]})
    return layout, blocks


@pytest.mark.parametrize("tile, dtype, n", CASES)
def test_direct_writes_give_zarr_own_bytes(tmp_path, monkeypatch, tile, dtype, n):
    monkeypatch.setattr(_store, "DIRECT_MIN_BYTES", 0)  # every chunk through O_DIRECT, down to sub-block ones
    calls = []
    real = _store._put_direct
    monkeypatch.setattr(_store, "_put_direct", lambda path, value: (calls.append(path), real(path, value)))
    stores = {}
    for direct in ("1", "0"):
        monkeypatch.setenv(_store.DIRECT_IO, direct)
        layout, blocks = _write_all_tiles(tmp_path / f"direct{direct}.zarr", tile, dtype, n)
        for (i, j), block in blocks.items():
            assert np.array_equal(_store.read_tile(layout, "ntk", i, j), block)
        assert bool(_store.done_mask(layout).all())
        stores[direct] = _files(tmp_path / f"direct{direct}.zarr")
        if direct == "1":
            assert len(calls) == len(blocks) + len(blocks)  # every ntk chunk and every marker went through it
    assert stores["1"] == stores["0"]
    assert not [name for name in stores["1"] if "partial" in name]


def test_direct_writes_fall_back_when_o_direct_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_store, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setenv(_store.DIRECT_IO, "0")
    _write_all_tiles(tmp_path / "plain.zarr", *CASES[1])
    reference = _files(tmp_path / "plain.zarr")
    monkeypatch.setenv(_store.DIRECT_IO, "1")
    real_open, real_pwrite = os.open, os.pwrite
    import fcntl

    def refuse_open(path, flags, *args):  # a file system without O_DIRECT: open says EINVAL
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, *args)

    def refuse_write(fd, data, offset):  # O_DIRECT accepted at open, refused at the write (block > 4 KiB)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "unaligned")
        return real_pwrite(fd, data, offset)

    for name, target, fake in (("open", "open", refuse_open), ("write", "pwrite", refuse_write)):
        with monkeypatch.context() as m:
            m.setattr(os, target, fake)
            _write_all_tiles(tmp_path / f"{name}.zarr", *CASES[1])
        files = _files(tmp_path / f"{name}.zarr")
        assert files == reference, name


@pytest.mark.parametrize("direct_from", [0, 1 << 20], ids=["o_direct", "zarr"])
def test_failed_chunk_write_leaves_no_partial_file_and_the_tile_absent(tmp_path, monkeypatch, direct_from):
    monkeypatch.setattr(_store, "DIRECT_MIN_BYTES", direct_from)
    layout = _store.Layout(str(tmp_path / "K.zarr"), 128, 128, 64, False, ("ntk",), "float32")
    _store.create(layout, {"test": 1})
    _store._array.cache_clear()

    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="no space left on the device holding the store"):
        _store.write_tile(layout, 0, 1, {"ntk": np.ones((64, 64), np.float32)})
    monkeypatch.setattr(os, "replace", real_replace)
    assert not _store.is_done(layout, 0, 1)
    assert not [p for p in Path(layout.path).rglob("*") if "partial" in p.name]


def _layout(tmp_path, n=20, tile=4):
    layout = _store.Layout(str(tmp_path / "K.zarr"), n, n, tile, True, ("nngp", "ntk"), "float64")
    _store.create(layout, {"test": 1})
    _store._array.cache_clear()
    return layout


def test_compute_tiles_commits_every_tile_before_it_returns(tmp_path, monkeypatch):
    log = tmp_path / "tiles.log"
    monkeypatch.setenv(TILE_LOG, str(log))
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layout = _layout(tmp_path)
    fn = TileFunction(FC, ("nngp", "ntk"), "float64")
    tiles = layout.stored_tiles()[:7]
    ((_, _, inputs, group),) = list(task_args(layout, fn, x, None, [tiles]))
    out = compute_tiles(layout, fn, inputs, group)
    assert [(i, j) for i, j, _ in out] == tiles and all(s > 0 for _, _, s in out)
    assert log.read_text().split("\n")[:-1] == [f"{i} {j}" for i, j in tiles]  # committed, in order
    ref = FC.kernel(x, batch_size=4)
    for i, j in tiles:
        r, c = layout.row_slice(i), layout.col_slice(j)
        assert np.array_equal(_store.read_tile(layout, "ntk", i, j), ref.ntk[r, c].numpy())
    again = compute_tiles(layout, fn, inputs, group)  # a rerun finds them done and computes nothing
    assert [s for _, _, s in again] == [0.0] * len(tiles)
    assert len(log.read_text().split("\n")) - 1 == len(tiles)


def test_a_failed_commit_fails_the_task_and_later_tiles_stay_absent(tmp_path, monkeypatch):
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    layout = _layout(tmp_path)
    fn = TileFunction(FC, ("nngp", "ntk"), "float64")
    tiles = layout.stored_tiles()[:5]
    real = _store.write_tile

    def full_at_third(layout, i, j, blocks):
        if (i, j) == tiles[2]:
            raise _store.disk_full(layout.path, f"tile ({i}, {j})", OSError(errno.ENOSPC, "full"))
        return real(layout, i, j, blocks)

    monkeypatch.setattr(_store, "write_tile", full_at_third)
    ((_, _, inputs, group),) = list(task_args(layout, fn, x, None, [tiles]))
    with pytest.raises(OSError, match=r"while writing tile \(0, 2\)"):
        compute_tiles(layout, fn, inputs, group)
    done = _store.done_mask(layout)
    assert [bool(done[i, j]) for i, j in tiles] == [True, True, False, False, False]


def test_task_groups_cover_the_tiles_in_order():
    todo = [(i, j) for i in range(10) for j in range(i, 10)]  # 55 tiles
    for workers in (1, 2, 3, 16, 100):
        groups = task_groups(todo, workers)
        assert [t for g in groups for t in g] == todo
        assert all(1 <= len(g) <= 8 for g in groups)
        assert len(groups) >= min(len(todo), 4 * workers)  # enough tasks for the last ones to balance
    assert len(task_groups(todo, 1)) == 7  # 55 // 4 = 13 → capped at 8 tiles per task
    assert task_groups([], 2) == []


def test_a_task_carries_its_blocks_not_the_whole_input():
    x = torch.randn(4096, 16, dtype=torch.float32)
    layout = _store.Layout("unused", 4096, 4096, 256, True, ("ntk",), "float32")
    fn = TileFunction(FC, ("ntk",), "float32")
    ((*_, inputs, group),) = list(task_args(layout, fn, x, None, [[(0, 0), (0, 1), (0, 2)]]))
    assert sorted(inputs) == [("x1", 0), ("x1", 1), ("x1", 2)]  # each block once
    for (_, j), block in inputs.items():
        assert torch.equal(block, x[256 * j : 256 * (j + 1)])
    block_bytes = 3 * 256 * 16 * 4
    assert len(pickle.dumps(inputs)) < block_bytes + 4096  # x itself is 256 KiB; a slice would pickle all of it


def test_without_zarrs_private_pieces_the_store_is_zarrs_own(monkeypatch, tmp_path):
    """A zarr release without the private LocalStore pieces that the O_DIRECT store relies on gets zarr's own
    store (same bytes, ordinary writes), never a failing write."""
    import os

    from ntkit.scale import _store

    monkeypatch.delenv(_store.DIRECT_IO, raising=False)
    if hasattr(os, "O_DIRECT") and _store._zarr_internals_present():
        assert _store._local_store(str(tmp_path / "K.zarr")) is not None  # the installed zarr: the direct store
    monkeypatch.setattr(_store, "_zarr_internals_present", lambda: False)
    assert _store._local_store(str(tmp_path / "K.zarr")) is None
