"""The default block budget: a quarter of the free memory, clamped to [1 GiB, 8 GiB], 1 GiB when unreadable."""

import builtins
import io

import torch

from ntkit.empirical import _common


def _meminfo(available_kib: int):
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/meminfo":
            return io.StringIO(f"MemTotal: 99999999 kB\nMemAvailable: {available_kib} kB\n")
        return real_open(path, *args, **kwargs)

    return fake_open


def test_a_quarter_of_the_free_memory(monkeypatch):
    monkeypatch.setattr(builtins, "open", _meminfo(16 << 20))  # 16 GiB available
    assert _common.memory_budget(torch.device("cpu")) == 4 << 30


def test_clamped_to_one_and_eight_gib(monkeypatch):
    monkeypatch.setattr(builtins, "open", _meminfo(1 << 20))  # 1 GiB available: a quarter is below the floor
    assert _common.memory_budget(torch.device("cpu")) == 1 << 30
    monkeypatch.setattr(builtins, "open", _meminfo(256 << 20))  # 256 GiB available
    assert _common.memory_budget(torch.device("cpu")) == 8 << 30


def test_unreadable_free_memory_gives_the_default(monkeypatch):
    def no_proc(path, *args, **kwargs):
        raise OSError("no /proc here")

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr("os.sysconf", no_sysconf)
    assert _common.memory_budget(torch.device("cpu")) == _common.DEFAULT_MEMORY_BUDGET
