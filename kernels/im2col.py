"""The im2col path: unroll receptive fields with Numba, multiply with BLAS.

Convolution is computed as matrix products on an unrolled copy of the input
("col"), the CS231n / "Deep Learning from Scratch" method, with the layout
chosen so that the product lands in NCHW without a transpose pass:

- forward, per image: ``col_n: (C*FH*FW + 1, OH*OW)``, rows in (channel,
  filter row, filter column) order, one column per output position, plus a last
  row of ones so that the bias rides along in the product:
  ``out[n].reshape(FN, OH*OW) = [W | b] @ col_n`` (unless the copy [W | b]
  costs more than a pass over the output: ``_bias_in_product``). When the output maps are
  small (few output positions per image, e.g. ResNet's last stage) a product
  per image is too narrow for BLAS to run fast, so the images of a chunk are
  laid side by side instead, ``col: (C*FH*FW + 1, n_imgs*OH*OW)``, one product
  for the chunk, and the (small) result is copied back to NCHW.
- backward, per chunk: the same side-by-side layout;
  ``[dW | db] += dout_T @ col.T`` (the row of ones yields ``db``, or ``db`` is
  summed from dout where the bias is added apart), then
  ``dcol = W_T @ dout_T`` is folded back into ``dx`` by col2im: each
  (image, channel) plane belongs to one parallel task, which sums the
  unrolled entries that came from it, so no two parallel iterations ever add
  into one element.
- unroll and col2im work through a zero-bordered copy of the rows of one
  (image, channel) plane that a band reads, local to the task: the padding
  tests are paid once per input row, not once per (tap, output row). With
  stride 1 the unroll's copy is one plane per filter column, shifted by it and
  OW cells wide, and a tap's unrolled row is one run of it; col2im adds each
  tap's row into such planes and folds them into dx.
- a 1x1 convolution with stride 1 and no padding needs no unroll at all: it is
  ``W(FN, C) @ x[n].reshape(C, H*W)``.
- dilation: the unroll and col2im loops read filter tap (fy, fx) at window
  cell (fy*dh, fx*dw); nothing else changes.
- groups: the unrolled rows run channel-major, so group g's C/groups*FH*FW
  rows are one contiguous block, and every product above becomes one product
  per group on its block of rows and its FN/groups filters (the row of ones
  is then left out and the bias added after).

Memory: the unrolled matrix is bounded by a workspace budget (default 256 MiB,
see ``set_workspace_budget`` and the ``FASTCONV_IM2COL_BUDGET`` environment
variable): the batch is processed in chunks of whole images that fit in it, and
a single image whose unrolled matrix is larger than the budget is processed in
bands of output positions (whole output rows while one row fits the budget,
else pieces of a row). Below the budget, chunks are kept near 8 MiB (one image
at least) so that the product reads the unrolled matrix from cache. Besides the
unrolled matrix, the side-by-side layouts need a buffer for the product or for
the rearranged ``dout``, ``FN / (C*FH*FW + 1)`` times its size. The workspace
(``fastconv.kernels._workspace``, one store for the process, used under the
launch lock) is reused from call to call, because touching freshly allocated
memory (page faults) costs about three times as much as reusing it.
Arrays returned to the caller are always freshly allocated and never alias the
workspace.

Threads: the Numba loops follow ``numba.set_num_threads``; the matrix products
run on numpy's BLAS with its own thread count (``OPENBLAS_NUM_THREADS``). See
``fastconv.kernels._jit`` for how the two pools are kept from fighting; the
public functions hold its ``launch_lock``, so several Python threads may call
them at once.

Pooling: a pooling window has no reduction over channels, so there is no
matrix product to gain by unrolling; both CPU paths pool with
``fastconv.kernels.cpu_pooling``, one implementation for both.
"""
from typing import NamedTuple

import numpy as np
from numba import prange

from . import _workspace as _store
from ._jit import jit, one_launch_at_a_time
from ._workspace import (DEFAULT_WORKSPACE_BUDGET, Workspace,  # noqa: F401  (re-exported)
                         _budget_from_env, get_workspace_budget, set_workspace_budget)
from .cpu_pooling import PoolCache, pool_backward, pool_forward  # noqa: F401  (this path's pooling)

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    x: np.ndarray          # the input, read again to rebuild the unrolled matrix
    W: np.ndarray
    spec: object


