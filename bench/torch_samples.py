"""How much of PyTorch's own 2-D convolution and pooling test inputs fastconv can run, and
whether it computes the same results.

PyTorch's test suite describes each operator by sample inputs
(``torch.testing._internal.common_methods_invocations.op_db``) and each module
by constructor and forward inputs (``torch.testing._internal.common_modules.module_db``).
This script takes the samples of ``nn.functional.conv2d`` (alias ``conv2d``),
``nn.functional.max_pool2d``, ``nn.functional.avg_pool2d`` and of the modules
``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d``, in float32 and float64;
translates each into fastconv's own arguments (``conv2d(x, W, b, stride, pad,
...)``, ``pool2d(x, pool_h, pool_w, stride, pad, mode, ...)``); runs it on
every CPU path; and compares with PyTorch's output (and, for
``return_indices``, its indices).

A sample is *expressible* when fastconv accepts it: the translation needs only
keywords fastconv's functions have (read from their signatures, so options
added later are picked up without a change here) and fastconv raises no
ValueError or TypeError for it. Anything else fastconv raises is reported as
an unclean error. A path that does not run an expressible sample (fastconv's
ValueError naming the path's scope, e.g. winograd's 3x3 stride-1 only) is
counted as not run there; a TypeError there counts as an unclean error.

    python bench/torch_samples.py                 # float32 and float64, every CPU path
    python bench/torch_samples.py --paths naive,im2col --dtypes float32

Needs ``torch`` and ``expecttest`` (PyTorch's test helpers import it); neither
is a fastconv dependency. Results are compared with the tolerance of each
dtype (float64: 1e-10 relative, float32: 1e-4 relative), scaled by the
largest magnitude of the reference output as fastconv's own tests do.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

import fastconv

# Relative tolerances per dtype; the absolute part scales with max |reference|.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}

OP_NAMES = {
    "conv2d": "conv", "nn.functional.conv2d": "conv",
    "max_pool2d": "max", "nn.functional.max_pool2d": "max",
    "avg_pool2d": "avg", "nn.functional.avg_pool2d": "avg",
}
MODULE_NAMES = {"Conv2d": "conv", "MaxPool2d": "max", "AvgPool2d": "avg"}

# PyTorch's positional parameters after the input, per kind of operator.
POSITIONAL = {
    "conv": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
            "divisor_override"),
}
DEFAULTS = {
    "conv": dict(bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"),
    "max": dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False),
    "avg": dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None),
}


class Inexpressible(Exception):
    """The sample needs what fastconv's functions have no argument for; args[0] names it."""


@dataclass
class Sample:
    """One PyTorch sample: where it comes from, its kind, its arguments by name, and
    PyTorch's result (out, indices or None)."""

    source: str
    kind: str                   # "conv", "max" or "avg"
    dtype: np.dtype
    x: np.ndarray
    args: dict
    expected: np.ndarray
    expected_indices: np.ndarray | None = None


@dataclass
class Report:
    total: int = 0
    by_source: Counter = field(default_factory=Counter)
    expressible: int = 0
    expressible_by_source: Counter = field(default_factory=Counter)
    inexpressible: Counter = field(default_factory=Counter)          # reason -> count
    examples: dict = field(default_factory=dict)                     # reason -> one message
    unclean: list = field(default_factory=list)                      # (sample, path, repr)
    modified_input: list = field(default_factory=list)
    ran: Counter = field(default_factory=Counter)                    # path -> samples run
    skipped: Counter = field(default_factory=Counter)                # path -> not run there
    skip_examples: dict = field(default_factory=dict)                # path -> one message
    mismatches: dict = field(default_factory=lambda: defaultdict(list))   # path -> [(sample, err)]
    worst: dict = field(default_factory=dict)                # (path, dtype) -> (error, sample)


# ------------------------------------------------------------------ the samples

