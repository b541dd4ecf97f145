"""The block driver (``ntkit.infinite.blocked``): any batch_size gives the same kernels, exactly symmetric."""

import pytest
import torch

import ntkit as nk
from ntkit.infinite.blocked import blocked_kernel, default_batch_size
from ntkit.infinite.kernel import input_kernel


def _archs():
    conv = lambda: nk.Conv2d(4, 3, padding="same", W_std=1.4, b_std=0.1)  # noqa: E731
    return {
        "mlp": (nk.Sequential(nk.Linear(8, W_std=1.5, b_std=0.1), nk.ReLU(), nk.Linear(1)), (5,)),
        "cntk_gap": (nk.Sequential(conv(), nk.ReLU(), conv(), nk.Erf(), nk.GlobalAvgPool2d(), nk.Linear(1)), (2, 5, 5)),
        "myrtle": (
            nk.Sequential(conv(), nk.ReLU(), nk.AvgPool2d(2), conv(), nk.ReLU(), nk.Flatten(), nk.Linear(1)),
            (3, 6, 6),
        ),
        "valid_stride_ln": (
            nk.Sequential(
                nk.Conv2d(4, 3, stride=2, padding="valid", W_std=1.3, b_std=0.2),
                nk.LayerNorm(),
                nk.ReLU(),
                nk.AvgPool2d(2, stride=1),
                nk.GlobalAvgPool2d(),
                nk.Linear(1),
            ),
            (2, 9, 9),
        ),  # fmt: skip
        "no_reduction": (nk.Sequential(conv(), nk.ReLU(), conv()), (1, 4, 4)),
    }


@pytest.mark.parametrize("name", list(_archs()))
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_any_batch_size_gives_the_same_kernel(name, batch_size):
    arch, shape = _archs()[name]
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(7, *shape, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, *shape, generator=g, dtype=torch.float64)
    for a, b in ((x1, None), (x1, x2)):
        ref = arch.transform(input_kernel(a, b))  # one block, no driver
        k = arch.kernel(a, b, batch_size=batch_size)
        for attr in ("nngp", "ntk"):
            torch.testing.assert_close(getattr(k, attr), getattr(ref, attr), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(k.var1, ref.var1, rtol=1e-13, atol=1e-13)
        if b is None:
            assert k.var2 is None
            perm = [1, 0] + [2 + 2 * d + s for d in range(k.spatial_dims) for s in (1, 0)]
            assert torch.equal(k.ntk, k.ntk.permute(perm)) and torch.equal(k.nngp, k.nngp.permute(perm))
        else:
            torch.testing.assert_close(k.var2, ref.var2, rtol=1e-13, atol=1e-13)


def test_float32_and_default_batch():
    arch, shape = _archs()["cntk_gap"]
    x = torch.randn(6, *shape, dtype=torch.float64)
    k64 = arch.kernel(x)
    k32 = arch.kernel(x.float(), batch_size=2)
    assert k32.ntk.dtype == torch.float32
    torch.testing.assert_close(k32.ntk.double(), k64.ntk, rtol=1e-4, atol=1e-5)
    assert 1 <= default_batch_size(x, 6) <= 6
    assert default_batch_size(torch.randn(10_000, 3), 10_000) == 512


def test_bad_batch_size():
    arch, shape = _archs()["mlp"]
    x = torch.randn(3, *shape)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            arch.kernel(x, batch_size=bad)
    with pytest.raises(ValueError, match="batch_size"):
        blocked_kernel(arch.transform, x, None, batch_size=0)


def test_self_covariances_are_computed_once_per_row_block_and_change_nothing(monkeypatch):
    """Each example's self-covariances are computed once per layer and row block, not once per block (4 row
    blocks: 4 instead of 4 + 2·6 = 16 per activation), and the kernel is bit-identical to the uncached one."""
    from ntkit.infinite import blocked

    arch = nk.Sequential(nk.Conv2d(4, 3, W_std=1.3, b_std=0.2), nk.ReLU(), nk.AvgPool2d(2), nk.Conv2d(4, 3), nk.ReLU(),
                         nk.Flatten(), nk.Linear(1))  # fmt: skip
    x = torch.randn(12, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    calls = []
    original = nk.ReLU._pair_kernels

    def counting(self, v_left, cov, v_right, ntk, spatial, same_example=False):
        calls.append(same_example)
        return original(self, v_left, cov, v_right, ntk, spatial, same_example)

    monkeypatch.setattr(nk.ReLU, "_pair_kernels", counting)
    monkeypatch.setattr(blocked.torch, "get_num_threads", lambda: 1)  # serial blocks: two workers could both miss
    cached = arch.kernel(x, batch_size=3, progress=False)
    assert calls.count(True) == 2 * 4  # two ReLU layers, four row blocks
    calls.clear()
    monkeypatch.setattr(blocked, "SELF_CACHE_BYTES", 0)
    uncached = arch.kernel(x, batch_size=3, progress=False)
    assert calls.count(True) == 2 * 16
    for name in ("nngp", "ntk", "var1"):
        assert torch.equal(getattr(cached, name), getattr(uncached, name))


def test_the_driver_hands_freed_memory_back_every_few_blocks_and_at_the_end(monkeypatch):
    """glibc keeps the blocks' freed memory in its per-thread heaps (a 1-D CNTK call held 2.8 GB of free heap for
    0.2 GB of data): the driver calls ntkit._malloc.release_free_memory every TRIM_EVERY blocks and at the end."""
    from ntkit.infinite import blocked

    calls = []
    monkeypatch.setattr(blocked, "release_free_memory", lambda: calls.append(1))
    monkeypatch.setattr(blocked, "TRIM_EVERY", 4)
    threads = torch.get_num_threads()
    monkeypatch.setattr(blocked.torch, "get_num_threads", lambda: 2)  # the threaded driver, whatever the machine
    x = torch.randn(20, 3, dtype=torch.float64)
    arch = nk.Sequential(nk.Linear(4), nk.ReLU(), nk.Linear(1))
    try:
        arch.kernel(x, x[:10], batch_size=2, progress=False)  # 10 × 5 = 50 blocks
    finally:
        torch.set_num_threads(threads)  # the driver restores the (patched) default: put the real one back
    assert len(calls) == 50 // 4 + 1
