"""The reference NumPy convolution and pooling of "Deep Learning from Scratch" (ch. 7):
the baseline fastconv must beat.

The book's ``common/util.py`` and ``common/layers.py`` style, restated for the
benchmarks:

- im2col unrolls the padded input by strided slicing, one ``(FH, FW)`` filter
  offset at a time, into a ``(N, C, FH, FW, OH, OW)`` array, then transposes it
  to rows = output positions (batch-major), columns = ``C*FH*FW``;
- convolution forward is one ``np.dot(col, W_rows.T)`` plus the bias, reshaped
  and transposed back to NCHW;
- backward is the Affine layer's backward on the unrolled matrix, and ``dx``
  comes from col2im, which adds the rows back slice by slice;
- pooling unrolls with the same im2col, takes max/mean over each window row,
  and scatters the gradient back with col2im.

It is a benchmark baseline, not a fastconv backend: nothing in ``fastconv``
imports it. One deliberate difference from the book's code: the book allocates
the unrolled matrix with ``np.zeros`` (float64), which silently turns a float32
convolution into a float64 one; here every buffer keeps the input's dtype, so
the float32 comparison is float32 against float32 (fairer to the baseline).
Max pooling pads with ``-inf`` (the book pads with 0, which only matters with
padding and negative inputs) so the results agree with fastconv's naive path.

All functions take ``stride`` and ``pad`` as ``(h, w)`` pairs and ``out_hw`` as
computed by ``fastconv.geometry.output_hw`` (floor rule).
"""
import numpy as np


def im2col(x, filter_hw, stride, pad, out_hw, fill=0.0):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*FH*FW); padding cells hold ``fill``."""
    N, C, H, W = x.shape
    FH, FW = filter_hw
    sh, sw = stride
    ph, pw = pad
    OH, OW = out_hw
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    col = np.empty((N, C, FH, FW, OH, OW), dtype=x.dtype)
    for fy in range(FH):
        rows = slice(fy, fy + sh * OH, sh)
        for fx in range(FW):
            col[:, :, fy, fx, :, :] = x[:, :, rows, fx:fx + sw * OW:sw]
    # (N, OH, OW, C, FH, FW): one receptive field per row; reshape copies here
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, C * FH * FW)


def col2im(col, x_shape, filter_hw, stride, pad, out_hw):
    """col: (N*OH*OW, C*FH*FW) -> (N, C, H, W); overlapping windows add up."""
    N, C, H, W = x_shape
    FH, FW = filter_hw
    sh, sw = stride
    ph, pw = pad
    OH, OW = out_hw
    col = col.reshape(N, OH, OW, C, FH, FW).transpose(0, 3, 4, 5, 1, 2)
    # Room for the last window even when the floor rule drops trailing cells.
    img = np.zeros((N, C, H + 2 * ph + sh - 1, W + 2 * pw + sw - 1), dtype=col.dtype)
    for fy in range(FH):
        rows = slice(fy, fy + sh * OH, sh)
        for fx in range(FW):
            img[:, :, rows, fx:fx + sw * OW:sw] += col[:, :, fy, fx, :, :]
    return img[:, :, ph:ph + H, pw:pw + W]


def conv_forward(x, W, b, stride, pad, out_hw):
    """x: (N, C, H, W), W: (FN, C, FH, FW), b: (FN,) -> (out (N, FN, OH, OW), cache)."""
    N = x.shape[0]
    FN, C, FH, FW = W.shape
    OH, OW = out_hw
    col = im2col(x, (FH, FW), stride, pad, out_hw)
    w_cols = W.reshape(FN, -1).T                      # (C*FH*FW, FN)
    out = np.dot(col, w_cols) + b                     # (N*OH*OW, FN)
    out = out.reshape(N, OH, OW, FN).transpose(0, 3, 1, 2)
    return out, (x.shape, W, col, stride, pad, out_hw)


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx (N, C, H, W), dW (FN, C, FH, FW), db (FN,)."""
    x_shape, W, col, stride, pad, out_hw = cache
    FN = W.shape[0]
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(-1, FN)   # (N*OH*OW, FN)
    db = dout_rows.sum(axis=0)
    dW = np.dot(col.T, dout_rows).T.reshape(W.shape)
    dcol = np.dot(dout_rows, W.reshape(FN, -1))              # (N*OH*OW, C*FH*FW)
    dx = col2im(dcol, x_shape, W.shape[2:], stride, pad, out_hw)
    return dx, dW, db


def pool_forward(x, pool_hw, stride, pad, out_hw, mode):
    """x: (N, C, H, W) -> (out (N, C, OH, OW), cache); mode "max" or "avg"."""
    N, C = x.shape[:2]
    PH, PW = pool_hw
    OH, OW = out_hw
    fill = -np.inf if mode == "max" else 0.0
    col = im2col(x, pool_hw, stride, pad, out_hw, fill).reshape(-1, PH * PW)
    if mode == "max":
        arg_max = np.argmax(col, axis=1)              # first maximum wins ties
        out = col[np.arange(col.shape[0]), arg_max]
    else:
        arg_max = None
        out = col.mean(axis=1, dtype=x.dtype)
    out = out.reshape(N, OH, OW, C).transpose(0, 3, 1, 2)
    return out, (x.shape, pool_hw, stride, pad, out_hw, mode, arg_max)


def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    x_shape, pool_hw, stride, pad, out_hw, mode, arg_max = cache
    N, C = x_shape[:2]
    PH, PW = pool_hw
    OH, OW = out_hw
    g = dout.transpose(0, 2, 3, 1).reshape(-1)        # rows in im2col order (n, i, j, c)
    if mode == "max":
        dcol = np.zeros((g.size, PH * PW), dtype=dout.dtype)
        dcol[np.arange(g.size), arg_max] = g
    else:
        dcol = np.repeat((g / (PH * PW))[:, None], PH * PW, axis=1)
    dcol = dcol.reshape(N * OH * OW, C * PH * PW)
    return col2im(dcol, x_shape, pool_hw, stride, pad, out_hw)
