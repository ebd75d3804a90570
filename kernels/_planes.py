"""Phase planes: the data layout of the direct path's convolution and of CPU pooling.

With stride (sh, sw), padded pixel (r, s) lives in plane (r % sh, s % sw) at
row r // sh, column s // sw, so a window tap (fy, fx) of output (i, j) is a
plain shift into plane (fy % sh, fx % sw). Only the phases some tap reads get
a plane: min(sh, FH) x min(sw, FW) per channel, so a stride larger than the
image costs no memory beyond what the output needs. See ``direct.py``.
"""
import numpy as np
from numba import prange

from ._jit import jit


@jit
def _phases(stride, window):
    """Stride phases along one axis that a window of this size reads: min(stride, window).

    Tap f reads phase f % stride; with a stride larger than the window the
    phases window..stride-1 are never read, so they get no plane at all and
    the planes' memory does not grow with the stride.
    """
    return min(stride, window)


# Why the copy is fast: each row is a fill, a copy and a fill, each one
# loop with unsigned indices into the flat plane. An index Numba cannot prove
# non-negative (the source at an offset, ``x[h, v*sw + b - pw]``) gets a
# wrap-around test, and with a bounds test per cell the loop stays scalar;
# unsigned indices need no test. Measured against the cell loop: 0.34x the
# time on a ResNet-18 stage-1 input, 0.6-0.67x on LeNet's and SimpleConvNet's
# small maps. Then without a view of each row and without slice fills, which
# on maps of a few cells cost more than the copy (same planes, paired, 1
# thread): float32 0.71-0.83x the time on LeNet's conv2, SimpleConvNet's
# conv1, the 1x7, 7x1, strided 3x3 and 5x5 and CIFAR's first layer, 0.90-0.94x
# on AlexNet's first and ResNet's 56x56 maps; float64 0.78-1.02x.
@jit
def _fill_planes(x_c, planes, p0, sh, sw, ph, pw, Hq, Wq, h_end, w_end, Ph, Pw, fill):
    """x_c: (H, W), one channel -> planes[p0 .. p0 + Ph*Pw - 1], each (Hq*Wq,) flat.

    Plane p0 + a*Pw + b, row u, column v holds padded pixel (u*sh + a, v*sw + b),
    that is x_c[u*sh + a - ph, v*sw + b - pw]; cells outside x_c, and at rows
    >= h_end or columns >= w_end of x_c, hold ``fill``.
    """
    for a in range(Ph):
        for bq in range(Pw):
            plane = planes[p0 + a * Pw + bq]
            # the columns v of this phase that hold x: 0 <= v*sw + bq - pw < w_end
            v_lo = min(Wq, (pw - bq + sw - 1) // sw) if pw > bq else 0
            v_hi = min(Wq, (pw + w_end - 1 - bq) // sw + 1) if pw + w_end - 1 >= bq else 0
            v_hi = max(v_lo, v_hi)
            lo = np.uint64(v_lo)
            hi = np.uint64(v_hi)
            first = np.uint64(v_lo * sw + bq - pw)
            step = np.uint64(sw)
            for u in range(Hq):
                h = u * sh + a - ph
                base = np.uint64(u * Wq)
                if h < 0 or h >= h_end:
                    for v in range(np.uint64(Wq)):
                        plane[base + v] = fill
                    continue
                for v in range(lo):
                    plane[base + v] = fill
                for v in range(hi, np.uint64(Wq)):
                    plane[base + v] = fill
                src = x_c[h]
                if sw == 1:             # a unit stride: the copy vectorises
                    for v in range(hi - lo):
                        plane[base + lo + v] = src[first + v]
                else:
                    for v in range(hi - lo):
                        plane[base + lo + v] = src[first + v * step]


@jit(parallel=True)
def _to_planes(x, sh, sw, ph, pw, Hq, Wq, r_end, s_end, fill, FH, FW):
    """x: (N, C, H, W) -> (N, C*Ph*Pw, Hq*Wq): padded x split into the stride phases an
    FH x FW window reads (Ph = min(sh, FH), Pw = min(sw, FW); see ``_phases``).

    Plane c*Ph*Pw + a*Pw + b, row u, column v holds padded pixel
    (u*sh + a, v*sw + b). Cells outside x, and cells at padded row >= r_end or
    column >= s_end (which no window reads: floor rounding dropped them), hold
    ``fill``, so what the wide grid's spare columns read is always harmless.
    One (image, channel) per task (``_fill_planes``).
    """
    N, C, H, W = x.shape
    Ph = _phases(sh, FH)
    Pw = _phases(sw, FW)
    P = Ph * Pw
    h_end = min(H, r_end - ph)
    w_end = min(W, s_end - pw)
    xq = np.empty((N, C * P, Hq * Wq), dtype=x.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        _fill_planes(x[n, c], xq[n], c * P, sh, sw, ph, pw, Hq, Wq, h_end, w_end, Ph, Pw, fill)
    return xq
