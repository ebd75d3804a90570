"""The direct path: convolution and pooling as blocked loops, no unrolled matrix.

Everything here rests on one data layout, the *phase planes* of a padded image.
With stride (sh, sw), padded pixel (r, s) lives in plane (r % sh, s % sw) at row
r // sh, column s // sw. An output pixel (i, j) then reads filter tap (fy, fx)
from plane (fy % sh, fx % sw) at (i + fy // sh, j + fx // sw): for every stride,
a tap is a plain shift. Only the phases some tap reads get a plane:
min(sh, FH) x min(sw, FW) per channel, so a stride larger than the image costs
no memory beyond what the output needs. Each plane is stored flat with row pitch Wq, and outputs
are computed on a *wide* grid of the same pitch (Wq >= OW columns, the extra
columns are thrown away), so a tap is one shift of one long contiguous run:
``acc[m] += w * plane[m + offset]`` for all output rows at once. That loop is
what LLVM vectorises; it is blocked over four output channels and up to three
taps per pass (one load of the input feeds four multiply-adds, one store of the
accumulator carries twelve).

- forward: out(n, k) = sum over (c, fy, fx) of W[k, c, fy, fx] * shifted x planes.
- dx: the same correlation run backwards. Per phase (a, b) of dx, the taps with
  fy = a (mod sh), fx = b (mod sw) shift a zero-bordered copy of dout (same pitch
  Wq); each task owns a block of dx channels of one image: gather, no races.
- dW: for each (k, c, fy, fx), one long dot product of the zero-bordered dout
  plane with the shifted x plane (eight per pass: four filters, two taps); each
  task owns a block of four filters of one channel and adds images in order.
- db: summed while dout is copied into its bordered planes.
- pooling: ``cpu_pooling.py``, on the same planes (``_planes.py``); the
  im2col path pools with it too.

Every parallel task writes only its own output elements and sums in a fixed
order, so results are bit-identical from run to run for any thread count. The
public functions hold ``launch_lock`` of ``fastconv.kernels._jit``, so several
Python threads may call them at once.
Conventions (cross-correlation, padding values, PH*PW divisor, first maximum
wins) are those of ``fastconv.kernels.naive``.

Non-finite values: the zero borders and spare columns stand for "no term",
which is exact only while the factor they meet is finite (0 * inf and 0 * nan
are nan). So dx sums only the taps that read inside dout when a weight is
not finite, and dW sums only the real output columns when x holds nan or
inf; either way every result cell has the same terms as in the naive path,
and nan and +-inf land in the same cells. Cells that no window reads
(dropped by floor rounding) never touch a result.
"""

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import prange

from ._jit import jit, one_launch_at_a_time
from ._planes import _phases, _to_planes
from ._workspace import Workspace
from .cpu_pooling import PoolCache, pool_backward, pool_forward  # noqa: F401  (this path's pooling)

# Output channels per block: four accumulator rows stay in L1 next to the input.
KB = 4
# Bytes of accumulator per block (4 rows): sets how many wide output rows one
# task covers, so its working set stays in the first two cache levels.
ACC_BYTES = 32 * 1024
# Cells of the wide grid per dW pass: KB dout rows of this length stay in L1.
DW_CHUNK = 1024

_workspace = Workspace()

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    xq: np.ndarray         # the input split into stride-phase planes, padded
    W: np.ndarray
    spec: object
    Hq: int                # rows and columns of one phase plane
    Wq: int


def supports(spec):
    """Every spec fastconv can describe, but dilation or groups (not implemented here yet)."""
    return getattr(spec, "dilation", (1, 1)) == (1, 1) and getattr(spec, "groups", 1) == 1


def plan(spec):
    """What this path does for ``spec``: phase planes, then loops over output rows."""
    sh, sw = spec.stride
    return {"method": "direct loops over wide output rows",
            "phase_planes": sh * sw}


def release_workspace():
    """Free this path's scratch buffers (they are reallocated when next needed)."""
    _workspace.release()


