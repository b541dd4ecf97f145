"""The ``ntkit`` command line: thin faces over the library."""

from __future__ import annotations

import argparse
import math
import secrets
import sys


def _positive_ints(option: str):
    """An argparse type: comma-separated positive integers, with messages that name ``option``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be comma-separated positive integers; got {text!r}"
            ) from None
        if any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{option} must be positive; got {text!r}")
        return values

    return parse


_widths = _positive_ints("--widths")


def _number(option: str, low: float, high: float = math.inf, low_included: bool = False):
    """An argparse type: one finite number in (low, high] (or [low, high] when ``low_included``)."""
    interval = (
        f"{'[' if low_included else '('}{low:g}, {high:g}]"
        if high < math.inf
        else f"{'≥' if low_included else '>'} {low:g}"
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (low <= value if low_included else low < value) and value <= high
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"{option} must be a finite number {interval}; got {text!r}")
        return value

    return parse


def _non_negative(option: str):
    """An argparse type: one integer ≥ 0."""
    return _integer(option, 0, "an integer ≥ 0")


def _refuse(command: str, exc: Exception) -> int:
    print(f"ntkit {command}: {exc}", file=sys.stderr)
    return 2


def _start_folder(command: str, args: argparse.Namespace, config: dict, check_fits):
    """Check the memory and --out (in milliseconds, before any work), then start the run folder; None if refused."""
    from ntkit._runs import RunFolder, check_writable

    try:
        check_fits()
        check_writable(args.out, "--out")
        args.folder = RunFolder(args.out, command, config, args.argv, "--out").start()
        return args.folder
    except (ValueError, MemoryError) as exc:
        _refuse(command, exc)
        return None


def _example(args: argparse.Namespace) -> int:
    from ntkit.examples import width_convergence as ex

    config = {"widths": args.widths, "seeds": args.seeds, "seed": args.seed}
    folder = _start_folder("example", args, config, lambda: ex.check_fits(args.widths, "--widths"))
    if folder is None:
        return 2
    print("Empirical NTK of f(x) = a·relu(Wx + b)/√m at initialisation; kernel regression on sin(3x), 40 points")
    print(f"widths {', '.join(map(str, args.widths))}; means over {args.seeds} seeds")
    results = ex.run(widths=args.widths, seeds=args.seeds, seed=args.seed, progress=True, folder=folder)
    print(ex.format_table(results))
    paths = ex.save(results, folder, seed=args.seed)
    print(f"plot: {paths['plot'].resolve()}")
    return 0


def _dynamics(args: argparse.Namespace) -> int:
    from ntkit.examples import linearized_dynamics as ld

    config = {"architectures": args.architectures, "widths": args.widths, "seeds": args.seeds, "times": args.times}
    folder = _start_folder("dynamics", args, config, lambda: ld.check_fits(args.architectures, args.widths, "--widths"))
    if folder is None:
        return 2
    print("Trained networks against the closed-form prediction from their own initial NTK (Lee et al. 2019)")
    print(f"{', '.join(args.architectures)}; widths {', '.join(map(str, args.widths))}; {args.seeds} seeds; "
          f"times {', '.join(map(str, args.times))} steps")  # fmt: skip
    runs = ld.run(architectures=args.architectures, widths=args.widths, seeds=args.seeds, times=args.times,
                  folder=folder)  # fmt: skip
    print(ld.format_table(ld.summary(runs)))
    paths = ld.save(runs, folder)
    print(f"plot: {paths['plot'].resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from ntkit.demo import serve
    except ImportError as exc:
        print(
            f"ntkit demo needs the demo extras ({exc}); install them with: pip install 'ntkit[demo]'", file=sys.stderr
        )
        return 1
    token = secrets.token_urlsafe(18) if args.token == "" else args.token
    try:
        serve(host=args.host, port=args.port, threads=args.threads, token=token,
              trusted_origins=tuple(args.trusted_origin))  # fmt: skip
    except ValueError as exc:
        print(f"ntkit demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _names(option: str, known: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"{option} must be a comma-separated subset of {', '.join(known)}; "
                                             f"got {text!r}")  # fmt: skip
        return names

    return parse


def _alphas(text: str) -> tuple[float, ...]:
    try:
        alphas = tuple(float(a) for a in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alphas must be comma-separated numbers > 0; got {text!r}") from None
    if any(not a > 0 or a == float("inf") for a in alphas):
        raise argparse.ArgumentTypeError(f"--alphas must be finite numbers > 0 (α ≤ 0 has no lazy limit); "
                                         f"got {text!r}")  # fmt: skip
    return alphas


def _positive(option: str):
    return _integer(option, 1, "a positive integer")


def _integer(option: str, minimum: int, expected: str):
    """An argparse type: one integer ≥ ``minimum``; the message says ``option`` must be ``expected``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{option} must be {expected}; got {text!r}")
        return value

    return parse