def supports(spec):
    """Every spec fastconv can describe."""
    return True

# Below this many output positions per image, one product per image is too
# narrow for BLAS to split over threads, so the forward pass lays a chunk's
# images side by side instead. Measured (2 threads, forward): ResNet's 7x7
# stage (49 positions) 49 ms side by side vs 95 ms per image, 14x14 (196)
# 39 vs 43 ms; from 576 positions up (dlfs_conv1, 28x28 maps) per image is
# 3-27% faster, since it needs no copy back to NCHW.
_MIN_COLUMNS_PER_IMAGE = 256
# Images are grouped into chunks of at most this many bytes of unrolled matrix
# (a whole image at least), below the budget: the product then reads what the
# unroll has just written from cache (L3 is 32 MiB here) instead of memory.
# Measured (1 thread): ResNet-18 stage 1 backward ran at 72% of the sgemm rate
# with 8 MiB chunks, 59% with one 58 MB chunk.
_CACHE_TARGET = 8 * 2**20


_workspace = Workspace()


def release_workspace():
    """Free the path's reusable workspace (it is reallocated on the next call)."""
    _workspace.release()


# ------------------------------------------------------------ compiled kernels

# Inner loops index with unsigned integers or through views indexed from 0:
# an index Numba cannot prove non-negative (a computed offset) gets a
# wrap-around test, and such a loop measured 6x slower than memcpy (it does
# not vectorise). Unsigned indices need no test and no view per row, which on
# small maps costs more than the row's copy. Measured against views per row:
# unroll and col2im 0.72-0.9x the time on 7x7 maps, stride 2 and LeNet's
# 14x14 maps; on a par for 14x14 3x3; 1.0-1.1x on 28x28 3x3.

@jit
def _row_piece(i, OW, p0, p1):
    """Columns j0..j1 of output row i that fall in positions p0..p1 (p = i*OW + j)."""
    return max(0, p0 - i * OW), min(OW, p1 - i * OW)


# Why the order: prange hands each thread one run of consecutive tasks, and
# consecutive tasks should touch neighbouring memory. Image-major order with
# images side by side made every thread sweep the whole unrolled matrix once
# per image, a short stretch of each row at a time. Channel-major there,
# measured (8 images side by side): unroll 1.5-2.2x and col2im 1.5-2.7x faster
# on ResNet's 28x28 and 14x14 3x3 layers and on the 1x7 layer, on a par on the
# 7x1 and on LeNet's second layer.
@jit
def _task(t, n_imgs, C, s_img, s_row):
    """Task t of an unroll or col2im over n_imgs images x C channels -> (image, channel):
    channel-major when the images sit side by side (s_img < s_row), else image-major."""
    if s_img < s_row:
        c = t // n_imgs
        return t - c * n_imgs, c
    ii = t // C
    return ii, t - ii * C


@jit
def _band_plane(p0, p1, OW, W, FH, FW, sh, sw, pw, dh, dw):
    """The local plane of a band of positions p0..p1 -> (i_first, i_last, r_lo, r_hi, Wp):
    its output rows i_first..i_last read padded input rows r_lo..r_hi-1, each Wp cells
    wide (the padded width); ``_unroll`` copies them out, ``_col2im`` adds into them."""
    i_first = p0 // OW
    i_last = (p1 - 1) // OW
    r_lo = i_first * sh
    r_hi = i_last * sh + (FH - 1) * dh + 1
    Wp = max(W + 2 * pw, (OW - 1) * sw + (FW - 1) * dw + 1)
    return i_first, i_last, r_lo, r_hi, Wp


@jit
def _plane_columns(fx, dw, pw, W, OW):
    """Columns of the plane shifted by filter column fx -> (off, j_lo, j_hi): cell j
    holds input column j + off; only j_lo <= j < j_hi fall inside the W input columns."""
    off = fx * dw - pw
    j_lo = min(OW, max(0, -off))
    return off, j_lo, max(j_lo, min(OW, W - off))


@jit
def _planes_in_place(FH, sh, sw, p0, width, i_first, rows, OW):
    """True when a band's shifted planes are its unrolled rows themselves: a one-row
    filter with stride 1 over whole output rows, where plane fx is tap fx's row."""
    return sh == 1 and sw == 1 and FH == 1 and p0 == i_first * OW and width == rows * OW


