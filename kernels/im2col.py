"""The im2col path: unroll receptive fields with Numba, multiply with BLAS.

Convolution is computed as matrix products on an unrolled copy of the input
("col"), the CS231n / "Deep Learning from Scratch" method, with the layout
chosen so that the product lands in NCHW without a transpose pass:

- forward, per image: ``col_n: (C*FH*FW + 1, OH*OW)``, rows in (channel,
  filter row, filter column) order, one column per output position, plus a last
  row of ones so that the bias rides along in the product:
  ``out[n].reshape(FN, OH*OW) = [W | b] @ col_n``. When the output maps are
  small (few output positions per image, e.g. ResNet's last stage) a product
  per image is too narrow for BLAS to run fast, so the images of a chunk are
  laid side by side instead, ``col: (C*FH*FW + 1, n_imgs*OH*OW)``, one product
  for the chunk, and the (small) result is copied back to NCHW.
- backward, per chunk: the same side-by-side layout;
  ``[dW | db] += dout_T @ col.T`` (the row of ones yields ``db``), then
  ``dcol = W_T @ dout_T`` is folded back into ``dx`` by a gather-style col2im:
  every input pixel sums the unrolled entries that came from it, so no two
  parallel iterations ever add into one element.
- a 1x1 convolution with stride 1 and no padding needs no unroll at all: it is
  ``W(FN, C) @ x[n].reshape(C, H*W)``.

Memory: the unrolled matrix is bounded by a workspace budget (default 256 MiB,
see ``set_workspace_budget`` and the ``FASTCONV_IM2COL_BUDGET`` environment
variable): the batch is processed in chunks of whole images that fit in it, and
a single image whose unrolled matrix is larger than the budget is processed in
bands of output rows. The workspace is kept per thread and reused from call to
call, because touching freshly allocated memory (page faults) costs about three
times as much as reusing it. Arrays returned to the caller are always freshly
allocated and never alias the workspace.

Pooling runs as direct compiled loops over (image, channel) planes: a pooling
window has no reduction over channels, so there is no matrix product to gain
by unrolling. Semantics as in ``fastconv.kernels.naive``: ``-inf`` padding and
first-maximum ties for max, ``count_include_pad`` for average.
"""
import os
import threading

import numpy as np
from numba import prange

from ._jit import jit

DEFAULT_WORKSPACE_BUDGET = 256 * 2**20
# Below this many output positions per image, one product per image is too
# narrow for BLAS (measured: ResNet's 7x7 stage ran at half the GEMM rate), so
# the forward pass lays a chunk's images side by side instead.
_MIN_COLUMNS_PER_IMAGE = 1024


def _budget_from_env():
    text = os.environ.get("FASTCONV_IM2COL_BUDGET")
    if text is None or not text.strip():
        return DEFAULT_WORKSPACE_BUDGET
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"FASTCONV_IM2COL_BUDGET must be a whole number of bytes, got {text!r}") from None
    if value < 1:
        raise ValueError(f"FASTCONV_IM2COL_BUDGET must be >= 1 byte, got {value}")
    return value


_budget = _budget_from_env()
_local = threading.local()


def set_workspace_budget(nbytes):
    """Cap the unrolled matrix of the im2col path at ``nbytes`` bytes (default 256 MiB).

    The batch is then processed in chunks of images whose unrolled matrix fits;
    one image that alone exceeds the budget is processed in bands of output
    rows (one output row at least, whatever the budget). The setting is
    process-wide; ``FASTCONV_IM2COL_BUDGET`` sets its initial value. Returns
    the previous budget.
    """
    global _budget
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"nbytes must be >= 1, got {nbytes}")
    previous, _budget = _budget, int(nbytes)
    return previous


def get_workspace_budget():
    """The current cap, in bytes, on the im2col path's unrolled matrix."""
    return _budget


def release_workspace():
    """Free this thread's reusable workspace (it is reallocated on the next call)."""
    _local.__dict__.clear()


def _workspace(size, dtype, slot=0):
    """A 1-D scratch array of ``size`` elements, reused across calls on this thread.

    ``slot`` tells apart scratch arrays needed at the same time. Kept per
    thread so that two threads running convolutions at once never share
    scratch memory. Callers must never return it or a view of it.
    """
    key = (np.dtype(dtype).name, slot)
    buf = _local.__dict__.get(key)
    if buf is None or buf.size < size:
        buf = None                      # let the old one go before allocating
        _local.__dict__.pop(key, None)
        buf = np.empty(size, dtype=dtype)
        _local.__dict__[key] = buf
    return buf[:size]


# ------------------------------------------------------------ compiled kernels

