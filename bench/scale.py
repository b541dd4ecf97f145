"""Benchmark of ntkit.scale (issue 12): tile overhead, 1 against 2 workers, and kernel regression end to end.

Run it from the repository root with the project's venv::

    .venv/bin/python bench/scale.py                        # all three parts (N = 50,000 end to end)
    .venv/bin/python bench/scale.py --n 20000              # a smaller end-to-end run
    .venv/bin/python bench/scale.py --parts overhead       # one part: overhead, check8000, regression

Results go to bench/results/scale.json (after each part) and bench/results/scale.md. Stores are written under
--work (default /tmp/ntkit-scale-bench) and deleted at the end unless --keep.

What is measured
    * overhead: the FC NTK (3 hidden ReLU layers, float32) of 12,288 inputs on the sphere S⁹ in tiles of 2,048:
      the 21 tiles I ≤ J computed in memory, one after the other on one thread, by the very tile function the
      workers call (``arch.kernel(a, b, get="ntk")`` on the same slices), against ``scale.kernel`` on LocalClusters
      of 1 and 2 single-threaded workers; --repeat interleaved rounds, medians reported. Wall time and CPU time
      (all threads of the worker processes, by getrusage). Cluster start, the workers' first imports and the
      close are fixed costs, measured and reported apart; dask scheduling and the zarr writes are included.
    * check8000: N = 8,000, float64: ``scale.solve`` (Nyström, rank 1,000) against ``predict.gp_inference`` and
      ``gradient_descent_mse(t=∞)`` on 1,000 test points (relative difference of the predictions), and the CG
      iterations with and without the preconditioner.
    * regression: N = --n (50,000) float32 NTK regression of a teacher network (a width-64 ReLU network of the
      same depth, seed 1, + 10 % noise) on the sphere: kernel wall time, disk used, peak RSS of the driver and of
      each worker, CG with the preconditioner to tol 1e-5 and plain CG for the same budget, test error on 2,000
      points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ntkit as nk  # noqa: E402
from _memory import reset_peak_rss, status_kib  # noqa: E402
from ntkit import scale  # noqa: E402
from ntkit.scale._cluster import client_for  # noqa: E402
from ntkit.scale.kernel import TileFunction  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ARCH = nk.Sequential(*[m for _ in range(3) for m in (nk.Linear(512, W_std=1.4, b_std=0.1), nk.ReLU())],
                     nk.Linear(1, W_std=1.4, b_std=0.1))  # fmt: skip
DIM = 10


def sphere(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, DIM, generator=g, dtype=torch.float64), dim=1).to(dtype)


def teacher_targets(x: torch.Tensor, seed: int) -> torch.Tensor:
    teacher = nk.Sequential(*[m for _ in range(3) for m in (nk.Linear(64), nk.ReLU())], nk.Linear(1))
    net = teacher.build((DIM,), seed=1, dtype=torch.float64)
    with torch.no_grad():
        clean = net(x.double())[:, 0]
    g = torch.Generator().manual_seed(seed)
    return clean + 0.1 * clean.std() * torch.randn(clean.shape, generator=g, dtype=torch.float64)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def worker_peaks(client) -> dict:
    return {w: v / 1024 for w, v in client.run(lambda: status_kib("VmHWM")).items()}


def _worker_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the worker process: compute, writer, dask
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def part_overhead(work: Path, repeat: int = 3) -> dict:
    """The same 21 tiles in memory (the tile function the workers run, on the same slices, 1 thread) and through
    scale.kernel on LocalClusters of 1 and 2 single-threaded workers; ``repeat`` rounds, interleaved."""
    n, tile = 12288, 2048
    x = sphere(n, 0)
    torch.set_num_threads(1)
    tiles = [(i, j) for i in range(n // tile) for j in range(i, n // tile)]
    fn = TileFunction(ARCH, ("ntk",), "float32")  # exactly what a worker calls per tile
    fn(x[:256], None)  # warm-up

    def in_memory() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for i, j in tiles:
            fn(x[i * tile : (i + 1) * tile], None if i == j else x[j * tile : (j + 1) * tile])
        return time.perf_counter() - start, time.process_time() - cpu

    out = {"n": n, "tile": tile, "tiles": len(tiles), "repeat": repeat, "load_before": _load(), "rounds": []}
    clusters = {}
    with ExitStack() as stack:
        for workers in (1, 2):
            start = time.perf_counter()
            clusters[workers] = c = stack.enter_context(client_for(None, n_workers=workers))
            out[f"cluster_start_{workers}w_s"] = time.perf_counter() - start
            start = time.perf_counter()  # the imports a fresh worker pays before its first tile
            c.run(lambda: (__import__("zarr"), __import__("ntkit.scale.kernel"), ARCH.kernel(torch.randn(8, DIM))))
            out[f"worker_imports_{workers}w_s"] = time.perf_counter() - start
        for r in range(repeat):
            wall, cpu = in_memory()
            row = {"in_memory_s": wall, "in_memory_cpu_s": cpu}
            for workers, c in clusters.items():
                cpu0 = sum(c.run(_worker_cpu).values())
                start = time.perf_counter()
                k = scale.kernel(ARCH, x, path=work / f"overhead{workers}-{r}.zarr", tile=tile, get="ntk", client=c,
                                 progress=False)  # fmt: skip
                row[f"scale_{workers}w_s"] = time.perf_counter() - start
                row[f"worker_cpu_{workers}w_s"] = sum(c.run(_worker_cpu).values()) - cpu0
                row[f"tile_compute_{workers}w_s"] = k.compute_seconds  # inside the tile function, wall
                shutil.rmtree(work / f"overhead{workers}-{r}.zarr")
            print(json.dumps(row), flush=True)
            out["rounds"].append(row)
        start = time.perf_counter()
    out["cluster_close_s"] = time.perf_counter() - start  # both clusters
    out["load_after"] = _load()
    med = {key: statistics.median(row[key] for row in out["rounds"]) for key in out["rounds"][0]}
    out.update(med)
    out["overhead_1w"] = med["scale_1w_s"] / med["in_memory_s"] - 1
    out["overhead_cpu_1w"] = med["worker_cpu_1w_s"] / med["in_memory_cpu_s"] - 1
    out["overhead_cpu_2w"] = med["worker_cpu_2w_s"] / med["in_memory_cpu_s"] - 1
    out["speedup_2w"] = med["scale_1w_s"] / med["scale_2w_s"]
    return out


def part_check8000(work: Path) -> dict:
    n, m, reg, tol = 8000, 1000, 1e-4, 1e-8
    x, xt = sphere(n, 2, torch.float64), sphere(m, 3, torch.float64)
    y = teacher_targets(x, 4)
    k = scale.kernel(ARCH, x, path=work / "check8000.zarr", tile=1000, dtype=torch.float64, get="ntk", n_workers=2,
                     progress=False)  # fmt: skip
    out = {"n": n, "diag_reg": reg, "tol": tol}
    fits = {}
    for name, pre, max_iter in (("nystrom", "nystrom", 2000), ("plain", None, 3000)):
        start = time.perf_counter()
        try:
            fits[name] = fit = scale.solve(k.ntk, y, diag_reg=reg, preconditioner=pre, rank=1000, tol=tol,
                                           max_iter=max_iter, progress=False)  # fmt: skip
            out[f"{name}_iterations"] = fit.iterations
        except scale.ConvergenceError as err:
            out[f"{name}_iterations"] = f"> {max_iter} (residual {err.result.residuals[-1]:.1e})"
        out[f"{name}_s"] = time.perf_counter() - start
    f_scale = scale.predict(ARCH, xt, x, fits["nystrom"].alpha, tile=1000, dtype=torch.float64, n_workers=2,
                            progress=False)  # fmt: skip
    torch.set_num_threads(2)
    dense = torch.from_numpy(k.ntk.compute(scheduler="threads"))
    k_test = ARCH.kernel(xt, x).ntk
    gp = nk.predict.gp_inference(dense, y, diag_reg=reg)(k_test).mean[:, 0]
    _, gd = nk.predict.gradient_descent_mse(dense, y, diag_reg=reg)(None, k_test_train=k_test)
    out["rel_diff_gp_inference"] = float((f_scale - gp).norm() / gp.norm())
    out["rel_diff_gradient_descent_mse"] = float((f_scale - gd[:, 0]).norm() / gd[:, 0].norm())
    return out


def part_regression(work: Path, n: int, tile: int, workers: int, plain_max_iter: int | None = None) -> dict:
    reg, tol, rank, m = 1e-4, 1e-5, 1000, 2000
    x, xt = sphere(n, 5), sphere(m, 6)
    y, yt = teacher_targets(torch.cat([x, xt]).double(), 7).split([n, m])
    path = work / f"regression{n}.zarr"
    out = {"n": n, "tile": tile, "workers": workers, "diag_reg": reg, "tol": tol, "rank": rank, "test_points": m}
    reset_peak_rss()
    with client_for(None, n_workers=workers) as c:
        start = time.perf_counter()
        k = scale.kernel(ARCH, x, path=path, tile=tile, get="ntk", client=c)
        out["kernel_s"] = time.perf_counter() - start
        out["kernel_resumed"] = k.compute_seconds == 0.0  # --reuse: the store was finished by an earlier run
        out["worker_peak_rss_mib_kernel"] = worker_peaks(c)
        out["disk_bytes"] = du(Path(path))
        out["driver_peak_rss_mib_kernel"] = status_kib("VmHWM") / 1024
        reset_peak_rss()
        start = time.perf_counter()
        fit = scale.solve(k.ntk, y, diag_reg=reg, rank=rank, tol=tol, max_iter=300)
        out["solve_s"], out["cg_iterations"], out["cg_residuals"] = (time.perf_counter() - start, fit.iterations,
                                                                     fit.residuals)  # fmt: skip
        out["driver_peak_rss_mib_solve"] = status_kib("VmHWM") / 1024
        budget = plain_max_iter or fit.iterations
        start = time.perf_counter()
        try:
            plain = scale.solve(k.ntk, y, diag_reg=reg, preconditioner=None, tol=tol, max_iter=budget)
            out["plain_iterations"], out["plain_residual"] = plain.iterations, plain.residuals[-1]
        except scale.ConvergenceError as err:
            out["plain_iterations"], out["plain_residual"] = f"> {budget}", err.result.residuals[-1]
        out["plain_s"] = time.perf_counter() - start
        start = time.perf_counter()
        f = scale.predict(ARCH, xt, x, fit.alpha, tile=tile, client=c)
        out["predict_s"] = time.perf_counter() - start
    out["test_mse"] = float(((f - yt) ** 2).mean())
    out["test_mse_over_var"] = out["test_mse"] / float(yt.var())
    return out


def render(results: dict) -> str:
    lines = ["# ntkit.scale benchmark (issue 12)", "", f"Machine: {results['machine']}, shared with other jobs "
             "(timings are noisy); each part names the command that measured it.", ""]  # fmt: skip
    o = results.get("overhead")
    if o:
        lines += ["## Tile overhead and workers", "", f"Command: `{o.get('command', '')}`", "",
                  f"FC NTK (3 hidden ReLU layers, float32), N = {o['n']}, tile {o['tile']}: {o['tiles']} tiles "
                  f"I ≤ J. In memory: the tile function the workers run (`arch.kernel(..., get='ntk')` on the same "
                  f"slices) on 1 thread, with the workers' glibc settings. Median of {o.get('repeat', 1)} interleaved "
                  "rounds; load average "
                  f"{o.get('load_before', '?')} before, {o.get('load_after', '?')} after.", "",
                  "| run | wall (s) | against in-memory | CPU (s) | CPU against in-memory |", "|---|---|---|---|---|",
                  f"| in memory, 1 thread, tiles one after the other | {o['in_memory_s']:.2f} | 1.00 | "
                  f"{o.get('in_memory_cpu_s', float('nan')):.2f} | 1.00 |",
                  f"| scale.kernel, 1 worker | {o['scale_1w_s']:.2f} | {1 + o['overhead_1w']:.2f} | "
                  f"{o.get('worker_cpu_1w_s', float('nan')):.2f} | {1 + o.get('overhead_cpu_1w', float('nan')):.2f} |",
                  f"| scale.kernel, 2 workers | {o['scale_2w_s']:.2f} | {o['scale_2w_s'] / o['in_memory_s']:.2f} | "
                  f"{o.get('worker_cpu_2w_s', float('nan')):.2f} | {1 + o.get('overhead_cpu_2w', float('nan')):.2f} |",
                  "", f"Overhead with 1 worker: {100 * o['overhead_1w']:+.1f} % in wall time, "
                  f"{100 * o.get('overhead_cpu_1w', float('nan')):+.1f} % in CPU time (all threads of the worker "
                  f"process against the in-memory loop's; target ≤ 10 %). 2 workers against 1: "
                  f"{o['speedup_2w']:.2f}x. CPU of 2 workers against in-memory: "
                  f"{100 * o.get('overhead_cpu_2w', float('nan')):+.1f} %.", "",
                  "Fixed costs, once per run and not in the table: LocalCluster start "
                  f"{o.get('cluster_start_1w_s', float('nan')):.1f} s (1 worker) and "
                  f"{o.get('cluster_start_2w_s', float('nan')):.1f} s (2), a fresh worker's imports (torch, zarr, "
                  f"ntkit) {o.get('worker_imports_1w_s', float('nan')):.1f} s and "
                  f"{o.get('worker_imports_2w_s', float('nan')):.1f} s, closing both clusters "
                  f"{o.get('cluster_close_s', float('nan')):.1f} s.", ""]  # fmt: skip
    c = results.get("check8000")
    if c:
        lines += ["## N = 8,000 against the in-memory predictors (float64)", "",
                  f"Command: `{c.get('command', '')}`", "",
                  f"CG with Nyström (rank 1,000): {c['nystrom_iterations']} iterations ({c['nystrom_s']:.1f} s); plain "
                  f"CG: {c['plain_iterations']} iterations ({c['plain_s']:.1f} s), tol {c['tol']:g}, diag_reg "
                  f"{c['diag_reg']:g}.  ", f"Test predictions against `gp_inference`: relative difference "
                  f"{c['rel_diff_gp_inference']:.2e}; against `gradient_descent_mse(t=∞)`: "
                  f"{c['rel_diff_gradient_descent_mse']:.2e} (required ≤ 1e-6).", ""]  # fmt: skip
    for key in sorted(k for k in results if k.startswith("regression")):
        r = results[key]
        workers = ", ".join(f"{v:.0f}" for v in r["worker_peak_rss_mib_kernel"].values())
        if r.get("kernel_resumed"):
            workers = "not measured (no tile computed in this run)"
        else:
            workers += " MiB"
        lines += [f"## Kernel regression end to end, N = {r['n']:,}, float32", "",
                  f"Command: `{r.get('command', '')}`", "",
                  "| step | result |", "|---|---|",
                  f"| kernel ({r['workers']} workers, tile {r['tile']}) | "
                  + ("an earlier run (see the notes)" if r.get("kernel_resumed") else f"{r['kernel_s']:.0f} s")
                  + " |",
                  f"| disk used by the store | {r['disk_bytes'] / 2**30:.2f} GiB |",
                  f"| peak RSS: driver (kernel / solve), workers | {r['driver_peak_rss_mib_kernel']:.0f} / "
                  f"{r['driver_peak_rss_mib_solve']:.0f} MiB; {workers} |",
                  f"| CG, Nyström rank {r['rank']}, tol {r['tol']:g} | {r['cg_iterations']} iterations, "
                  f"{r['solve_s']:.0f} s "
                  "(includes the landmark pass and one check product) |",
                  f"| plain CG, same or given iteration budget | {r['plain_iterations']} iterations, residual "
                  f"{r['plain_residual']:.2e}, {r['plain_s']:.0f} s |",
                  f"| predict {r['test_points']:,} test points | {r['predict_s']:.0f} s |",
                  f"| test MSE / var(y) | {r['test_mse_over_var']:.4f} |", ""]  # fmt: skip
    notes = results.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"* {note}" for note in notes] + [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    # the in-memory baseline runs in this process: give it the glibc settings of ntkit's workers (see
    # ntkit.scale._cluster.WORKER_MALLOC), so that both sides allocate their tile temporaries alike
    malloc = {key.rsplit(".", 1)[1]: value for key, value in scale._cluster.WORKER_MALLOC.items()}
    if any(os.environ.get(key) != value for key, value in malloc.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **malloc})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="overhead,check8000,regression")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="/tmp/ntkit-scale-bench")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="overhead: interleaved rounds (medians reported)")
    parser.add_argument("--reuse", action="store_true", help="keep --work: finished stores resume instead")
    parser.add_argument("--plain-max-iter", type=int, default=None, help="plain CG budget (default: as Nyström)")
    parser.add_argument("--merge", action="store_true", help="keep the other parts' results in scale.json")
    parser.add_argument("--render", action="store_true", help="only rewrite scale.md from scale.json")
    args = parser.parse_args()
    if args.render:
        (RESULTS / "scale.md").write_text(render(json.loads((RESULTS / "scale.json").read_text())))
        return
    work = Path(args.work)
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    results_json = RESULTS / "scale.json"
    # parts run separately are merged: each keeps the command that measured it
    results = json.loads(results_json.read_text()) if results_json.exists() and args.merge else {}
    results["machine"] = f"{platform.processor() or platform.machine()}, {scale._cluster.cpu_count()} cores"
    command = "python bench/scale.py " + " ".join(sys.argv[1:])
    try:
        for part in args.parts.split(","):
            print(f"== {part}", flush=True)
            if part == "overhead":
                results[part] = part_overhead(work, args.repeat)
            elif part == "check8000":
                results[part] = part_check8000(work)
            elif part == "regression":
                results[part] = part_regression(work, args.n, args.tile, args.workers, args.plain_max_iter)
            else:
                raise SystemExit(f"unknown part {part!r}")
            results[part]["command"] = command
            print(json.dumps(results[part], default=str)[:2000], flush=True)
            results_json.write_text(json.dumps(results, indent=1, default=str))
            (RESULTS / "scale.md").write_text(render(results))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
