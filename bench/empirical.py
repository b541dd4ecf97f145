"""Side-by-side benchmark of empirical NTK computation: ntkit, neural-tangents and the torch.func tutorial.

Run it from the repository root with the project's venv::

    .venv/bin/python bench/empirical.py            # the full benchmark (what `make bench` runs), ~10 min
    .venv/bin/python bench/empirical.py --quick    # small sizes, a smoke test of the script itself

What is computed
    The empirical NTK with ``output="trace"``: the (N, N) matrix Σ_k J_k(x_i) · J_k(x_j) summed over the model's
    output units k, between a batch of N random inputs and itself, in float32 on the CPU. Two models:

    * ``mlp``: a 784-1024-1024-10 ReLU MLP (``nn.Linear`` layers with bias, 1.86M parameters), N = 1024;
    * ``myrtle5``: a Myrtle-5 CNN of width 64 on 3x32x32 inputs (conv, conv, pool, conv, pool, conv,
      pool x3, linear to 10 classes; 113k parameters), N = 64.

    Every peer gets x1 and x2 as two tensors holding the same values (ntkit gets a copy, so that it cannot tell
    they are the same); ntkit is also timed with ``x2=None``, where it may use the symmetry, and so is
    neural-tangents. Every kernel is compared with a reference (ntkit's structured method where it ran) and the
    relative Frobenius error is printed.

Who is timed
    * ntkit: ``ntkit.empirical_ntk(model, x1, x2, method=M, output="trace")`` for M in structured,
      jacobian_contraction, ntk_vector_products and auto.
    * neural-tangents 0.6.5 (JAX): ``nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
      implementation=STRUCTURED_DERIVATIVES)`` under ``jax.jit``, compile time excluded. It runs in its own venv,
      ``bench/.venv-nt``, which this script creates on first use; ``bench/_nt_worker.py`` rebuilds the network as
      a pure JAX function from the same layer list and the same weights and inputs (an ``.npz`` written here).
    * torch.func, as in the PyTorch tutorial "Neural Tangent Kernels": ``jacobian_contraction`` (vmap(jacrev)
      per-example Jacobians, then an einsum per parameter tensor) and ``ntk_vps`` (vmap over all pairs of a vjp
      followed by a jvp). Both hold everything for all examples at once, so they only fit at small N; they are
      timed at a size where they fit, next to ntkit and neural-tangents at that same size.

How it is timed
    Each measurement runs in a fresh process (this file with ``--worker``, or the neural-tangents worker):
    build the model, load weights and inputs, then one untimed warm-up call and up to ``--repeats`` timed calls
    (fewer when one call is slow: a call longer than ``--slow-call`` seconds is counted as the only run). The
    time is the median. A method whose call is estimated to take longer than ``--max-call-seconds`` (from its
    times at the smaller sizes, fitted as a·N + b·N²) is skipped, with the estimate printed.

How memory is measured
    Peak resident set of the measuring process during the warm-up and timed calls, minus its resident set just
    before them (after imports, model and inputs, and for neural-tangents after compilation). The peak is reset
    first through ``/proc/self/clear_refs`` and read from ``VmHWM`` in ``/proc/self/status``, so earlier spikes
    (imports, loading) do not count. It is whole-process memory, allocator caches and all.

The physical floor
    For the MLP, the multiply-adds that the structured method cannot avoid (forward pass, O backward passes to the
    layer outputs, and the per-layer (h·h')(δ·δ') Gram products) divided by the float32 matmul rate measured in the
    same run (a 4096 x 4096 torch.matmul). ntkit's time is printed as a multiple of it.

Results go to ``bench/results/empirical.md`` and ``empirical.json`` (``--quick``: ``empirical-quick.*``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from _memory import reset_peak_rss, status_kib  # same folder: bench/ is on sys.path when a script here runs
from _rates import describe_gemm, gemm_rates

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NT_WORKER = BENCH / "_nt_worker.py"

#: What ``bench/.venv-nt`` gets. neural-tangents 0.6.5 pulls in tensorflow (through tf2jax); jax 0.4.23 needs
#: numpy < 2 and breaks with scipy >= 1.13 (``scipy.linalg.tril`` is gone), so those are pinned too, and
#: tensorflow to the version this was verified with.
NT_REQUIREMENTS = (
    "jax==0.4.23",
    "jaxlib==0.4.23",
    "numpy==1.26.4",
    "scipy==1.12.0",
    "tensorflow==2.21.0",
    "neural-tangents==0.6.5",
)

NTKIT_METHODS = ("structured", "jacobian_contraction", "ntk_vector_products", "auto")
REL_ERR_OK = 1e-4  # float32 kernels from different libraries should agree to about this
GiB = 1 << 30
MiB = 1 << 20


# --------------------------------------------------------------------------------------------------- models


def model_layers(name: str) -> list[dict]:
    """The layer list both sides build the network from (torch ``nn.Sequential`` / JAX ``f(params, x)``)."""
    if name == "mlp":
        return [
            {"op": "linear", "in": 784, "out": 1024},
            {"op": "relu"},
            {"op": "linear", "in": 1024, "out": 1024},
            {"op": "relu"},
            {"op": "linear", "in": 1024, "out": 10},
        ]
    if name == "myrtle5":
        w = 64

        def conv(c_in: int) -> dict:
            return {"op": "conv2d", "in": c_in, "out": w, "kernel": 3, "padding": 1}

        pool = {"op": "avgpool2d", "kernel": 2}
        return [
            *(conv(3), {"op": "relu"}, conv(w), {"op": "relu"}, pool),  # 32 -> 16
            *(conv(w), {"op": "relu"}, pool),  # 16 -> 8
            *(conv(w), {"op": "relu"}, pool, pool, pool),  # 8 -> 1
            {"op": "flatten"},
            {"op": "linear", "in": w, "out": 10},
        ]
    raise ValueError(f"unknown model {name!r}")


INPUT_SHAPES = {"mlp": (784,), "myrtle5": (3, 32, 32)}
MODEL_TITLES = {
    "mlp": "(a) MLP 784-1024-1024-10, ReLU",
    "myrtle5": "(b) Myrtle-5 CNN, width 64, 3x32x32",
}


def build_torch_model(layers: list[dict]):
    from torch import nn

    modules = []
    for layer in layers:
        op = layer["op"]
        if op == "linear":
            modules.append(nn.Linear(layer["in"], layer["out"]))
        elif op == "conv2d":
            modules.append(nn.Conv2d(layer["in"], layer["out"], layer["kernel"], padding=layer["padding"]))
        elif op == "relu":
            modules.append(nn.ReLU())
        elif op == "avgpool2d":
            modules.append(nn.AvgPool2d(layer["kernel"]))
        elif op == "flatten":
            modules.append(nn.Flatten())
        else:
            raise ValueError(f"unknown layer op {op!r}")
    return nn.Sequential(*modules)


def write_model_data(name: str, n_max: int, path: Path, seed: int = 0) -> dict:
    """Weights (torch's default init) and n_max standard-normal inputs, as ``param:<name>`` and ``x``."""
    import torch

    torch.manual_seed(seed)
    model = build_torch_model(model_layers(name))
    x = torch.randn(n_max, *INPUT_SHAPES[name])
    arrays = {f"param:{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, x=x.numpy(), **arrays)
    n_params = sum(p.numel() for p in model.parameters())
    return {"n_params": n_params, "n_outputs": model_layers(name)[-1]["out"]}


def load_torch_model(job: dict):
    import torch

    data = np.load(job["data"])
    model = build_torch_model(job["layers"])
    state = {k[len("param:") :]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param:")}
    model.load_state_dict(state)
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(data["x"][: job["n"]]))
    return model, x


# ------------------------------------------------------------------------------ the torch.func tutorial peers


def _single_example_function(model):
    """``f(params, x)`` on one example, and the detached parameters, as the tutorial sets them up."""
    from torch.func import functional_call

    params = {name: p.detach() for name, p in model.named_parameters()}

    def f(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    return f, params


def tutorial_jacobian_contraction(model, x1, x2):
    """The tutorial's ``empirical_ntk_jacobian_contraction`` with ``compute="trace"``.

    All per-example Jacobians of x1 and of x2 are formed at once with vmap(jacrev), then contracted with one
    einsum per parameter tensor and summed.
    """
    import torch
    from torch.func import jacrev, vmap

    f, params = _single_example_function(model)

    def jacobians(x):
        jac = vmap(jacrev(f), (None, 0))(params, x)
        return [j.flatten(2) for j in jac.values()]

    jac1, jac2 = jacobians(x1), jacobians(x2)
    return torch.stack([torch.einsum("Naf,Maf->NM", a, b) for a, b in zip(jac1, jac2, strict=True)]).sum(0)


def tutorial_ntk_vps(model, x1, x2):
    """The tutorial's ``empirical_ntk_ntk_vps`` with ``compute="trace"``.

    For every pair (x1_i, x2_j), vmapped over all pairs and all output units at once: a vjp through f(x2_j)
    with each unit vector, then a jvp through f(x1_i) with the result; the trace of the (O, O) blocks.
    """
    import torch
    from torch.func import jvp, vjp, vmap

    f, params = _single_example_function(model)

    def ntk_block(a, b):
        def f_a(p):
            return f(p, a)

        def f_b(p):
            return f(p, b)

        out, vjp_fn = vjp(f_b, params)

        def column(vec):
            vjps = vjp_fn(vec)
            _, jvps = jvp(f_a, (params,), vjps)
            return jvps

        basis = torch.eye(out.numel(), dtype=out.dtype, device=out.device).view(out.numel(), -1)
        return vmap(column)(basis)

    full = vmap(vmap(ntk_block, (None, 0)), (0, None))(x1, x2)
    return torch.einsum("NMKK->NM", full)


TUTORIAL_METHODS = {
    "jacobian_contraction": tutorial_jacobian_contraction,
    "ntk_vps": tutorial_ntk_vps,
}


def tutorial_memory_estimate(method: str, n: int, n_params: int, n_outputs: int) -> float:
    """Bytes the tutorial method holds at its peak (float32): all Jacobians, or one vjp per (pair, unit)."""
    if method == "jacobian_contraction":
        return 4.0 * 2 * n * n_outputs * n_params * 1.1
    return 4.0 * n * n * n_outputs * n_params * 2


# ------------------------------------------------------------------------------ measuring in a fresh process


def measure(call, repeats: int, budget_s: float, slow_call_s: float) -> dict:
    """Warm-up plus timed calls of ``call()``; peak RSS above the level before the first call."""
    gc.collect()
    exact = reset_peak_rss()
    baseline_kib = status_kib("VmRSS") if exact else status_kib("VmHWM")
    t0 = time.perf_counter()
    result = call()
    warmup_s = time.perf_counter() - t0
    times = []
    if warmup_s >= slow_call_s:
        times.append(warmup_s)  # a call this long is its own warm-up; count it rather than run it again
    else:
        for _ in range(max(1, min(repeats, int(budget_s / max(warmup_s, 1e-9))))):
            del result
            t0 = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - t0)
    peak_kib = status_kib("VmHWM")
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "warmup_s": warmup_s,
        "peak_bytes": max(0, peak_kib - baseline_kib) * 1024,
        "baseline_bytes": baseline_kib * 1024,
        "peak_exact": exact,
        "result": result,
    }


def torch_worker(job: dict) -> dict:
    """Run in a fresh process by ``--worker JOB``: time one torch-side method on one model and size."""
    import torch

    model, x1 = load_torch_model(job)
    x2 = x1.clone()  # the same values, but not the same tensor
    library, method = job["library"], job["method"]
    if library == "ntkit":
        import ntkit

        def call():
            return ntkit.empirical_ntk(model, x1, None if job["symmetric"] else x2, method=method, output="trace")

    else:
        fn = TUTORIAL_METHODS[method]

        def call():
            return fn(model, x1, x2)

    out = measure(call, job["repeats"], job["budget_s"], job["slow_call_s"])
    kernel = out.pop("result")
    np.save(job["kernel_out"], kernel.detach().numpy())
    out["torch_threads"] = torch.get_num_threads()
    return out


# -------------------------------------------------------------------------------------------- orchestration


@dataclass
class Row:
    model: str
    n: int
    library: str  # "ntkit", "neural-tangents", "torch.func"
    method: str
    symmetric: bool = False  # x2=None
    status: str = "ok"  # "ok", "skipped", "failed", "unavailable"
    note: str = ""
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    rel_err: float | None = None
    is_reference: bool = False
    vs_best: float | None = None
    kernel_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.library} {self.method}" + (" (x2=None)" if self.symmetric else "")


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.rows: list[Row] = []
        self.models: dict[str, dict] = {}
        self.nt_python: Path | None = None
        self.nt_reason = ""
        self.nt_versions: dict = {}
        self.ntkit_reason = ""
        self._job_count = 0

    # -- running one measurement

    def _job_file(self, job: dict) -> Path:
        self._job_count += 1
        path = self.workdir / f"job{self._job_count}.json"
        job["kernel_out"] = str(self.workdir / f"kernel{self._job_count}.npy")
        path.write_text(json.dumps(job))
        return path

    def _run(self, argv: list[str], row: Row, job: dict, env: dict | None = None) -> None:
        timeout = max(300.0, 3 * self.args.max_call_seconds + 120)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        except subprocess.TimeoutExpired:
            row.status, row.note = "failed", f"timed out after {timeout:.0f} s"
            return
        if proc.returncode != 0:
            row.status = "failed"
            lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            if proc.returncode < 0:
                reason = f"killed by signal {-proc.returncode} (out of memory?)"
            row.note = reason[:200]
            return
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        row.median_s = result["median_s"]
        row.times_s = result["times_s"]
        row.peak_bytes = result["peak_bytes"]
        row.kernel_path = job["kernel_out"]
        row.extra = {k: v for k, v in result.items() if k not in ("median_s", "times_s", "peak_bytes")}
        if not result.get("peak_exact", True):
            row.note = "peak includes start-up (clear_refs unavailable)"

    def _job(self, model: str, n: int, **more) -> dict:
        return {
            "model": model,
            "layers": model_layers(model),
            "data": str(self.models[model]["data"]),
            "n": n,
            "repeats": self.args.repeats,
            "budget_s": self.args.budget,
            "slow_call_s": self.args.slow_call,
            **more,
        }

    def run_torch(self, row: Row) -> None:
        job = self._job(row.model, row.n, library=row.library, method=row.method, symmetric=row.symmetric)
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(self._job_file(job))]
        self._run(argv, row, job)

    def run_nt(self, row: Row) -> None:
        batch = self.args.nt_batch_size if self.args.nt_batch_size and row.n % self.args.nt_batch_size == 0 else 0
        job = self._job(row.model, row.n, symmetric=row.symmetric, batch_size=batch)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self._run([str(self.nt_python), str(NT_WORKER), str(self._job_file(job))], row, job, env=env)
        if batch and row.status == "ok":
            row.note = f"nt.batch, blocks of {batch}"

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        if row.status == "ok":
            if row.library == "neural-tangents":
                self.run_nt(row)
            else:
                self.run_torch(row)
        self._print_progress(row)
        return row

    def _print_progress(self, row: Row) -> None:
        head = f"  [{row.model} N={row.n}] {row.label:<45}"
        if row.status == "ok":
            runs = len(row.times_s)
            print(f"{head} {row.median_s:9.4f} s  ({runs} run{'s' * (runs != 1)})  peak {_mib(row.peak_bytes)}")
        else:
            print(f"{head} {row.status}: {row.note}")
        sys.stdout.flush()

    # -- estimates for skipping

    def estimate_seconds(self, model: str, library: str, method: str, n: int) -> tuple[float, str] | None:
        """Time per call at ``n`` from this method's times at smaller sizes (a·N + b·N², both ≥ 0)."""
        points = sorted(
            (r.n, r.median_s)
            for r in self.rows
            if (r.model, r.library, r.method, r.symmetric) == (model, library, method, False)
            and r.status == "ok"
            and r.n < n
        )
        if not points:
            return None
        (n_b, t_b) = points[-1]
        basis = f"{t_b:.3g} s at N={n_b}"
        quad = t_b * (n / n_b) ** 2
        if len(points) == 1:
            return quad, basis + ", scaled as N²"
        (n_a, t_a) = points[-2]
        # Solve t = a·n + b·n² through both points; clamp to a pure power law if a coefficient goes negative.
        b = (t_b / n_b - t_a / n_a) / (n_b - n_a)
        a = t_b / n_b - b * n_b
        if b < 0:
            est = t_b * n / n_b
        elif a < 0:
            est = quad
        else:
            est = a * n + b * n * n
        return est, f"{basis} and {t_a:.3g} s at N={n_a}, fitted a·N + b·N²"

    def gated_ntkit(self, model: str, n: int, method: str, symmetric: bool = False) -> Row:
        row = Row(model, n, "ntkit", method, symmetric)
        if self.ntkit_reason:
            row.status, row.note = "unavailable", self.ntkit_reason
            return self.add(row)
        est = self.estimate_seconds(model, "ntkit", method, n)
        if est is not None and est[0] > self.args.max_call_seconds:
            row.status = "skipped"
            row.note = f"estimated {est[0]:.0f} s per call > {self.args.max_call_seconds:.0f} s ({est[1]})"
        return self.add(row)

    def tutorial(self, model: str, n: int, method: str) -> Row:
        row = Row(model, n, "torch.func", method)
        info = self.models[model]
        need = tutorial_memory_estimate(method, n, info["n_params"], info["n_outputs"])
        avail = _mem_available()
        if avail is not None and need > 0.7 * avail:
            row.status = "skipped"
            row.note = f"needs about {need / GiB:.1f} GiB, {avail / GiB:.1f} GiB available"
        return self.add(row)

    def nt(self, model: str, n: int, symmetric: bool = False) -> Row:
        row = Row(model, n, "neural-tangents", "structured", symmetric)
        if self.nt_python is None:
            row.status, row.note = "unavailable", self.nt_reason
        return self.add(row)

    # -- the plan

    def run_model(self, model: str, main_n: int, jac_n: int, vps_n: int, mid_n: int = 0) -> None:
        """Every size from small to large, so that each size's skip estimates can use the smaller ones.

        ``mid_n`` is an extra size (0: none) that gives the estimates a second point to fit.
        """
        sizes = sorted({main_n, jac_n, vps_n, mid_n} - {0})
        print(f"\n{MODEL_TITLES[model]}: {self.models[model]['n_params']:,} parameters, sizes {sizes}")
        for n in sizes:
            if n <= vps_n:
                self.tutorial(model, n, "ntk_vps")
            if n <= jac_n:
                self.tutorial(model, n, "jacobian_contraction")
            for method in NTKIT_METHODS:
                self.gated_ntkit(model, n, method)
            if n == main_n:
                for method in ("structured", "auto"):
                    self.gated_ntkit(model, n, method, symmetric=True)
            self.nt(model, n)
            if n == main_n:
                self.nt(model, n, symmetric=True)

    # -- after the runs

    def finish(self) -> None:
        """Ratios to ntkit's best and agreement with a reference kernel, per (model, N)."""
        for key in sorted({(r.model, r.n) for r in self.rows}):
            group = [r for r in self.rows if (r.model, r.n) == key and r.status == "ok"]
            best = self.ntkit_best(*key)
            for r in group:
                r.vs_best = r.median_s / best.median_s if best else None
            ref = self.reference(*key)
            if ref is None:
                continue
            ref.is_reference = True
            k_ref = np.load(ref.kernel_path).astype(np.float64)
            for r in group:
                k = np.load(r.kernel_path).astype(np.float64)
                if k.shape != k_ref.shape:
                    r.rel_err = float("inf")
                    r.note = (r.note + f"; kernel shape {k.shape} != {k_ref.shape}").lstrip("; ")
                else:
                    r.rel_err = float(np.linalg.norm(k - k_ref) / np.linalg.norm(k_ref))

    def ok_rows(self, model: str, n: int, **match) -> list[Row]:
        return [
            r
            for r in self.rows
            if (r.model, r.n) == (model, n) and r.status == "ok" and all(getattr(r, k) == v for k, v in match.items())
        ]

    def ntkit_best(self, model: str, n: int) -> Row | None:
        rows = self.ok_rows(model, n, library="ntkit", symmetric=False)
        return min(rows, key=lambda r: r.median_s) if rows else None

    def reference(self, model: str, n: int) -> Row | None:
        for match in (
            {"library": "ntkit", "method": "structured", "symmetric": False},
            {"library": "ntkit", "symmetric": False},
            {"library": "torch.func", "method": "jacobian_contraction"},
            {"library": "neural-tangents"},
        ):
            rows = self.ok_rows(model, n, **match)
            if rows:
                return rows[0]
        return None


