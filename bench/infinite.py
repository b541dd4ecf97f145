"""Side-by-side benchmark of infinite-width NNGP + NTK kernels: ntkit against neural-tangents 0.6.5.

Run it from the repository root with the project's venv::

    .venv/bin/python bench/infinite.py            # the full benchmark (what `make bench` runs), a few minutes
    .venv/bin/python bench/infinite.py --quick    # small sizes, a smoke test of the script itself (~1-2 min)

What is computed
    ``arch.kernel(x)`` (x2=None: the kernel of N inputs with themselves), NNGP and NTK together, (N, N) each,
    float64 unless stated, on the CPU. Three workloads (issue 3), every Linear/Conv with W_std=1.4, b_std=0.1:

    * ``fc``: a depth-10 ReLU MLP, [Linear, ReLU] x 10 then Linear, on N=4000 inputs of dimension 100;
    * ``cntk``: a CNTK with global average pooling, [Conv2d 3x3 "same", ReLU] x 5, GlobalAvgPool2d, Linear,
      on N=100 images 1x8x8;
    * ``myrtle``: Myrtle-5 style, [Conv, ReLU] x 2, AvgPool2d(2), Conv, ReLU, AvgPool2d(2), Conv, ReLU,
      AvgPool2d(4), Flatten, Linear, on N=32 images 3x16x16;
    * ``attention`` (issue 13): Conv, ReLU, SelfAttention (softmax, linear scaling, b_std=0.1; the pixels are
      64 tokens), ReLU, Conv, ReLU, GlobalAvgPool2d, Linear, on N=64 images 3x8x8;
    * ``cntk1d`` (issue 11): [Conv1d k=5 "circular", ReLU] x 3, GlobalAvgPool1d, Linear, on N=500 training and
      1000 test signals 1x40: ``arch.kernel(x)`` plus ``arch.kernel(x_test, x)`` (neural-tangents: the same two
      kernels through ``nt.batch`` in blocks of 100, whose full covariances would take several GiB).

    The machine's GEMM rate for each backend of ``ntkit._gemm`` and its elementwise rate (``bench/_rates.py``) are
    printed, and each ntkit row's distance to the floor: the least memory traffic of the workload (NNGP and NTK
    of every pair read and written once per layer) at the measured elementwise rate.

    Inputs are standard normal (seed 0). Both libraries get the same inputs and the same layer list
    (``WORKLOADS``), ntkit as an ``nk.Sequential``, neural-tangents as a ``stax.serial``
    (``bench/_nt_infinite_worker.py``).

Who is timed
    * ntkit: ``arch.kernel(x)`` in float64, and in float32 (the same call on float32 inputs);
    * neural-tangents 0.6.5: ``jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))`` with ``jax_enable_x64``,
      in its own venv ``bench/.venv-nt`` (made by ``bench/empirical.py``'s ``ensure_nt_env`` when missing),
      compile time excluded (a first call on the same shapes), NT's native channels-last layout.

How it is timed and how memory is measured
    As in ``bench/empirical.py`` (its ``measure``): each measurement in a fresh process, one untimed warm-up
    call then up to ``--repeats`` timed calls (a call slower than ``--slow-call`` seconds is counted once); the
    median is reported. Peak memory is the peak resident set during the calls minus the resident set just before
    them (``/proc/self/clear_refs`` + ``VmHWM``): whole-process memory, allocator caches included. ntkit and
    neural-tangents alternate, workload by workload, so that both see the same machine load.

Agreement
    Relative Frobenius error ‖K_ntkit − K_nt‖ / ‖K_nt‖ of NNGP and NTK (the larger is printed), against
    neural-tangents' float64 kernels.

Results go to ``bench/results/infinite.md`` and ``infinite.json`` (``--quick``: ``infinite-quick.*``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from _rates import describe_gemm, elementwise_rate, gemm_rates  # noqa: E402
from empirical import _mib, _rel, ensure_nt_env, environment, measure  # noqa: E402

NT_WORKER = BENCH / "_nt_infinite_worker.py"
W_STD, B_STD = 1.4, 0.1


def _dense() -> dict:
    return {"op": "dense", "W_std": W_STD, "b_std": B_STD}


def _conv() -> dict:
    return {"op": "conv", "kernel": 3, "padding": "same", "W_std": W_STD, "b_std": B_STD}


def _conv1d() -> dict:
    return {"op": "conv1d", "kernel": 5, "padding": "circular", "W_std": W_STD, "b_std": B_STD}


RELU = {"op": "relu"}
#: Workloads that also compute a test kernel: kernel(x) + kernel(x_test, x) with this many test inputs per input.
TEST_FACTOR = {"cntk1d": 2}
#: neural-tangents computes these with nt.batch in blocks of this many examples (a whole (N_test, N, L, L)
#: float64 covariance would take several GiB on a shared machine).
NT_BATCH = {"cntk1d": 100}


def _pool(k: int) -> dict:
    return {"op": "avgpool", "kernel": k}


#: name -> (title, layer list, per-example input shape, N, N with --quick, target ratio ntkit / neural-tangents)
WORKLOADS = {
    "fc": ("FC: depth-10 ReLU MLP, D=100", [*[_dense(), RELU] * 10, _dense()], (100,), 4000, 500, 0.15),
    "cntk": (
        "CNTK-GAP: 5 x [conv 3x3, ReLU], GAP, 1x8x8",
        [*[_conv(), RELU] * 5, {"op": "gap"}, _dense()],
        (1, 8, 8),
        100,
        20,
        0.1,
    ),
    "cntk1d": (
        "1-D CNTK: 3 x [conv k=5 circular, ReLU], GAP, 1x40; kernel(x) + kernel(x_test, x), 2N test signals",
        [*[_conv1d(), RELU] * 3, {"op": "gap1d"}, _dense()],
        (1, 40),
        500,
        50,
        None,
    ),
    "myrtle": (
        "Myrtle-5 CNTK, 3x16x16",
        [_conv(), RELU, _conv(), RELU, _pool(2), _conv(), RELU, _pool(2), _conv(), RELU, _pool(4)]
        + [{"op": "flatten"}, _dense()],
        (3, 16, 16),
        32,
        8,
        0.1,
    ),
    # issue 13: softmax self-attention (linear scaling, the closed form) between two conv blocks, 64 tokens
    "attention": (
        "Attention: conv 3x3, ReLU, self-attention, ReLU, conv 3x3, ReLU, GAP, 3x8x8",
        [_conv(), RELU, {"op": "attention", "b_std": B_STD}, RELU, _conv(), RELU, {"op": "gap"}, _dense()],
        (3, 8, 8),
        64,
        8,
        0.3,
    ),
}


def ntkit_arch(layers: list[dict]):
    """The ntkit spec described by ``layers`` (widths are irrelevant to the kernels; 1 is given)."""
    import ntkit as nk

    out = []
    for layer in layers:
        op = layer["op"]
        if op == "dense":
            out.append(nk.Linear(1, W_std=layer["W_std"], b_std=layer["b_std"]))
        elif op == "conv":
            out.append(
                nk.Conv2d(1, layer["kernel"], padding=layer["padding"], W_std=layer["W_std"], b_std=layer["b_std"])
            )
        elif op == "conv1d":
            out.append(
                nk.Conv1d(1, layer["kernel"], padding=layer["padding"], W_std=layer["W_std"], b_std=layer["b_std"])
            )
        elif op == "gap1d":
            out.append(nk.GlobalAvgPool1d())
        elif op == "relu":
            out.append(nk.ReLU())
        elif op == "avgpool":
            out.append(nk.AvgPool2d(layer["kernel"]))
        elif op == "gap":
            out.append(nk.GlobalAvgPool2d())
        elif op == "flatten":
            out.append(nk.Flatten())
        elif op == "attention":
            out.append(nk.SelfAttention(1, b_std=layer["b_std"]))
        else:
            raise ValueError(f"unknown layer op {op!r}")
    return nk.Sequential(*out)


def torch_worker(job: dict) -> dict:
    """Run in a fresh process by ``--worker JOB``: time ``arch.kernel(x)`` once per repeat."""
    import torch

    arch = ntkit_arch(job["layers"])
    x = torch.from_numpy(np.load(job["data"])).to(getattr(torch, job["dtype"]))
    x_test = torch.from_numpy(np.load(job["test_data"])).to(x.dtype) if job.get("test_data") else None
    kwargs = {"batch_size": job["batch_size"]} if job.get("batch_size") else {}
    kwargs["progress"] = False

    def call():
        k = arch.kernel(x, **kwargs)
        if x_test is None:
            return k.nngp, k.ntk
        kt = arch.kernel(x_test, x, **kwargs)  # train rows first, then test rows
        return torch.cat([k.nngp, kt.nngp]), torch.cat([k.ntk, kt.ntk])

    out = measure(call, job["repeats"], job["budget_s"], job["slow_call_s"])
    nngp, ntk = out.pop("result")
    np.savez(job["kernel_out"], nngp=nngp.numpy(), ntk=ntk.numpy())
    out["torch_threads"] = torch.get_num_threads()
    return out


# -------------------------------------------------------------------------------------------- orchestration


@dataclass
class Row:
    workload: str
    n: int
    library: str
    dtype: str
    status: str = "ok"
    note: str = ""
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    rel_err: float | None = None
    ratio: float | None = None  # time / neural-tangents' time
    kernel_path: str | None = None
    extra: dict = field(default_factory=dict)


def run_row(row: Row, layers: list[dict], data: Path, args, workdir: Path, nt_python: Path | None) -> Row:
    job_id = len(list(workdir.glob("job*.json"))) + 1
    job = {
        "layers": layers,
        "data": str(data),
        "dtype": row.dtype,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "slow_call_s": args.slow_call,
        "batch_size": args.batch_size,
        "kernel_out": str(workdir / f"kernel{job_id}.npz"),
        "test_data": str(data.with_name(data.stem + "-test.npy")) if row.workload in TEST_FACTOR else None,
        "nt_batch": math.gcd(row.n, NT_BATCH[row.workload]) if row.workload in NT_BATCH else None,  # must divide N
    }
    path = workdir / f"job{job_id}.json"
    path.write_text(json.dumps(job))
    if row.library == "ntkit":
        argv, env = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)], None
    else:
        argv, env = [str(nt_python), str(NT_WORKER), str(path)], {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        row.status, row.note = "failed", f"timed out after {args.timeout:.0f} s"
        return row
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        row.status = "failed"
        row.note = (f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0 else
                    (lines[-1] if lines else f"exit status {proc.returncode}"))[:200]  # fmt: skip
        return row
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    row.median_s, row.times_s, row.peak_bytes = result["median_s"], result["times_s"], result["peak_bytes"]
    row.kernel_path = job["kernel_out"]
    row.extra = {k: v for k, v in result.items() if k not in ("median_s", "times_s", "peak_bytes")}
    return row


def rel_err(path: str, ref_path: str) -> float:
    a, b = np.load(path), np.load(ref_path)
    errs = []
    for key in ("nngp", "ntk"):
        x, y = a[key].astype(np.float64), b[key].astype(np.float64)
        if x.shape != y.shape:
            return float("inf")
        errs.append(float(np.linalg.norm(x - y) / np.linalg.norm(y)))
    return max(errs)


def progress(row: Row) -> None:
    head = f"  [{row.workload} N={row.n}] {row.library + ' ' + row.dtype:<26}"
    if row.status == "ok":
        print(f"{head} {row.median_s:9.4f} s  ({len(row.times_s)} runs)  peak {_mib(row.peak_bytes)}", flush=True)
    else:
        print(f"{head} {row.status}: {row.note}", flush=True)


HEADER = ["workload", "N", "library", "dtype", "median s", "runs", "vs NT", "peak mem", "rel err vs NT", "note"]


def cells(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.status == "ok":
            vals = [f"{r.median_s:.4f}", str(len(r.times_s)), "" if r.ratio is None else f"{r.ratio:.3f}x",
                    _mib(r.peak_bytes), "ref" if r.library == "neural-tangents" else
                    ("" if r.rel_err is None else f"{r.rel_err:.1e}"), r.note]  # fmt: skip
        else:
            vals = ["", "", "", "", "", f"{r.status}: {r.note}"]
        out.append([r.workload, str(r.n), r.library, r.dtype, *vals])
    return out


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in rows)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in rows]
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in rows])


def command_line() -> str:
    return shlex.join([_rel(Path(sys.executable)), _rel(Path(__file__)), *sys.argv[1:]])


def targets(rows: list[Row]) -> list[dict]:
    out = []
    for name, (*_, goal) in WORKLOADS.items():
        if goal is None:
            continue
        mine = [r for r in rows if r.workload == name and r.library == "ntkit" and r.dtype == "float64"]
        nt = [r for r in rows if r.workload == name and r.library == "neural-tangents"]
        if mine and nt and mine[0].status == nt[0].status == "ok":
            ratio = mine[0].median_s / nt[0].median_s
            out.append({"target": f"{name} N={mine[0].n}: ntkit float64 <= {goal}x neural-tangents' time",
                        "value": f"{mine[0].median_s:.3f} s vs {nt[0].median_s:.3f} s: {ratio:.3f}x",
                        "ok": ratio <= goal, "ratio": ratio, "goal": goal})  # fmt: skip
        elif mine or nt:
            out.append({"target": f"{name}: ntkit float64 <= {goal}x neural-tangents' time", "value": "missing data",
                        "ok": None, "ratio": None, "goal": goal})  # fmt: skip
    return out


def minimal_bytes(name: str, n: int, itemsize: int) -> float:
    """Least memory traffic of a workload: every layer reads and writes the NNGP and NTK of each pair once
    (4 numbers per pair of examples and pair of positions), for the N(N+1)/2 pairs of kernel(x) and the
    N_test·N of kernel(x_test, x). Pooling shrinks the positions; the dense head has one."""
    _, layers, shape, *_ = WORKLOADS[name]
    pairs = n * (n + 1) / 2 + TEST_FACTOR.get(name, 0) * n * n
    positions = math.prod(shape[1:])
    total = 0.0
    for layer in layers:
        if layer["op"] == "avgpool":
            positions //= layer["kernel"] ** 2
        elif layer["op"] in ("gap", "gap1d", "flatten"):
            positions = 1
        total += 4 * pairs * positions**2 * itemsize
    return total


def floor_report(rows: list[Row], elementwise: float) -> list[str]:
    """Each ntkit float64 row's time against the floor: minimal traffic at the measured elementwise rate."""
    lines = []
    for r in rows:
        if r.library == "ntkit" and r.dtype == "float64" and r.status == "ok":
            floor_s = minimal_bytes(r.workload, r.n, 8) / elementwise
            lines.append(
                f"{r.workload} N={r.n}: floor {floor_s:.3f} s ({minimal_bytes(r.workload, r.n, 8) / 1e9:.2f} GB at "
                f"{elementwise / 1e9:.1f} GB/s); ntkit {r.median_s:.3f} s = {floor_s / r.median_s:.1%} of the "
                "elementwise throughput"
            )
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="See the module docstring of bench/infinite.py for what is measured and how.",
    )
    p.add_argument("--quick", action="store_true", help="small N and few repeats: a smoke test (~1-2 min)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--repeats", type=int, help="timed calls after the warm-up, at most (default 3; quick 2)")
    p.add_argument("--budget", type=float, help="seconds of timed calls per measurement, at most (60; quick 10)")
    p.add_argument("--slow-call", type=float, default=60.0, help="a call this slow is timed once (default 60 s)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement process (default 900)")
    p.add_argument("--no-float32", action="store_true", help="leave out ntkit's float32 rows")
    p.add_argument("--cntk1d-n", type=int, help="training signals of the cntk1d workload (default 500; test: 2x)")
    p.add_argument("--batch-size", type=int, default=0, help="ntkit's arch.kernel(batch_size=...) (0: its default)")
    p.add_argument("--no-nt", action="store_true", help="leave neural-tangents out")
    p.add_argument("--nt-venv", type=Path, default=BENCH / ".venv-nt", help="neural-tangents venv (created if missing)")
    p.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where the .md and .json go")
    p.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.budget is None:
        args.budget = 10.0 if args.quick else 60.0
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        with open(args.worker) as fh:
            print(json.dumps(torch_worker(json.load(fh))))
        return 0

    started = time.perf_counter()
    print(f"$ {command_line()}", flush=True)
    nt_python, nt_reason, nt_versions = (None, "--no-nt", {}) if args.no_nt else ensure_nt_env(args.nt_venv)
    if nt_python is None:
        print(f"neural-tangents: unavailable ({nt_reason})")
    else:
        print(f"neural-tangents {nt_versions.get('neural_tangents')} (jax {nt_versions.get('jax')}) in "
              f"{_rel(args.nt_venv)}")  # fmt: skip
    env = environment(SimpleNamespace(nt_versions=nt_versions, nt_reason=nt_reason))
    print(f"Machine: {env['cpu']}, {env['cores']} cores, torch {env['torch']} ({env['torch_threads']} threads), "
          f"load average {env['load_average_at_start']:.2f}")  # fmt: skip

    gemm, elementwise = gemm_rates(), elementwise_rate("float64")
    rate_lines = [
        *describe_gemm(gemm),
        f"elementwise float64 (out-of-place add, 3 x 256 MiB): {elementwise / 1e9:.1f} GB/s",
    ]
    print("\n".join(rate_lines), flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ntkit-bench-inf-") as tmp:
        workdir = Path(tmp)
        for name in args.workloads:
            title, layers, shape, n_full, n_quick, _ = WORKLOADS[name]
            n = n_quick if args.quick else n_full
            if name == "cntk1d" and args.cntk1d_n:
                n = args.cntk1d_n
            print(f"\n{title}, N={n}", flush=True)
            data = workdir / f"{name}.npy"
            rng = np.random.default_rng(0)
            np.save(data, rng.standard_normal((n, *shape)))
            if name in TEST_FACTOR:
                np.save(data.with_name(data.stem + "-test.npy"), rng.standard_normal((TEST_FACTOR[name] * n, *shape)))
            plan = [("ntkit", "float64"), ("neural-tangents", "float64")]
            if not args.no_float32:
                plan.append(("ntkit", "float32"))
            group = []
            for library, dtype in plan:
                row = Row(name, n, library, dtype)
                if library == "neural-tangents" and nt_python is None:
                    row.status, row.note = "unavailable", nt_reason
                else:
                    run_row(row, layers, data, args, workdir, nt_python)
                progress(row)
                group.append(row)
            ref = next((r for r in group if r.library == "neural-tangents" and r.status == "ok"), None)
            for r in group:
                if ref is not None and r.status == "ok":
                    r.ratio = r.median_s / ref.median_s
                    if r is not ref:
                        r.rel_err = rel_err(r.kernel_path, ref.kernel_path)
            rows += group
        elapsed = time.perf_counter() - started

    table = cells(rows)
    goal = targets(rows)
    verdict = {True: "PASS", False: "MISS", None: "n/a"}
    goal_lines = [f"{verdict[g['ok']]}  {g['target']}: {g['value']}" for g in goal]
    print("\n" + render_text(table))
    if goal_lines:
        print("\nTargets:\n" + "\n".join("  " + ln for ln in goal_lines))

    nt_desc = ", ".join(f"{k} {v}" for k, v in nt_versions.items()) if nt_versions else f"unavailable ({nt_reason})"
    md = [
        "# Infinite-width kernel benchmark",
        "",
        f"Command (from the repository root): `{command_line()}`",
        "",
        f"Run {env['date']} on {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB; Python {env['python']}, "
        f"torch {env['torch']} ({env['torch_threads']} threads), ntkit {env['ntkit']}; neural-tangents: {nt_desc}. "
        f"Load average at start {env['load_average_at_start']:.2f}; the whole run took {elapsed / 60:.1f} min.",
        "",
        "`arch.kernel(x)` with x2=None, NNGP and NTK together. *median s*: median of the timed calls after a "
        "warm-up (compile excluded for neural-tangents, which runs under `jax.jit` with x64); *vs NT*: time / "
        "neural-tangents' float64 time; *peak mem*: peak RSS of the measuring process during the calls minus its "
        "RSS before them (fresh process per row); *rel err vs NT*: max over NNGP and NTK of the relative Frobenius "
        "distance to neural-tangents' float64 kernels. Details: docstring of `bench/infinite.py`.",
        "",
        render_markdown(table),
    ]
    if goal_lines:
        md += ["", "## Targets", "", *("- " + ln for ln in goal_lines)]
    floor_lines = floor_report(rows, elementwise)
    print("\n" + "\n".join([*rate_lines, *floor_lines]))
    md += ["", "## Machine rates and distance to the floor", "", "```", *rate_lines, *floor_lines, "```"]
    md.append("")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "infinite-quick" if args.quick else "infinite"
    (args.out_dir / f"{stem}.md").write_text("\n".join(md))
    report = {
        "command": command_line(),
        "environment": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "workloads": {
            k: {"title": v[0], "layers": v[1], "input_shape": v[2], "target_ratio": v[5]} for k, v in WORKLOADS.items()
        },  # fmt: skip
        "rows": [{k: v for k, v in asdict(r).items() if k != "kernel_path"} for r in rows],
        "targets": goal,
        "gemm_rates": gemm,
        "elementwise_bytes_per_s": elementwise,
        "elapsed_s": elapsed,
    }
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {_rel(args.out_dir / (stem + '.md'))} and {_rel(args.out_dir / (stem + '.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