def _regimes(args: argparse.Namespace) -> int:
    from ntkit._runs import check_writable
    from ntkit.examples.regimes_sweep import check_fits, run_regimes

    args.out = args.out or f"results/regimes/{args.task}"
    try:
        check_fits(args.task, args.widths, args.depth, "--widths")
        check_writable(args.out, "--out")
    except (ValueError, MemoryError) as exc:
        return _refuse("regimes", exc)
    print(
        f"ntkit regimes: task {args.task}, widths {', '.join(map(str, args.widths))}, parameterizations "
        f"{', '.join(args.parameterizations)}, α {', '.join(f'{a:g}' for a in args.alphas)}, {args.seeds} seed(s)"
    )
    result = run_regimes(task=args.task, widths=args.widths, parameterizations=args.parameterizations,
                         alphas=args.alphas, seeds=args.seeds, out=args.out, steps=args.steps, depth=args.depth,
                         lr_fraction=args.lr_fraction, jacot=not args.no_jacot, threads=args.threads,
                         b_std=args.b_std, argv=args.argv, out_option="--out")  # fmt: skip
    for (p, a), slope in result["slopes"].items():
        print(f"  kernel change ∝ width^{slope:+.2f}  ({p}, α={a:g})")
    print(f"report: {result['paths']['summary'].resolve()}")
    return 0


def _smalldata(args: argparse.Namespace) -> int:
    from ntkit.examples import smalldata as sd

    config = {"datasets": args.datasets, "methods": args.methods, "folds": args.folds,
              "inner_folds": args.inner_folds, "grid": args.grid, "seed": args.seed}  # fmt: skip
    if args.folds < 2 or args.inner_folds < 2:
        return _refuse("smalldata", ValueError(f"--folds and --inner-folds must be ≥ 2; got {args.folds}, "
                                               f"{args.inner_folds}"))  # fmt: skip
    folder = _start_folder("smalldata", args, config, lambda: None)
    if folder is None:
        return 2
    print(f"Small-data study (Arora et al. 2020): {', '.join(args.datasets)}; {', '.join(args.methods)}; "
          f"{args.folds} outer folds, {args.inner_folds} inner folds, {args.grid} grid, seed {args.seed}")  # fmt: skip
    results = sd.run(args.datasets, args.methods, folds=args.folds, inner_folds=args.inner_folds, grid=args.grid,
                     seed=args.seed, progress=not args.no_progress, folder=folder)  # fmt: skip
    paths = sd.save(results, folder)
    print(paths["table"].read_text(), end="")
    print(f"table: {paths['table'].resolve()}\nplot: {paths['plot'].resolve()}")
    return 0


def _floats(option: str, positive: bool = False):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be comma-separated numbers; got {text!r}") from None
        if any(not (v > 0 if positive else v >= 0) or v == float("inf") for v in values):
            raise argparse.ArgumentTypeError(f"{option} must be finite numbers {'> 0' if positive else '≥ 0'}; "
                                             f"got {text!r}")  # fmt: skip
        return values

    return parse