def _pair_or_none(value):
    """PyTorch's int / 1- or 2-sequence / empty stride, as an int, a pair, or None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if len(value) == 0:
            return None             # an empty stride means "the window", as None does
        if len(value) == 1:
            return int(value[0])
        return tuple(int(v) for v in value)
    if isinstance(value, str):
        return value
    return int(value)


def _numpy(t):
    return t.detach().cpu().numpy().copy()


def _torch_result(result):
    if isinstance(result, tuple):
        return _numpy(result[0]), _numpy(result[1])
    return _numpy(result), None


def _op_samples(torch, dtypes):
    from torch.testing._internal.common_methods_invocations import op_db

    for op in op_db:
        kind = OP_NAMES.get(op.name)
        if kind is None:
            continue
        for dtype in dtypes:
            for s in op.sample_inputs("cpu", getattr(torch, dtype.name), requires_grad=False):
                named = dict(zip(POSITIONAL[kind], s.args))
                named.update(s.kwargs)
                args = {k: (_numpy(v) if torch.is_tensor(v) else v) for k, v in named.items()}
                with torch.no_grad(), warnings.catch_warnings():
                    # e.g. padding='same' with an even filter: a note on PyTorch's speed
                    warnings.simplefilter("ignore", UserWarning)
                    out, indices = _torch_result(op.op(s.input, *s.args, **s.kwargs))
                yield Sample(op.name, kind, dtype, _numpy(s.input), args, out, indices)


def _module_samples(torch, dtypes):
    from torch.testing._internal.common_modules import module_db

    for info in module_db:
        kind = MODULE_NAMES.get(info.module_cls.__name__)
        if kind is None:
            continue
        for dtype in dtypes:
            tdtype = getattr(torch, dtype.name)
            for mi in info.module_inputs_func(info, device="cpu", dtype=tdtype, requires_grad=False,
                                              training=False):
                if mi.forward_input is None:
                    continue
                ctor = mi.constructor_input
                module = info.module_cls(*ctor.args, **ctor.kwargs).to(tdtype)
                (x,) = mi.forward_input.args
                with torch.no_grad():
                    out, indices = _torch_result(module(x, **mi.forward_input.kwargs))
                yield Sample(f"nn.{info.module_cls.__name__}", kind, dtype, _numpy(x),
                             _module_args(module, kind), out, indices)


def _module_args(module, kind):
    """A module's settings under the functional names."""
    if kind == "conv":
        return dict(weight=_numpy(module.weight),
                    bias=None if module.bias is None else _numpy(module.bias),
                    stride=module.stride, padding=module.padding, dilation=module.dilation,
                    groups=module.groups, padding_mode=module.padding_mode)
    names = POSITIONAL[kind]
    return {name: getattr(module, name) for name in names}


def torch_samples(dtypes=("float32", "float64"), seed=0):
    """Every sample of the operators and modules above, with PyTorch's results."""
    import torch

    torch.manual_seed(seed)
    dtypes = [np.dtype(d) for d in dtypes]
    yield from _op_samples(torch, dtypes)
    yield from _module_samples(torch, dtypes)


# ----------------------------------------------------------- the translation

def _used(kind, args):
    """{name: value} of the sample's arguments that differ from PyTorch's defaults."""
    used = {}
    for name, default in DEFAULTS[kind].items():
        if name == "bias":
            continue
        value = args.get(name, default)
        if name in ("stride", "padding", "dilation") and not isinstance(value, str):
            value = _pair_or_none(value)
            if isinstance(value, tuple) and len(set(value)) == 1:
                value = value[0]
            if name == "stride" and kind != "conv" and value is None:
                continue
        if value != default:
            used[name] = value
    return used


def features(sample) -> list[str]:
    """Names of the sample's options beyond the book's stride and pad."""
    names = []
    for name, value in _used(sample.kind, sample.args).items():
        if name == "stride":
            continue
        if name == "padding":
            if isinstance(value, str):
                names.append(f"padding={value!r}")
            continue
        if name == "count_include_pad":
            names.append("count_include_pad=False")
        elif name == "padding_mode":
            names.append(f"padding_mode={value!r}")
        else:
            names.append(name)
    return names


def _keywords(func):
    return set(inspect.signature(func).parameters)


def translate(sample):
    """(fastconv function, positional args, keyword args) for ``sample``.

    Raises Inexpressible when fastconv's function has no argument for an option
    the sample sets.
    """
    a, used = sample.args, _used(sample.kind, sample.args)
    if sample.kind == "conv":
        func = fastconv.conv2d
        if "padding_mode" in used:
            raise Inexpressible(f"padding_mode={used['padding_mode']!r}")
        positional = (sample.x, a["weight"], a.get("bias"),
                      _pair_or_none(a.get("stride", 1)), _pair_or_none(a.get("padding", 0)))
        options = {k: _pair_or_none(used[k]) if k == "dilation" else used[k]
                   for k in ("dilation", "groups") if k in used}
    else:
        func = fastconv.pool2d
        kh, kw = (a["kernel_size"],) * 2 if np.isscalar(a["kernel_size"]) else a["kernel_size"]
        mode = "max" if sample.kind == "max" else "avg"
        positional = (sample.x, int(kh), int(kw), _pair_or_none(a.get("stride")),
                      _pair_or_none(a.get("padding", 0)), mode)
        options = {k: v for k, v in used.items() if k not in ("stride", "padding")}
        if "dilation" in options:
            options["dilation"] = _pair_or_none(options["dilation"])
    missing = sorted(k for k in options if k not in _keywords(func))
    if missing:
        raise Inexpressible("+".join(missing))
    return func, positional, options


# ------------------------------------------------------------------ running

def cpu_paths():
    return [p for p in fastconv.available_backends() if p != "cuda"]


def _call(func, positional, options, path):
    """fastconv's result as (out, indices or None)."""
    result = func(*positional, **options, backend=path)
    if options.get("return_indices"):
        out, indices = result
        return np.asarray(out), np.asarray(indices)
    return np.asarray(result), None


