"""The fastconv command line: compare, explain, autotune and train.

Every subcommand checks its arguments before it computes anything; a bad one
ends the program with exit status 2 and one line on stderr,
"fastconv <command>: error: <what is wrong>", never a traceback.
"""
import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_parser", "main"]

DESCRIPTION = ("2-D convolutional networks made fast with Numba. Subcommands: compare "
               "(time one conv layer on every path), explain (what a conv layer costs), "
               "autotune (measure and store the choices of backend='auto'), train (train a "
               "conv net on MNIST or Fashion-MNIST). 'fastconv COMMAND --help' lists a "
               "command's options.")


class CliParser(argparse.ArgumentParser):
    """argparse with errors on one line: "PROG: error: MESSAGE", exit status 2."""

    def error(self, message: str) -> NoReturn:
        # Library messages may span lines (dataset install hints): join them.
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text}\n")


def version() -> str:
    """The installed fastconv's version (package metadata, else fastconv.__version__)."""
    try:
        return importlib.metadata.version("fastconv")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``fastconv`` parser with every subcommand."""
    from . import tools, train

    parser = CliParser(prog="fastconv", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"fastconv {version()}",
                        help="print the installed fastconv version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    tools.add_compare(sub)
    tools.add_explain(sub)
    tools.add_autotune(sub)
    tools.add_warmup(sub)
    train.add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastconv`` with ``argv`` (default: sys.argv[1:]) -> exit status.

    Bad arguments raise SystemExit(2) after one line on stderr; Ctrl-C returns 130.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.func(args, args.command_parser)
    except KeyboardInterrupt:
        # fastconv train reports its own interruptions; this is compare, explain, autotune
        print(f"\n{args.command_parser.prog}: interrupted", file=sys.stderr)
        return 130