def _theory_learning_curve(args: argparse.Namespace) -> int:
    from ntkit.examples import theory_study as ts

    config = {
        k: getattr(args, k)
        for k in ("dim", "degrees", "powers", "noise", "ridges", "ns", "draws", "depth", "max_degree", "seed")
    }
    folder = _start_folder("theory-learning-curve", args, config, lambda: None)
    if folder is None:
        return 2
    print(f"ntkit theory learning-curve: ReLU NTK (depth {args.depth}) on S^{args.dim - 1}, target degrees "
          f"{args.degrees} with powers {args.powers}, noise {args.noise:g}, ridges {args.ridges}, n {args.ns}, "
          f"{args.draws} draws")  # fmt: skip
    rows = ts.sphere_learning_curves(dim=args.dim, degrees=args.degrees, powers=args.powers, noise=args.noise,
                                     ridges=args.ridges, ns=args.ns, draws=args.draws, depth=args.depth,
                                     max_degree=args.max_degree, seed=args.seed,
                                     progress=not args.no_progress)  # fmt: skip
    print(f"{'ridge':>8} {'n':>6} {'predicted':>11} {'measured':>11} {'± s.e.':>9} {'rel. err':>9}")
    for r in rows:
        print(f"{r['ridge']:>8g} {r['n']:>6} {r['predicted']:>11.4g} {r['measured']:>11.4g} {r['stderr']:>9.2g} "
              f"{r['rel_error']:>+9.1%}")  # fmt: skip
    print(f"table: {folder.write_table('learning_curve.csv', rows).resolve()}")
    with folder.output("learning_curve.png") as tmp:
        ts.plot_learning_curves(rows, tmp, f"ReLU NTK on S^{args.dim - 1}, degrees {','.join(map(str, args.degrees))}")
    folder.complete()
    print(f"plot: {(folder.out / 'learning_curve.png').resolve()}")
    return 0


def _theory_phase(args: argparse.Namespace) -> int:
    from ntkit.examples import theory_study as ts

    config = {k: getattr(args, k) for k in ("activation", "w2", "depths", "b2", "width", "steps", "seed")}
    if not args.b2 > 0:
        return _refuse("theory phase", ValueError(f"--b2 must be a finite number > 0; got {args.b2!r}"))
    folder = _start_folder("theory-phase", args, config, lambda: None)
    if folder is None:
        return 2
    print(f"ntkit theory phase: {args.activation} MLPs, σ_w² {args.w2}, depths {args.depths}, σ_b² {args.b2:g}, "
          f"width {args.width}, {args.steps} steps")  # fmt: skip
    rows = ts.phase_training(args.activation, args.w2, args.depths, args.b2, args.width, args.steps,
                             seed=args.seed, progress=not args.no_progress, folder=folder)  # fmt: skip
    print(f"{'σ_w²':>6} {'depth':>6} {'χ1':>7} {'6ξ':>8} {'loss/const':>11}")
    for r in rows:
        print(f"{r['w2']:>6g} {r['depth']:>6} {r['chi1']:>7.3f} {r['six_xi']:>8.1f} {r['relative_loss']:>11.3g}")
    print(f"table: {folder.write_table(f'phase_{args.activation}.csv', rows).resolve()}")
    with folder.output(f"phase_{args.activation}.png") as tmp:
        ts.plot_phase(rows, tmp)
    folder.complete()
    print(f"plot: {(folder.out / f'phase_{args.activation}.png').resolve()}")
    return 0


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", default="results/theory", help="folder for the plot and table")


