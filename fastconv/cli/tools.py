"""``fastconv compare``, ``fastconv explain`` and ``fastconv autotune``."""
import argparse
import importlib
import importlib.resources
import json
import os

from .options import add_layer_arguments, check_layer, path_name, positive_int

LAYER_DEFAULT = ("Default layer: the first conv layer of SimpleConvNet (Deep Learning from "
                 "Scratch, ch. 7), 100 images 1x28x28, 30 filters 5x5.")


def _tuning():
    # imported when a command needs it: `fastconv --help` should not load the kernels
    return importlib.import_module("fastconv.tuner")


def _shape_text(args):
    return (f"x=({args.batch}, {args.channels}, {args.size}, {args.size}) "
            f"W=({args.filters}, {args.channels}, {args.kernel}, {args.kernel})")


# ------------------------------------------------------------------ compare

def add_compare(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="time one conv layer forward and backward on every path",
                       description="Times one convolution forward and backward on each path "
                                   "and reports how far each result is from the naive path's. "
                                   + LAYER_DEFAULT)
    add_layer_arguments(p)
    p.add_argument("--paths", nargs="+", type=path_name, default=None, metavar="PATH",
                   help="paths to time, e.g. im2col direct (default: every available path)")
    p.set_defaults(func=run_compare, command_parser=p)
    return p


def run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import numba

    from ..compare import compare, format_table

    check_layer(args, parser)
    title = (f"conv {_shape_text(args)} stride={args.stride} pad={args.pad} {args.dtype}, "
             f"{numba.get_num_threads()} threads, best of {args.repeat}")
    # the title first: the timing takes seconds (first calls compile on a new machine)
    print(title, flush=True)
    try:
        rows = compare(N=args.batch, C=args.channels, H=args.size, W=args.size, K=args.filters,
                       FH=args.kernel, FW=args.kernel, stride=args.stride, pad=args.pad,
                       dtype=args.dtype, repeat=args.repeat, paths=args.paths)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    print(format_table(rows, title).split("\n", 1)[1])
    return 0


# ------------------------------------------------------------------ explain

