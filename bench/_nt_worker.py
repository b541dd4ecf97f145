"""neural-tangents side of ``bench/empirical.py``; runs inside the benchmark's own venv (``bench/.venv-nt``).

It is not meant to be run by hand. ``bench/empirical.py`` writes a job description (JSON) and an ``.npz`` with
the model's weights and the inputs, both made by the torch side, and runs

    bench/.venv-nt/bin/python bench/_nt_worker.py JOB.json      # time one kernel
    bench/.venv-nt/bin/python bench/_nt_worker.py --check       # is neural-tangents usable here?

The model is rebuilt as a pure JAX function ``f(params, x)`` from the same layer list the torch side builds its
``nn.Sequential`` from, with torch's layouts (``Linear`` weights ``(out, in)``, convolutions NCHW / OIHW), so
both sides compute the kernel of the very same network on the very same inputs.

The kernel is ``nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
implementation=STRUCTURED_DERIVATIVES)`` under ``jax.jit``; when one block of the whole kernel does not fit in
memory, it is computed in (B x B) blocks with ``nt.batch`` (the job's ``batch_size``), which calls one jitted
block kernel serially. Compilation is done first, by a call on a single block, and is not timed; then come one
untimed warm-up call and ``repeats`` timed calls, each ended by ``block_until_ready``.

Peak memory is the process's peak resident set (``VmHWM``) during the warm-up and timed calls, minus the resident
set just before them (after imports, data loading and compilation); the peak is reset with
``/proc/self/clear_refs`` first so that earlier spikes do not count.

The result is one JSON object on the last line of stdout; the kernel is saved to the job's ``kernel_out``,
multiplied by the number of outputs O: neural-tangents returns the trace divided by O (the mean), the torch side
computes the trace.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural_tangents imports tensorflow (via tf2jax)

import numpy as np  # noqa: E402

from _memory import reset_peak_rss, status_kib  # noqa: E402  (same folder)


def build_apply(layers: list[dict]):
    """The network described by ``layers`` as a pure function ``f(params, x)`` on a batch ``x``."""
    import jax.numpy as jnp
    from jax import lax

    def f(params: dict, x):
        for i, layer in enumerate(layers):
            op = layer["op"]
            if op == "linear":
                # Contract with the weight's `in` axis directly: `x @ w.T` would put a transpose between the
                # parameter and the matmul, which neural-tangents' structured rules do not see through (it then
                # materializes per-example weight Jacobians and runs ~100x slower).
                x = lax.dot_general(x, params[f"{i}.weight"], (((1,), (1,)), ((), ()))) + params[f"{i}.bias"]
            elif op == "conv2d":
                pad = layer["padding"]
                x = lax.conv_general_dilated(
                    x,
                    params[f"{i}.weight"],
                    window_strides=(1, 1),
                    padding=((pad, pad), (pad, pad)),
                    dimension_numbers=("NCHW", "OIHW", "NCHW"),
                )
                x = x + params[f"{i}.bias"][None, :, None, None]
            elif op == "relu":
                x = jnp.maximum(x, 0.0)
            elif op == "avgpool2d":
                k = layer["kernel"]
                x = lax.reduce_window(x, 0.0, lax.add, (1, 1, k, k), (1, 1, k, k), "VALID") / (k * k)
            elif op == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:
                raise ValueError(f"unknown layer op {op!r}")
        return x

    return f


def fn_output_size(layers: list[dict]) -> int:
    """Outputs per example, O: the last Linear layer's width (every benchmark model ends in one)."""
    return [layer["out"] for layer in layers if layer["op"] == "linear"][-1]


def versions() -> dict:
    import jax
    import jaxlib
    import neural_tangents

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "neural_tangents": getattr(neural_tangents, "__version__", "?"),
        "numpy": np.__version__,
        "backend": jax.default_backend(),
    }