def _add_theory(sub) -> None:
    theory = sub.add_parser("theory", help="what the kernel predicts without training: learning curves, phase diagram")
    tsub = theory.add_subparsers(dest="theory_command", required=True)
    lc = tsub.add_parser("learning-curve", help="predicted vs measured NTK regression on the sphere; plot + CSV")
    lc.add_argument("--dim", type=_positive("--dim"), default=5, help="inputs on S^(dim-1) in R^dim (default 5)")
    lc.add_argument(
        "--degrees",
        type=_positive_ints("--degrees"),
        default=(1, 2, 3),
        help="spherical-harmonic degrees of the target",
    )
    lc.add_argument("--powers", type=_floats("--powers"), default=(1.0, 0.5, 0.25), help="target power per degree")
    lc.add_argument("--noise", type=float, default=0.01, help="label noise variance ε²")
    lc.add_argument("--ridges", type=_floats("--ridges"), default=(0.0, 1e-3, 1e-2), help="ridges δ")
    lc.add_argument("--ns", type=_positive_ints("--ns"), default=(10, 30, 100, 300, 1000), help="training-set sizes")
    lc.add_argument("--draws", type=_positive("--draws"), default=20, help="training sets per n")
    lc.add_argument("--depth", type=_positive("--depth"), default=1, help="hidden layers of the ReLU MLP")
    lc.add_argument("--max-degree", type=_positive("--max-degree"), default=None,
                    help="last harmonic degree of the predicted spectrum; the rest enters as its trace "
                    "(default: enough degrees for 10 modes per sample)")  # fmt: skip
    _run_options(lc)
    lc.set_defaults(run=_theory_learning_curve)
    ph = tsub.add_parser("phase", help="deep MLPs trained over (σ_w², depth) against 6ξ; plot + CSV")
    ph.add_argument("--activation", choices=("tanh", "relu", "erf"), default="tanh")
    ph.add_argument("--w2", type=_floats("--w2", positive=True), default=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                    help="σ_w² values")  # fmt: skip
    ph.add_argument(
        "--depths", type=_positive_ints("--depths"), default=(10, 20, 40, 80), help="depths (hidden layers)"
    )
    ph.add_argument("--b2", type=float, default=0.05, help="σ_b² (> 0)")
    ph.add_argument("--width", type=_positive("--width"), default=64, help="hidden width")
    ph.add_argument("--steps", type=_positive("--steps"), default=100, help="gradient-descent steps per network")
    _run_options(ph)
    ph.set_defaults(run=_theory_phase)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkit", description="Neural Tangent Kernels for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    example = sub.add_parser("example", help="the worked example: NTK regression at growing width")
    example.add_argument("--widths", type=_widths, default=(64, 256, 1024, 4096), help="comma-separated widths")
    example.add_argument("--seeds", type=_positive("--seeds"), default=10, help="initialisations to average over")
    example.add_argument("--seed", type=_non_negative("--seed"), default=0, help="first seed")
    example.add_argument("--out", default="results/example", help="folder for the plot and table")
    example.set_defaults(run=_example)
    dynamics = sub.add_parser("dynamics", help="trained networks against their closed-form NTK dynamics by width")
    dynamics.add_argument("--architectures", type=_names("--architectures", ("mlp", "cnn")), default=("mlp", "cnn"),
                          help="comma-separated: mlp, cnn")  # fmt: skip
    dynamics.add_argument("--widths", type=_widths, default=(64, 256, 1024, 4096), help="comma-separated widths")
    dynamics.add_argument("--seeds", type=_positive("--seeds"), default=2, help="initialisations per width")
    dynamics.add_argument("--times", type=_positive_ints("--times"), default=(10, 30, 100),
                          help="steps at which to compare")  # fmt: skip
    dynamics.add_argument("--out", default="results/dynamics", help="folder for the plot and table")
    dynamics.set_defaults(run=_dynamics)
    demo = sub.add_parser("demo", help="the interactive page: a network trains beside its NTK prediction")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy machine)")
    demo.add_argument("--token", nargs="?", const="", default=None, metavar="TOKEN",
                      help="require this token (8+ characters) on every API call; without a value, generate one; "
                      "the printed address carries it")  # fmt: skip
    demo.add_argument("--trusted-origin", action="append", default=[], metavar="ORIGIN",
                      help="another origin (http://name:port) whose pages may call the API; repeatable")  # fmt: skip
    demo.set_defaults(run=_demo)

    from ntkit.data.tasks import TASKS
    from ntkit.regimes.parameterization import PARAMETERIZATIONS

    regimes = sub.add_parser("regimes", help="lazy training against feature learning across widths and "
                             "parameterizations; writes a report folder")  # fmt: skip
    regimes.add_argument("--task", choices=TASKS, default="sin", help="sin (1-D regression), spirals, digits")
    regimes.add_argument("--widths", type=_widths, default=(64, 256, 1024, 4096), help="comma-separated widths")
    regimes.add_argument(
        "--parameterizations",
        type=_names("--parameterizations", PARAMETERIZATIONS),
        default=("ntk", "mup", "standard"),
        help="comma-separated: ntk, mup, standard",
    )
    regimes.add_argument("--alphas", type=_alphas, default=(1.0,), help="lazy scales α > 0, comma-separated")
    regimes.add_argument("--seeds", type=_positive("--seeds"), default=3, help="initialisations per setting")
    regimes.add_argument(
        "--steps",
        type=_positive("--steps"),
        default=None,
        help="gradient-descent steps (default: sin 500, spirals 1000, digits 300)",
    )
    regimes.add_argument("--depth", type=_positive("--depth"), default=1, help="hidden layers")
    regimes.add_argument(
        "--lr-fraction",
        type=_number("--lr-fraction", 0.0, 1.0),
        default=0.5,
        help="learning rate as a fraction of the infinite-width NTK's largest stable rate",
    )
    regimes.add_argument(
        "--b-std",
        type=_number("--b-std", 0.0, low_included=True),
        default=None,
        help="bias scale (default: 1, digits 0.1)",
    )
    regimes.add_argument("--threads", type=_positive("--threads"), default=1, help="torch threads")
    regimes.add_argument("--no-jacot", action="store_true", help="skip Jacot et al.'s figure 1")
    regimes.add_argument("--out", default=None, help="report folder (default results/regimes/TASK)")
    regimes.set_defaults(run=_regimes)

    from ntkit.examples.smalldata import DATASETS, DEPTHS, METHODS

    smalldata = sub.add_parser("smalldata", help="NTK/NNGP estimators against random forests, RBF SVMs and MLPs "
                               "on scikit-learn's UCI data sets (Arora et al. 2020)")  # fmt: skip
    smalldata.add_argument("--datasets", type=_names("--datasets", DATASETS), default=DATASETS,
                           help="comma-separated: " + ", ".join(DATASETS))  # fmt: skip
    smalldata.add_argument("--methods", type=_names("--methods", METHODS), default=METHODS,
                           help="comma-separated: " + ", ".join(METHODS))  # fmt: skip
    smalldata.add_argument("--folds", type=_positive("--folds"), default=4, help="outer folds (test scores)")
    smalldata.add_argument("--inner-folds", type=_positive("--inner-folds"), default=3, help="folds of the search")
    smalldata.add_argument("--grid", choices=tuple(DEPTHS), default="default", help="hyperparameter grid size")
    smalldata.add_argument("--seed", type=int, default=0, help="seed of the folds, the forest and the MLP")
    smalldata.add_argument("--no-progress", action="store_true", help="no progress bar")
    smalldata.add_argument("--out", default="results/smalldata", help="folder for the table, CSV and plot")
    smalldata.set_defaults(run=_smalldata)
    _add_theory(sub)

    from ntkit.scale._cli import add_commands as add_scale_commands

    add_scale_commands(sub)  # `ntkit kernel`, `ntkit solve` (issue 12)
    return parser


#: Commands that store their cells in a ``ntkit._runs.RunFolder``: Ctrl-C keeps what is done, a rerun resumes.
RESUMABLE = ("example", "dynamics", "regimes", "smalldata")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.command not in RESUMABLE:
            raise
        print(f"ntkit {args.command}: interrupted; every finished cell is stored: rerun the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        if getattr(args, "folder", None) is not None:
            args.folder.close()


if __name__ == "__main__":
    sys.exit(main())
