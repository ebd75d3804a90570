"""Max and average pooling on the CPU: one implementation, used by the im2col and direct paths.

A pooling window has no reduction over channels, so there is no matrix product
to gain by unrolling; both CPU paths pool with these compiled loops, on the
phase planes of ``_planes.py`` (padded with -inf for max pooling, zeros for
average), one (n, c) plane per parallel task. Max backward scatters into its
own plane only, so windows may overlap without races. Conventions (padding
values, the full-window divisor, the first maximum wins ties) are those of
``fastconv.kernels.naive``.
"""
from typing import NamedTuple

import numpy as np
from numba import prange

from ._jit import jit, one_launch_at_a_time
from ._planes import _phases, _to_planes


class PoolCache(NamedTuple):
    argmax: np.ndarray | None
    spec: object


@jit(parallel=True)
def _max_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq):
    """xq: -inf padded planes -> out, argmax: (N, C, OH, OW); argmax = py*PW + px."""
    N = xq.shape[0]
    Pw = _phases(sw, PW)
    P = _phases(sh, PH) * Pw
    M = OH * Wq
    out = np.empty((N, C, OH, OW), dtype=xq.dtype)
    arg = np.empty((N, C, OH, OW), dtype=np.int32)
    for task in prange(N * C):
        n = task // C
        c = task % C
        best = np.empty(M, dtype=xq.dtype)
        where = np.zeros(M, dtype=np.int32)
        first = xq[n, c * P]
        for m in range(M):          # not a slice copy: see _dout_image
            best[m] = first[m]
        for py in range(PH):
            for px in range(PW):
                if py == 0 and px == 0:
                    continue
                k = np.int32(py * PW + px)
                off = (py // sh) * Wq + px // sw
                src = xq[n, c * P + (py % sh) * Pw + px % sw, off:off + M]
                for m in range(M):
                    v = src[m]
                    # strictly greater keeps the first maximum; nan wins as in np.argmax
                    if v > best[m] or (v != v and best[m] == best[m]):
                        best[m] = v
                        where[m] = k
        for i in range(OH):
            for j in range(OW):
                out[n, c, i, j] = best[i * Wq + j]
                arg[n, c, i, j] = where[i * Wq + j]
    return out, arg


@jit(parallel=True)
def _avg_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq):
    """xq: zero padded planes -> out: (N, C, OH, OW), window sums over PH*PW."""
    N = xq.shape[0]
    Pw = _phases(sw, PW)
    P = _phases(sh, PH) * Pw
    M = OH * Wq
    area = xq.dtype.type(PH * PW)  # a float of x's dtype: float32 stays float32
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
        for i in range(OH):
            for j in range(OW):
                out[n, c, i, j] = acc[i * Wq + j] / area
    return out


@one_launch_at_a_time
def pool_forward(x, spec):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), cache; every channel pooled on its own."""
    N, C, H, Wd = x.shape
    (PH, PW), (sh, sw), (ph, pw), (OH, OW) = spec.pool_hw, spec.stride, spec.pad, spec.out_hw
    mode = spec.mode
    Wq = -(-(Wd + 2 * pw) // sw)
    Hq = OH + (PH - 1) // sh + 1
    fill = x.dtype.type(-np.inf if mode == "max" else 0)
    xq = _to_planes(x, sh, sw, ph, pw, Hq, Wq, (OH - 1) * sh + PH, (OW - 1) * sw + PW, fill,
                    PH, PW)
    if mode == "max":
        out, arg = _max_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq)
    else:
        out, arg = _avg_pool(xq, C, PH, PW, sh, sw, OH, OW, Wq), None
    return out, PoolCache(arg, spec)


@jit(parallel=True)
def _max_pool_backward(dout, arg, H, W, PW, sh, sw, ph, pw):
    """Each output's gradient goes to its window's first maximum; one (n, c) plane per task."""
    N, C, OH, OW = dout.shape
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        dx[n, c] = 0
        for i in range(OH):
            for j in range(OW):
                k = arg[n, c, i, j]
                h = i * sh + k // PW - ph
                w = j * sw + k % PW - pw
                # a padded cell can only win when its whole window is -inf: drop it
                if 0 <= h < H and 0 <= w < W:
                    dx[n, c, h, w] += dout[n, c, i, j]
    return dx


@jit(parallel=True)
def _avg_pool_backward(dout, H, W, PH, PW, sh, sw, ph, pw):
    """Each output's gradient / (PH*PW) to every cell of its window; one plane per task."""
    N, C, OH, OW = dout.shape
    Ph = _phases(sh, PH)
    Pw = _phases(sw, PW)
    Wq = -(-(W + 2 * pw) // sw)
    Hq = OH + (PH - 1) // sh + 1
    area = dout.dtype.type(PH * PW)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        share = dout[n, c] / area
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
        return _max_pool_backward(dout, arg, H, W, PW, sh, sw, ph, pw)
    return _avg_pool_backward(dout, H, W, PH, PW, sh, sw, ph, pw)