@jit
def _shifted_planes(src, xs, FW, dw, ph, pw, r_lo, rows, OW, pitch):
    """xs[fx*pitch + r*OW + j] = the padded input at row r_lo + r, column j + fx*dw, for
    fx < FW, r < rows, j < OW: zeros in the padding. src: (H, W), one plane of x;
    pitch >= rows*OW: where each plane starts after the last.

    With FW = 1 and OW the padded width this is the bordered plane of ``_unroll``;
    with stride 1 the unroll takes one plane per filter column, OW the output's.
    Element loops, not slice assignments: those would compile Numba's
    shape-mismatch message (string formatting), seconds on first use. Indices
    into the flat planes, not a view per row: the unroll 0.66x the time on the
    1x7 layer (planes in place), 0.77x on LeNet's conv2, 0.85-0.91x on ResNet's
    28x28 to 7x7 stages (paired, 1 thread)."""
    H, W = src.shape
    for fx in range(FW):
        off, j_lo, j_hi = _plane_columns(fx, dw, pw, W, OW)
        lo, hi, first = np.uint64(j_lo), np.uint64(j_hi), np.uint64(j_lo + off)
        for r in range(rows):
            # unsigned indices into the flat planes: no wrap-around test, no view per row
            base = np.uint64(fx * pitch + r * OW)
            y = r_lo + r - ph
            if y < 0 or y >= H:
                for j in range(np.uint64(OW)):
                    xs[base + j] = 0
                continue
            xrow = src[y]
            for j in range(lo):
                xs[base + j] = 0
            for j in range(hi - lo):
                xs[base + lo + j] = xrow[first + j]
            for j in range(hi, np.uint64(OW)):
                xs[base + j] = 0


@jit
def _fold_shifted_planes(xs, plane, FW, dw, ph, pw, r_lo, rows, OW, pitch):
    """plane[y, v] += the cells of xs that ``_shifted_planes`` would have read from
    (y, v), plane fx by plane fx: the transpose of that copy, padding dropped (as
    in the naive path). xs: flat, plane fx at fx*pitch, (rows, OW); plane: (H, W),
    one plane of dx."""
    H, W = plane.shape
    for fx in range(FW):
        off, j_lo, j_hi = _plane_columns(fx, dw, pw, W, OW)
        for r in range(rows):
            y = r_lo + r - ph
            if y < 0 or y >= H:
                continue
            prow = plane[y]
            s0 = np.uint64(fx * pitch + r * OW + j_lo)
            d0 = np.uint64(j_lo + off)
            # unsigned indices: no wrap-around test
            for j in range(np.uint64(j_hi - j_lo)):
                prow[d0 + j] += xs[s0 + j]


