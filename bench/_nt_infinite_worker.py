"""neural-tangents side of ``bench/infinite.py``; runs inside the benchmark's own venv (``bench/.venv-nt``).

It is not meant to be run by hand. ``bench/infinite.py`` writes a job description (JSON: the layer list, the
dtype, repeats) and an ``.npy`` with the inputs (PyTorch layout), and runs

    bench/.venv-nt/bin/python bench/_nt_infinite_worker.py JOB.json

The architecture is rebuilt with ``neural_tangents.stax`` from the same layer list that the torch side turns into
an ntkit spec (``Dense``/``Conv`` with ``W_std``, ``b_std``, ``Relu``, ``AvgPool``, ``GlobalAvgPool``,
``Flatten``), in NT's native channels-last layout (images are transposed NCHW -> NHWC once, before timing).
The kernel is ``jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))`` with ``jax_enable_x64`` on, so float64
inputs give float64 kernels. Compilation happens in a first call on the same shapes and is not timed; then come
one untimed warm-up call and up to ``repeats`` timed calls, each ended by ``block_until_ready``.

Peak memory: peak resident set (``VmHWM``) during the warm-up and timed calls minus the resident set just before
them (after imports, data and compilation), exactly as ``bench/_nt_worker.py`` measures it.

The result is one JSON object on the last line of stdout; the two kernels go to the job's ``kernel_out`` (.npz).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural_tangents imports tensorflow (via tf2jax)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from _memory import reset_peak_rss, status_kib  # noqa: E402  (same folder)
from _nt_worker import versions  # noqa: E402


def build_stax(layers: list[dict]):
    """The stax architecture (channels-last) described by ``layers``."""
    from neural_tangents import stax

    out = []
    for layer in layers:
        op = layer["op"]
        if op == "dense":
            out.append(stax.Dense(1, W_std=layer["W_std"], b_std=layer["b_std"]))
        elif op == "conv":
            k = layer["kernel"]
            out.append(
                stax.Conv(1, (k, k), padding=layer["padding"].upper(), W_std=layer["W_std"], b_std=layer["b_std"])
            )
        elif op == "relu":
            out.append(stax.Relu())
        elif op == "avgpool":
            k = layer["kernel"]
            out.append(stax.AvgPool((k, k), strides=(k, k), padding="VALID"))
        elif op == "gap":
            out.append(stax.GlobalAvgPool())
        elif op == "flatten":
            out.append(stax.Flatten())
        elif op == "attention":  # ntkit's SelfAttention(scaling="linear", attention="softmax")
            out.append(stax.GlobalSelfAttention(1, 1, 1, 1, linear_scaling=True, b_std=layer["b_std"]))
        else:
            raise ValueError(f"unknown layer op {op!r}")
    return stax.serial(*out)


def run_job(job: dict) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    x = np.load(job["data"])
    if x.ndim == 4:
        x = np.moveaxis(x, 1, -1)  # NCHW -> NHWC, NT's native layout
    x = jnp.asarray(np.ascontiguousarray(x), dtype=jnp.float64 if job["dtype"] == "float64" else jnp.float32)
    _, _, kernel_fn = build_stax(job["layers"])
    fn = jax.jit(lambda a: kernel_fn(a, None, ("nngp", "ntk")))

    t0 = time.perf_counter()
    jax.block_until_ready(fn(x))  # compile on the very shapes that are timed
    compile_s = time.perf_counter() - t0

    gc.collect()
    exact_peak = reset_peak_rss()
    baseline_kib = status_kib("VmRSS")
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(x))
    warmup_s = time.perf_counter() - t0
    times = []
    if warmup_s >= job["slow_call_s"]:
        times.append(warmup_s)
    else:
        for _ in range(max(1, min(job["repeats"], int(job["budget_s"] / max(warmup_s, 1e-9))))):
            del out
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - t0)
    peak_kib = status_kib("VmHWM")
    np.savez(job["kernel_out"], nngp=np.asarray(out[0]), ntk=np.asarray(out[1]))
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "warmup_s": warmup_s,
        "compile_s": compile_s,
        "peak_bytes": max(0, peak_kib - baseline_kib) * 1024,
        "baseline_bytes": baseline_kib * 1024,
        "peak_exact": exact_peak,
        "dtype": str(out[1].dtype),
        "versions": versions(),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: _nt_infinite_worker.py JOB.json (written by bench/infinite.py)")
    with open(sys.argv[1]) as fh:
        result = run_job(json.load(fh))
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