def _rows_per_block(pitch, itemsize):
    return max(1, ACC_BYTES // (KB * itemsize * pitch))


# ------------------------------------------------------- the shared inner loop

@jit
def _accumulate(acc, nb, src, ops, o_start, o_end, wt, base):
    """acc[r, m] += sum over taps t of wt[t, r] * src[plane, base + offset_t + m].

    acc: (KB, M), rows < nb in use; src: (planes, L) of one image; ops:
    (n_ops, 6) rows (plane, offset, count, t0, t1, t2): ``count`` taps sitting
    at offset, offset+1, offset+2 of one plane, done in one pass so each
    store of the accumulator carries up to 3*nb multiply-adds; wt: (n_taps, KB).
    """
    M = acc.shape[1]
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    for o in range(o_start, o_end):
        plane = ops[o, 0]
        start = base + ops[o, 1]
        count = ops[o, 2]
        t0 = ops[o, 3]
        t1 = ops[o, 4]
        t2 = ops[o, 5]
        s0 = src[plane, start:start + M]
        s1 = src[plane, start + 1:start + 1 + M] if count > 1 else s0
        s2 = src[plane, start + 2:start + 2 + M] if count > 2 else s0
        if nb == KB and count == 3:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            v0, v1, v2, v3 = wt[t1, 0], wt[t1, 1], wt[t1, 2], wt[t1, 3]
            w0, w1, w2, w3 = wt[t2, 0], wt[t2, 1], wt[t2, 2], wt[t2, 3]
            for m in range(M):
                p = s0[m]
                q = s1[m]
                r = s2[m]
                a0[m] += u0 * p + v0 * q + w0 * r
                a1[m] += u1 * p + v1 * q + w1 * r
                a2[m] += u2 * p + v2 * q + w2 * r
                a3[m] += u3 * p + v3 * q + w3 * r
        elif nb == KB and count == 2:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            v0, v1, v2, v3 = wt[t1, 0], wt[t1, 1], wt[t1, 2], wt[t1, 3]
            for m in range(M):
                p = s0[m]
                q = s1[m]
                a0[m] += u0 * p + v0 * q
                a1[m] += u1 * p + v1 * q
                a2[m] += u2 * p + v2 * q
                a3[m] += u3 * p + v3 * q
        elif nb == KB:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            for m in range(M):
                p = s0[m]
                a0[m] += u0 * p
                a1[m] += u1 * p
                a2[m] += u2 * p
                a3[m] += u3 * p
        else:
            # a partial block: one row at a time, the taps still fused
            for row in range(nb):
                ar = acc[row]
                u = wt[t0, row]
                if count == 3:
                    v = wt[t1, row]
                    w = wt[t2, row]
                    for m in range(M):
                        ar[m] += u * s0[m] + v * s1[m] + w * s2[m]
                elif count == 2:
                    v = wt[t1, row]
                    for m in range(M):
                        ar[m] += u * s0[m] + v * s1[m]
                else:
                    for m in range(M):
                        ar[m] += u * s0[m]


def _weight_blocks(Wm):
    """Wm: (rows, taps) -> (ceil(rows/KB), taps, KB), rows past the end zero.

    Plain NumPy, not compiled: one copy and one transpose, and one kernel fewer
    to compile on first use.
    """
    R, T = Wm.shape
    nb = (R + KB - 1) // KB
    padded = np.zeros((nb * KB, T), dtype=Wm.dtype)
    padded[:R] = Wm
    return np.ascontiguousarray(padded.reshape(nb, KB, T).transpose(0, 2, 1))


# ------------------------------------------------------------- forward conv

# Taps per pass of the inner loop (see _accumulate): three measured best
# (1.3-1.7x two on 3x3 and 11x11 filters); more runs out of registers.
GROUP = 3


# The tap tables are small (one row per group of taps) and depend on the
# geometry alone: built in Python once per geometry and kept, rather than
# compiled (each compiled helper costs about a second on first use).
@lru_cache(maxsize=64)
def _forward_ops(C, FH, FW, sh, sw, Wq):
    """Tap table of the forward pass, ordered by channel; see _accumulate.

    Tap (c, fy, fx) is weight index (c*FH + fy)*FW + fx; it reads plane
    (c, fy % sh, fx % sw) at offset (fy // sh)*Wq + fx // sw. Taps fx, fx+sw,
    fx+2*sw of one phase sit one cell apart: one group.
    """
    Ph = _phases(sh, FH)
    Pw = _phases(sw, FW)
    ops = np.full((C * FH * FW, 6), -1, dtype=np.int64)
    n = 0
    for c in range(C):
        for fy in range(FH):
            for b in range(Pw):
                fx = b
                while fx < FW:
                    ops[n, 0] = (c * Ph + fy % sh) * Pw + b
                    ops[n, 1] = (fy // sh) * Wq + fx // sw
                    count = 0
                    while count < GROUP and fx < FW:
                        ops[n, 3 + count] = (c * FH + fy) * FW + fx
                        fx += sw
                        count += 1
                    ops[n, 2] = count
                    n += 1
    return ops[:n].copy()


@jit(parallel=True)
def _conv_forward(xq, wt, ops, b, FN, OH, OW, Wq, RB):
    """xq: planes of x, wt: (FN/KB, C*FH*FW, KB) -> out: (N, FN, OH, OW)."""
    N = xq.shape[0]
    nkb = wt.shape[0]
    nrb = (OH + RB - 1) // RB
    out = np.empty((N, FN, OH, OW), dtype=xq.dtype)
    for task in prange(N * nkb * nrb):
        n = task // (nkb * nrb)
        kb = (task // nrb) % nkb
        i0 = (task % nrb) * RB
        i1 = min(OH, i0 + RB)
        k0 = kb * KB
        nb = min(KB, FN - k0)
        acc = np.zeros((KB, (i1 - i0) * Wq), dtype=xq.dtype)
        # np.int64(0), not 0: a literal 0 would compile a second _accumulate
        _accumulate(acc, nb, xq[n], ops, np.int64(0), ops.shape[0], wt[kb], i0 * Wq)
        for r in range(nb):
            bias = b[k0 + r]
            for i in range(i0, i1):
                row = acc[r, (i - i0) * Wq:(i - i0) * Wq + OW]
                for j in range(OW):
                    out[n, k0 + r, i, j] = row[j] + bias
    return out


@one_launch_at_a_time
def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache."""
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    (sh, sw), (ph, pw), (OH, OW) = spec.stride, spec.pad, spec.out_hw
    Wq = -(-(Wd + 2 * pw) // sw)
    # one spare row: the wide grid's last row reads up to a row past OH
    Hq = OH + (FH - 1) // sh + 1
    xq = _to_planes(x, sh, sw, ph, pw, Hq, Wq, (OH - 1) * sh + FH, (OW - 1) * sw + FW,
                    x.dtype.type(0), FH, FW)
    wt = _weight_blocks(W.reshape(FN, C * FH * FW))
    ops = _forward_ops(C, FH, FW, sh, sw, Wq)
    out = _conv_forward(xq, wt, ops, b, FN, OH, OW, Wq, _rows_per_block(Wq, x.itemsize))
    # xq is already a copy; W is copied so that backward sees it as it was
    return out, ConvCache(xq, W.copy(), spec, Hq, Wq)


# ------------------------------------------------------------ backward conv

@jit
def _dout_image(dout_n, Ty, Tx, Wq, dp_n, sums):
    """dout_n: (K, OH, OW) -> dp_n: (K, Hd*Wq), dout at row Ty-1, column Tx-1, zeros around.

    Every cell of dp_n is written, so it may be a reused (dirty) buffer; each
    map's sum is added to sums: (K,), so db costs no second pass over dout.
    """
    K, OH, OW = dout_n.shape
    Hd = dp_n.shape[1] // Wq
    for k in range(K):
        total = dout_n.dtype.type(0)
        for r in range(Hd):
            row = dp_n[k, r * Wq:(r + 1) * Wq]
            i = r - (Ty - 1)
            if i < 0 or i >= OH:
                row[:] = 0
            else:
                src = dout_n[k, i]
                row[:Tx - 1] = 0
                # an element loop, not a slice copy: an array-to-array slice
                # assignment makes Numba compile its shape-mismatch message
                # (string formatting), seconds on first use
                dst = row[Tx - 1:Tx - 1 + OW]
                for j in range(OW):
                    dst[j] = src[j]
                row[Tx - 1 + OW:] = 0
                for j in range(OW):
                    total += src[j]
        sums[k] += total


@jit(parallel=True)
def _dout_planes(dout, Ty, Tx, Wq, dp):
    """dout: (N, K, OH, OW) -> dp: (N, K, Hd*Wq) and per-map sums (N, K)."""
    N, K = dout.shape[:2]
    sums = np.zeros((N, K), dtype=dout.dtype)
    for n in prange(N):
        _dout_image(dout[n], Ty, Tx, Wq, dp[n], sums[n])
    return dp, sums


@lru_cache(maxsize=64)
def _backward_ops(K, FH, FW, sh, sw, Wq, Ty, Tx):
    """Tap tables of dx, one per phase (a, b) of dx: rows ops[starts[p]:starts[p+1]].

    dx phase (a, b) at (u, v) gathers dout(u - ty, v - tx) * W[k, c, a + ty*sh,
    b + tx*sw]; in the zero-bordered dout planes that is offset
    (Ty-1-ty)*Wq + (Tx-1-tx). Taps tx, tx-1, tx-2 sit one cell apart: one group.
    Only the phases some tap reaches have a table, p = a*Pw + b for a < Ph,
    b < Pw (see ``_phases``); dx cells of the other phases get no gradient.
    """
    Ph = _phases(sh, FH)
    Pw = _phases(sw, FW)
    ops = np.full((K * FH * FW, 6), -1, dtype=np.int64)
    starts = np.zeros(Ph * Pw + 1, dtype=np.int64)
    n = 0
    for a in range(Ph):
        for b in range(Pw):
            for k in range(K):
                for fy in range(a, FH, sh):
                    ty = (fy - a) // sh
                    tx = (FW - 1 - b) // sw
                    while tx >= 0:
                        ops[n, 0] = k
                        ops[n, 1] = (Ty - 1 - ty) * Wq + Tx - 1 - tx
                        count = 0
                        while count < GROUP and tx >= 0:
                            ops[n, 3 + count] = (k * FH + fy) * FW + b + tx * sw
                            tx -= 1
                            count += 1
                        ops[n, 2] = count
                        n += 1
            starts[a * Pw + b + 1] = n
    return ops[:n].copy(), starts


@jit
def _accumulate_within(acc, nb, src, ops, o_start, o_end, wt, base, Wq, r_lo, r_hi, c_lo, c_hi):
    """``_accumulate`` restricted to the terms whose source cell lies inside the
    rectangle rows r_lo..r_hi, columns c_lo..c_hi of src's planes (row pitch Wq).

    The zero border around that rectangle stands for "no term here"; that is
    exact only while every weight is finite (0 * nan and 0 * inf are nan).
    This variant reads inside the rectangle only, one tap and one source row
    at a time, so every cell sums exactly the terms the naive path has.
    """
    M = acc.shape[1]
    for o in range(o_start, o_end):
        plane = src[ops[o, 0]]
        for g in range(ops[o, 2]):
            t = ops[o, 3 + g]
            s0 = base + ops[o, 1] + g           # the source cell of acc[:, 0]
            for rr in range(max(r_lo, s0 // Wq), min(r_hi, (s0 + M - 1) // Wq + 1)):
                lo = max(s0, rr * Wq + c_lo)
                hi = min(s0 + M, rr * Wq + c_hi)
                if hi <= lo:
                    continue
                s = plane[lo:hi]
                for r in range(nb):
                    u = wt[t, r]
                    ar = acc[r, lo - s0:hi - s0]
                    for m in range(hi - lo):
                        ar[m] += u * s[m]


@jit
def _all_finite(a):
    """True when no element of the contiguous array a is nan or +-inf."""
    flat = a.reshape(a.size)
    for i in range(flat.size):
        if not np.isfinite(flat[i]):
            return False
    return True


@jit
def _dx_block(dx_n, dp_n, wt_cb, ops, starts, phase, rb, c0, sh, sw, Pw, ph, pw, Wq, RB,
              within, Ty, Tx, OH, OW):
    """dx of one image, channels c0.. (one block), one phase, one block of rows.

    dx_n: (C, H, W) written; dp_n: (K, Hd*Wq) dout planes of that image, dout
    at rows Ty-1.., columns Tx-1.. (OH x OW). within: sum only the taps that
    read inside dout (``_accumulate_within``), needed when a weight is not finite.
    """
    C, H, W = dx_n.shape
    a = phase // Pw
    bq = phase % Pw
    u_lo = (ph - a + sh - 1) // sh if ph > a else 0
    u_hi = (ph + H - 1 - a) // sh + 1 if ph + H - 1 >= a else 0
    u0 = u_lo + rb * RB
    u1 = min(u_hi, u0 + RB)
    if u0 >= u1:
        return
    v_lo = (pw - bq + sw - 1) // sw if pw > bq else 0
    v_hi = min(Wq, (pw + W - 1 - bq) // sw + 1) if pw + W - 1 >= bq else 0
    nb = min(KB, C - c0)
    acc = np.zeros((KB, (u1 - u0) * Wq), dtype=dp_n.dtype)
    if within:
        _accumulate_within(acc, nb, dp_n, ops, starts[phase], starts[phase + 1], wt_cb, u0 * Wq,
                           Wq, Ty - 1, Ty - 1 + OH, Tx - 1, Tx - 1 + OW)
    else:
        _accumulate(acc, nb, dp_n, ops, starts[phase], starts[phase + 1], wt_cb, u0 * Wq)
    for r in range(nb):
        for u in range(u0, u1):
            h = u * sh + a - ph
            row = acc[r, (u - u0) * Wq:(u - u0 + 1) * Wq]
            for v in range(v_lo, v_hi):
                dx_n[c0 + r, h, v * sw + bq - pw] = row[v]


def _dx_row_blocks(H, sh, RB):
    # dx rows of phase a are u*sh + a - ph for u in [u_lo, u_hi): at most ceil(H/sh)
    return ((H + sh - 1) // sh + RB - 1) // RB


@jit(parallel=True)
def _conv_dx(dp, wt, ops, starts, C, H, W, sh, sw, ph, pw, Wq, RB, nrb, FH, FW, OH, OW):
    """dp: dout planes (N, K, Hd*Wq), wt: (C/KB, K*FH*FW, KB) -> dx: (N, C, H, W)."""
    N = dp.shape[0]
    ncb = wt.shape[0]
    Pw = _phases(sw, FW)
    P = _phases(sh, FH) * Pw
    # every dx cell of a phase that some tap reaches lies in exactly one task's
    # (phase, row block); the other phases (stride > filter) get no gradient
    if P < sh * sw:
        dx = np.zeros((N, C, H, W), dtype=dp.dtype)
    else:
        dx = np.empty((N, C, H, W), dtype=dp.dtype)
    within = not _all_finite(wt)
    Ty = (FH - 1) // sh + 1
    Tx = (FW - 1) // sw + 1
    for task in prange(N * ncb * P * nrb):
        n = task // (ncb * P * nrb)
        cb = (task // (P * nrb)) % ncb
        _dx_block(dx[n], dp[n], wt[cb], ops, starts, (task // nrb) % P, task % nrb,
                  cb * KB, sh, sw, Pw, ph, pw, Wq, RB, within, Ty, Tx, OH, OW)
    return dx


@jit
def _dw_segments(OH, OW, Wq, within):
    """(start, length) runs of the wide grid (OH rows of pitch Wq) that dW sums over.

    Normally the whole grid in DW_CHUNK pieces: its spare columns (OW..Wq-1)
    hold zero dout, and zero times a finite x adds nothing. within=True (x
    holds nan or inf, and 0 * inf is nan): the OW real columns of each row only.
    """
    M = OH * Wq
    rows, run, pitch = (OH, OW, Wq) if within else (1, M, M)
    per_run = (run + DW_CHUNK - 1) // DW_CHUNK
    segs = np.empty((rows * per_run, 2), dtype=np.int64)
    n = 0
    for i in range(rows):
        for m0 in range(0, run, DW_CHUNK):
            segs[n, 0] = i * pitch + m0
            segs[n, 1] = min(DW_CHUNK, run - m0)
            n += 1
    return segs


@jit
def _dw_image(acc, xq_n, dp_n, ops, C, c, k0, nb, segs, base):
    """acc[r, t] += dW[k0 + r, c] contribution of one image: (KB, FH*FW).

    xq_n: x planes of the image, dp_n: its dout planes, ops: the forward tap
    table (same number of rows per channel), segs: the runs of the wide grid
    to sum over (``_dw_segments``), each short enough that the KB dout rows
    of a run stay in L1 across all taps.
    """
    T = acc.shape[1]
    per_c = ops.shape[0] // C
    zero = acc.dtype.type(0)
    for seg in range(segs.shape[0]):
        m0 = segs[seg, 0]
        L = segs[seg, 1]
        lo = base + m0
        d0 = dp_n[k0, lo:lo + L]
        d1 = dp_n[k0 + min(1, nb - 1), lo:lo + L]
        d2 = dp_n[k0 + min(2, nb - 1), lo:lo + L]
        d3 = dp_n[k0 + min(3, nb - 1), lo:lo + L]
        for o in range(c * per_c, (c + 1) * per_c):
            plane = xq_n[ops[o, 0]]
            start = ops[o, 1] + m0
            count = ops[o, 2]
            g = 0
            while g < count:
                ta = ops[o, 3 + g] - c * T
                xs = plane[start + g:start + g + L]
                if nb < KB:
                    for r in range(nb):
                        d = dp_n[k0 + r, lo:lo + L]
                        s0 = zero
                        for m in range(L):
                            s0 += d[m] * xs[m]
                        acc[r, ta] += s0
                    g += 1
                elif g + 1 < count:
                    # four dout rows against two shifted x rows: 8 sums, one pass
                    tb = ops[o, 4 + g] - c * T
                    ys = plane[start + g + 1:start + g + 1 + L]
                    s0 = s1 = s2 = s3 = r0 = r1 = r2 = r3 = zero
                    for m in range(L):
                        p = xs[m]
                        q = ys[m]
                        s0 += d0[m] * p
                        s1 += d1[m] * p
                        s2 += d2[m] * p
                        s3 += d3[m] * p
                        r0 += d0[m] * q
                        r1 += d1[m] * q
                        r2 += d2[m] * q
                        r3 += d3[m] * q
                    acc[0, ta] += s0
                    acc[1, ta] += s1
                    acc[2, ta] += s2
                    acc[3, ta] += s3
                    acc[0, tb] += r0
                    acc[1, tb] += r1
                    acc[2, tb] += r2
                    acc[3, tb] += r3
                    g += 2
                else:
                    s0 = s1 = s2 = s3 = zero
                    for m in range(L):
                        p = xs[m]
                        s0 += d0[m] * p
                        s1 += d1[m] * p
                        s2 += d2[m] * p
                        s3 += d3[m] * p
                    acc[0, ta] += s0
                    acc[1, ta] += s1
                    acc[2, ta] += s2
                    acc[3, ta] += s3
                    g += 1


@jit(parallel=True)
def _conv_dw(xq, dp, ops, C, FN, FH, FW, OH, Wq, base, OW):
    """dW[k, c, fy, fx] = sum over n and the wide grid of dout * shifted x planes.

    xq: (N, C*sh*sw, Hq*Wq), dp: (N, FN, Hd*Wq), ops: the forward tap table
    -> dW: (FN, C, FH, FW). One task per (block of KB filters, channel c): it
    alone writes those dW entries, adding images in order.
    """
    N = xq.shape[0]
    T = FH * FW
    nkb = (FN + KB - 1) // KB
    dW = np.empty((FN, C, FH, FW), dtype=xq.dtype)
    segs = _dw_segments(OH, OW, Wq, not _all_finite(xq))
    for task in prange(nkb * C):
        kb = task // C
        c = task % C
        k0 = kb * KB
        nb = min(KB, FN - k0)
        acc = np.zeros((KB, T), dtype=xq.dtype)
        for n in range(N):
            _dw_image(acc, xq[n], dp[n], ops, C, c, k0, nb, segs, base)
        for r in range(nb):
            for t in range(T):
                dW[k0 + r, c, t // FW, t % FW] = acc[r, t]
    return dW


def _conv_db(sums):
    """sums: (N, K) per-map sums of dout -> db: (K,), added image by image (NumPy, not compiled)."""
    db = sums[0].copy()
    for n in range(1, sums.shape[0]):
        db += sums[n]
    return db


@one_launch_at_a_time
def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C, FH, FW), db: (FN,)."""
    xq, W, spec, Hq, Wq = cache
    (sh, sw), (ph, pw), (OH, OW) = spec.stride, spec.pad, spec.out_hw
    N, C, H, Wd = spec.x_shape
    FN, _, FH, FW = W.shape
    Ty = (FH - 1) // sh + 1
    Tx = (FW - 1) // sw + 1
    # rows: dout shifted down by Ty-1, plus what the last dx row of any phase reads
    Hd = max(OH, (ph + H - 1) // sh + 1) + Ty
    RB = _rows_per_block(Wq, dout.itemsize)
    nrb = _dx_row_blocks(H, sh, RB)
    wt = _weight_blocks(np.ascontiguousarray(W.transpose(1, 0, 2, 3)).reshape(C, FN * FH * FW))
    ops, starts = _backward_ops(FN, FH, FW, sh, sw, Wq, Ty, Tx)
    fops = _forward_ops(C, FH, FW, sh, sw, Wq)
    scratch = _workspace.get(N * FN * Hd * Wq, dout.dtype).reshape(N, FN, Hd * Wq)
    dp, sums = _dout_planes(dout, Ty, Tx, Wq, scratch)
    dx = _conv_dx(dp, wt, ops, starts, C, H, Wd, sh, sw, ph, pw, Wq, RB, nrb, FH, FW, OH, OW)
    dW = _conv_dw(xq, dp, fops, C, FN, FH, FW, OH, Wq, (Ty - 1) * Wq + Tx - 1, OW)
    return dx, dW, _conv_db(sums)