@jit(parallel=True)
def _unroll(x, n0, n_imgs, p0, p1, FH, FW, sh, sw, ph, pw, dh, dw, OW, col, s_img, s_row):
    """Unroll output positions p0..p1 (p = i*OW + j) of images n0..n0+n_imgs of
    x: (N, C, H, W) into col; filter tap (fy, fx) sits at window cell (fy*dh, fx*dw).

    col is flat; entry (image ii, row k, position p) lives at
    ``ii*s_img + k*s_row + p - p0``. Rows k < C*FH*FW are the receptive
    fields in (c, fy, fx) order, padding as zeros; row C*FH*FW is all ones
    (the bias row). A band of positions may start and end inside a row.

    One task per (image, channel): the input rows the band reads are first
    copied once into a zero-bordered local plane, so every unrolled row is then
    a run of plain copies with no bounds tests. Why faster: the bounds and
    padding logic is paid once per input row instead of once per (tap, output
    row); measured 1.3-2.9x faster than per-(tap, row) copying on the layer
    suite, most on small maps (7x7 to 17x17) whose rows are a few cells long.

    With stride 1 the task builds one plane per filter column instead, OW cells
    wide and shifted by that column (``_shifted_planes``): a tap's unrolled row
    is then one contiguous run of it rather than a run per output row. Measured
    against the bordered plane, paired (1 thread, CPU time): the unroll 0.44-0.6x
    the time on LeNet's 5x5, the 7x1 layer and ResNet's 7x7 and 14x14 stages,
    0.82-0.95x on 28x28 to 56x56 maps and 224-wide rows; whole im2col layers
    0.89-0.94x (forward) and 0.95-0.96x (backward) on those ResNet stages, 0.62x
    and 0.89x on LeNet's. A one-row filter (1x7) over whole output rows builds
    these planes in the unrolled matrix itself, where plane fx is tap fx's row:
    the unroll 0.79x the time on the 1x7 layer, its im2col forward 0.89-0.93x.

    Task order follows the layout (``_task``): with images side by side the
    tasks of one channel's images are neighbours, so they fill neighbouring
    stretches of the same rows.
    """
    C, W = x.shape[1], x.shape[3]
    K = C * FH * FW
    width = p1 - p0
    i_first, i_last, r_lo, r_hi, Wp = _band_plane(p0, p1, OW, W, FH, FW, sh, sw, pw, dh, dw)
    rows = r_hi - r_lo
    in_place = _planes_in_place(FH, sh, sw, p0, width, i_first, rows, OW)
    shifted = sh == 1 and sw == 1
    for t in prange(n_imgs * C + n_imgs):
        if t >= n_imgs * C:
            # the bias row of ones, one task per image
            ii = t - n_imgs * C
            ones = col[ii * s_img + K * s_row:ii * s_img + K * s_row + width]
            for m in range(width):
                ones[m] = 1
            continue
        ii, c = _task(t, n_imgs, C, s_img, s_row)
        src = x[n0 + ii, c]
        if in_place:
            # a one-row filter over whole output rows: plane fx is tap fx's unrolled
            # row itself, so the planes are built in place (rows s_row apart)
            k0 = ii * s_img + c * FW * s_row
            _shifted_planes(src, col[k0:], FW, dw, ph, pw, r_lo, rows, OW, s_row)
            continue
        if shifted:
            # one plane per filter column, OW cells wide and shifted by that column:
            # position p of tap (fy, fx) reads cell p - i_first*OW + fy*dh*OW of
            # plane fx, so a tap's unrolled row is one run, not a run per output row
            xs = np.empty(FW * rows * OW, dtype=x.dtype)
            _shifted_planes(src, xs, FW, dw, ph, pw, r_lo, rows, OW, rows * OW)
            for fy in range(FH):
                for fx in range(FW):
                    k = (c * FH + fy) * FW + fx
                    dst = col[ii * s_img + k * s_row:ii * s_img + k * s_row + width]
                    s0 = np.uint64((fx * rows + fy * dh) * OW + p0 - i_first * OW)
                    for m in range(np.uint64(width)):
                        dst[m] = xs[s0 + m]
            continue
        # the bordered plane: one plane, unshifted, Wp cells wide
        xp = np.empty(rows * Wp, dtype=x.dtype)
        _shifted_planes(src, xp, 1, 0, ph, pw, r_lo, rows, Wp, rows * Wp)
        for fy in range(FH):
            for fx in range(FW):
                k = (c * FH + fy) * FW + fx
                dst = col[ii * s_img + k * s_row:ii * s_img + k * s_row + width]
                for i in range(i_first, i_last + 1):
                    a, e = _row_piece(i, OW, p0, p1)
                    # position (i, j) lands at dst[q + j] and reads xp[s0 + j*sw];
                    # unsigned indices: no wrap-around test, no views per row
                    q = np.uint64(i * OW - p0 + a)
                    s0 = np.uint64((i * sh + fy * dh - r_lo) * Wp + fx * dw + a * sw)
                    if sw == 1:
                        for j in range(np.uint64(e - a)):
                            dst[q + j] = xp[s0 + j]
                    else:
                        step = np.uint64(sw)
                        for j in range(np.uint64(e - a)):
                            dst[q + j] = xp[s0 + j * step]


# col2im adds into shifted planes (stride 1) while the FW planes of one task take at
# most this many bytes. Measured against the bordered plane, paired (1 thread, CPU
# time): 0.3-0.7x the time up to ResNet's 28x28 maps (10 KB of planes), 0.84-1.09x
# on its 56x56 maps (39 KB), 1.11x on 224x224 maps (607 KB), where the planes and
# the fold over them outgrow the cache the bordered plane fits in.
_SHIFTED_PLANES_BYTES = 256 * 2**10


