"""``fastconv.explain``: what one convolution costs, and (when asked) what each path takes.

The counts come from the shapes alone; the timings, with ``measure=True``,
come from running every available path on this machine now. The result prints
as a short report (``str``) and renders as a table in Jupyter
(``_repr_html_``); every number is also a field.

Counting conventions:
- FLOPs: a multiply and an add each count one, so the forward pass is
  ``2*N*FN*C*FH*FW*OH*OW``; the backward pass computes ``dx`` and ``dW``, the
  same product twice, so it is counted as twice the forward (the
  ``N*FN*OH*OW`` additions of ``db`` are left out).
- Bytes: input ``x``, weights ``W`` and bias ``b``, output; the im2col matrix
  is the unrolled ``(N*OH*OW, C*FH*FW)`` copy the im2col path would build for
  the whole batch. That path unrolls the batch in chunks so that one chunk's
  matrix stays under a memory budget (``fastconv.kernels.im2col``'s budget;
  256 MiB when that module does not say), so ``im2col_chunks`` is how many
  passes the batch takes.
- Arithmetic intensity: forward FLOPs per byte of compulsory memory traffic
  (input + weights + output, each moved once). ``im2col_intensity`` counts the
  unrolled matrix too (written once, read once): how much the unroll dilutes it.
"""
import html
import importlib
import math
from dataclasses import dataclass, field

import numpy as np

from . import backends
# Names, not the module: the package attribute fastconv.autotune is the function.
from .autotune import (Decision, autotune_enabled, candidates, current_threads, decide,
                       remember, time_paths)
from .functional import FLOAT_DTYPES
from .geometry import _as_int, as_pair, check_rounding, output_hw

# the one definition of the budget lives with the workspace it caps
from .kernels._workspace import DEFAULT_WORKSPACE_BUDGET as DEFAULT_IM2COL_BUDGET


def _im2col_module():
    try:
        return importlib.import_module("fastconv.kernels.im2col")
    except ImportError:
        return None


def im2col_budget():
    """The im2col path's workspace budget for one chunk's unrolled matrix, in bytes.

    ``fastconv.kernels.im2col.get_workspace_budget()`` (set with
    ``set_workspace_budget`` or ``FASTCONV_IM2COL_BUDGET``) when that path is
    installed, else its documented default of 256 MiB.
    """
    mod = _im2col_module()
    getter = getattr(mod, "get_workspace_budget", None)
    return int(getter()) if callable(getter) else DEFAULT_IM2COL_BUDGET


