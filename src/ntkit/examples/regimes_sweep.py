r"""``ntkit regimes``: train one MLP family across widths, parameterizations and lazy scales, and report.

Every run trains the centered model α·(f − f0) (:func:`ntkit.regimes.lazy`; α = 1 is plain training of f − f0,
so every run starts from the zero function) by full-batch gradient descent on ½·mean((f − y)²)/α², with the
learning rates of its parameterization (:func:`ntkit.regimes.mup_param_groups`; standard: η/width, the largest
rate that stays stable as the width grows). η is a fraction (``lr_fraction``) of the largest stable rate of the
infinite-width NTK on the training set (``ntkit.predict.max_learning_rate``), the same for every run.

The NTK prediction of a run is the closed form of discrete gradient descent with the analytic kernel
(``ntkit.predict.gradient_descent_mse``): NTK parameterization, μP (whose NTK weighted by its learning rates has
the NTK parameterization's limit at initialisation) and any α share Θ∞; standard uses its width-dependent
analytic NTK divided by the width. ``ntk_gap`` = ‖f_T − f_T^NTK‖/‖f_T^NTK‖ on the test inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ntkit._runs import RunFolder, training_bytes
from ntkit._validation import check_memory, positive_int, real_number
from ntkit.data.tasks import Task, check_task, load_task
from ntkit.examples.common import stable_learning_rate
from ntkit.predict import gradient_descent_mse
from ntkit.regimes import KernelTracker, lazy, mlp, mlp_spec, mup_param_groups
from ntkit.regimes.parameterization import check_parameterization

DEFAULT_WIDTHS = (64, 256, 1024, 4096)
DEFAULT_STEPS = {"sin": 500, "spirals": 1000, "digits": 300}
W_STD = 1.0
#: bias scale per task: sin needs the ReLU kinks spread over [−1, 1] (b_std = 1, as in `ntkit example`); on
#: digits b_std = 1 puts a constant mode 300× above the rest of the kernel, which caps the learning rate
B_STD = {"sin": 1.0, "spirals": 1.0, "digits": 0.1}
#: input dimension, outputs and examples (train and test) of each task, to size a run before loading it
TASK_SHAPES = {"sin": (1, 1, 220), "spirals": (2, 1, 600), "digits": (64, 10, 1797)}
COLUMNS = ("task", "width", "parameterization", "alpha", "seed", "train_loss", "test_loss", "kernel_change",
           "weight_change", "ntk_gap", "test_accuracy", "kernel_distance", "kernel_alignment_0", "kernel_alignment",
           "relu_flips", "lr", "steps")  # fmt: skip


def check_widths(widths) -> tuple[int, ...]:
    try:
        widths = tuple(widths)
    except TypeError:
        raise ValueError(f"widths must be a sequence of positive ints; got {widths!r}") from None
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive ints; got {widths!r}")
    return tuple(sorted(set(int(w) for w in widths)))


def check_alphas(alphas) -> tuple[float, ...]:
    try:
        alphas = tuple(float(a) for a in alphas)
    except (TypeError, ValueError):
        raise ValueError(f"alphas must be a sequence of numbers > 0; got {alphas!r}") from None
    if not alphas or any(not math.isfinite(a) or a <= 0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty sequence of finite numbers > 0; got {alphas!r}")
    return alphas


def _effective_kernels(task: Task, width: int, parameterization: str, depth: int, cache: dict, b_std: float):
    """Analytic train-train and test-train kernels that govern this run's function-space dynamics at rate η."""
    key = ("standard", width) if parameterization == "standard" else ("ntk",)
    if key not in cache:
        spec = mlp_spec(width, task.y_train.shape[1], depth, "relu", W_STD, b_std, key[0])
        scale = 1.0 / width if key[0] == "standard" else 1.0  # standard trains at η/width
        cache[key] = (spec.kernel(task.x_train).ntk * scale, spec.kernel(task.x_test, task.x_train).ntk * scale)
    return cache[key]


def base_learning_rate(task: Task, depth: int, lr_fraction: float, b_std: float | None = None) -> float:
    b_std = B_STD[task.name] if b_std is None else b_std
    return stable_learning_rate(
        mlp_spec(1, task.y_train.shape[1], depth, "relu", W_STD, b_std, "ntk"), task, lr_fraction
    )


