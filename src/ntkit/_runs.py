"""Result folders that a kill cannot corrupt: atomic files, a manifest, per-cell results and resume.

A command that computes many independent cells (seeds, widths, parameterizations) writes one folder::

    out/manifest.json      command, argv, ntkit version and source digest, configuration, fingerprint, status,
                           outputs and their SHA-256
    out/cells/<hash>.json  one finished cell: its key and result, named by the hash of the command, the version and
                           source digest (:func:`code_digest`), the settings the cell depends on and its key
    out/<outputs>          tables, plots, summary: written only after every cell is done

Every file is written under a temporary name in the same folder and renamed over its target (``os.replace`` is
atomic on POSIX), so a reader sees the old file or the new one, never half of one. The manifest says "running" from
the moment a run starts until every output is written; only then does it say "complete" and list each output's
SHA-256 (outputs are listed as they are written, so a killed run's folder says which files are its own). A run
holds an exclusive lock on ``out/.lock`` (``flock``, dropped by the kernel when the process dies, even by SIGKILL),
so a second run into the same folder is refused while the first one writes.
:func:`read_run` refuses a folder that is not complete, or whose files differ from what its manifest lists
(a newer run killed half way, a table edited by hand), and flags the files that no run of the folder wrote.

A rerun of the same command loads the cells already stored and computes only the others. A cell's result is stored
as JSON (Python floats round-trip exactly) and is always read back through that same JSON, whether it was computed
now or by an earlier, killed run, so the final tables equal an uninterrupted run's bit for bit.

Tests inject kills with the environment variable ``NTKIT_FAULT="event:n"``: the process sends itself SIGKILL at the
n-th ``event`` ("write": between a temporary file and its rename; "cell": after a cell is stored; "output": after an
output is in place).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import io
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
LOCK = ".lock"
CELLS = "cells"
FORMAT = 1
FAULT_ENV = "NTKIT_FAULT"
BYTES_PER_NUMBER = 8  # float64
_fault_counts: dict[str, int] = {}


class RunFolderError(ValueError):
    """A results folder that cannot be trusted: no manifest, a run that did not finish, or files from two runs."""


def _fault(event: str) -> None:
    """SIGKILL this process at the n-th ``event`` when ``NTKIT_FAULT="event:n"`` (kill-safety tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.partition(":")[0] != event:
        return
    _fault_counts[event] = _fault_counts.get(event, 0) + 1
    if _fault_counts[event] == int(spec.partition(":")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _temporary(path: Path) -> Path:
    """A hidden name beside ``path`` with the same suffix (matplotlib picks the format from it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _publish(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``path``."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    _fault("write")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically, on error it is removed.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "table.csv") as tmp:
    ...     _ = tmp.write_text("a,b\\n")
    >>> (folder / "table.csv").read_text()
    'a,b\\n'
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        _publish(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=True)


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _file_digest(path: Path) -> str:
    return _digest(path.read_bytes())


def check_writable(out: Path | str, option: str = "out") -> Path:
    """Create the folder ``out`` and prove that a file can be written and renamed in it, in milliseconds.

    Raises
    ------
    ValueError
        Naming ``option`` and the operating system's reason, when ``out`` cannot be created or written.
    """
    out = Path(out)
    probe = out / f".write-test.{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        os.replace(probe, probe.with_suffix(".renamed"))
        probe.with_suffix(".renamed").unlink()
    except OSError as exc:
        raise ValueError(f"{option} {str(out)!r} cannot be written: {exc.strerror or exc}") from None
    return out


def training_bytes(n_params: int, n_activations: int, parameter_copies: int = 4) -> int:
    """Bytes that training a float64 network takes, estimated before building it.

    ``parameter_copies`` tensors of every parameter's size (the weights, their gradients, a frozen initial copy, a
    tracker's or optimizer's copy) and four tensors of the ``n_activations`` hidden values of a forward pass over the
    data (pre-activations, activations, and their gradients). Compare it with the free memory through
    :func:`ntkit._validation.check_memory`.
    """
    return BYTES_PER_NUMBER * (parameter_copies * n_params + 4 * n_activations)


@functools.cache
def code_digest() -> str:
    """SHA-256 of every ntkit source file (``*.py``, sorted by path): cells and manifests computed by other code,
    even under the same version number, are never reused."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _read_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


class RunFolder:
    """One run of one command in the folder ``out``; see the module docstring for the layout.

    Parameters
    ----------
    out:
        The results folder.
    command:
        The command's name ("regimes", "dynamics", "example").
    config:
        Every setting of the run, JSON-serializable: a rerun with the same command, version and config resumes.
    argv:
        The command line, recorded in the manifest.
    option:
        How messages name ``out`` ("--out" on the command line).

    Example
    -------
    >>> import tempfile
    >>> folder = RunFolder(tempfile.mkdtemp(), "square", {"n": 3}).start()
    >>> folder.cells([[i] for i in range(3)], {}, lambda key: {"y": key[0] ** 2}, progress=False)
    [{'y': 0}, {'y': 1}, {'y': 4}]
    >>> _ = folder.write_output("table.txt", "0 1 4\\n")
    >>> folder.complete()
    >>> read_run(folder.out)["status"]
    'complete'
    """

    def __init__(self, out: Path | str, command: str, config: dict, argv: Sequence[str] | None = None,
                 option: str = "out"):  # fmt: skip
        from ntkit import __version__

        self.out, self.command, self.option = Path(out), command, option
        self.config = json.loads(_json(config))
        self.argv = list(argv) if argv is not None else None
        self.version, self.code = __version__, code_digest()
        self.fingerprint = _digest(_json({"command": command, "version": self.version, "code": self.code,
                                          "config": self.config}))  # fmt: skip
        self.outputs: dict[str, str] = {}
        self.resumed = False
        self._cells_used: set[str] = set()
        self._started = ""
        self._lock = None

    def start(self) -> RunFolder:
        """Check that ``out`` can be written, replace another run's outputs, and mark this run as running."""
        check_writable(self.out, self.option)
        self._lock_folder()
        old = _read_manifest(self.out)
        self.resumed = old is not None and old.get("fingerprint") == self.fingerprint
        if old is not None and not self.resumed:
            for name in old.get("outputs") or {}:
                with contextlib.suppress(OSError, TypeError):
                    (self.out / Path(name).name).unlink()
        for folder in (self.out, self.out / CELLS):
            for tmp in folder.glob(".*.tmp*"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        (self.out / CELLS).mkdir(exist_ok=True)
        self._started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_manifest("running")
        return self

    def _lock_folder(self) -> None:
        """Hold an exclusive lock on out/.lock while this run writes (the kernel drops it when the process dies)."""
        self._lock = open(self.out / LOCK, "a+")  # noqa: SIM115 (held until close())
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            self._lock = None
            raise RunFolderError(f"{self.option} {str(self.out)!r} is being written by another run ({holder}); "
                                 "wait for it to finish or choose another folder") from None  # fmt: skip
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()}")
        self._lock.flush()

    def close(self) -> None:
        """Release the folder's lock (also released when the process ends, however it ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _write_manifest(self, status: str) -> None:
        manifest = {"format": FORMAT, "command": self.command, "argv": self.argv, "version": self.version,
                    "code": self.code,
                    "config": self.config, "fingerprint": self.fingerprint, "status": status,
                    "started": self._started, "outputs": self.outputs}  # fmt: skip
        if status == "complete":
            manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write(self.out / MANIFEST, json.dumps(manifest, indent=1, allow_nan=True) + "\n")

    def _cell_path(self, key: Any, depends_on: dict) -> Path:
        name = _digest(_json({"command": self.command, "version": self.version, "code": self.code,
                              "depends_on": depends_on, "key": key}))  # fmt: skip
        return self.out / CELLS / f"{name[:32]}.json"

    def load_cell(self, key: Any, depends_on: dict) -> Any | None:
        """The stored result of ``key`` under the settings ``depends_on``, or None (never stored, or unreadable)."""
        try:
            stored = json.loads(self._cell_path(key, depends_on).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("key") != json.loads(_json(key)) or "result" not in stored:
            return None
        return stored["result"]

    def save_cell(self, key: Any, depends_on: dict, result: Any) -> Any:
        """Store ``result`` (JSON-serializable) atomically; returns it as read back from JSON."""
        text = _json({"command": self.command, "version": self.version, "code": self.code, "depends_on": depends_on,
                      "key": key, "result": result})  # fmt: skip
        path = self._cell_path(key, depends_on)
        atomic_write(path, text)
        self._cells_used.add(path.name)
        _fault("cell")
        return json.loads(text)["result"]

    def cells(self, keys: Sequence[Any], depends_on: dict, compute: Callable[[Any], Any], progress: bool = True,
              desc: str = "cells") -> list:  # fmt: skip
        """The result of every key, in order: loaded when stored, else computed by ``compute(key)`` and stored.

        ``depends_on`` holds every setting the results depend on besides the key (a cell computed under other
        settings is never reused). Every result is returned as read back from its JSON.
        """
        from tqdm.auto import tqdm

        depends_on = json.loads(_json(depends_on))
        results = []
        bar = tqdm(keys, desc=desc, unit="cell", disable=not progress)
        for key in bar:
            result = self.load_cell(key, depends_on)
            if result is None:
                bar.set_postfix_str(" ".join(map(str, key)) if isinstance(key, (list, tuple)) else str(key))
                result = self.save_cell(key, depends_on, compute(key))
            else:
                self._cells_used.add(self._cell_path(key, depends_on).name)
            results.append(result)
        return results

    @contextlib.contextmanager
    def output(self, name: str) -> Iterator[Path]:
        """Yield a temporary path for the output ``name``; on success it replaces out/``name`` and is recorded."""
        path = self.out / name
        with atomic_path(path) as tmp:
            yield tmp
        self.outputs[name] = _file_digest(path)
        self._write_manifest("running")  # the folder says, at every moment, which files this run wrote
        _fault("output")

    def write_output(self, name: str, data: bytes | str) -> Path:
        """Write the output ``name`` atomically and record its SHA-256."""
        with self.output(name) as tmp:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        return self.out / name

    def write_table(self, name: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
        """Write ``rows`` as the CSV output ``name`` (columns: ``columns``, or the first row's keys)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(columns or rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return self.write_output(name, text.getvalue())

    def complete(self) -> None:
        """Remove the cells this run did not use and mark the run complete, listing its outputs."""
        for path in (self.out / CELLS).glob("*.json"):
            if path.name not in self._cells_used:
                with contextlib.suppress(OSError):
                    path.unlink()
        self._write_manifest("complete")
        self.close()


def read_run(out: Path | str) -> dict:
    """The manifest of a complete run in ``out``, checked against the files.

    Returns the manifest with one more entry, ``unlisted``: the files in ``out`` that this run did not write.

    Raises
    ------
    RunFolderError
        When there is no readable manifest, the run is not complete (killed, or still running), or an output
        listed in the manifest is missing or differs from what the run wrote (files from different runs).
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        raise RunFolderError(f"{out}: no readable {MANIFEST}; nothing says which run wrote these files")
    run = f"run {str(manifest.get('fingerprint'))[:12]} of `ntkit {manifest.get('command')}`"
    if manifest.get("status") != "complete":
        raise RunFolderError(f"{out}: {run} is not complete (status {manifest.get('status')!r}); rerun the same "
                             "command to finish it")  # fmt: skip
    outputs = manifest.get("outputs") or {}
    for name, digest in outputs.items():
        path = out / name
        if not path.is_file():
            raise RunFolderError(f"{out}: {name} is listed by {run} but missing")
        if _file_digest(path) != digest:
            raise RunFolderError(f"{out}: {name} was not written by {run} (its SHA-256 differs): the folder mixes runs")
    unlisted = sorted(p.name for p in out.iterdir() if p.name not in outputs and p.name not in (MANIFEST, CELLS, LOCK))
    return {**manifest, "unlisted": unlisted}