def _im2col_pieces(N, field, OH, OW, itemsize, budget):
    """(chunks, images in the first chunk) of the im2col path's forward pass.

    The path unrolls (C*FH*FW + 1) rows per output position (a row of ones
    carries the bias), whole images per chunk while they fit the budget, and
    splits an image that alone exceeds it into bands of output rows.
    """
    mod = _im2col_module()
    chunker = getattr(mod, "_chunks", None)
    getter = getattr(mod, "get_workspace_budget", None)
    # The path's own chunking, when it runs under this very budget.
    if callable(chunker) and callable(getter) and budget == getter():
        pieces = list(chunker(N, field + 1, OH, OW, itemsize))
        return len(pieces), pieces[0][1]
    per_image = (field + 1) * OH * OW * itemsize
    if per_image <= budget:
        per_chunk = min(N, budget // per_image)
        return math.ceil(N / per_chunk), per_chunk
    rows = max(1, budget // ((field + 1) * OW * itemsize))
    return N * math.ceil(OH / rows), 1


@dataclass
class PathTiming:
    """One path's timing: first call (s, includes JIT compile or cache load), best runs (ms)."""

    path: str
    first_call_s: float
    forward_ms: float
    backward_ms: float
    forward_gflops: float
    backward_gflops: float


@dataclass
class Explanation:
    """The cost of one convolution; see the module docstring for the conventions.

    Shapes: x_shape (N, C, H, W), w_shape (FN, C, FH, FW), out_shape
    (N, FN, OH, OW), im2col_shape (N*OH*OW, C*FH*FW). Bytes are in bytes,
    FLOPs in FLOPs. ``timings`` and ``auto`` are filled by ``measure=True``
    (``auto`` also without it, from the cache or the static rule).
    """

    x_shape: tuple
    w_shape: tuple
    stride: tuple
    pad: tuple
    dtype: str
    out_shape: tuple
    flops_forward: int
    flops_backward: int
    bytes_input: int
    bytes_weights: int
    bytes_output: int
    im2col_shape: tuple
    im2col_bytes: int
    im2col_budget: int
    im2col_unrolls: bool
    images_per_chunk: int
    im2col_chunks: int
    intensity: float
    im2col_intensity: float
    threads: int
    timings: list = field(default_factory=list)
    auto: Decision = None

    # ------------------------------------------------------------- reading
    def timing(self, path):
        """The PathTiming of ``path`` (KeyError if it was not measured)."""
        for t in self.timings:
            if t.path == path:
                return t
        raise KeyError(f"path {path!r} was not measured; measured: {[t.path for t in self.timings]}")

    def _title(self):
        return (f"conv x={self.x_shape} W={self.w_shape} stride={self.stride} pad={self.pad} "
                f"{self.dtype} -> out {self.out_shape}")

    def _facts(self):
        col = f"{self.im2col_shape} = {_bytes(self.im2col_bytes)}"
        budget = f"budget {_bytes(self.im2col_budget)}"
        if not self.im2col_unrolls:
            unroll = (f"{col} in the seed's method; the im2col path builds none (1x1, stride 1, "
                      f"no padding: a plain matrix product on the NCHW data)")
        elif self.im2col_chunks > self.x_shape[0]:
            unroll = (f"{col} for the batch; one image exceeds the {budget}, so "
                      f"{self.im2col_chunks} chunks of output-row bands")
        else:
            chunks = "chunk" if self.im2col_chunks == 1 else "chunks"
            unroll = (f"{col} for the batch; {budget} -> {self.im2col_chunks} {chunks} "
                      f"of up to {self.images_per_chunk} image(s)")
        return [
            ("FLOPs", f"forward {_si(self.flops_forward)}FLOP, backward "
                      f"{_si(self.flops_backward)}FLOP (dx + dW)"),
            ("memory", f"input {_bytes(self.bytes_input)}, weights {_bytes(self.bytes_weights)}, "
                       f"output {_bytes(self.bytes_output)}"),
            ("im2col matrix", unroll),
            ("intensity", f"{self.intensity:.1f} FLOP/byte (input + weights + output once); "
                          f"{self.im2col_intensity:.1f} counting the unrolled matrix"),
        ]

    def _timing_rows(self):
        return [(t.path, f"{t.first_call_s:.3f}", f"{t.forward_ms:.3f}", f"{t.forward_gflops:.1f}",
                 f"{t.backward_ms:.3f}", f"{t.backward_gflops:.1f}") for t in self.timings]

    _TIMING_HEAD = ("path", "first call s", "forward ms", "GFLOP/s", "backward ms", "GFLOP/s")

    def __str__(self):
        lines = [self._title()]
        lines += [f"  {name:<14} {text}" for name, text in self._facts()]
        if self.timings:
            lines.append(f"  timings, {self.threads} threads (first call includes JIT compile or "
                         f"cache load; then best runs):")
            widths = (8, 13, 11, 8, 12, 8)
            fmt = lambda row: "    " + " ".join(  # noqa: E731
                f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths)))
            lines.append(fmt(self._TIMING_HEAD))
            lines += [fmt(r) for r in self._timing_rows()]
        if self.auto is not None:
            lines.append(f"  auto picks     {self.auto.path} ({self.auto.source}): {self.auto.reason}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Explanation {self._title()}>"

    def _repr_html_(self):
        e = html.escape
        rows = "".join(f"<tr><th style='text-align:left'>{e(n)}</th><td style='text-align:left'>"
                       f"{e(t)}</td></tr>" for n, t in self._facts())
        parts = [f"<div><b>{e(self._title())}</b><table>{rows}</table>"]
        if self.timings:
            head = "".join(f"<th>{e(h)}</th>" for h in self._TIMING_HEAD)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                           for r in self._timing_rows())
            parts.append(f"<p>timings, {self.threads} threads (first call includes JIT compile or "
                         f"cache load; then best runs)</p><table><tr>{head}</tr>{body}</table>")
        if self.auto is not None:
            parts.append(f"<p>auto picks <b>{e(self.auto.path)}</b> ({e(self.auto.source)}): "
                         f"{e(self.auto.reason)}</p>")
        parts.append("</div>")
        return "".join(parts)


def _si(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} "


def _bytes(n):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _shape(value, name, layout):
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise ValueError(f"{name} must be a 4-tuple {layout}, got {value!r}")
    dims = tuple(_as_int(v, name) for v in value)
    if min(dims) < 1:
        raise ValueError(f"{name} must have every dimension >= 1, got {dims}")
    return dims


