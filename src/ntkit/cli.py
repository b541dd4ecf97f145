"""The ``ntkit`` command line: thin faces over the library."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths must be comma-separated positive integers; got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"--widths must be positive; got {text!r}")
    return widths


def _example(args: argparse.Namespace) -> int:
    from ntkit.examples import width_convergence as ex

    print("Empirical NTK of f(x) = a·relu(Wx + b)/√m at initialisation; kernel regression on sin(3x), 40 points")
    print(f"widths {', '.join(map(str, args.widths))}; means over {args.seeds} seeds")
    results = ex.run(widths=args.widths, seeds=args.seeds, seed=args.seed)
    print(ex.format_table(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "width_convergence.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ex.records(results)[0]))
        writer.writeheader()
        writer.writerows(ex.records(results))
    path = ex.plot(results, out / "width_convergence.png", seed=args.seed)
    print(f"plot: {path.resolve()}")
    return 0


def _dynamics(args: argparse.Namespace) -> int:
    from ntkit.examples import linearized_dynamics as ld

    print("Trained networks against the closed-form prediction from their own initial NTK (Lee et al. 2019)")
    print(f"{', '.join(args.architectures)}; widths {', '.join(map(str, args.widths))}; {args.seeds} seeds; "
          f"times {', '.join(map(str, args.times))} steps")  # fmt: skip
    runs = ld.run(architectures=args.architectures, widths=args.widths, seeds=args.seeds, times=args.times)
    print(ld.format_table(ld.summary(runs)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ld.records(runs)
    with open(out / "linearized_dynamics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"plot: {ld.plot(runs, out / 'linearized_dynamics.png').resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from ntkit.demo import serve
    except ImportError as exc:
        print(
            f"ntkit demo needs the demo extras ({exc}); install them with: pip install 'ntkit[demo]'", file=sys.stderr
        )
        return 1
    try:
        serve(host=args.host, port=args.port, threads=args.threads)
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
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be a positive integer; got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} must be a positive integer; got {text!r}")
        return value

    return parse


def _regimes(args: argparse.Namespace) -> int:
    from ntkit.regimes.experiment import run_regimes

    out = Path(args.out or f"results/regimes/{args.task}")
    print(
        f"ntkit regimes: task {args.task}, widths {', '.join(map(str, args.widths))}, parameterizations "
        f"{', '.join(args.parameterizations)}, α {', '.join(f'{a:g}' for a in args.alphas)}, {args.seeds} seed(s)"
    )
    result = run_regimes(task=args.task, widths=args.widths, parameterizations=args.parameterizations,
                         alphas=args.alphas, seeds=args.seeds, out=out, steps=args.steps, depth=args.depth,
                         lr_fraction=args.lr_fraction, jacot=not args.no_jacot, threads=args.threads,
                         b_std=args.b_std)  # fmt: skip
    for (p, a), slope in result["slopes"].items():
        print(f"  kernel change ∝ width^{slope:+.2f}  ({p}, α={a:g})")
    print(f"report: {result['paths']['summary'].resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkit", description="Neural Tangent Kernels for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    example = sub.add_parser("example", help="the worked example: NTK regression at growing width")
    example.add_argument("--widths", type=_widths, default=(64, 256, 1024, 4096), help="comma-separated widths")
    example.add_argument("--seeds", type=int, default=10, help="initialisations to average over")
    example.add_argument("--seed", type=int, default=0, help="first seed")
    example.add_argument("--out", default="results/example", help="folder for the plot and table")
    example.set_defaults(run=_example)
    dynamics = sub.add_parser("dynamics", help="trained networks against their closed-form NTK dynamics by width")
    dynamics.add_argument("--architectures", type=_names("--architectures", ("mlp", "cnn")), default=("mlp", "cnn"),
                          help="comma-separated: mlp, cnn")  # fmt: skip
    dynamics.add_argument("--widths", type=_widths, default=(64, 256, 1024, 4096), help="comma-separated widths")
    dynamics.add_argument("--seeds", type=_positive("--seeds"), default=2, help="initialisations per width")
    dynamics.add_argument("--times", type=_widths, default=(10, 30, 100), help="steps at which to compare")
    dynamics.add_argument("--out", default="results/dynamics", help="folder for the plot and table")
    dynamics.set_defaults(run=_dynamics)
    demo = sub.add_parser("demo", help="the interactive page: a network trains beside its NTK prediction")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy machine)")
    demo.set_defaults(run=_demo)

    from ntkit.regimes.parameterization import PARAMETERIZATIONS
    from ntkit.regimes.tasks import TASKS

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
        type=float,
        default=0.5,
        help="learning rate as a fraction of the infinite-width NTK's largest stable rate",
    )
    regimes.add_argument("--b-std", type=float, default=None, help="bias scale (default: 1, digits 0.1)")
    regimes.add_argument("--threads", type=_positive("--threads"), default=1, help="torch threads")
    regimes.add_argument("--no-jacot", action="store_true", help="skip Jacot et al.'s figure 1")
    regimes.add_argument("--out", default=None, help="report folder (default results/regimes/TASK)")
    regimes.set_defaults(run=_regimes)

    from ntkit.scale._cli import add_commands as add_scale_commands

    add_scale_commands(sub)  # `ntkit kernel`, `ntkit solve` (issue 12)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