def ntk_fn(f, batch_size: int = 0):
    """The structured-derivatives empirical NTK of ``f``, traced over outputs, jitted.

    With ``batch_size`` it is wrapped in ``nt.batch``, neural-tangents' own way to compute a kernel that does not
    fit in memory at once: (batch_size x batch_size) blocks, each one call of the same jitted kernel.
    """
    import jax
    import neural_tangents as nt

    kernel_fn = nt.empirical_ntk_fn(
        f, trace_axes=(-1,), vmap_axes=0, implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES
    )
    if batch_size:
        return nt.batch(kernel_fn, batch_size=batch_size, device_count=0, store_on_device=True)
    return jax.jit(kernel_fn)


def check() -> dict:
    """Import everything and compute a tiny kernel, to tell whether this environment works at all."""
    import jax.numpy as jnp

    layers = [{"op": "linear"}, {"op": "relu"}, {"op": "linear"}]
    rng = np.random.default_rng(0)
    params = {
        "0.weight": jnp.asarray(rng.standard_normal((8, 4), dtype=np.float32)),
        "0.bias": jnp.zeros(8, jnp.float32),
        "2.weight": jnp.asarray(rng.standard_normal((3, 8), dtype=np.float32)),
        "2.bias": jnp.zeros(3, jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((5, 4), dtype=np.float32))
    k = np.asarray(ntk_fn(build_apply(layers))(x, x, params))
    if k.shape != (5, 5) or not np.all(np.isfinite(k)):
        raise RuntimeError(f"tiny kernel came out wrong: shape {k.shape}")
    return {"ok": True, "versions": versions()}


def run_job(job: dict) -> dict:
    import jax
    import jax.numpy as jnp

    data = np.load(job["data"])
    params = {k[len("param:") :]: jnp.asarray(data[k]) for k in data.files if k.startswith("param:")}
    x1 = jnp.asarray(data["x"][: job["n"]])
    x2 = None if job["symmetric"] else x1  # the same inputs, given explicitly as the torch peers get them
    del data

    n, block = job["n"], job.get("batch_size") or job["n"]
    if n % block:
        raise ValueError(f"nt.batch needs a block size that divides N; got N={n}, batch_size={block}")
    fn = ntk_fn(build_apply(job["layers"]), batch_size=block if block < n else 0)

    # Compile outside the measurement: one call on a single block compiles the kernel for the block shape.
    t0 = time.perf_counter()
    fn(x1[:block], None if x2 is None else x2[:block], params).block_until_ready()
    compile_s = time.perf_counter() - t0

    gc.collect()
    exact_peak = reset_peak_rss()
    baseline_kib = status_kib("VmRSS")

    t0 = time.perf_counter()
    kernel = fn(x1, x2, params).block_until_ready()
    warmup_s = time.perf_counter() - t0
    times = []
    if warmup_s >= job["slow_call_s"]:
        times.append(warmup_s)  # a call this long is its own warm-up; count it rather than run it again
    else:
        repeats = max(1, min(job["repeats"], int(job["budget_s"] / max(warmup_s, 1e-9))))
        for _ in range(repeats):
            del kernel
            t0 = time.perf_counter()
            kernel = fn(x1, x2, params).block_until_ready()
            times.append(time.perf_counter() - t0)
    peak_kib = status_kib("VmHWM")

    if job.get("kernel_out"):
        # neural-tangents divides a traced kernel by the size of the traced axes (ntkit's output="mean"); scale it
        # back to the trace that the torch side computes, for the agreement check. Not timed; one division.
        n_outputs = fn_output_size(job["layers"])
        np.save(job["kernel_out"], np.asarray(kernel) * n_outputs)
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "warmup_s": warmup_s,
        "compile_s": compile_s,
        "peak_bytes": (peak_kib - baseline_kib) * 1024,
        "baseline_bytes": baseline_kib * 1024,
        "peak_exact": exact_peak,
        "versions": versions(),
        "device": str(jax.devices()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", help="job description (JSON file) written by bench/empirical.py")
    parser.add_argument("--check", action="store_true", help="only check that neural-tangents works here")
    args = parser.parse_args()
    if args.check:
        result = check()
    elif args.job:
        with open(args.job) as fh:
            result = run_job(json.load(fh))
    else:
        parser.error("give a job file or --check")
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