def train_one(task: Task, width: int, parameterization: str, alpha: float, seed: int, lr: float, steps: int,
              depth: int = 1, snapshots: Sequence[int] = (), n_probe: int = 32,
              b_std: float | None = None) -> dict:  # fmt: skip
    """Train one network; returns its row and the test outputs at the ``snapshots`` steps."""
    b_std = B_STD[task.name] if b_std is None else b_std
    dtype = task.x_train.dtype
    model = lazy(mlp(task.x_train.shape[1], width, task.y_train.shape[1], depth, "relu", parameterization,
                     W_STD, b_std, seed=seed, dtype=dtype), alpha)  # fmt: skip
    base = lr / width if parameterization == "standard" else lr
    opt = torch.optim.SGD(mup_param_groups(model, base))
    n = len(task.x_train)
    probe = torch.linspace(0, n - 1, min(n_probe, n)).round().long()  # spread over the set (classes are blocks)
    tracker = KernelTracker(model, task.x_train[probe], every=[steps], y_probe=task.y_train[probe],
                            keep_kernels=False)  # fmt: skip
    outputs = {}
    if 0 in snapshots:
        with torch.no_grad():
            outputs[0] = model(task.x_test)
    diverged = False
    for s in range(1, steps + 1):
        loss = 0.5 * ((model(task.x_train) - task.y_train) ** 2).mean() * model.loss_scale
        if not torch.isfinite(loss):
            diverged = True
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.step()
        if s in snapshots:
            with torch.no_grad():
                outputs[s] = model(task.x_test)
    with torch.no_grad():
        f_train, f_test = model(task.x_train), model(task.x_test)
    end = tracker.records[-1] if not diverged else {}
    row = {
        "task": task.name, "width": width, "parameterization": parameterization, "alpha": alpha, "seed": seed,
        "train_loss": float(((f_train - task.y_train) ** 2).mean()) if not diverged else math.nan,
        "test_loss": float(((f_test - task.y_test) ** 2).mean()) if not diverged else math.nan,
        "kernel_change": end.get("kernel_change", math.nan), "weight_change": end.get("weight_change", math.nan),
        "test_accuracy": task.accuracy(f_test, task.y_test) if task.classes and not diverged else math.nan,
        "kernel_distance": end.get("kernel_distance", math.nan),
        "kernel_alignment_0": tracker.records[0]["kernel_alignment"],
        "kernel_alignment": end.get("kernel_alignment", math.nan), "relu_flips": end.get("relu_flips", math.nan),
        "lr": base, "steps": steps,
    }  # fmt: skip
    return {"row": row, "outputs": outputs, "f_test": f_test}