@jit(parallel=True)
def _col2im(dcol, s_img, s_row, n0, n_imgs, p0, p1, FH, FW, sh, sw, ph, pw, dh, dw, OW, dx):
    """Add dcol (flat, layout as in ``_unroll``, positions p0..p1) into dx[n0:n0+n_imgs].

    Each (image, channel) plane of dx is owned by one parallel task, so no two
    tasks ever add into one element: the task adds its unrolled rows, tap by
    tap in a fixed order, into a zero-bordered local plane (the layout
    ``_unroll`` reads from), then adds that plane's interior to dx. Results
    are race-free and bit-reproducible; tasks run in ``_unroll``'s order. dx
    must hold zeros (or the sum of earlier bands) on entry. Why faster than
    gathering pixel by pixel: no bounds tests per (tap, row), measured
    1.2-3.5x on 5x5 and strided layers, on a par for 3x3 stride 1.

    With stride 1, while they fit ``_SHIFTED_PLANES_BYTES``, the task adds into
    the shifted planes of ``_unroll`` instead, one run per tap, and then folds
    them into dx (``_fold_shifted_planes``): 0.3-0.7x the time on 7x7 to 28x28
    maps (paired, 1 thread). A one-row filter over whole output rows folds dcol's
    rows themselves, the planes the unroll built in place: col2im 0.72x on the
    1x7 layer.
    """
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    width = p1 - p0
    i_first, i_last, r_lo, r_hi, Wp = _band_plane(p0, p1, OW, W, FH, FW, sh, sw, pw, dh, dw)
    rows = r_hi - r_lo
    in_place = _planes_in_place(FH, sh, sw, p0, width, i_first, rows, OW)
    shifted = sh == 1 and sw == 1 and FW * rows * OW * dx.itemsize <= _SHIFTED_PLANES_BYTES
    for t in prange(n_imgs * C):
        ii, c = _task(t, n_imgs, C, s_img, s_row)
        if in_place:
            # the mirror of _unroll's in-place planes: dcol's rows are the planes
            k0 = ii * s_img + c * FW * s_row
            _fold_shifted_planes(dcol[k0:], dx[n0 + ii, c], FW, dw, ph, pw, r_lo, rows, OW, s_row)
            continue
        if shifted:
            # the mirror of _unroll's shifted planes: a tap's unrolled row is added
            # into plane fx as one run, then the FW planes are folded into dx
            xs = np.zeros(FW * rows * OW, dtype=dx.dtype)
            for fy in range(FH):
                for fx in range(FW):
                    k = (c * FH + fy) * FW + fx
                    src = dcol[ii * s_img + k * s_row:ii * s_img + k * s_row + width]
                    s0 = np.uint64((fx * rows + fy * dh) * OW + p0 - i_first * OW)
                    for m in range(np.uint64(width)):
                        xs[s0 + m] += src[m]
            _fold_shifted_planes(xs, dx[n0 + ii, c], FW, dw, ph, pw, r_lo, rows, OW, rows * OW)
            continue
        xp = np.zeros(rows * Wp, dtype=dx.dtype)
        for fy in range(FH):
            for fx in range(FW):
                k = (c * FH + fy) * FW + fx
                for i in range(i_first, i_last + 1):
                    a, e = _row_piece(i, OW, p0, p1)
                    # entry of position (i, j) is dcol[row + j]; it came from xp[s0 + j*sw];
                    # unsigned indices: no wrap-around test, no views per row
                    row = np.uint64(ii * s_img + k * s_row + i * OW - p0 + a)
                    s0 = np.uint64((i * sh + fy * dh - r_lo) * Wp + fx * dw + a * sw)
                    if sw == 1:
                        for j in range(np.uint64(e - a)):
                            xp[s0 + j] += dcol[row + j]
                    else:
                        step = np.uint64(sw)
                        for j in range(np.uint64(e - a)):
                            xp[s0 + j * step] += dcol[row + j]
        plane = dx[n0 + ii, c]
        for r in range(rows):
            y = r_lo + r - ph
            if y < 0 or y >= H:
                continue        # padding: its terms are dropped, as in the naive path
            out_row = plane[y]
            inner = xp[r * Wp + pw:r * Wp + pw + W]
            for v in range(W):
                out_row[v] += inner[v]


@jit(parallel=True)
def _images_to_side_by_side(a, n0, n_imgs, out):
    """a[n0:n0+n_imgs]: (n_imgs, F, P) -> out: flat (F, n_imgs*P), images side by side."""
    F, P = a.shape[1], a.shape[2]
    for t in prange(F * n_imgs):
        f = t // n_imgs
        ii = t - f * n_imgs
        base = (f * n_imgs + ii) * P
        src = a[n0 + ii, f]
        dst = out[base:base + P]
        for p in range(P):          # not a slice copy: see _unroll
            dst[p] = src[p]


