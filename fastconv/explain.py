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
  matrix stays under its workspace budget; how it splits the batch
  (``im2col_chunks``, ``images_per_chunk``, ``im2col_bands``) is read from the
  path itself (``fastconv.kernels.im2col.plan``), never re-derived here.
- Arithmetic intensity: forward FLOPs per byte of compulsory memory traffic
  (input + weights + output, each moved once). ``im2col_intensity`` counts the
  unrolled matrix too (written once, read once): how much the unroll dilutes it.
- Direct grid: the direct path computes each output map on a wide grid, rows
  at the padded input's pitch, in whole strips of its register tile;
  ``direct_grid_cells`` (per map) and ``direct_grid_fill`` (the part of them
  that are outputs, so of its multiply-adds that count) are read from
  ``fastconv.kernels.direct.plan``.
"""
import html
from dataclasses import dataclass, field

from . import backends, timing, tuner
from .functional import check_backend, lowered_conv_spec
from .kernels import direct as direct_path
from .kernels import im2col as im2col_path
from .spec import _shape
from .tuner import Decision


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

    Shapes: x_shape (N, C, H, W), w_shape (FN, C // groups, FH, FW), out_shape
    (N, FN, OH, OW), im2col_shape (N*OH*OW, C*FH*FW). An unequal pad is shown
    as the kernels run it: x_shape padded by the excess, pad the equal part. Bytes are in bytes,
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
    im2col_bands: bool
    intensity: float
    im2col_intensity: float
    threads: int
    timings: list = field(default_factory=list)
    auto: Decision = None
    dilation: tuple = (1, 1)
    groups: int = 1
    description: str = ""            # the spec's own one-line description
    # the direct path's forward (``fastconv.kernels.direct.plan``): register tile
    # (filters, cells) or None, wide-grid cells computed per output map, and the
    # part of them that are outputs; None for a depthwise layer (its own kernel)
    direct_tile: tuple = None
    direct_grid_cells: int = None
    direct_grid_fill: float = None

    # ------------------------------------------------------------- reading
    def timing(self, path):
        """The PathTiming of ``path`` (KeyError if it was not measured)."""
        for t in self.timings:
            if t.path == path:
                return t
        raise KeyError(f"path {path!r} was not measured; measured: {[t.path for t in self.timings]}")

    def _title(self):
        if self.description:
            return self.description
        return (f"conv x={self.x_shape} W={self.w_shape} stride={self.stride} pad={self.pad} "
                f"{self.dtype} -> out {self.out_shape}")

    def _facts(self):
        col = f"{self.im2col_shape} = {_bytes(self.im2col_bytes)}"
        budget = f"budget {_bytes(self.im2col_budget)}"
        if not self.im2col_unrolls:
            unroll = (f"{col} in the book's method; the im2col path builds none (1x1, stride 1, "
                      f"no padding, wide output maps: a plain matrix product on the NCHW data)")
        elif self.im2col_bands:
            unroll = (f"{col} for the batch; one image exceeds the {budget}, so "
                      f"{self.im2col_chunks} chunks of output-row bands")
        else:
            chunks = "chunk" if self.im2col_chunks == 1 else "chunks"
            unroll = (f"{col} for the batch; {budget} -> {self.im2col_chunks} {chunks} "
                      f"of up to {self.images_per_chunk} image(s)")
        facts = [
            ("FLOPs", f"forward {_si(self.flops_forward)}FLOP, backward "
                      f"{_si(self.flops_backward)}FLOP (dx + dW)"),
            ("memory", f"input {_bytes(self.bytes_input)}, weights {_bytes(self.bytes_weights)}, "
                       f"output {_bytes(self.bytes_output)}"),
            ("im2col matrix", unroll),
            ("intensity", f"{self.intensity:.1f} FLOP/byte (input + weights + output once); "
                          f"{self.im2col_intensity:.1f} counting the unrolled matrix"),
        ]
        if self.direct_grid_fill is not None:
            OH, OW = self.out_shape[2:]
            tile = ("float64 passes" if self.direct_tile is None else
                    f"tiles of {self.direct_tile[0]} filters x {self.direct_tile[1]} cells")
            facts.append(("direct grid", f"{self.direct_grid_cells} cells computed per {OH}x{OW} "
                                         f"map ({self.direct_grid_fill:.0%} of them outputs), "
                                         f"{tile}"))
        return facts

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
            lines.append(f"  auto picks     {self.auto.path} ({self.auto.source}): {self.auto.reason}"
                         f"{self._forward_only_note()}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Explanation {self._title()}>"

    def _forward_only_note(self):
        """Where a forward-only call (conv2d, no_grad) runs, when not on auto's pick."""
        if self.auto.key.get("op") != "conv":
            return ""
        path = tuner.forward_pick(self.auto)
        return "" if path == self.auto.path else f"; a forward-only call (conv2d, no_grad) runs {path}"

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
                         f"{e(self.auto.reason)}{e(self._forward_only_note())}</p>")
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


