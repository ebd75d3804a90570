"""im2col and col2im in the layout of "Deep Learning from Scratch" (ch. 7) and CS231n.

The readable unroll behind ``fastconv.im2col`` / ``fastconv.col2im``: rows are
output positions, batch-major (n, i, j); columns run over (channel, filter
row, filter column). It is not a path of the dispatch table; the im2col path
(``im2col.py``) uses a transposed layout of its own, chosen so that its
matrix product lands in NCHW.
"""
import numpy as np


def _pad(x, pad):
    ph, pw = pad
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def im2col(x, spec):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*FH*FW) for the filter size, stride, pad and
    dilation of ``spec`` (tap (fy, fx) reads window cell (fy*dh, fx*dw))."""
    N, C = x.shape[:2]
    FH, FW = spec.filter_hw
    sh, sw = spec.stride
    dh, dw = spec.dilation
    OH, OW = spec.out_hw
    xp = _pad(x, spec.pad)
    col = np.empty((N, OH, OW, C, FH, FW), dtype=x.dtype)
    for fy in range(FH):
        for fx in range(FW):
            y, z = fy * dh, fx * dw
            patch = xp[:, :, y:y + sh * (OH - 1) + 1:sh, z:z + sw * (OW - 1) + 1:sw]
            col[:, :, :, :, fy, fx] = patch.transpose(0, 2, 3, 1)
    return col.reshape(N * OH * OW, C * FH * FW)


def col2im(col, spec):
    """col: (N*OH*OW, C*FH*FW) -> (N, C, H, W); the adjoint of ``im2col``.

    Overlapping windows add up, which is what the backward pass needs.
    """
    N, C, H, W = spec.x_shape
    FH, FW = spec.filter_hw
    sh, sw = spec.stride
    dh, dw = spec.dilation
    OH, OW = spec.out_hw
    ph, pw = spec.pad
    col6 = col.reshape(N, OH, OW, C, FH, FW)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for fy in range(FH):
        for fx in range(FW):
            y, z = fy * dh, fx * dw
            xp[:, :, y:y + sh * (OH - 1) + 1:sh, z:z + sw * (OW - 1) + 1:sw] += \
                col6[:, :, :, :, fy, fx].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(xp[:, :, ph:ph + H, pw:pw + W])