def _side_by_side_to_images(buf, n0, n_imgs, out):
    """buf: flat (F, n_imgs*P) -> out[n0:n0+n_imgs]: (n_imgs, F, P).

    Plain NumPy, not compiled: forward lays images side by side for small output
    maps only (P < _MIN_COLUMNS_PER_IMAGE), where one strided copy beats a parallel
    launch (measured 0.04-0.09 ms against 0.05-0.11 ms for 49-196 positions), and
    one kernel fewer compiles on first use. (The copy the other way, in backward,
    also serves large maps, where the compiled loop is 1.6-3.8x faster.)
    """
    F, P = out.shape[1], out.shape[2]
    out[n0:n0 + n_imgs] = buf.reshape(F, n_imgs, P).transpose(1, 0, 2)


@jit(parallel=True)
def _add_bias(out, b):
    """out: (N, F, P) += b[f] on every map."""
    N, F, P = out.shape
    for t in prange(N * F):
        n = t // F
        f = t - n * F
        row = out[n, f]
        bf = b[f]
        for p in range(P):
            row[p] += bf


@jit(parallel=True)
def _sum_maps(dout):
    """dout: (N, F, P) -> (F,): sum over images and positions, one channel per iteration."""
    N, F, P = dout.shape
    out = np.empty(F, dtype=dout.dtype)
    for f in prange(F):
        s = dout.dtype.type(0)
        for n in range(N):
            row = dout[n, f]
            for p in range(P):
                s += row[p]
        out[f] = s
    return out


# ----------------------------------------------------------------- convolution

def _unrolls(spec):
    """False for a 1x1, stride-1, unpadded convolution with wide enough output maps:
    that one is a plain matrix product on the NCHW data, with nothing to unroll."""
    pointwise = spec.filter_hw == (1, 1) and spec.stride == (1, 1) and spec.pad == (0, 0)
    return not (pointwise and spec.out_hw[0] * spec.out_hw[1] >= _MIN_COLUMNS_PER_IMAGE)


def _block(g, size):
    """The g-th block of ``size`` rows (or columns): what group g owns."""
    return slice(g * size, (g + 1) * size)


def _grouped_product(a, col, out, groups):
    """out = a @ col per group: out[..., block g] = a[block g] @ col[..., block g of a.shape[1] rows].

    a: (FN, Kg) (plus the bias column when groups == 1), col: (..., groups*Kg
    (+1), width), out: (..., FN, width). One group is one plain product. The
    unrolled rows run channel-major, so each group's rows are one contiguous
    block.
    """
    fn, kg = a.shape[0] // groups, a.shape[1]
    for g in range(groups):
        np.matmul(a[_block(g, fn)], col[..., _block(g, kg), :], out=out[..., _block(g, fn), :])


def plan(spec):
    """How this path computes ``spec``'s convolution forward: what it unrolls, in how many pieces.

    Returns a dict: ``unrolls`` (False: a plain product on the NCHW data),
    ``matrix_shape`` (the unrolled matrix of the whole batch, C*FH*FW rows
    plus the row of ones that carries the bias), ``budget`` (bytes one piece
    may take), ``pieces`` (unroll-and-multiply steps), ``images_per_piece``
    (in the first piece), ``bands`` (True when one image exceeds the budget
    and is split into bands of output positions) and ``products_per_piece``
    (``groups``: one matrix product per group, on the group's block of
    C*FH*FW/groups unrolled rows). Dilation changes what is unrolled, not how much.
    """
    if spec.op != "conv":
        return {"method": "pooling with the CPU pooling loops (no matrix product to gain)"}
    N = spec.x_shape[0]
    OH, OW = spec.out_hw
    rows = spec.groups * spec.field + 1
    per_group = "" if spec.groups == 1 else f" per group ({spec.groups} groups)"
    result = {"method": f"unroll (im2col) + one BLAS matrix product{per_group} per piece",
              "unrolls": _unrolls(spec), "matrix_shape": (rows, N * OH * OW),
              "budget": _store.get_workspace_budget(), "pieces": 0, "images_per_piece": N,
              "bands": False, "products_per_piece": spec.groups}
    if result["unrolls"]:
        pieces = list(_chunks(N, rows, OH, OW, spec.dtype.itemsize))
        result.update(pieces=len(pieces), images_per_piece=pieces[0][1],
                      bands=any(p1 - p0 < OH * OW for _, _, p0, p1 in pieces))
    return result


