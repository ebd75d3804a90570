"""Max and average pooling on the CPU: one implementation, used by the im2col and direct paths.

A pooling window has no reduction over channels, so there is no matrix product
to gain by unrolling; both CPU paths pool with these compiled loops, on the
phase planes of ``_planes.py`` (padded with -inf for max pooling, zeros for
average), one (n, c) plane per parallel task. PyTorch's options fit the same
planes: a dilated tap (py*dh, px*dw) is one more shift into one more phase, and
ceil_mode's clipped last windows read fill cells past the input (-inf never
wins a max, zeros add nothing to a sum), so the planes only grow to hold them;
an average's per-window divisor comes as a table. Max backward scatters into its
own plane only, so windows may overlap without races. Conventions (padding
values, divisors, the first maximum wins ties, indices h*W + w) are those of
``fastconv.kernels.naive``.
"""
from typing import NamedTuple

import numpy as np
from numba import prange

from ._jit import jit, one_launch_at_a_time
from ._planes import _phases, _to_planes


class PoolCache(NamedTuple):
    argmax: np.ndarray | None      # (N, C, OH, OW) int32 (int64 for huge planes) h*W + w
    spec: object


@jit(parallel=True)
def _max_pool(xq, C, PH, PW, sh, sw, dh, dw, OH, OW, Wq, H, W, ph, pw, inside, arg):
    """xq: -inf padded planes -> out: (N, C, OH, OW), and arg: (N, C, OH, OW) filled with
    h*W + w of each maximum in x's plane.

    inside: every window lies within x (no padding, no clipped ceil_mode window),
    so no winner needs checking against x's bounds.
    """
    N = xq.shape[0]
    Pw = _phases(sw, (PW - 1) * dw + 1)
    P = _phases(sh, (PH - 1) * dh + 1) * Pw
    M = OH * Wq
    # tap k = py*PW + px reads the cell (py*dh, px*dw) from its window's corner,
    # at flat offset tap_at[k] in x's plane
    tap_y = np.empty(PH * PW, dtype=np.int64)
    tap_x = np.empty(PH * PW, dtype=np.int64)
    tap_at = np.empty(PH * PW, dtype=np.int64)
    for k in range(PH * PW):
        tap_y[k] = (k // PW) * dh
        tap_x[k] = (k % PW) * dw
        tap_at[k] = tap_y[k] * W + tap_x[k]
    out = np.empty((N, C, OH, OW), dtype=xq.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        best = np.empty(M, dtype=xq.dtype)
        where = np.zeros(M, dtype=np.int32)
        first = xq[n, c * P]
        for m in range(M):          # not a slice copy: see _dout_image
            best[m] = first[m]
        for k in range(1, PH * PW):
            ty = tap_y[k]
            tx = tap_x[k]
            off = (ty // sh) * Wq + tx // sw
            src = xq[n, c * P + (ty % sh) * Pw + tx % sw, off:off + M]
            kk = np.int32(k)
            for m in range(M):
                v = src[m]
                b = best[m]
                # strictly greater keeps the first maximum; nan wins as in np.argmax.
                # Selects, not an if: branch-free, so LLVM vectorises the loop
                # (& and |, not the short-circuit and/or, which branch), and random
                # data costs no mispredicted branches: measured 0.6x the time
                take = (v > b) | ((v != v) & (b == b))
                best[m] = v if take else b
                where[m] = kk if take else where[m]
        if inside:
            # the measured common case (2x2, no padding): one table lookup per output
            for i in range(OH):
                corner = i * sh * W
                orow = out[n, c, i]
                arow = arg[n, c, i]
                at = np.uint64(i * Wq)          # unsigned: no wrap-around test
                for j in range(np.uint64(OW)):
                    orow[j] = best[at + j]
                    arow[j] = corner + j * sw + tap_at[where[at + j]]
            continue
        for i in range(OH):
            h0 = i * sh - ph
            orow = out[n, c, i]
            arow = arg[n, c, i]
            at = np.uint64(i * Wq)
            for j in range(OW):
                w0 = j * sw - pw
                k = where[at + np.uint64(j)]
                h = h0 + tap_y[k]
                w = w0 + tap_x[k]
                if h < 0 or h >= H or w < 0 or w >= W:
                    # a padded (or clipped) cell came first in a window whose input
                    # cells are all -inf: padding never wins, the first input cell does
                    h = h0 if h0 >= 0 else h0 + (-h0 + dh - 1) // dh * dh
                    w = w0 if w0 >= 0 else w0 + (-w0 + dw - 1) // dw * dw
                orow[j] = best[at + np.uint64(j)]
                arow[j] = h * W + w
    return out


@jit(parallel=True)
def _avg_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq, divisor, area):
    """xq: zero padded planes -> out: (N, C, OH, OW), window sums over divisor (OH, OW), or
    over the scalar area when it is > 0 (every window alike, the common case: no table
    read per output)."""
    N = xq.shape[0]
    Pw = _phases(sw, PW)
    P = _phases(sh, PH) * Pw
    M = OH * Wq
    out = np.empty((N, C, OH, OW), dtype=xq.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        acc = np.zeros(M, dtype=xq.dtype)
        for py in range(PH):
            for px in range(PW):
                off = (py // sh) * Wq + px // sw
                src = xq[n, c * P + (py % sh) * Pw + px % sw, off:off + M]
                for m in range(M):
                    acc[m] += src[m]
        if area > 0:
            for i in range(OH):
                for j in range(OW):
                    out[n, c, i, j] = acc[i * Wq + j] / area
            continue
        for i in range(OH):
            for j in range(OW):
                out[n, c, i, j] = acc[i * Wq + j] / divisor[i, j]
    return out


def _grid(spec):
    """(Hq, Wq, span_h, span_w): the phase planes' rows and columns for ``spec``, and the
    cells one window spans. Wide enough for every tap of every window, ceil_mode's
    last (clipped) windows included, to be a shift within one row."""
    H, W = spec.x_shape[2:]
    (sh, sw), pw, (OH, OW) = spec.stride, spec.pad[1], spec.out_hw
    span_h, span_w = spec.extent
    Wq = max(-(-(W + 2 * pw) // sw), OW + (span_w - 1) // sw)
    Hq = OH + (span_h - 1) // sh + 1
    return Hq, Wq, span_h, span_w


def _uniform_divisor(spec):
    """The one divisor of every average window, or 0 when they differ: divisor_override,
    or PH*PW when no window is clipped (ceil_mode) and padding counts or there is none."""
    if spec.divisor_override is not None:
        return spec.divisor_override
    (PH, PW), (sh, sw), (ph, pw), (OH, OW) = spec.pool_hw, spec.stride, spec.pad, spec.out_hw
    H, W = spec.x_shape[2:]
    clipped = (OH - 1) * sh + PH > H + 2 * ph or (OW - 1) * sw + PW > W + 2 * pw
    if clipped or not (spec.count_include_pad or ph == pw == 0):
        return 0
    return PH * PW


def _divisor(spec, dtype):
    """(OH, OW) divisor of every average window, in ``dtype``: divisor_override, or the
    window clipped to the padded input (count_include_pad) or to the input. An int
    product cast once, so the default PH*PW is exactly today's float."""
    if spec.divisor_override is not None:
        return np.full(spec.out_hw, spec.divisor_override).astype(dtype)
    lengths = []
    for out, k, s, p, size in zip(spec.out_hw, spec.pool_hw, spec.stride, spec.pad,
                                  spec.x_shape[2:]):
        start = np.arange(out, dtype=np.int64) * s - p      # input coordinates
        stop = np.minimum(start + k, size + p)
        if not spec.count_include_pad:
            start, stop = np.maximum(start, 0), np.minimum(stop, size)
        lengths.append(stop - start)
    return (lengths[0][:, None] * lengths[1][None, :]).astype(dtype)


@one_launch_at_a_time
def pool_forward(x, spec):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), cache; every channel pooled on its own."""
    N, C, H, Wd = x.shape
    (PH, PW), (sh, sw), (ph, pw), (OH, OW) = spec.pool_hw, spec.stride, spec.pad, spec.out_hw
    Hq, Wq, span_h, span_w = _grid(spec)
    mode = spec.mode
    fill = x.dtype.type(-np.inf if mode == "max" else 0)
    xq = _to_planes(x, sh, sw, ph, pw, Hq, Wq, (OH - 1) * sh + span_h, (OW - 1) * sw + span_w,
                    fill, span_h, span_w)
    if mode == "max":
        inside = ph == pw == 0 and (OH - 1) * sh + span_h <= H and (OW - 1) * sw + span_w <= Wd
        # int32 indices while a plane has fewer than 2**31 cells: half the memory
        # traffic of int64, measured ~7% of a 2x2 forward
        arg = np.empty((N, C, OH, OW), dtype=np.int32 if H * Wd < 2**31 else np.int64)
        out = _max_pool(xq, C, PH, PW, sh, sw, *spec.dilation, OH, OW, Wq, H, Wd, ph, pw,
                        inside, arg)
    else:
        area = _uniform_divisor(spec)
        divisor = np.ones((1, 1), x.dtype) if area else _divisor(spec, x.dtype)
        out = _avg_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq, divisor, x.dtype.type(area))
        arg = None
    return out, PoolCache(arg, spec)


@jit(parallel=True)
def _max_pool_backward(dout, arg, H, W):
    """Each output's gradient goes to its window's first maximum, arg = h*W + w; one
    (n, c) plane per task."""
    N, C, OH, OW = dout.shape
    dx = np.empty((N, C, H * W), dtype=dout.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        plane = dx[n, c]
        plane[:] = 0
        for i in range(OH):
            arow = arg[n, c, i]
            drow = dout[n, c, i]
            for j in range(OW):
                # unsigned: no wrap-around test (measured 0.84-0.95x the time)
                plane[np.uint64(arow[j])] += drow[j]
    return dx.reshape(N, C, H, W)


@jit(parallel=True)
def _avg_pool_backward(dout, H, W, PH, PW, sh, sw, ph, pw, Hq, Wq, divisor):
    """Each output's gradient / its divisor to every cell of its window; one plane per task."""
    N, C, OH, OW = dout.shape
    Ph = _phases(sh, PH)
    Pw = _phases(sw, PW)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        share = dout[n, c] / divisor
        # cells no window covers (below the last window, or in a stride phase
        # no tap reads) get no gradient
        dx[n, c] = 0
        # phase planes of the padded dx: each window tap is a contiguous row shift
        buf = np.zeros((Ph * Pw, Hq * Wq), dtype=dout.dtype)
        for py in range(PH):
            for px in range(PW):
                plane = buf[(py % sh) * Pw + px % sw]
                for i in range(OH):
                    start = (i + py // sh) * Wq + px // sw
                    row = plane[start:start + OW]
                    g = share[i]
                    for j in range(OW):
                        row[j] += g[j]
        for a in range(Ph):
            for b in range(Pw):
                plane = buf[a * Pw + b]
                for u in range(Hq):
                    h = u * sh + a - ph
                    if h < 0 or h >= H:
                        continue
                    for v in range(Wq):
                        w = v * sw + b - pw
                        if 0 <= w < W:
                            dx[n, c, h, w] = plane[u * Wq + v]
    return dx


@one_launch_at_a_time
def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    arg, spec = cache
    (PH, PW), (sh, sw), (ph, pw) = spec.pool_hw, spec.stride, spec.pad
    H, W = spec.x_shape[2], spec.x_shape[3]
    if spec.mode == "max":
        return _max_pool_backward(dout, arg, H, W)
    Hq, Wq, _, _ = _grid(spec)
    return _avg_pool_backward(dout, H, W, PH, PW, sh, sw, ph, pw, Hq, Wq,
                              _divisor(spec, dout.dtype))