def run_regimes(task: str = "sin", widths: Sequence[int] = DEFAULT_WIDTHS,
                parameterizations: Sequence[str] = ("ntk", "mup", "standard"), alphas: Sequence[float] = (1.0,),
                seeds: int = 3, out: str | Path = "results/regimes", steps: int | None = None, depth: int = 1,
                lr_fraction: float = 0.5, jacot: bool = True, progress: bool = True,
                threads: int | None = 1, b_std: float | None = None, argv: Sequence[str] | None = None,
                out_option: str = "out") -> dict:  # fmt: skip
    """Train every (width, parameterization, α, seed) and write the report folder, resuming a killed run.

    Every setting is checked, and ``out`` proved writable, before anything is computed; a width whose network
    cannot fit in the free memory is refused (:func:`check_fits`). Each trained network is a cell of
    :class:`ntkit._runs.RunFolder`, stored as it finishes: a rerun with the same settings skips the cells already
    stored, and its tables equal an uninterrupted run's. ``out/manifest.json`` records the command, the version,
    the settings and, once every output is written, their SHA-256 (:func:`ntkit._runs.read_run` checks them).

    Parameters
    ----------
    task:
        "sin", "spirals" or "digits" (:func:`ntkit.data.tasks.load_task`).
    widths:
        Hidden widths, positive ints.
    parameterizations:
        Any of "ntk", "mup", "standard".
    alphas:
        Lazy scales α > 0 (:func:`ntkit.regimes.lazy`).
    seeds:
        Initialisations per configuration (seeds 0 … seeds − 1).
    out:
        Report folder: ``results.csv``, ``kernel_change.png``, ``function_vs_ntk.png``, ``jacot_figure1.png``
        and ``summary.md``, with ``manifest.json`` and the stored cells in ``cells/``.
    steps:
        Gradient-descent steps (default: 500 for sin, 1000 for spirals, 300 for digits).
    depth:
        Hidden layers of the MLP.
    lr_fraction:
        η as a fraction of the infinite-width NTK's largest stable rate.
    jacot:
        Also draw Jacot et al.'s figure 1 (Θ on the unit circle).
    progress:
        Show a tqdm progress bar.
    b_std:
        Bias scale of every layer; None: 1 for sin and spirals, 0.1 for digits (``B_STD``).
    threads:
        torch's intra-op threads while it runs (restored afterwards); None leaves them. The default 1 is the
        fastest for these small matrices on a shared machine, where more threads mostly wait on each other.
    argv:
        The command line, recorded in the manifest.
    out_option:
        How messages name ``out`` (``"--out"`` from the command line).

    Returns
    -------
    dict
        ``rows`` (list of dicts, the rows of results.csv), ``slopes`` ((parameterization, α) → fitted log-log
        slope of the kernel change against width), ``ntk`` (the NTK prediction's test loss and accuracy) and
        ``paths``.
    """
    check_task(task)
    widths = check_widths(widths)
    parameterizations = tuple(check_parameterization(p) for p in parameterizations)
    if not parameterizations:
        raise ValueError("parameterizations must name at least one of ('ntk', 'standard', 'mup')")
    alphas = check_alphas(alphas)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int; got {seeds!r}")
    steps = DEFAULT_STEPS[task] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    depth = positive_int("depth", depth)
    if real_number("lr_fraction", lr_fraction, positive=True) > 1:
        raise ValueError(f"lr_fraction (of the largest stable rate) must be ≤ 1; got {lr_fraction!r}")
    b_std = real_number("b_std", B_STD[task] if b_std is None else b_std, nonnegative=True)
    check_fits(task, widths, depth)
    config = {"task": task, "widths": widths, "parameterizations": parameterizations, "alphas": alphas,
              "seeds": seeds, "steps": steps, "depth": depth, "lr_fraction": lr_fraction, "b_std": b_std,
              "jacot": jacot}  # fmt: skip
    folder = RunFolder(out, "regimes", config, argv, option=out_option).start()
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(folder, progress)
    finally:
        folder.close()
        torch.set_num_threads(saved_threads)


def check_fits(task: str, widths: Sequence[int], depth: int, option: str = "widths") -> None:
    """Refuse, before building anything, a width whose network cannot train in the memory free now.

    Parameters: the input dimension D, outputs O and examples N (train and test) of ``task``; a network of width n
    has P = D·n + n + (depth − 1)(n² + n) + n·O + O parameters, which training holds six times (the model, its
    gradients, the lazy model's frozen copy, the tracker's initial copy and its weight-change copy, SGD's buffer) and
    N·n·depth hidden values (:func:`ntkit._runs.training_bytes`).
    """
    d, o, n = TASK_SHAPES[check_task(task)]
    for w in widths:
        params = d * w + w + (depth - 1) * (w * w + w) + w * o + o
        what = f"{option} {w}: training one network of width {w} (depth {depth}, {params:,} parameters)"
        check_memory(
            training_bytes(params, n * w * depth, parameter_copies=6),
            torch.device("cpu"),
            what,
            "choose smaller widths",
        )


def _cell(data: Task, lr: float, steps: int, depth: int, b_std: float, cache: dict, key: list) -> dict:
    """One trained network: its row of results.csv (with the distance to its NTK prediction) and, for seed 0, the
    first output on the test inputs at the snapshot steps, of the network and of the prediction."""
    p, a, w, s = key
    snapshots = _snapshots(steps)
    result = train_one(data, w, p, a, s, lr, steps, depth, snapshots, b_std=b_std)
    k_tt, k_xt = _effective_kernels(data, w, p, depth, cache, b_std)
    predict = gradient_descent_mse(k_tt, data.y_train, lr, discrete=True)
    f_ntk = predict(torch.tensor(snapshots, dtype=k_tt.dtype), 0.0, 0.0, k_xt)[1]  # (T, M, O): starts at 0
    f_end = f_ntk[-1]
    result["row"]["ntk_gap"] = float(torch.linalg.vector_norm(result["f_test"] - f_end)
                                     / torch.linalg.vector_norm(f_end))  # fmt: skip
    cell = {"row": {c: result["row"][c] for c in COLUMNS}}
    if s == 0:
        cell["net"] = {str(t): f[:, 0].tolist() for t, f in sorted(result["outputs"].items())}  # fewer if diverged
        cell["ntk"] = {str(t): f[:, 0].tolist() for t, f in zip(snapshots, f_ntk, strict=True)}
    return cell


