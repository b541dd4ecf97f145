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


def _demo(args: argparse.Namespace) -> int:
    try:
        from ntkit.demo import serve
    except ImportError as exc:
        print(
            f"ntkit demo needs the demo extras ({exc}); install them with: pip install 'ntkit[demo]'", file=sys.stderr
        )
        return 1
    serve(host=args.host, port=args.port)
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
    demo = sub.add_parser("demo", help="the interactive page: a network trains beside its NTK prediction")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