def _error(actual, expected, dtype):
    """max |actual - expected| / max(1, max |expected|); inf for a shape or dtype mismatch."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0)) / scale


def _within(actual, expected, tolerance):
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    return bool(np.allclose(actual, expected, rtol=tolerance["rtol"],
                            atol=tolerance["atol"] * scale, equal_nan=True))


def _describe(sample):
    shown = {k: (f"array{v.shape}" if isinstance(v, np.ndarray) else v)
             for k, v in sample.args.items()}
    return f"{sample.source} {sample.dtype.name} x{sample.x.shape} {shown}"


def run(samples, paths=None, tolerances=None) -> Report:
    """Translate, run and compare every sample on each path (default: every CPU path)."""
    paths = cpu_paths() if paths is None else list(paths)
    tolerances = TOLERANCES if tolerances is None else tolerances
    report = Report()
    for sample in samples:
        report.total += 1
        report.by_source[sample.source] += 1
        reason = "+".join(features(sample)) or "no option beyond stride/pad"
        try:
            func, positional, options = translate(sample)
        except Inexpressible as err:
            key = f"{reason} [no keyword {err.args[0]}]"
            report.inexpressible[key] += 1
            continue
        for path in ["naive"] + [p for p in paths if p != "naive"]:
            inputs = [a.copy() if isinstance(a, np.ndarray) else a for a in positional]
            try:
                out, indices = _call(func, inputs, options, path)
            except (ValueError, TypeError) as err:
                if path == "naive":         # the oracle runs everything fastconv describes
                    key = f"{reason} [{type(err).__name__}]"
                    report.inexpressible[key] += 1
                    report.examples.setdefault(key, str(err).splitlines()[0])
                    break
                if isinstance(err, ValueError):     # the path's scope, as dispatch words it
                    report.skipped[path] += 1
                    report.skip_examples.setdefault(path, str(err).splitlines()[0])
                else:
                    report.unclean.append((_describe(sample), path,
                                           f"TypeError for what the naive path ran: {err}"))
                continue
            except Exception as err:        # anything but a clean ValueError/TypeError
                report.unclean.append((_describe(sample), path, f"{type(err).__name__}: {err}"))
                if path == "naive":
                    break
                continue
            if path == "naive":
                report.expressible += 1
                report.expressible_by_source[sample.source] += 1
            if path not in paths:
                continue
            if any(isinstance(a, np.ndarray) and not np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(inputs, positional)):
                report.modified_input.append((_describe(sample), path))
            report.ran[path] += 1
            err = _error(out, sample.expected, sample.dtype)
            ok = _within(out, sample.expected, tolerances[sample.dtype])
            if sample.expected_indices is not None:
                same = indices is not None and np.array_equal(indices, sample.expected_indices)
                ok = ok and same
                err = err if same else float("inf")
            if not ok:
                report.mismatches[path].append((_describe(sample), err))
            worst = (path, sample.dtype.name)
            if worst not in report.worst or err > report.worst[worst][0]:
                report.worst[worst] = (err, _describe(sample))
    return report


def format_report(report: Report, paths) -> str:
    lines = []
    pct = 100.0 * report.expressible / report.total if report.total else 0.0
    lines.append(f"samples: {report.total}   expressible: {report.expressible} ({pct:.1f}%)")
    lines.append("by source (expressible / total):")
    for source, n in sorted(report.by_source.items()):
        lines.append(f"  {source:28s} {report.expressible_by_source[source]:5d} / {n}")
    if report.inexpressible:
        lines.append("not expressible, by reason:")
        for reason, n in report.inexpressible.most_common():
            example = report.examples.get(reason)
            lines.append(f"  {n:5d}  {reason}" + (f"\n         e.g. {example}" if example else ""))
    dtypes = sorted({dtype for _, dtype in report.worst})
    lines.append("per path: ran / mismatches / not run there (outside the path's scope) / "
                 "worst error relative to max(1, max |PyTorch's output|) per dtype:")
    for path in paths:
        shown = "  ".join(f"{dtype} {report.worst[path, dtype][0]:.1e}"
                          for dtype in dtypes if (path, dtype) in report.worst)
        lines.append(f"  {path:9s} {report.ran[path]:5d} / {len(report.mismatches[path]):4d} / "
                     f"{report.skipped[path]:5d}   {shown or '-'}")
        if path in report.skip_examples:
            lines.append(f"      not run, e.g.: {report.skip_examples[path]}")
        for description, err in report.mismatches[path][:5]:
            lines.append(f"      mismatch {err:.2e}: {description}")
    lines.append(f"unclean errors (not ValueError/TypeError): {len(report.unclean)}")
    for description, path, message in report.unclean[:10]:
        lines.append(f"  {path}: {message}\n      {description}")
    lines.append(f"inputs modified in place: {len(report.modified_input)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default=None,
                        help="comma-separated CPU paths (default: every available one but cuda)")
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        import torch.testing._internal.common_methods_invocations  # noqa: F401
    except ImportError as err:
        print(f"needs torch and expecttest (pip install torch expecttest): {err}", file=sys.stderr)
        return 2
    paths = cpu_paths() if args.paths is None else [p.strip() for p in args.paths.split(",")]
    report = run(torch_samples(args.dtypes.split(",")), paths)
    print(format_report(report, paths))
    failed = (sum(map(len, report.mismatches.values())) or report.unclean
              or report.modified_input)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
