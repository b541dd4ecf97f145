"""The on-disk layout of a tiled kernel: a zarr v3 group with one array per kind and one done-marker per tile.

Layout of the group at ``path`` (a local folder or any URL fsspec opens)::

    zarr.json            attributes["ntkit_scale"]: the fingerprint (spec, input hashes, dtype, tile, version …)
    nngp/, ntk/          (N1, N2) arrays chunked (tile, tile), uncompressed, fill value NaN
    done/                (rows, cols) uint8, one chunk per tile: 1 once both kinds of that tile are written

A worker writes a tile's chunks first and its marker last, and each chunk is one atomic put (zarr's LocalStore
writes to a temporary file and renames it; object stores put whole objects), so a tile is complete or absent.
When x2 is None only tiles I ≤ J are stored; tile (J, I) is read as the transpose of (I, J).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import math
import mmap
import os
import threading
import uuid
from dataclasses import dataclass

import numpy as np

#: Group attribute holding the fingerprint; its presence is what makes a zarr group an ntkit store.
ATTRIBUTE = "ntkit_scale"
#: Bumped when the layout changes.
FORMAT = 1
KINDS = ("nngp", "ntk")


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - the [scale] extra is part of [dev]
        raise ImportError(f"ntkit.scale needs zarr ({exc}); install the extra: pip install 'ntkit[scale]'") from None
    return zarr


def disk_full(path: str, what: str, exc: OSError) -> OSError:
    """An OSError that says the disk holding the store is full, or ``exc`` itself for other errors."""
    if exc.errno != errno.ENOSPC:
        return exc
    return OSError(errno.ENOSPC, f"no space left on the device holding the store {path!r} while writing {what}: "
                   "free some space (or choose another path) and rerun the same command; the tiles already written "
                   "are kept and are not recomputed")  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Shape and tiling of a stored kernel, read from or written to the fingerprint."""

    path: str
    n1: int
    n2: int
    tile: int
    symmetric: bool
    kinds: tuple[str, ...]
    dtype: str

    @property
    def rows(self) -> int:
        return math.ceil(self.n1 / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.n2 / self.tile)

    def stored_tiles(self) -> list[tuple[int, int]]:
        """Every tile the store holds when complete, row by row: I ≤ J only when symmetric."""
        return [(i, j) for i in range(self.rows) for j in range(self.cols) if not (self.symmetric and j < i)]

    def row_slice(self, i: int) -> slice:
        return slice(i * self.tile, min((i + 1) * self.tile, self.n1))

    def col_slice(self, j: int) -> slice:
        return slice(j * self.tile, min((j + 1) * self.tile, self.n2))


def fingerprint_layout(path: str, fingerprint: dict) -> Layout:
    n1, n2 = fingerprint["shape"]
    return Layout(path, n1, n2, fingerprint["tile"], fingerprint["symmetric"], tuple(fingerprint["get"]),
                  fingerprint["dtype"])  # fmt: skip


