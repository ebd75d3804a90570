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


@jit(parallel=True)
def _to_planes(x, sh, sw, ph, pw, Hq, Wq, r_end, s_end, fill, FH, FW):
    """x: (N, C, H, W) -> (N, C*Ph*Pw, Hq*Wq): padded x split into the stride phases an
    FH x FW window reads (Ph = min(sh, FH), Pw = min(sw, FW); see ``_phases``).

    Plane c*Ph*Pw + a*Pw + b, row u, column v holds padded pixel
    (u*sh + a, v*sw + b). Cells outside x, and cells at padded row >= r_end or
    column >= s_end (which no window reads: floor rounding dropped them), hold
    ``fill``, so what the wide grid's spare columns read is always harmless.
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
        for a in range(Ph):
            for bq in range(Pw):
                plane = xq[n, c * P + a * Pw + bq]
                for u in range(Hq):
                    h = u * sh + a - ph
                    row = plane[u * Wq:(u + 1) * Wq]
                    if h < 0 or h >= h_end:
                        row[:] = fill
                        continue
                    for v in range(Wq):
                        w = v * sw + bq - pw
                        row[v] = x[n, c, h, w] if 0 <= w < w_end else fill
    return xq