def _chunks(n_images, n_rows, OH, OW, itemsize):
    """Pieces of work whose unrolled matrix (n_rows x positions) fits the budget.

    Yields (n0, n_imgs, p0, p1): images n0..n0+n_imgs, output positions
    p0..p1 (position p is output row p // OW, column p % OW). Whole images
    are grouped up to _CACHE_TARGET bytes (or the budget, if smaller); an
    image that alone exceeds the budget is split into bands of whole output
    rows while one row fits, else into pieces of a row (one position, the
    n_rows values of one receptive field, at least).
    """
    budget = _store.get_workspace_budget()
    P = OH * OW
    per_image = n_rows * P * itemsize
    if per_image <= budget:
        per_chunk = max(1, min(n_images, min(budget, _CACHE_TARGET) // per_image))
        for n0 in range(0, n_images, per_chunk):
            yield n0, min(per_chunk, n_images - n0), 0, P
        return
    band = max(1, budget // (n_rows * itemsize))
    if band >= OW:
        band -= band % OW               # whole rows: fewer, more regular pieces
    for n in range(n_images):
        for p0 in range(0, P, band):
            yield n, 1, p0, min(P, p0 + band)


def _bias_in_product(groups, K, N, P):
    """True when the bias rides in the products: a row of ones under the unrolled
    matrix, [W | b] in the forward product (a copy of W: FN x K cells) and
    [dW | db] out of dW's (a copy back, as many). Otherwise the bias costs a pass
    over the output (FN x N*P cells) and db one over dout: cheaper when K > N*P,
    the deep layers on small maps (ResNet's 7x7 stage at batch 8: 4608 against
    392), or with groups, whose products are one per group."""
    return groups == 1 and K <= N * P


@one_launch_at_a_time
def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C // groups, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache."""
    N, C = x.shape[:2]
    FN, Cg, FH, FW = W.shape
    G = spec.groups
    sh, sw = spec.stride
    ph, pw = spec.pad
    dh, dw = spec.dilation
    OH, OW = spec.out_hw
    P = OH * OW
    K = C * FH * FW
    Kg = Cg * FH * FW
    out = np.empty((N, FN, OH, OW), dtype=x.dtype)
    out3 = out.reshape(N, FN, P)
    # copies: backward must see x and W as they were, even if the caller changes them
    # (none when no backward follows: for a 1x1 layer the copy of x costs a third
    # of the forward)
    cache = None if spec.forward_only else ConvCache(x.copy(), W.copy(), spec)

    if not _unrolls(spec):
        _grouped_product(W.reshape(FN, Cg), x.reshape(N, C, P), out3, G)
        _add_bias(out3, b)
        return out, cache

    fold = _bias_in_product(G, K, N, P)
    if fold:
        # [W | b]: the bias is the product with the unrolled matrix's row of ones
        A = np.empty((FN, K + 1), dtype=x.dtype)
        A[:, :K] = W.reshape(FN, K)
        A[:, K] = b
    else:
        # the products leave the row of ones out: the bias is added after
        A = W.reshape(FN, Kg)
    Ka = K + 1 if fold else K           # rows of the unrolled matrix the products read
    for n0, n_imgs, p0, p1 in _chunks(N, K + 1, OH, OW, x.itemsize):
        width = p1 - p0
        col = _workspace.get(n_imgs * (K + 1) * width, x.dtype)
        if P >= _MIN_COLUMNS_PER_IMAGE or n_imgs == 1:
            # (n_imgs, K+1, width): each image's product lands in its NCHW block
            _unroll(x, n0, n_imgs, p0, p1, FH, FW, sh, sw, ph, pw, dh, dw, OW, col,
                    (K + 1) * width, width)
            col3 = col.reshape(n_imgs, K + 1, width)[:, :Ka]
            if width == P:
                _grouped_product(A, col3, out3[n0:n0 + n_imgs], G)
            else:
                _grouped_product(A, col3[0], out3[n0, :, p0:p1], G)
        else:
            # (K+1, n_imgs*P): one wide product, then a small copy back to NCHW
            _unroll(x, n0, n_imgs, 0, P, FH, FW, sh, sw, ph, pw, dh, dw, OW, col, P, n_imgs * P)
            prod = _workspace.get(FN * n_imgs * P, x.dtype, slot=1)
            _grouped_product(A, col.reshape(K + 1, n_imgs * P)[:Ka], prod.reshape(FN, n_imgs * P),
                             G)
            _side_by_side_to_images(prod, n0, n_imgs, out3)
    if not fold:
        _add_bias(out3, b)
    return out, cache


@one_launch_at_a_time
def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C // groups, FH, FW), db: (FN,).

    The unrolled matrix is rebuilt from x rather than kept from forward, so
    memory between forward and backward stays at the size of x. With groups,
    every product below is one product per group on the group's blocks.
    ``spec.input_grad`` False: dx is None; the product for dcol and col2im are skipped.
    """
    x, W, spec = cache
    need_dx = spec.input_grad
    N, C = x.shape[:2]
    FN, Cg, FH, FW = W.shape
    G = spec.groups
    FNg = FN // G
    sh, sw = spec.stride
    ph, pw = spec.pad
    dh, dw = spec.dilation
    OH, OW = spec.out_hw
    P = OH * OW
    K = C * FH * FW
    Kg = Cg * FH * FW
    dout3 = dout.reshape(N, FN, P)
    W_t = W.reshape(FN, Kg).T                    # BLAS reads the transpose in place
    dx = np.zeros(x.shape, dtype=x.dtype) if need_dx else None

    if not _unrolls(spec):
        x3 = x.reshape(N, C, P)
        if need_dx:
            dx3 = dx.reshape(N, C, P)
            for g in range(G):
                np.matmul(W_t[:, _block(g, FNg)], dout3[:, _block(g, FNg)],
                          out=dx3[:, _block(g, Cg)])
        dW = np.zeros((FN, Cg), dtype=x.dtype)
        part = _workspace.get(FN * Cg, x.dtype, slot=1).reshape(FN, Cg)
        for n in range(N):
            for g in range(G):
                np.matmul(dout3[n, _block(g, FNg)], x3[n, _block(g, Cg)].T,
                          out=part[_block(g, FNg)])
            dW += part
        return dx, dW.reshape(W.shape), _sum_maps(dout3)

    # bias in the product: [dW | db] = sum over positions of dout times [col ; ones];
    # else dW (per group, from the group's rows of col), db summed apart
    fold = _bias_in_product(G, K, N, P)
    Kw = K + 1 if fold else Kg
    dWb = np.empty((FN, Kw), dtype=x.dtype)
    for n0, n_imgs, p0, p1 in _chunks(N, K + 1, OH, OW, x.itemsize):
        width = p1 - p0
        cols = n_imgs * width
        col = _workspace.get((K + 1) * cols, x.dtype)
        # images side by side: col (K+1, n_imgs*width), dout_t (FN, n_imgs*width)
        _unroll(x, n0, n_imgs, p0, p1, FH, FW, sh, sw, ph, pw, dh, dw, OW, col, width, cols)
        if n_imgs == 1:
            dout_t = dout3[n0, :, p0:p1]
        else:
            dout_t = _workspace.get(FN * cols, x.dtype, slot=1)
            _images_to_side_by_side(dout3, n0, n_imgs, dout_t)
            dout_t = dout_t.reshape(FN, cols)
        col_t = col.reshape(K + 1, cols).T
        target = dWb
        if not (n0 == 0 and p0 == 0):
            target = _workspace.get(FN * Kw, x.dtype, slot=2).reshape(FN, Kw)
        for g in range(G):
            np.matmul(dout_t[_block(g, FNg)], col_t[:, _block(g, Kw)], out=target[_block(g, FNg)])
        if target is not dWb:
            dWb += target
        if not need_dx:
            continue
        # col is no longer needed: its memory takes dcol = W^T @ dout_t
        dcol = col[:K * cols]
        dcol2 = dcol.reshape(K, cols)
        for g in range(G):
            np.matmul(W_t[:, _block(g, FNg)], dout_t[_block(g, FNg)], out=dcol2[_block(g, Kg)])
        _col2im(dcol, width, cols, n0, n_imgs, p0, p1, FH, FW, sh, sw, ph, pw, dh, dw, OW, dx)
    if not fold:
        return dx, dWb.reshape(W.shape), _sum_maps(dout3)
    return dx, np.ascontiguousarray(dWb[:, :K]).reshape(W.shape), dWb[:, K].copy()
