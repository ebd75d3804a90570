"""Command line: ``fastconv compare | train | explain | autotune | plot-bench``."""
import argparse

import numba

from .train_cli import add_parser as add_train_parser
from .autotune import add_cli as add_autotune_parser
from .explain import add_cli as add_explain_parser
from .benchplot import add_cli as add_plot_bench_parser


def _cmd_compare(args):
    from .compare import compare, format_table

    rows = compare(N=args.batch, C=args.channels, H=args.size, W=args.size, K=args.filters,
                   FH=args.kernel, FW=args.kernel, stride=args.stride, pad=args.pad,
                   dtype=args.dtype, repeat=args.repeat, paths=args.paths)
    title = (f"conv x=({args.batch}, {args.channels}, {args.size}, {args.size}) "
             f"W=({args.filters}, {args.channels}, {args.kernel}, {args.kernel}) "
             f"stride={args.stride} pad={args.pad} {args.dtype}, "
             f"{numba.get_num_threads()} threads, best of {args.repeat}")
    print(format_table(rows, title))
    return 0


def add_layer_arguments(p):
    """The options that describe one conv layer (default: the SimpleConvNet's first)."""
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--size", type=int, default=28, help="input height and width")
    p.add_argument("--filters", type=int, default=30)
    p.add_argument("--kernel", type=int, default=5, help="filter height and width")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--pad", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeat", type=int, default=3)


def build_parser():
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="time one conv layer forward and backward on every path",
                       description="Default: the seeds' SimpleConvNet first layer, "
                                   "100 images 1x28x28, 30 filters 5x5.")
    add_layer_arguments(p)
    p.add_argument("--paths", nargs="+", default=None, help="paths to time (default: all available)")
    p.set_defaults(func=_cmd_compare)
    add_train_parser(sub)
    add_explain_parser(sub)
    add_autotune_parser(sub)
    add_plot_bench_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
