"""The naive path: plain Python loops over output positions.

This is the oracle every other path is checked against, so it is written to be
read, not to be fast: each output element is computed exactly the way "Deep
Learning from Scratch" (ch. 7) and CS231n describe it (take the window,
multiply by the filter, sum, add the bias).
NumPy only does the small per-window arithmetic.

Conventions shared by all paths (see ``fastconv.kernels``):
- convolution is cross-correlation (the filter is not flipped);
- padding is zeros for convolution and average pooling; max pooling looks at
  the input's cells only, so a padded cell never wins a max;
- pooling follows PyTorch's options: with ``ceil_mode`` a last, partial window
  is clipped to the input; average pooling divides by the window clipped to
  the padded input (``PH*PW`` unless ceil_mode clipped it), by the input cells
  alone (``count_include_pad=False``) or by ``divisor_override``; max pooling's
  taps are ``dilation`` cells apart;
- max pooling ties: the first maximum in row-major window order wins (what
  ``np.argmax`` does: a NaN beats any number, the first NaN wins), and the
  whole gradient goes to that one cell; a max pooling's cache keeps the flat
  index ``h*W + w`` of that cell in its (n, c) input plane (PyTorch's
  ``return_indices`` convention).
"""
from typing import NamedTuple

import numpy as np

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    x: np.ndarray
    W: np.ndarray
    spec: object


class PoolCache(NamedTuple):
    argmax: np.ndarray | None      # (N, C, OH, OW) int64 h*W + w of each maximum in its plane
    spec: object


def supports(spec):
    """Every spec fastconv can describe."""
    return True


def plan(spec):
    """What this path does for ``spec``: a Python loop over output positions."""
    return {"method": "a Python loop over output positions, NumPy per window"}


def release_workspace():
    """Nothing to release: this path keeps no scratch memory."""


def _pad(x, pad, value=0.0):
    ph, pw = pad
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _unpad(xp, pad, x_shape):
    ph, pw = pad
    H, W = x_shape[2], x_shape[3]
    return np.ascontiguousarray(xp[:, :, ph:ph + H, pw:pw + W])


# ----------------------------------------------------------------- convolution

def _window(i, j, spec):
    """The (rows, cols) slices of padded input that output (i, j) reads: FH x FW taps,
    ``dilation`` cells apart, starting at (i*sh, j*sw)."""
    sh, sw = spec.stride
    dh, dw = spec.dilation
    eh, ew = spec.extent
    return slice(i * sh, i * sh + eh, dh), slice(j * sw, j * sw + ew, dw)


def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C // groups, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache.

    Group g's filters (FN // groups of them) see group g's channels only.
    """
    N = x.shape[0]
    FN, Cg, FH, FW = W.shape
    G = spec.groups
    FNg = FN // G
    OH, OW = spec.out_hw
    xp = _pad(x, spec.pad)
    w_rows = W.reshape(FN, Cg * FH * FW)
    out = np.empty((N, FN, OH, OW), dtype=x.dtype)
    for g in range(G):
        chans, filters = slice(g * Cg, (g + 1) * Cg), slice(g * FNg, (g + 1) * FNg)
        for n in range(N):
            for i in range(OH):
                for j in range(OW):
                    rows, cols = _window(i, j, spec)
                    window = xp[n, chans, rows, cols]
                    out[n, filters, i, j] = w_rows[filters] @ window.reshape(-1) + b[filters]
    if spec.forward_only:
        return out, None
    # copies: backward must see x and W as they were, even if the caller changes them
    return out, ConvCache(x.copy(), W.copy(), spec)


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C // groups, FH, FW), db: (FN,).

    dx is None, and not computed, when ``spec.input_grad`` is False.
    """
    x, W, spec = cache
    need_dx = spec.input_grad
    N = x.shape[0]
    FN, Cg, FH, FW = W.shape
    G = spec.groups
    FNg = FN // G
    OH, OW = spec.out_hw
    pad = spec.pad
    xp = _pad(x, pad)
    dxp = np.zeros(xp.shape, dtype=x.dtype) if need_dx else None
    w_rows = W.reshape(FN, Cg * FH * FW)
    dw_rows = np.zeros_like(w_rows)
    for gr in range(G):
        chans, filters = slice(gr * Cg, (gr + 1) * Cg), slice(gr * FNg, (gr + 1) * FNg)
        for n in range(N):
            for i in range(OH):
                for j in range(OW):
                    g = dout[n, filters, i, j]                 # (FN // groups,)
                    rows, cols = _window(i, j, spec)
                    dw_rows[filters] += np.outer(g, xp[n, chans, rows, cols].reshape(-1))
                    if need_dx:
                        dxp[n, chans, rows, cols] += (g @ w_rows[filters]).reshape(Cg, FH, FW)
    db = dout.sum(axis=(0, 2, 3))
    dx = _unpad(dxp, pad, x.shape) if need_dx else None
    return dx, dw_rows.reshape(W.shape), db