def explain(x_shape: tuple[int, int, int, int], w_shape: tuple[int, int, int, int],
            stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] = 0,
            dtype="float32", measure: bool = False, *, rounding: str = "floor",
            paths: list[str] | None = None, repeat: int = 3, budget_s: float = 1.0,
            seed: int = 0, dilation: int | tuple[int, int] = 1, groups: int = 1) -> Explanation:
    """Explain the convolution of x: (N, C, H, W) with W: (FN, C // groups, FH, FW) -> Explanation.

    pad, dilation and groups take what ``fastconv.conv2d`` takes.

    Shapes only (no arrays needed). ``measure=True`` also times forward and
    backward on ``paths`` (default: every available path but ``cuda``), on
    identical random inputs, with the shared timing protocol
    (``fastconv.timing``): the first call, then the best of up to ``repeat``
    interleaved runs (fewer when a path's runs pass ``budget_s`` seconds); and
    asks ``auto`` for its pick, which it takes from the auto-tuning cache or,
    for a key it has not met, from these timings (and stores it, as ``auto``
    would). Without ``measure`` the pick shown is the cached one, or the static
    rule's. For timings that match what users get, run with the BLAS settings
    users have (on machines that set OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE,
    start Python without them).
    """
    spec, _ = lowered_conv_spec(_shape(x_shape, "x_shape", "(N, C, H, W)"),
                                _shape(w_shape, "w_shape", "(FN, C // groups, FH, FW)"), stride,
                                pad, dtype, rounding, dilation, groups)
    N, C, H, W = spec.x_shape
    FN = spec.w_shape[0]
    OH, OW = spec.out_hw
    item = spec.dtype.itemsize
    flops = spec.flops
    b_in, b_w, b_out = N * C * H * W * item, (FN * spec.field + FN) * item, N * FN * OH * OW * item
    # the unrolled matrix holds every channel's taps: groups * (C // groups)*FH*FW columns
    reduction = spec.groups * spec.field
    col_bytes = N * OH * OW * reduction * item
    plan = im2col_path.plan(spec)          # the path's own account of its chunks
    direct = direct_path.plan(spec)        # and the direct path's of its grid
    result = Explanation(
        x_shape=spec.x_shape, w_shape=spec.w_shape, stride=spec.stride, pad=spec.pad,
        dtype=spec.dtype.name, out_shape=spec.out_shape, flops_forward=flops,
        flops_backward=2 * flops, bytes_input=b_in, bytes_weights=b_w, bytes_output=b_out,
        im2col_shape=(N * OH * OW, reduction), im2col_bytes=col_bytes,
        im2col_budget=plan["budget"], im2col_unrolls=plan["unrolls"],
        images_per_chunk=plan["images_per_piece"], im2col_chunks=plan["pieces"],
        im2col_bands=plan["bands"],
        intensity=flops / (b_in + b_w + b_out),
        im2col_intensity=flops / (b_in + 2 * col_bytes + b_w + b_out),
        threads=tuner.current_threads(), dilation=spec.dilation, groups=spec.groups,
        description=spec.describe(), direct_tile=direct.get("forward_tile"),
        direct_grid_cells=direct.get("grid_cells"), direct_grid_fill=direct.get("grid_fill"))

    if not measure:
        result.auto = tuner.decide_spec(spec, measure=False)
        return result

    available = backends.available_backends()
    if paths is None:
        paths = [p for p in available if p != "cuda" and backends.get_path(p).supports(spec)]
    for p in paths:
        check_backend(p)
        if p not in available:
            raise ValueError(f"path {p!r} is not available on this machine; available: {available}")
        if not backends.get_path(p).supports(spec):
            raise ValueError(f"path {p!r} runs {backends.get_path(p).SCOPE}; it cannot run "
                             f"{spec.describe()}")
    times = timing.time_paths(spec, list(paths), rounds=repeat, budget_s=budget_s, seed=seed)
    for p in paths:
        fwd_ms, bwd_ms = times[p].forward.best_s * 1e3, times[p].backward.best_s * 1e3
        result.timings.append(PathTiming(
            path=p, first_call_s=times[p].first_s, forward_ms=fwd_ms, backward_ms=bwd_ms,
            forward_gflops=flops / (fwd_ms * 1e6), backward_gflops=2 * flops / (bwd_ms * 1e6)))
    known = tuner.decide_spec(spec, measure=False)
    cands = tuner.candidates(spec)
    if known.source == "static" and tuner.autotune_enabled() and set(cands) <= set(times):
        # auto has not met this key: these timings are its measurement.
        known = tuner.remember(spec, times)
    result.auto = known
    return result
