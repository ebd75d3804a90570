"""The naive path: plain Python loops over output positions.

This is the oracle every other path is checked against, so it is written to be
read, not to be fast: each output element is computed exactly the way "Deep
Learning from Scratch" (ch. 7) and CS231n describe it (take the window,
multiply by the filter, sum, add the bias).
NumPy only does the small per-window arithmetic.

Conventions shared by all paths (see ``fastconv.kernels``):
- convolution is cross-correlation (the filter is not flipped);
- padding is zeros for convolution and average pooling, ``-inf`` for max
  pooling, so a padded cell never wins a max;
- average pooling divides by the full window size ``PH*PW``, padded cells
  included (PyTorch's ``count_include_pad=True``);
- max pooling ties: the first maximum in row-major window order wins (what
  ``np.argmax`` does), and the whole gradient goes to that one cell.
"""
from typing import NamedTuple

import numpy as np

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    x: np.ndarray
    W: np.ndarray
    spec: object


class PoolCache(NamedTuple):
    argmax: np.ndarray | None      # (N, C, OH, OW) flat window index of each maximum
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
    # copies: backward must see x and W as they were, even if the caller changes them
    return out, ConvCache(x.copy(), W.copy(), spec)


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C // groups, FH, FW), db: (FN,)."""
    x, W, spec = cache
    N = x.shape[0]
    FN, Cg, FH, FW = W.shape
    G = spec.groups
    FNg = FN // G
    OH, OW = spec.out_hw
    pad = spec.pad
    xp = _pad(x, pad)
    dxp = np.zeros(xp.shape, dtype=x.dtype)
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
                    dxp[n, chans, rows, cols] += (g @ w_rows[filters]).reshape(Cg, FH, FW)
    db = dout.sum(axis=(0, 2, 3))
    return _unpad(dxp, pad, x.shape), dw_rows.reshape(W.shape), db


# --------------------------------------------------------------------- pooling

def pool_forward(x, spec):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), cache; every channel pooled on its own."""
    N, C = x.shape[:2]
    PH, PW = spec.pool_hw
    sh, sw = spec.stride
    OH, OW = spec.out_hw
    mode = spec.mode
    xp = _pad(x, spec.pad, -np.inf if mode == "max" else 0.0)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int64) if mode == "max" else None
    for i in range(OH):
        for j in range(OW):
            window = xp[:, :, i * sh:i * sh + PH, j * sw:j * sw + PW].reshape(N, C, PH * PW)
            if mode == "max":
                k = window.argmax(axis=2)                  # first maximum wins ties
                argmax[:, :, i, j] = k
                out[:, :, i, j] = np.take_along_axis(window, k[:, :, None], axis=2)[:, :, 0]
            else:
                out[:, :, i, j] = window.sum(axis=2) / (PH * PW)
    return out, PoolCache(argmax, spec)


def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    argmax, spec = cache
    x_shape, mode, pad = spec.x_shape, spec.mode, spec.pad
    N, C, H, W = x_shape
    PH, PW = spec.pool_hw
    sh, sw = spec.stride
    OH, OW = spec.out_hw
    ph, pw = pad
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dout.dtype)
    n_idx, c_idx = np.indices((N, C))
    for i in range(OH):
        for j in range(OW):
            g = dout[:, :, i, j]
            if mode == "max":
                di, dj = np.divmod(argmax[:, :, i, j], PW)
                # one cell per (n, c) at this (i, j): no repeated index in the +=
                dxp[n_idx, c_idx, i * sh + di, j * sw + dj] += g
            else:
                dxp[:, :, i * sh:i * sh + PH, j * sw:j * sw + PW] += (g / (PH * PW))[:, :, None, None]
    return _unpad(dxp, pad, x_shape)