@jit(parallel=True)
def _unroll(x, n0, n_imgs, r0, r1, FH, FW, sh, sw, ph, pw, OW, col, s_img, s_row):
    """Unroll output rows r0..r1 of images n0..n0+n_imgs of x: (N, C, H, W) into col.

    col is flat; entry (image ii, row k, output position q) lives at
    ``ii*s_img + k*s_row + q`` with q = (i - r0)*OW + j. Rows k < C*FH*FW are
    the receptive fields in (c, fy, fx) order, padding as zeros; row C*FH*FW is
    all ones (the bias row).
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    K = C * FH * FW
    n_rows = K + 1
    width = (r1 - r0) * OW
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    for t in prange(n_imgs * n_rows):
        ii = t // n_rows
        k = t - ii * n_rows
        base = ii * s_img + k * s_row
        if k == K:
            for q in range(width):
                col[base + q] = one
            continue
        c = k // (FH * FW)
        fy = (k // FW) % FH
        fx = k % FW
        # output columns j whose input column j*sw + fx - pw lies inside the image
        j_lo = min(OW, max(0, (pw - fx + sw - 1) // sw))
        j_hi = max(j_lo, min(OW, (W - 1 + pw - fx) // sw + 1)) if W - 1 + pw - fx >= 0 else j_lo
        for i in range(r0, r1):
            row = base + (i - r0) * OW
            y = i * sh + fy - ph
            if y < 0 or y >= H:
                for j in range(OW):
                    col[row + j] = zero
                continue
            for j in range(j_lo):
                col[row + j] = zero
            src = x[n0 + ii, c, y]
            if sw == 1:
                off = fx - pw
                for j in range(j_lo, j_hi):
                    col[row + j] = src[j + off]
            else:
                for j in range(j_lo, j_hi):
                    col[row + j] = src[j * sw + fx - pw]
            for j in range(j_hi, OW):
                col[row + j] = zero


@jit(parallel=True)
def _col2im(dcol, s_img, s_row, n0, n_imgs, r0, r1, FH, FW, sh, sw, ph, pw, OW, dx):
    """Add dcol (flat, layout as in ``_unroll``, output rows r0..r1) into dx[n0:n0+n_imgs].

    Gather form: each (image, channel) plane of dx is owned by one parallel
    iteration and each pixel sums, in a fixed order, the unrolled entries that
    were copied from it, so the result is race-free and bit-reproducible.
    dx must hold zeros (or the sum of earlier row bands) on entry.
    """
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for t in prange(n_imgs * C):
        ii = t // C
        c = t - ii * C
        plane = dx[n0 + ii, c]
        for y in range(H):
            out_row = plane[y]
            for fy in range(FH):
                iy = y + ph - fy
                if iy < 0 or iy % sh != 0:
                    continue
                i = iy // sh
                if i < r0 or i >= r1:
                    continue
                for fx in range(FW):
                    k = (c * FH + fy) * FW + fx
                    row = ii * s_img + k * s_row + (i - r0) * OW
                    # pixels xx that output column j = (xx + pw - fx) / sw reads
                    first = fx - pw
                    if first < 0:
                        first += ((-first + sw - 1) // sw) * sw
                    last = min(W - 1, (OW - 1) * sw + fx - pw)
                    if sw == 1:
                        off = pw - fx
                        for xx in range(first, last + 1):
                            out_row[xx] += dcol[row + xx + off]
                    else:
                        for xx in range(first, last + 1, sw):
                            out_row[xx] += dcol[row + (xx + pw - fx) // sw]


@jit(parallel=True)
def _images_to_side_by_side(a, n0, n_imgs, out):
    """a[n0:n0+n_imgs]: (n_imgs, F, P) -> out: flat (F, n_imgs*P), images side by side."""
    F, P = a.shape[1], a.shape[2]
    for t in prange(F * n_imgs):
        f = t // n_imgs
        ii = t - f * n_imgs
        src = a[n0 + ii, f]
        base = (f * n_imgs + ii) * P
        for p in range(P):
            out[base + p] = src[p]


@jit(parallel=True)
def _side_by_side_to_images(buf, n0, n_imgs, out):
    """buf: flat (F, n_imgs*P) -> out[n0:n0+n_imgs]: (n_imgs, F, P)."""
    F, P = out.shape[1], out.shape[2]
    for t in prange(F * n_imgs):
        f = t // n_imgs
        ii = t - f * n_imgs
        dst = out[n0 + ii, f]
        base = (f * n_imgs + ii) * P
        for p in range(P):
            dst[p] = buf[base + p]


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

def _is_pointwise(W, stride, pad):
    return W.shape[2] == 1 and W.shape[3] == 1 and stride == (1, 1) and pad == (0, 0)


def _chunks(n_images, n_rows, OH, OW, itemsize):
    """Pieces of work whose unrolled matrix (n_rows x positions) fits the budget.

    Yields (n0, n_imgs, r0, r1): images n0..n0+n_imgs, output rows r0..r1.
    Whole images are grouped while they fit; an image that alone exceeds the
    budget is split into bands of output rows (one row at least).
    """
    per_image = n_rows * OH * OW * itemsize
    if per_image <= _budget:
        per_chunk = min(n_images, _budget // per_image)
        for n0 in range(0, n_images, per_chunk):
            yield n0, min(per_chunk, n_images - n0), 0, OH
        return
    rows = max(1, _budget // (n_rows * OW * itemsize))
    for n in range(n_images):
        for r0 in range(0, OH, rows):
            yield n, 1, r0, min(OH, r0 + rows)


def conv_forward(x, W, b, stride, pad, out_hw):
    """x: (N, C, H, W), W: (FN, C, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache."""
    N, C = x.shape[:2]
    FN, _, FH, FW = W.shape
    sh, sw = stride
    ph, pw = pad
    OH, OW = out_hw
    P = OH * OW
    K = C * FH * FW
    out = np.empty((N, FN, OH, OW), dtype=x.dtype)
    out3 = out.reshape(N, FN, P)
    cache = (x, W, b, stride, pad, out_hw)

    if _is_pointwise(W, stride, pad) and P >= _MIN_COLUMNS_PER_IMAGE:
        np.matmul(W.reshape(FN, C), x.reshape(N, C, P), out=out3)
        _add_bias(out3, b)
        return out, cache

    # [W | b]: the bias is the product with the unrolled matrix's row of ones
    Wb = np.empty((FN, K + 1), dtype=x.dtype)
    Wb[:, :K] = W.reshape(FN, K)
    Wb[:, K] = b
    for n0, n_imgs, r0, r1 in _chunks(N, K + 1, OH, OW, x.itemsize):
        width = (r1 - r0) * OW
        col = _workspace(n_imgs * (K + 1) * width, x.dtype)
        if P >= _MIN_COLUMNS_PER_IMAGE or n_imgs == 1:
            # (n_imgs, K+1, width): each image's product lands in its NCHW block
            _unroll(x, n0, n_imgs, r0, r1, FH, FW, sh, sw, ph, pw, OW, col, (K + 1) * width, width)
            col3 = col.reshape(n_imgs, K + 1, width)
            if width == P:
                np.matmul(Wb, col3, out=out3[n0:n0 + n_imgs])
            else:
                out3[n0, :, r0 * OW:r1 * OW] = Wb @ col3[0]
        else:
            # (K+1, n_imgs*P): one wide product, then a small copy back to NCHW
            _unroll(x, n0, n_imgs, 0, OH, FH, FW, sh, sw, ph, pw, OW, col, P, n_imgs * P)
            prod = _workspace(FN * n_imgs * P, x.dtype, slot=1)
            np.matmul(Wb, col.reshape(K + 1, n_imgs * P), out=prod.reshape(FN, n_imgs * P))
            _side_by_side_to_images(prod, n0, n_imgs, out3)
    return out, cache


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C, FH, FW), db: (FN,).

    The unrolled matrix is rebuilt from x rather than kept from forward, so
    memory between forward and backward stays at the size of x.
    """
    x, W, b, stride, pad, out_hw = cache
    N, C = x.shape[:2]
    FN, _, FH, FW = W.shape
    sh, sw = stride
    ph, pw = pad
    OH, OW = out_hw
    P = OH * OW
    K = C * FH * FW
    dout3 = dout.reshape(N, FN, P)
    W_t = W.reshape(FN, K).T                     # BLAS reads the transpose in place
    dx = np.zeros(x.shape, dtype=x.dtype)

    if _is_pointwise(W, stride, pad) and P >= _MIN_COLUMNS_PER_IMAGE:
        x3 = x.reshape(N, C, P)
        np.matmul(W_t, dout3, out=dx.reshape(N, C, P))
        dW = np.zeros((FN, C), dtype=x.dtype)
        part = _workspace(FN * C, x.dtype, slot=1).reshape(FN, C)
        for n in range(N):
            np.matmul(dout3[n], x3[n].T, out=part)
            dW += part
        return dx, dW.reshape(W.shape), _sum_maps(dout3)

    # [dW | db] = sum over positions of dout times [col ; ones]
    dWb = np.zeros((FN, K + 1), dtype=x.dtype)
    for n0, n_imgs, r0, r1 in _chunks(N, K + 1, OH, OW, x.itemsize):
        width = (r1 - r0) * OW
        cols = n_imgs * width
        col = _workspace((K + 1) * cols, x.dtype)
        # images side by side: col (K+1, n_imgs*width), dout_t (FN, n_imgs*width)
        _unroll(x, n0, n_imgs, r0, r1, FH, FW, sh, sw, ph, pw, OW, col, width, cols)
        if n_imgs == 1:
            dout_t = dout3[n0, :, r0 * OW:r1 * OW]
        else:
            dout_t = _workspace(FN * cols, x.dtype, slot=1)
            _images_to_side_by_side(dout3, n0, n_imgs, dout_t)
            dout_t = dout_t.reshape(FN, cols)
        dWb += dout_t @ col.reshape(K + 1, cols).T
        # col is no longer needed: its memory takes dcol = W^T @ dout_t
        dcol = col[:K * cols]
        np.matmul(W_t, dout_t, out=dcol.reshape(K, cols))
        _col2im(dcol, width, cols, n0, n_imgs, r0, r1, FH, FW, sh, sw, ph, pw, OW, dx)
    return dx, np.ascontiguousarray(dWb[:, :K]).reshape(W.shape), dWb[:, K].copy()