def _snapshots(steps: int) -> list[int]:
    return sorted({0, max(1, steps // 30), max(1, steps // 6), steps})


def _run(folder: RunFolder, progress: bool) -> dict:
    from ntkit.examples import regimes_report as report

    c = folder.config
    task, widths, seeds, steps, depth, b_std = c["task"], c["widths"], c["seeds"], c["steps"], c["depth"], c["b_std"]
    data = load_task(task)
    lr = base_learning_rate(data, depth, c["lr_fraction"], b_std)
    cache: dict = {}
    keys = [[p, a, w, s] for p in c["parameterizations"] for a in c["alphas"] for w in widths for s in range(seeds)]
    depends_on = {"task": task, "steps": steps, "depth": depth, "lr_fraction": c["lr_fraction"], "b_std": b_std}
    cells = folder.cells(keys, depends_on, lambda key: _cell(data, lr, steps, depth, b_std, cache, key),
                         progress=progress, desc=f"regimes [{task}]")  # fmt: skip
    rows = [cell["row"] for cell in cells]
    curves = {}
    for (p, a, w, s), cell in zip(keys, cells, strict=True):
        if s == 0:
            curves[(p, a, w)] = {part: {int(t): torch.tensor(v, dtype=torch.float64).unsqueeze(1)
                                        for t, v in cell[part].items()} for part in ("net", "ntk")}  # fmt: skip
    # the infinite-width NTK's own prediction at the end of training (NTK parameterization)
    k_tt, k_xt = _effective_kernels(data, widths[0], "ntk", depth, cache, b_std)
    f_inf = gradient_descent_mse(k_tt, data.y_train, lr, discrete=True)(float(steps), 0.0, 0.0, k_xt)[1]
    ntk_ref = {"test_loss": float(((f_inf - data.y_test) ** 2).mean()),
               "test_accuracy": data.accuracy(f_inf, data.y_test) if data.classes else math.nan}  # fmt: skip
    jacot_numbers = None
    if c["jacot"]:
        narrow, wide = widths[0], min(widths[-1], 1024)
        jacot_widths = (narrow, wide) if wide > narrow else (narrow,)
        jacot_keys = [["jacot", w, s] for w in jacot_widths for s in range(min(seeds, 4) + 1)]
        jacot_runs = folder.cells(jacot_keys, {"depth": 3, "steps": 200}, lambda key: report.jacot_run(key[1], key[2]),
                                  progress=progress, desc="Jacot figure 1")  # fmt: skip

    paths = {"csv": folder.write_table("results.csv", rows, COLUMNS)}
    slopes = report.fit_slopes(rows)
    with folder.output("kernel_change.png") as tmp:
        report.plot_kernel_change(rows, slopes, tmp)
    with folder.output("function_vs_ntk.png") as tmp:
        report.plot_function_vs_ntk(data, curves, widths, tmp)
    paths["kernel_change"] = folder.out / "kernel_change.png"
    paths["function_vs_ntk"] = folder.out / "function_vs_ntk.png"
    if c["jacot"]:
        with folder.output("jacot_figure1.png") as tmp:
            jacot_numbers = report.jacot_plot([k[1] for k in jacot_keys], jacot_runs, tmp)
        paths["jacot"] = folder.out / "jacot_figure1.png"
    settings = {**c, "lr": lr, "n_train": len(data.x_train), "n_test": len(data.x_test)}
    with folder.output("summary.md") as tmp:
        report.write_summary(rows, slopes, ntk_ref, jacot_numbers, settings, tmp)
    paths["summary"] = folder.out / "summary.md"
    folder.complete()
    return {"rows": rows, "slopes": slopes, "ntk": ntk_ref, "jacot": jacot_numbers, "paths": paths}