def read_fingerprint(path: str) -> dict | None:
    """The fingerprint of the ntkit store at ``path``; None when nothing is there (or an empty folder).

    Raises ValueError when something exists at ``path`` that is not an ntkit store.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root) or (fs.isdir(root) and not fs.ls(root)):
        return None
    if not fs.isfile(root.rstrip("/") + "/zarr.json"):
        raise ValueError(f"{path!r} exists but is not an ntkit kernel store (no zarr.json in it); choose a new path "
                         "or delete it")  # fmt: skip
    try:
        attrs = dict(_zarr().open_group(path, mode="r").attrs)
    except Exception as exc:  # zarr raises several types for "not a group here"
        raise ValueError(f"{path!r} exists but is not an ntkit kernel store (not a zarr v3 group: {exc}); choose "
                         "a new path or delete it") from None  # fmt: skip
    if ATTRIBUTE not in attrs:
        raise ValueError(f"{path!r} is a zarr group but not an ntkit kernel store (it has no {ATTRIBUTE!r} "
                         "attribute); choose a new path or delete it")  # fmt: skip
    return attrs[ATTRIBUTE]


def create(layout: Layout, fingerprint: dict) -> None:
    """Create the group (fingerprint first) and any of its arrays that are missing; idempotent."""
    zarr = _zarr()
    try:
        group = zarr.open_group(layout.path, mode="a", attributes={ATTRIBUTE: fingerprint})
        if ATTRIBUTE not in group.attrs:
            group.attrs[ATTRIBUTE] = fingerprint
        names = set(group.array_keys())
        for kind in layout.kinds:
            if kind not in names:
                group.create_array(kind, shape=(layout.n1, layout.n2), chunks=(layout.tile, layout.tile),
                                   dtype=layout.dtype, fill_value=float("nan"), compressors=None)  # fmt: skip
        if "done" not in names:
            group.create_array("done", shape=(layout.rows, layout.cols), chunks=(1, 1), dtype="uint8", fill_value=0,
                               compressors=None)  # fmt: skip
    except OSError as exc:
        raise disk_full(layout.path, "the store's metadata", exc) from exc


#: Set to "0" to write local chunks through the page cache like zarr's own LocalStore (see :func:`_put_direct`).
DIRECT_IO = "NTKIT_SCALE_DIRECT_IO"
#: Chunks from this size up are written with O_DIRECT: smaller ones (markers, metadata) go the ordinary way.
DIRECT_MIN_BYTES = 1 << 20
_ALIGN = 4096  # O_DIRECT needs the buffer, the length and the file offset aligned to the device's block size
_buffer = None
_buffer_lock = threading.Lock()


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _put_direct(path, value) -> None:
    """Write a chunk to a temporary file with O_DIRECT, then rename it over ``path`` (atomic, as zarr's own put).

    Why: on the benchmark machine a buffered write of a new 16 MiB file cost 40-60 ms of CPU in the page cache
    (ext4 on a virtio disk), a third of an FC tile's compute; O_DIRECT sends the same bytes to the device in ~11 ms
    of waiting and ~1 ms of CPU. The aligned head of the chunk goes through one reused page-aligned buffer; an
    unaligned tail, or a file system without O_DIRECT, is written the ordinary way. The file's bytes are the same.
    """
    global _buffer
    import fcntl

    from zarr.storage._local import _put

    view = memoryview(value.as_buffer_like()).cast("B")
    head = len(view) - len(view) % _ALIGN
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # this file system refuses O_DIRECT
            raise
        _put(path, value)
        return
    try:
        try:
            with _buffer_lock:
                if _buffer is None or len(_buffer) < head:
                    _buffer = mmap.mmap(-1, max(head, _ALIGN))  # anonymous maps are page-aligned
                _buffer[:head] = view[:head]
                _write_all(fd, memoryview(_buffer)[:head], 0)
            done = head
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # e.g. a device block larger than 4 KiB: write it all the ordinary way
                raise
            done = 0
        if done < len(view):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            _write_all(fd, view[done:], done)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _zarr_internals_present() -> bool:
    """The private pieces of zarr's LocalStore that :func:`_put_direct` and ``DirectLocalStore`` use: a zarr release
    that renames them gets zarr's own store (slower writes, same bytes), never a failing write."""
    try:
        from zarr.storage import LocalStore
        from zarr.storage._local import _put  # noqa: F401
    except ImportError:
        return False
    return all(hasattr(LocalStore, name) for name in ("_set", "_open", "_check_writable"))


def _local_store(path: str):
    """A zarr LocalStore whose large chunk writes use :func:`_put_direct`, or None when ``path`` is not local (an
    fsspec URL: zarr's own store) or O_DIRECT is off or not on this platform."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem
    from zarr.storage import LocalStore

    if os.environ.get(DIRECT_IO, "1") == "0" or not hasattr(os, "O_DIRECT") or not _zarr_internals_present():
        return None
    fs, root = fsspec.core.url_to_fs(path)
    if not isinstance(fs, LocalFileSystem):
        return None

    class DirectLocalStore(LocalStore):
        async def _set(self, key, value, exclusive: bool = False) -> None:
            if exclusive or len(value) < DIRECT_MIN_BYTES:
                return await super()._set(key, value, exclusive=exclusive)
            if not getattr(self, "_is_open", False):
                await self._open()
            self._check_writable()
            await asyncio.to_thread(_put_direct, self.root / key, value)

    return DirectLocalStore(root)


@functools.lru_cache(maxsize=16)
def _array(layout: Layout, name: str):
    """The zarr array ``name`` of the store (opened once per process and layout)."""
    store = _local_store(layout.path)
    if store is None:
        return _zarr().open_array(layout.path, path=name, mode="r+")
    return _zarr().open_array(store=store, path=name, mode="r+")


def done_mask(layout: Layout) -> np.ndarray:
    """(rows, cols) bool: tiles whose marker is written."""
    return _array(layout, "done")[:] == 1


def is_done(layout: Layout, i: int, j: int) -> bool:
    return bool(_array(layout, "done")[i, j] == 1)


def write_tile(layout: Layout, i: int, j: int, blocks: dict[str, np.ndarray]) -> None:
    """Write one tile of every kind, then its done-marker (last, so that the tile is complete or absent)."""
    rows, cols = layout.row_slice(i), layout.col_slice(j)
    try:
        for kind in layout.kinds:
            _array(layout, kind)[rows, cols] = blocks[kind]
        _array(layout, "done")[i, j] = 1
    except OSError as exc:
        raise disk_full(layout.path, f"tile ({i}, {j})", exc) from exc


def read_tile(layout: Layout, kind: str, i: int, j: int) -> np.ndarray:
    """Tile (I, J) of ``kind`` as stored or, below the diagonal of a symmetric store, as the transpose of (J, I)."""
    if layout.symmetric and j < i:
        return np.ascontiguousarray(read_tile(layout, kind, j, i).T)
    return _array(layout, kind)[layout.row_slice(i), layout.col_slice(j)]
