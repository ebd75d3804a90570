"""The naive path: plain Python loops over output positions.

This is the oracle every other path is checked against, so it is written to be
read, not to be fast: each output element is computed exactly the way the seed
notes describe it (take the window, multiply by the filter, sum, add the bias).
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
import numpy as np


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

def conv_forward(x, W, b, stride, pad, out_hw):
    """x: (N, C, H, W), W: (FN, C, FH, FW), b: (FN,) -> out: (N, FN, OH, OW)."""
    N = x.shape[0]
    FN, C, FH, FW = W.shape
    sh, sw = stride
    OH, OW = out_hw
    xp = _pad(x, pad)
    w_rows = W.reshape(FN, C * FH * FW)
    out = np.empty((N, FN, OH, OW), dtype=x.dtype)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                window = xp[n, :, i * sh:i * sh + FH, j * sw:j * sw + FW]
                out[n, :, i, j] = w_rows @ window.reshape(-1) + b
    return out, (x, W, stride, pad, out_hw)


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C, FH, FW), db: (FN,)."""
    x, W, stride, pad, out_hw = cache
    N = x.shape[0]
    FN, C, FH, FW = W.shape
    sh, sw = stride
    OH, OW = out_hw
    xp = _pad(x, pad)
    dxp = np.zeros(xp.shape, dtype=x.dtype)
    w_rows = W.reshape(FN, C * FH * FW)
    dw_rows = np.zeros_like(w_rows)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                g = dout[n, :, i, j]                       # (FN,)
                rows = slice(i * sh, i * sh + FH)
                cols = slice(j * sw, j * sw + FW)
                dw_rows += np.outer(g, xp[n, :, rows, cols].reshape(-1))
                dxp[n, :, rows, cols] += (g @ w_rows).reshape(C, FH, FW)
    db = dout.sum(axis=(0, 2, 3))
    return _unpad(dxp, pad, x.shape), dw_rows.reshape(W.shape), db


# --------------------------------------------------------------------- pooling

def pool_forward(x, pool_hw, stride, pad, out_hw, mode):
    """x: (N, C, H, W) -> out: (N, C, OH, OW); every channel pooled on its own."""
    N, C = x.shape[:2]
    PH, PW = pool_hw
    sh, sw = stride
    OH, OW = out_hw
    xp = _pad(x, pad, -np.inf if mode == "max" else 0.0)
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
    return out, (x.shape, pool_hw, stride, pad, out_hw, mode, argmax)


def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    x_shape, pool_hw, stride, pad, out_hw, mode, argmax = cache
    N, C, H, W = x_shape
    PH, PW = pool_hw
    sh, sw = stride
    OH, OW = out_hw
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


# ------------------------------------------------------- im2col, seed layout

def im2col(x, filter_hw, stride, pad, out_hw):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*FH*FW).

    Rows are output positions, batch-major (n, i, j); columns run over
    (channel, filter row, filter column), the layout of the seed notes.
    """
    N, C = x.shape[:2]
    FH, FW = filter_hw
    sh, sw = stride
    OH, OW = out_hw
    xp = _pad(x, pad)
    col = np.empty((N, OH, OW, C, FH, FW), dtype=x.dtype)
    for fy in range(FH):
        for fx in range(FW):
            patch = xp[:, :, fy:fy + sh * (OH - 1) + 1:sh, fx:fx + sw * (OW - 1) + 1:sw]
            col[:, :, :, :, fy, fx] = patch.transpose(0, 2, 3, 1)
    return col.reshape(N * OH * OW, C * FH * FW)


def col2im(col, x_shape, filter_hw, stride, pad, out_hw):
    """col: (N*OH*OW, C*FH*FW) -> (N, C, H, W); the adjoint of ``im2col``.

    Overlapping windows add up, which is what the backward pass needs.
    """
    N, C, H, W = x_shape
    FH, FW = filter_hw
    sh, sw = stride
    OH, OW = out_hw
    ph, pw = pad
    col6 = col.reshape(N, OH, OW, C, FH, FW)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for fy in range(FH):
        for fx in range(FW):
            xp[:, :, fy:fy + sh * (OH - 1) + 1:sh, fx:fx + sw * (OW - 1) + 1:sw] += \
                col6[:, :, :, :, fy, fx].transpose(0, 3, 1, 2)
    return _unpad(xp, pad, x_shape)