def add_explain(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("explain", help="what one conv layer costs (FLOPs, bytes, im2col chunks), "
                                       "and with --measure what each path takes and auto's pick",
                       description="Counts the FLOPs and bytes of one convolution and the "
                                   "chunks the im2col path unrolls it in; with --measure also "
                                   "times every path and shows which one backend='auto' "
                                   "picks. " + LAYER_DEFAULT)
    add_layer_arguments(p)
    p.add_argument("--measure", action="store_true", help="time every path on this machine")
    p.add_argument("--paths", nargs="+", type=path_name, default=None, metavar="PATH",
                   help="paths to time with --measure (default: every available path but cuda)")
    p.set_defaults(func=run_explain, command_parser=p)
    return p


def run_explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..explain import explain

    check_layer(args, parser)
    if args.paths is not None and not args.measure:
        parser.error("--paths chooses the paths to time: it needs --measure")
    x_shape = (args.batch, args.channels, args.size, args.size)
    w_shape = (args.filters, args.channels, args.kernel, args.kernel)
    try:
        result = explain(x_shape, w_shape, args.stride, args.pad, args.dtype,
                         measure=args.measure, paths=args.paths, repeat=args.repeat)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    print(result)
    return 0


# ----------------------------------------------------------------- autotune

DEFAULT_SUITE = "the layer suite installed with fastconv (fastconv/data/layers.json)"


def add_autotune(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("autotune",
                       help="measure and store backend='auto' choices for a layer suite",
                       description="Times the candidate paths on every conv layer and pooling of "
                                   "a layer suite and stores the fastest path of each in the "
                                   "auto-tuning cache, where backend='auto' finds it later.")
    p.add_argument("layers", nargs="?", default=None, metavar="SUITE.json",
                   help="a JSON file with a 'layers' list (N, C, H, W, K, FH, FW, stride, pad "
                        "per conv layer) and a 'pooling' list (N, C, H, W, FH, FW, stride, pad, "
                        f"mode) (default: {DEFAULT_SUITE})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of layers whose spec names none (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="measure again even known layers")
    p.add_argument("--clear", action="store_true",
                   help="forget every stored choice and exit (takes no SUITE.json)")
    p.set_defaults(func=run_autotune, command_parser=p)
    return p


def default_suite() -> list:
    """The packaged layer suite: its conv layers, then its poolings (a list of dicts)."""
    text = importlib.resources.files("fastconv").joinpath("data", "layers.json").read_text("utf-8")
    return _specs(json.loads(text), DEFAULT_SUITE)


def _specs(suite, source):
    if isinstance(suite, list):
        return suite
    if not isinstance(suite, dict) or not ({"layers", "pooling"} & set(suite)):
        raise ValueError(f"{source} must hold a JSON object with a 'layers' and/or 'pooling' "
                         f"list, or a list of layer specs")
    specs = []
    for key in ("layers", "pooling"):
        part = suite.get(key, [])
        if not isinstance(part, list):
            raise ValueError(f"{source}: {key!r} must be a list, got {type(part).__name__}")
        specs += part
    return specs


def _read_suite(path):
    try:
        with open(path, encoding="utf-8") as f:
            suite = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"layer suite {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"layer suite {path} is a directory, not a JSON file") from None
    except OSError as err:
        raise ValueError(f"cannot read layer suite {path}: {err.strerror}") from None
    except ValueError as err:
        raise ValueError(f"layer suite {path} is not valid JSON: {err}") from None
    return _specs(suite, path)


def check_spec(spec: dict | list) -> None:
    """Raise ValueError naming what is wrong with one layer spec of a suite.

    Accepted: {N, C, H, W, K, FH, FW, stride, pad[, dilation, groups]} (a conv
    layer), {N, C, H, W, FH, FW, stride, pad, mode} (a pooling, no K),
    {x_shape, w_shape, stride, pad[, mode]} or [x_shape, w_shape[, stride[, pad]]].
    The checks are the spec builders' own (``fastconv.tuner.layer_spec``).
    """
    if isinstance(spec, dict) and "x_shape" not in spec:
        pool = "K" not in spec
        need = ("N", "C", "H", "W", "FH", "FW") + (() if pool else ("K",))
        missing = [k for k in need if k not in spec]
        if missing:
            raise ValueError(f"{'pooling' if pool else 'conv'} spec lacks {', '.join(missing)}")
    elif isinstance(spec, dict) and "w_shape" not in spec:
        raise ValueError(f"a spec with x_shape needs w_shape too, got {spec!r}")
    elif isinstance(spec, list) and not 2 <= len(spec) <= 4:
        raise ValueError(f"a list spec is [x_shape, w_shape[, stride[, pad]]], got {spec!r}")
    elif not isinstance(spec, (dict, list)):
        raise ValueError(f"a layer spec must be a JSON object or list, got {spec!r}")
    try:
        _tuning().layer_spec(spec, "float32")
    except TypeError as err:
        raise ValueError(str(err)) from None


def _label(spec, i):
    name = spec.get("id") if isinstance(spec, dict) else None
    return f"spec {i}" + (f" ({name})" if name else "")


def _format_times(times_ms):
    ranked = sorted(times_ms.items(), key=lambda kv: kv[1]["forward"] + kv[1]["backward"])
    return ", ".join(f"{p} {t['forward'] + t['backward']:.3g} ms" for p, t in ranked)


def run_autotune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .. import autotune, clear_cache

    tuning = _tuning()
    if args.clear:
        if args.layers is not None or args.force:
            parser.error("--clear forgets every stored choice: it takes no SUITE.json or --force")
        print(f"removed {clear_cache()} stored choice(s) under {tuning.cache_root() / 'autotune'}")
        return 0
    source = DEFAULT_SUITE if args.layers is None else args.layers
    try:
        specs = default_suite() if args.layers is None else _read_suite(args.layers)
        if not specs:
            raise ValueError(f"{source} holds no layers")
        for i, spec in enumerate(specs):
            try:
                check_spec(spec)
            except ValueError as err:
                raise ValueError(f"{source}, {_label(spec, i)}: {err}") from None
        decisions = autotune(specs, dtype=args.dtype, force=args.force)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    print(f"auto choices ({tuning.current_threads()} threads, {args.dtype} unless a layer says "
          f"otherwise), stored in {tuning.cache_dir()}")
    for d in decisions:
        k = d.key
        shape = (f"{k['op']} x={tuple(k['x_shape'])} w={tuple(k['w_shape'])} "
                 f"s={tuple(k['stride'])} p={tuple(k['pad'])}")
        if k["mode"]:
            shape += f" {k['mode']}"
        print(f"  {shape:<62} -> {d.path:<7} ({d.source}) {_format_times(d.times_ms)}")
    return 0


# ------------------------------------------------------------------- warmup

def add_warmup(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("warmup",
                       help="compile the kernels a network needs (and choose its paths) ahead of time",
                       description="Compiles, once per machine, the kernels a network (or a layer "
                                   "suite shaped like the packaged layers.json) runs, so that a first "
                                   "training step or benchmark does not pay for it. With "
                                   "--batch-size, backend='auto' layers also choose and store their "
                                   "path for that batch size.")
    p.add_argument("--net", choices=("simple", "lenet"), default="simple",
                   help="the network whose layers to compile (default: %(default)s)")
    p.add_argument("--layers", default=None, metavar="SUITE.json",
                   help="a layer suite JSON file instead of a network")
    p.add_argument("--dtype", nargs="+", choices=("float32", "float64"), default=["float32"],
                   help="dtypes to compile for (default: float32)")
    p.add_argument("--paths", nargs="+", type=path_name, default=None, metavar="PATH",
                   help="paths to compile (default: those the layers may run)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="also let backend='auto' choose and store its path for this batch size")
    p.set_defaults(func=run_warmup, command_parser=p)
    return p


def run_warmup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..nets import LeNet, SimpleConvNet
    from ..warmup import warmup

    if args.layers is not None and not os.path.isfile(args.layers):
        parser.error(f"layer suite {args.layers} does not exist")
    for dtype in args.dtype:
        target = args.layers or (SimpleConvNet if args.net == "simple" else LeNet)(dtype=dtype)
        try:
            report = warmup(target, dtype=dtype, paths=args.paths,
                            batch_sizes=[args.batch_size] if args.batch_size else None)
        except (ValueError, TypeError) as err:
            parser.error(str(err))
        print(f"{dtype}: {report}")
    return 0
