"""Argument types and shared options of the fastconv command line.

Each type function turns the text of one option into its value or raises
argparse.ArgumentTypeError, which argparse reports as
"argument --OPTION: MESSAGE" with exit status 2.
"""
import argparse
import math

from ..backends import PATHS, available_backends
from ..geometry import output_hw


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """A whole number >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (refuses nan, inf and negative values)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def path_name(text: str) -> str:
    """A compute path that exists and is available on this machine."""
    if text not in PATHS:
        raise argparse.ArgumentTypeError(
            f"unknown path {text!r}; choose from {', '.join(PATHS)}")
    available = available_backends()
    if text not in available:
        raise argparse.ArgumentTypeError(
            f"path {text!r} is not available on this machine; available: {', '.join(available)}")
    return text


def add_layer_arguments(p: argparse.ArgumentParser) -> None:
    """The options that describe one conv layer (default: the first conv layer of
    SimpleConvNet from Deep Learning from Scratch, ch. 7)."""
    p.add_argument("--batch", type=positive_int, default=100, metavar="N",
                   help="images in the batch (default: %(default)s)")
    p.add_argument("--channels", type=positive_int, default=1, metavar="C",
                   help="input channels (default: %(default)s)")
    p.add_argument("--size", type=positive_int, default=28, metavar="HW",
                   help="input height and width (default: %(default)s)")
    p.add_argument("--filters", type=positive_int, default=30, metavar="K",
                   help="number of filters, the output channels (default: %(default)s)")
    p.add_argument("--kernel", type=positive_int, default=5, metavar="F",
                   help="filter height and width, at most size + 2*pad (default: %(default)s)")
    p.add_argument("--stride", type=positive_int, default=1,
                   help="step between filter positions, >= 1 (default: %(default)s)")
    p.add_argument("--pad", type=nonnegative_int, default=0,
                   help="zero padding on each side, >= 0 (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point type of the arrays (default: %(default)s)")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="timed runs per path; the best one is reported (default: %(default)s)")


def check_layer(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse (exit 2) a layer whose filter does not fit the padded input."""
    hw, f = (args.size, args.size), (args.kernel, args.kernel)
    try:
        output_hw(hw, f, (args.stride,) * 2, (args.pad,) * 2, "floor")
    except ValueError:
        parser.error(f"--kernel {args.kernel} does not fit --size {args.size} with --pad "
                     f"{args.pad}: the filter can be at most size + 2*pad = "
                     f"{args.size + 2 * args.pad}")