# --------------------------------------------------------------------- pooling

def _taps(o, stride, pad, pool, dilation, size):
    """The input rows (or columns) output index ``o``'s max window reads: its taps
    that land inside the input, in order."""
    taps = o * stride - pad + dilation * np.arange(pool)
    return taps[(taps >= 0) & (taps < size)]


def _avg_window(o, stride, pad, pool, size, count_include_pad):
    """(start, stop, cells the divisor counts) of output index ``o``'s average window
    along one axis, in padded coordinates: the window clipped to the padded input,
    counted whole (count_include_pad) or its input cells only."""
    start = o * stride
    stop = min(start + pool, size + 2 * pad)          # ceil_mode's last window is clipped
    if count_include_pad:
        return start, stop, stop - start
    return start, stop, min(stop, pad + size) - max(start, pad)


def _divisor(spec, rows, cols):
    return spec.divisor_override if spec.divisor_override is not None else rows * cols


def pool_forward(x, spec):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), cache; every channel pooled on its own."""
    N, C, H, W = x.shape
    PH, PW = spec.pool_hw
    sh, sw = spec.stride
    ph, pw = spec.pad
    dh, dw = spec.dilation
    OH, OW = spec.out_hw
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    if spec.mode == "max":
        argmax = np.empty((N, C, OH, OW), dtype=np.int64)
        for i in range(OH):
            rows = _taps(i, sh, ph, PH, dh, H)
            for j in range(OW):
                cols = _taps(j, sw, pw, PW, dw, W)
                window = x[:, :, rows][:, :, :, cols].reshape(N, C, rows.size * cols.size)
                k = window.argmax(axis=2)              # first maximum wins ties
                argmax[:, :, i, j] = rows[k // cols.size] * W + cols[k % cols.size]
                out[:, :, i, j] = np.take_along_axis(window, k[:, :, None], axis=2)[:, :, 0]
        return out, PoolCache(argmax, spec)
    xp = _pad(x, spec.pad)
    for i in range(OH):
        r0, r1, rows = _avg_window(i, sh, ph, PH, H, spec.count_include_pad)
        for j in range(OW):
            c0, c1, cols = _avg_window(j, sw, pw, PW, W, spec.count_include_pad)
            window = xp[:, :, r0:r1, c0:c1].reshape(N, C, -1)
            out[:, :, i, j] = window.sum(axis=2) / _divisor(spec, rows, cols)
    return out, PoolCache(None, spec)


def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    argmax, spec = cache
    N, C, H, W = spec.x_shape
    PH, PW = spec.pool_hw
    sh, sw = spec.stride
    ph, pw = spec.pad
    OH, OW = spec.out_hw
    if spec.mode == "max":
        dx = np.zeros((N, C, H * W), dtype=dout.dtype)
        n_idx, c_idx = np.indices((N, C))
        for i in range(OH):
            for j in range(OW):
                # one cell per (n, c) at this (i, j): no repeated index in the +=
                dx[n_idx, c_idx, argmax[:, :, i, j]] += dout[:, :, i, j]
        return dx.reshape(N, C, H, W)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dout.dtype)
    for i in range(OH):
        r0, r1, rows = _avg_window(i, sh, ph, PH, H, spec.count_include_pad)
        for j in range(OW):
            c0, c1, cols = _avg_window(j, sw, pw, PW, W, spec.count_include_pad)
            g = dout[:, :, i, j] / _divisor(spec, rows, cols)
            dxp[:, :, r0:r1, c0:c1] += g[:, :, None, None]
    return _unpad(dxp, spec.pad, spec.x_shape)