def explain(x_shape, w_shape, stride=1, pad=0, dtype="float32", measure=False, *,
            rounding="floor", paths=None, repeat=3, budget_s=1.0, seed=0):
    """Explain the convolution of x: (N, C, H, W) with W: (FN, C, FH, FW) -> Explanation.

    Shapes only (no arrays needed). ``measure=True`` also times forward and
    backward on ``paths`` (default: every available path but ``cuda``), on
    identical random inputs: the first call, then the best of up to ``repeat``
    runs (fewer when a path's runs pass ``budget_s`` seconds); and asks
    ``auto`` for its pick, which it takes from the auto-tuning cache or, for a
    key it has not met, from these timings (and stores it, as ``auto`` would).
    Without ``measure`` the pick shown is the cached one, or the static rule's.
    """
    x_shape = _shape(x_shape, "x_shape", "(N, C, H, W)")
    w_shape = _shape(w_shape, "w_shape", "(FN, C, FH, FW)")
    N, C, H, W = x_shape
    FN, WC, FH, FW = w_shape
    if C != WC:
        raise ValueError(f"x_shape has C={C} channels but w_shape={w_shape} expects C={WC}")
    stride, pad = as_pair(stride, "stride"), as_pair(pad, "pad")
    if min(stride) < 1 or min(pad) < 0:
        raise ValueError(f"stride must be >= 1 and pad >= 0, got stride={stride}, pad={pad}")
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    OH, OW = output_hw((H, W), (FH, FW), stride, pad, check_rounding(rounding), "w_shape's filter")

    item = dt.itemsize
    reduction = C * FH * FW
    flops = 2 * N * FN * reduction * OH * OW
    b_in, b_w, b_out = N * C * H * W * item, (FN * reduction + FN) * item, N * FN * OH * OW * item
    per_image = OH * OW * reduction * item
    col_bytes = N * per_image
    budget = im2col_budget()
    # 1x1, stride 1, no padding: the im2col path multiplies the NCHW data directly.
    unrolls = not (FH == FW == 1 and stride == (1, 1) and pad == (0, 0))
    chunks, per_chunk = (_im2col_pieces(N, reduction, OH, OW, item, budget) if unrolls
                         else (0, N))
    result = Explanation(
        x_shape=x_shape, w_shape=w_shape, stride=stride, pad=pad, dtype=dt.name,
        out_shape=(N, FN, OH, OW), flops_forward=flops, flops_backward=2 * flops,
        bytes_input=b_in, bytes_weights=b_w, bytes_output=b_out,
        im2col_shape=(N * OH * OW, reduction), im2col_bytes=col_bytes, im2col_budget=budget,
        im2col_unrolls=unrolls, images_per_chunk=per_chunk, im2col_chunks=chunks,
        intensity=flops / (b_in + b_w + b_out),
        im2col_intensity=flops / (b_in + 2 * col_bytes + b_w + b_out),
        threads=current_threads())

    cands = candidates("conv")
    if not measure:
        result.auto = decide("conv", x_shape, w_shape, stride, pad, dt, measure=False)
        return result

    if paths is None:
        paths = [p for p in backends.available_backends() if p != "cuda"]
    available = backends.available_backends()
    for p in paths:
        backends.check_backend(p)
        if p not in available:
            raise ValueError(f"path {p!r} is not available on this machine; available: {available}")
    times = time_paths("conv", x_shape, w_shape, stride, pad, dt, list(paths),
                       repeat=repeat, budget_s=budget_s, seed=seed)
    for p in paths:
        t = times[p]
        result.timings.append(PathTiming(
            path=p, first_call_s=t["first"], forward_ms=t["forward"], backward_ms=t["backward"],
            forward_gflops=flops / (t["forward"] * 1e6), backward_gflops=2 * flops / (t["backward"] * 1e6)))
    known = decide("conv", x_shape, w_shape, stride, pad, dt, measure=False)
    if known.source == "static" and autotune_enabled() and set(cands) <= set(times):
        # auto has not met this key: these timings are its measurement.
        known = remember("conv", x_shape, w_shape, stride, pad, dt, {p: times[p] for p in cands})
    result.auto = known
    return result


# ------------------------------------------------------------ command line

def _cmd_explain(args):
    x_shape = (args.batch, args.channels, args.size, args.size)
    w_shape = (args.filters, args.channels, args.kernel, args.kernel)
    print(explain(x_shape, w_shape, args.stride, args.pad, args.dtype, measure=args.measure,
                  paths=args.paths, repeat=args.repeat))
    return 0


def add_cli(sub):
    """Add ``fastconv explain`` to the argparse subparsers ``sub``."""
    p = sub.add_parser("explain", help="what one conv layer costs (FLOPs, bytes, im2col chunks), "
                                       "and with --measure what each path takes and auto's pick",
                       description="Default: the seeds' SimpleConvNet first layer, "
                                   "100 images 1x28x28, 30 filters 5x5.")
    from .cli import add_layer_arguments     # late: cli imports this module

    add_layer_arguments(p)
    p.add_argument("--measure", action="store_true", help="time every path on this machine")
    p.add_argument("--paths", nargs="+", default=None,
                   help="paths to time (default: all available but cuda)")
    p.set_defaults(func=_cmd_explain)