def _mib(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / MiB:,.0f} MiB"


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            return int(re.search(r"^MemAvailable:\s+(\d+)", fh.read(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------ neural-tangents env


def ensure_nt_env(venv: Path) -> tuple[Path | None, str, dict]:
    """The neural-tangents venv's python, created and checked on first use; or None and the reason."""
    python = venv / "bin" / "python"
    stamp = venv / ".ntkit-bench-requirements"
    wanted = "\n".join(NT_REQUIREMENTS) + "\n"
    log = venv / "ntkit-bench-install.log"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        venv.mkdir(parents=True, exist_ok=True)
        print(f"Setting up neural-tangents in {_rel(venv)} (once; a few minutes; log: {_rel(log)})")
        sys.stdout.flush()
        with open(log, "w") as fh:
            steps = []
            if not python.exists():
                steps.append([sys.executable, "-m", "venv", str(venv)])
            steps.append([str(python), "-m", "pip", "install", "--disable-pip-version-check", *NT_REQUIREMENTS])
            for argv in steps:
                fh.write("$ " + shlex.join(argv) + "\n")
                fh.flush()
                try:
                    proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    return None, f"{shlex.join(argv[:3])} failed: {exc}", {}
                if proc.returncode != 0:
                    fh.flush()
                    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
                    last = lines[-1] if lines else f"exit status {proc.returncode}"
                    return None, f"{shlex.join(argv[1:4])} failed: {last} (log: {_rel(log)})", {}
    try:
        proc = subprocess.run(
            [str(python), str(NT_WORKER), "--check"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"check failed: {exc}", {}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return None, f"check failed: {lines[-1] if lines else proc.returncode}", {}
    stamp.write_text(wanted)
    return python, "", json.loads(proc.stdout.strip().splitlines()[-1])["versions"]


def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it (symlinks are not followed)."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(REPO)) if absolute.is_relative_to(REPO) else str(path)


# ---------------------------------------------------------------------------------------- floor and targets


def matmul_rate(n: int, repeats: int = 3) -> dict:
    """float32 multiply-add rate of a large torch.matmul on this machine, in FLOP/s (2·n³ per product)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"n": n, "median_s": t, "flops_per_s": 2 * n**3 / t}


def mlp_structured_flops(layers: list[dict], n1: int, n2: int) -> dict:
    """FLOPs the structured method must do for the MLP's traced NTK.

    * forward: 2·N·Σ d_in·d_out (one pass over the N inputs; x2 is x1);
    * backward: O one-hot cotangents back through the hidden-to-hidden layers, 2·N·O·Σ d_in·d_out over them
      (the last layer's backward from a unit vector is a row of its weight; the first layer's input gradient is
      not needed);
    * contractions: per Linear layer 2·N1·N2·(d_in + O·d_out), the Gram matrices h·h' and Σ_k δ_k·δ'_k.
    """
    dense = [(layer["in"], layer["out"]) for layer in layers if layer["op"] == "linear"]
    o = dense[-1][1]
    n = max(n1, n2)
    forward = 2 * n * sum(i * j for i, j in dense)
    backward = 2 * n * o * sum(i * j for i, j in dense[1:-1])
    contract = sum(2 * n1 * n2 * (i + o * j) for i, j in dense)
    return {"forward": forward, "backward": backward, "contractions": contract, "total": forward + backward + contract}


# ----------------------------------------------------------------------------------------------- reporting


def table(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.status == "ok":
            runs = len(r.times_s)
            cells = [
                f"{r.median_s:.4f}",
                str(runs),
                f"{r.vs_best:.2f}x" if r.vs_best is not None else "",
                _mib(r.peak_bytes),
                "ref" if r.is_reference else (f"{r.rel_err:.1e}" if r.rel_err is not None else ""),
                r.note,
            ]
        else:
            cells = ["", "", "", "", "", f"{r.status}: {r.note}"]
        x2 = "None" if r.symmetric else "given"
        out.append([MODEL_SHORT[r.model], str(r.n), r.library, r.method, x2, *cells])
    return out


MODEL_SHORT = {"mlp": "(a) MLP", "myrtle5": "(b) Myrtle-5"}
HEADER = ["model", "N", "library", "method", "x2", "median s", "runs", "vs ntkit best", "peak mem", "rel err", "note"]


def render_text(cells: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADER)]
    widths[-1] = len(HEADER[-1])  # notes run on
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    prev = None
    for c in cells:
        if prev is not None and c[:2] != prev:
            lines.append("")
        prev = c[:2]
        lines.append(
            "  ".join(
                v.ljust(w) if i > 4 or not v[:1].isdigit() else v.rjust(w)
                for i, (v, w) in enumerate(zip(c, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def render_markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def command_line() -> str:
    return shlex.join([_rel(Path(sys.executable)), _rel(Path(__file__)), *sys.argv[1:]])


def environment(bench: Bench) -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = re.search(r"^model name\s*:\s*(.*)$", fh.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    try:
        import ntkit

        ntkit_version = ntkit.__version__
    except ImportError:
        ntkit_version = "unavailable"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ntkit": ntkit_version,
        "neural_tangents": bench.nt_versions or f"unavailable ({bench.nt_reason})",
        "load_average_at_start": os.getloadavg()[0],
    }


def targets(bench: Bench, main_n: int, jac_n: int) -> list[dict]:
    """The three goals on the MLP, each PASS / MISS (or n/a when a number is missing)."""
    out = []
    best = bench.ntkit_best("mlp", main_n)
    nts = bench.ok_rows("mlp", main_n, library="neural-tangents", symmetric=False)
    if best and nts:
        ratio = best.median_s / nts[0].median_s
        out.append(
            {
                "target": f"(a) N={main_n}: ntkit best <= 0.5x neural-tangents time",
                "value": f"{best.median_s:.3f} s ({best.method}) vs {nts[0].median_s:.3f} s: {ratio:.2f}x",
                "ok": ratio <= 0.5,
            }
        )
    else:
        out.append({"target": "(a) ntkit best <= 0.5x neural-tangents time", "value": "missing data", "ok": None})
    best_j = bench.ntkit_best("mlp", jac_n)
    tut = bench.ok_rows("mlp", jac_n, library="torch.func", method="jacobian_contraction")
    if best_j and tut:
        speedup = tut[0].median_s / best_j.median_s
        out.append(
            {
                "target": f"(a) N={jac_n}: ntkit best >= 50x faster than torch.func Jacobian contraction",
                "value": f"{tut[0].median_s:.3f} s vs {best_j.median_s:.4f} s ({best_j.method}): {speedup:.0f}x",
                "ok": speedup >= 50,
            }
        )
    else:
        out.append(
            {"target": "(a) >= 50x faster than torch.func Jacobian contraction", "value": "missing data", "ok": None}
        )
    if best:
        out.append(
            {
                "target": f"(a) N={main_n}: ntkit best peak memory < 2 GiB",
                "value": f"{best.peak_bytes / MiB:,.0f} MiB ({best.method})",
                "ok": best.peak_bytes < 2 * GiB,
            }
        )
    else:
        out.append({"target": "(a) ntkit peak memory < 2 GiB", "value": "missing data", "ok": None})
    return out


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[ok]


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time empirical-NTK computation by ntkit, neural-tangents and the torch.func tutorial "
        "methods in one run; print a table and write bench/results/empirical.{md,json}.",
        epilog="See the module docstring (top of bench/empirical.py) for what is measured and how.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke test (~2 min)")
    p.add_argument("--models", default="mlp,myrtle5", help="comma-separated subset of mlp,myrtle5")
    p.add_argument("--mlp-n", type=int, help="MLP examples (default 1024; quick 128)")
    p.add_argument("--mlp-jac-n", type=int, help="MLP size for torch.func jacobian_contraction (64; quick 16)")
    p.add_argument("--mlp-vps-n", type=int, help="MLP size for torch.func ntk_vps (8; quick 4)")
    p.add_argument("--cnn-n", type=int, help="Myrtle-5 examples (default 64; quick 16)")
    p.add_argument("--cnn-jac-n", type=int, help="Myrtle-5 size for torch.func jacobian_contraction (64; quick 16)")
    p.add_argument("--cnn-vps-n", type=int, help="Myrtle-5 size for torch.func ntk_vps (8; quick 4)")
    p.add_argument("--mlp-mid-n", type=int, help="an extra MLP size, 0 for none (default 0)")
    p.add_argument("--cnn-mid-n", type=int, help="an extra Myrtle-5 size, 0 for none (default 16; quick 8)")
    p.add_argument("--repeats", type=int, help="timed calls after the warm-up, at most (default 5; quick 3)")
    p.add_argument("--budget", type=float, help="seconds of timed calls per measurement, at most (20; quick 5)")
    p.add_argument("--slow-call", type=float, default=20.0, help="a call this slow is timed once (default 20 s)")
    p.add_argument(
        "--max-call-seconds",
        type=float,
        default=120.0,
        help="skip a method whose call is estimated to take longer (default 120)",
    )
    p.add_argument("--no-nt", action="store_true", help="leave neural-tangents out")
    p.add_argument("--nt-venv", type=Path, default=BENCH / ".venv-nt", help="neural-tangents venv (created if missing)")
    p.add_argument(
        "--nt-batch-size",
        type=int,
        default=0,
        help="compute neural-tangents kernels in blocks of this size with nt.batch (default: one block)",
    )
    p.add_argument("--matmul-n", type=int, help="matrix size for the float32 matmul rate (4096; quick 2048)")
    p.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where the .md and .json go")
    p.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "mlp_n": (1024, 128),
        "mlp_jac_n": (64, 16),
        "mlp_vps_n": (8, 4),
        "cnn_n": (64, 16),
        "cnn_jac_n": (64, 16),
        "cnn_vps_n": (8, 4),
        "mlp_mid_n": (0, 0),
        "cnn_mid_n": (16, 8),
        "repeats": (5, 3),
        "budget": (20.0, 5.0),
        "matmul_n": (4096, 2048),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODEL_TITLES:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODEL_TITLES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        with open(args.worker) as fh:
            result = torch_worker(json.load(fh))
        print(json.dumps(result))
        return 0

    started = time.perf_counter()
    print(f"$ {command_line()}")
    with tempfile.TemporaryDirectory(prefix="ntkit-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            import ntkit

            ntkit.empirical_ntk  # noqa: B018
        except (ImportError, AttributeError) as exc:
            bench.ntkit_reason = f"ntkit.empirical_ntk not importable ({exc})"
            print(f"ntkit: unavailable ({bench.ntkit_reason})")

        if args.no_nt:
            bench.nt_reason = "--no-nt"
        else:
            bench.nt_python, bench.nt_reason, bench.nt_versions = ensure_nt_env(args.nt_venv)
        if bench.nt_python is None:
            print(f"neural-tangents: unavailable ({bench.nt_reason})")
        else:
            print(
                f"neural-tangents: {bench.nt_versions.get('neural_tangents')} "
                f"(jax {bench.nt_versions.get('jax')}) in {_rel(args.nt_venv)}"
            )

        env = environment(bench)
        print(f"Machine: {env['cpu']}, {env['cores']} cores, torch {env['torch']} ({env['torch_threads']} threads)")
        if env["load_average_at_start"] > 0.5 * (env["cores"] or 1):
            print(
                f"WARNING: load average {env['load_average_at_start']:.1f} at start: other processes are using the "
                "cores, so these times are inflated and noisy"
            )
        mm = matmul_rate(args.matmul_n)
        print(f"float32 matmul {mm['n']}x{mm['n']}: {mm['median_s']:.3f} s, {mm['flops_per_s'] / 1e9:.1f} GFLOP/s")
        mm["backends"] = gemm_rates(min(args.matmul_n, 2048))
        print("\n".join(describe_gemm(mm["backends"])), flush=True)

        sizes = {
            "mlp": (args.mlp_n, args.mlp_jac_n, args.mlp_vps_n, args.mlp_mid_n),
            "myrtle5": (args.cnn_n, args.cnn_jac_n, args.cnn_vps_n, args.cnn_mid_n),
        }
        for model in args.models:
            path = Path(tmp) / f"{model}.npz"
            info = write_model_data(model, max(sizes[model]), path)
            bench.models[model] = {**info, "data": path}
            bench.run_model(model, *sizes[model])
        bench.finish()

        report = build_report(bench, args, env, mm, time.perf_counter() - started)
    print("\n" + report["text"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "empirical-quick" if args.quick else "empirical"
    (args.out_dir / f"{stem}.md").write_text(report["markdown"])
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report["json"], indent=2) + "\n")
    print(f"\nWrote {_rel(args.out_dir / (stem + '.md'))} and {_rel(args.out_dir / (stem + '.json'))}")
    return 0


def build_report(bench: Bench, args: argparse.Namespace, env: dict, mm: dict, elapsed: float) -> dict:
    cells = table(bench.rows)
    text = [render_text(cells)]
    md = [
        "# Empirical NTK benchmark",
        "",
        f"Command (from the repository root): `{command_line()}`",
        "",
        f"Run {env['date']} on {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB; Python {env['python']}, "
        f"torch {env['torch']} ({env['torch_threads']} threads), ntkit {env['ntkit']}; neural-tangents: "
        + (
            ", ".join(f"{k} {v}" for k, v in bench.nt_versions.items())
            if bench.nt_versions
            else f"unavailable ({bench.nt_reason})"
        )
        + f". Load average at start {env['load_average_at_start']:.2f}; the whole run took {elapsed / 60:.1f} min.",
        "",
        "Output `trace`, float32, x1 = x2 = N random inputs. *median s*: median of the timed calls after a "
        "warm-up (compile excluded for neural-tangents); *vs ntkit best*: time / fastest ntkit method with x2 "
        "given, at the same model and N; *peak mem*: peak RSS of the measuring process during the calls minus "
        "its RSS before them (each measurement in a fresh process); *rel err*: relative Frobenius distance to the "
        "reference kernel (ntkit structured) of that model and N. Details: docstring of `bench/empirical.py`.",
        "",
        render_markdown(cells),
    ]

    # agreement of neural-tangents with ntkit
    agree = []
    for r in bench.rows:
        if r.library == "neural-tangents" and r.status == "ok" and r.rel_err is not None:
            ok = r.rel_err <= REL_ERR_OK
            agree.append(
                f"neural-tangents vs ntkit structured, {MODEL_SHORT[r.model]} N={r.n}"
                f"{' (x2=None)' if r.symmetric else ''}: rel. error {r.rel_err:.1e} "
                f"({'OK' if ok else 'DISAGREE'}, tolerance {REL_ERR_OK:g})"
            )
    bad = [r for r in bench.rows if r.status == "ok" and r.rel_err is not None and r.rel_err > REL_ERR_OK]
    agree += [f"DISAGREES: {r.label} at {MODEL_SHORT[r.model]} N={r.n}: rel. error {r.rel_err:.1e}" for r in bad]
    if agree:
        text += ["", "Agreement:", *("  " + a for a in agree)]
        md += ["", "## Agreement", "", *("- " + a for a in agree)]

    floor = None
    if "mlp" in args.models:
        flops = mlp_structured_flops(model_layers("mlp"), args.mlp_n, args.mlp_n)
        floor_s = flops["total"] / mm["flops_per_s"]
        floor = {"flops": flops, "matmul": mm, "floor_s": floor_s, "multiples": {}}
        lines = [
            f"Physical floor, (a) MLP N={args.mlp_n}, structured trace: {flops['total'] / 1e9:.1f} GFLOP "
            f"(forward {flops['forward'] / 1e9:.1f}, backward {flops['backward'] / 1e9:.1f}, "
            f"contractions {flops['contractions'] / 1e9:.1f})",
            f"  at the measured float32 matmul rate {mm['flops_per_s'] / 1e9:.1f} GFLOP/s "
            f"({mm['n']}x{mm['n']} torch.matmul): floor {floor_s:.3f} s",
            *("  " + line for line in describe_gemm(mm["backends"])),
        ]
        fastest = max(mm["backends"]["float32"]["rates"].values())
        lines.append(
            f"  at the fastest backend's rate {fastest / 1e9:.1f} GFLOP/s: floor {flops['total'] / fastest:.3f} s"
        )
        for r in bench.ok_rows("mlp", args.mlp_n):
            if r.library in ("ntkit", "neural-tangents") and r.method in ("structured", "auto"):
                floor["multiples"][r.label] = r.median_s / floor_s
                lines.append(f"  {r.label}: {r.median_s:.3f} s = {r.median_s / floor_s:.1f}x the floor")
        text += ["", *lines]
        md += ["", "## Physical floor", "", "```", *lines, "```"]

    goal = targets(bench, args.mlp_n, args.mlp_jac_n) if "mlp" in args.models else []
    if goal:
        lines = [f"{verdict(g['ok'])}  {g['target']}: {g['value']}" for g in goal]
        text += ["", "Targets:", *("  " + ln for ln in lines)]
        md += ["", "## Targets", "", *("- " + ln for ln in lines)]

    skipped = [r for r in bench.rows if r.status != "ok"]
    if skipped:
        md += [
            "",
            "Rows without a time are explained in their note (skipped: the estimated time per call "
            f"exceeds --max-call-seconds={args.max_call_seconds:g}, or the memory would not fit).",
        ]
    md.append("")
    return {
        "text": "\n".join(text),
        "markdown": "\n".join(md),
        "json": {
            "command": command_line(),
            "environment": env,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
            "rows": [{k: v for k, v in asdict(r).items() if k != "kernel_path"} for r in bench.rows],
            "floor": floor,
            "targets": goal,
            "elapsed_s": elapsed,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
