"""Validated entry points: check every argument, then hand plain arrays to a kernel.

Everything a kernel may assume is established here, before it runs: arrays of
the right rank and matching shapes, one floating dtype (float32 or float64),
C-contiguous memory, (h, w) pairs for stride/pad, and an output size that fits.
Errors name the argument and the shapes involved.
"""
from collections import namedtuple

import numpy as np

from . import backends
from .geometry import _as_int, as_pair, check_rounding, output_hw

MODES = ("max", "avg")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# What forward keeps for backward: the resolved path, that path's private cache,
# and what dout must look like.
Saved = namedtuple("Saved", "path cache out_shape dtype")


def is_device_array(a):
    """True for a CUDA device array (Numba's, or anything with the CUDA array interface).

    The simulator's device arrays have no CUDA array interface; like Numba's
    real ones they set ``__cuda_ndarray__``.
    """
    if isinstance(a, np.ndarray):
        return False
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def check_array(a, name, ndim, layout):
    """Raise unless ``a`` is an ndarray (or CUDA device array) with ``ndim`` dims."""
    if not (isinstance(a, np.ndarray) or is_device_array(a)):
        raise TypeError(
            f"{name} must be a numpy array of shape {layout}, got {type(a).__name__}; "
            f"convert it with np.asarray({name}, dtype=np.float32)")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(a.shape)}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(a.shape)}")


def check_dtypes(**arrays):
    """All arrays float32, or all float64; returns that dtype."""
    for name, a in arrays.items():
        if np.dtype(a.dtype) not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} has dtype {a.dtype}; fastconv computes in float32 or float64: "
                f"convert it first, e.g. {name}.astype(np.float32)")
    kinds = {name: np.dtype(a.dtype) for name, a in arrays.items()}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n} is {d}" for n, d in kinds.items())
        first = next(iter(kinds))
        raise TypeError(
            f"mixed dtypes ({listing}); all arrays must share one dtype: convert them, "
            f"e.g. with .astype({first}.dtype)")
    return next(iter(kinds.values()))


def _contiguous(a):
    return a if is_device_array(a) else np.ascontiguousarray(a)


def _check_stride_pad(stride, pad):
    stride, pad = as_pair(stride, "stride"), as_pair(pad, "pad")
    if min(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if min(pad) < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return stride, pad


def _resolve(backend, op, arrays, **shape_info):
    """Pick the path; CUDA device arrays only go to (and "auto" sends them to) 'cuda'."""
    backends.check_backend(backend)
    on_device = [name for name, a in arrays.items() if is_device_array(a)]
    if on_device:
        if backend not in ("auto", "cuda"):
            raise TypeError(
                f"{', '.join(on_device)} is a CUDA device array but backend={backend!r}; "
                f"use backend='cuda', or copy it to the host with .copy_to_host()")
        backend = "cuda"
    return backends.resolve(backend, op, **shape_info)


# ----------------------------------------------------------------- convolution

def check_conv(x, W, b, stride, pad, rounding):
    """Validate a convolution; returns (x, W, b, stride, pad, out_hw) ready for a kernel."""
    check_array(x, "x", 4, "(N, C, H, W)")
    check_array(W, "W", 4, "(FN, C, FH, FW)")
    if b is not None:
        check_array(b, "b", 1, "(FN,)")
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(
                f"b must have shape (FN,) = ({W.shape[0]},) to match W.shape={tuple(W.shape)}, "
                f"got {tuple(b.shape)}")
        dtype = check_dtypes(x=x, W=W, b=b)
    else:
        dtype = check_dtypes(x=x, W=W)
        b = np.zeros(W.shape[0], dtype=dtype)
    if x.shape[1] != W.shape[1]:
        raise ValueError(
            f"x has C={x.shape[1]} channels (x.shape={tuple(x.shape)}) but W expects "
            f"C={W.shape[1]} (W.shape={tuple(W.shape)})")
    stride, pad = _check_stride_pad(stride, pad)
    check_rounding(rounding)
    out_hw = output_hw(tuple(x.shape[2:]), tuple(W.shape[2:]), stride, pad, rounding, "W's filter")
    return _contiguous(x), _contiguous(W), _contiguous(b), stride, pad, out_hw


def conv_forward(x, W, b, stride=1, pad=0, rounding="floor", backend="auto"):
    """Validated convolution forward -> (out, saved); ``saved`` feeds conv_backward."""
    x, W, b, stride, pad, out_hw = check_conv(x, W, b, stride, pad, rounding)
    path = _resolve(backend, "conv", {"x": x, "W": W}, x_shape=tuple(x.shape),
                    w_shape=tuple(W.shape), stride=stride, pad=pad, dtype=np.dtype(x.dtype))
    out, cache = backends.get_path(path).conv_forward(x, W, b, stride, pad, out_hw)
    return out, Saved(path, cache, tuple(out.shape), np.dtype(x.dtype))


def _check_dout(dout, saved):
    check_array(dout, "dout", len(saved.out_shape), str(saved.out_shape))
    if tuple(dout.shape) != saved.out_shape:
        raise ValueError(
            f"dout must have the forward output's shape {saved.out_shape}, got {tuple(dout.shape)}")
    if np.dtype(dout.dtype) != saved.dtype:
        raise TypeError(
            f"dout has dtype {dout.dtype} but forward ran in {saved.dtype}; "
            f"convert it with dout.astype(np.{saved.dtype})")
    return _contiguous(dout)


def conv_backward(dout, saved):
    """dout: (N, FN, OH, OW) -> (dx, dW, db) on the path forward used."""
    dout = _check_dout(dout, saved)
    return backends.get_path(saved.path).conv_backward(dout, saved.cache)


def conv2d(x, W, b=None, stride=1, pad=0, *, flip=False, rounding="floor", backend="auto"):
    """2-D convolution of a batch: x: (N, C, H, W), W: (FN, C, FH, FW), b: (FN,) or None.

    Returns (N, FN, OH, OW). By default this is cross-correlation, what deep
    learning calls convolution (``scipy.signal.correlate2d`` per channel);
    ``flip=True`` flips the filter first: true convolution, as
    ``scipy.signal.convolve2d``. stride and pad are ints or (h, w) pairs.
    """
    if flip:
        check_array(W, "W", 4, "(FN, C, FH, FW)")
        W = W[:, :, ::-1, ::-1]
    out, _ = conv_forward(x, W, b, stride, pad, rounding, backend)
    return out


# --------------------------------------------------------------------- pooling

def check_pool(x, pool_h, pool_w, stride, pad, mode, rounding):
    """Validate a pooling; returns (x, pool_hw, stride, pad, out_hw)."""
    check_array(x, "x", 4, "(N, C, H, W)")
    check_dtypes(x=x)
    pool_hw = (_as_int(pool_h, "pool_h"), _as_int(pool_w, "pool_w"))
    if min(pool_hw) < 1:
        raise ValueError(f"pool window (pool_h, pool_w) must be >= 1, got {pool_hw}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    stride, pad = _check_stride_pad(stride, pad)
    if pad[0] >= pool_hw[0] or pad[1] >= pool_hw[1]:
        raise ValueError(
            f"pad {pad} must be smaller than the pool window {pool_hw}, or some windows "
            f"would hold padding only")
    check_rounding(rounding)
    out_hw = output_hw(tuple(x.shape[2:]), pool_hw, stride, pad, rounding, "pool window")
    return _contiguous(x), pool_hw, stride, pad, out_hw


def pool_forward(x, pool_h, pool_w, stride=1, pad=0, mode="max", rounding="floor", backend="auto"):
    """Validated pooling forward -> (out, saved); ``saved`` feeds pool_backward."""
    x, pool_hw, stride, pad, out_hw = check_pool(x, pool_h, pool_w, stride, pad, mode, rounding)
    path = _resolve(backend, "pool", {"x": x}, x_shape=tuple(x.shape), w_shape=None,
                    stride=stride, pad=pad, dtype=np.dtype(x.dtype), pool_hw=pool_hw, mode=mode)
    out, cache = backends.get_path(path).pool_forward(x, pool_hw, stride, pad, out_hw, mode)
    return out, Saved(path, cache, tuple(out.shape), np.dtype(x.dtype))


def pool_backward(dout, saved):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W) on the path forward used."""
    dout = _check_dout(dout, saved)
    return backends.get_path(saved.path).pool_backward(dout, saved.cache)


def pool2d(x, pool_h, pool_w, stride=1, pad=0, mode="max", *, rounding="floor", backend="auto"):
    """Max or average pooling of x: (N, C, H, W) -> (N, C, OH, OW).

    Max pooling pads with -inf; average pooling pads with zeros and divides by
    pool_h*pool_w. Ties in max pooling go to the first maximum in row-major
    window order.
    """
    out, _ = pool_forward(x, pool_h, pool_w, stride, pad, mode, rounding, backend)
    return out


# ------------------------------------------------------- im2col, seed layout

def im2col(x, filter_h, filter_w, stride=1, pad=0, rounding="floor"):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*FH*FW).

    Rows are output positions, batch-major; columns run over (channel, filter
    row, filter column). A (1, 3, 7, 7) input with a 5x5 filter gives (9, 75).
    """
    check_array(x, "x", 4, "(N, C, H, W)")
    check_dtypes(x=x)
    filter_hw = (_as_int(filter_h, "filter_h"), _as_int(filter_w, "filter_w"))
    stride, pad = _check_stride_pad(stride, pad)
    out_hw = output_hw(tuple(x.shape[2:]), filter_hw, stride, pad, check_rounding(rounding))
    return backends.get_path("naive").im2col(np.ascontiguousarray(x), filter_hw, stride, pad, out_hw)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0, rounding="floor"):
    """col: (N*OH*OW, C*FH*FW) -> (N, C, H, W): the adjoint of im2col (overlaps add)."""
    check_array(col, "col", 2, "(N*OH*OW, C*FH*FW)")
    check_dtypes(col=col)
    if not hasattr(input_shape, "__len__") or len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    N, C, H, W = (_as_int(s, "input_shape") for s in input_shape)
    filter_hw = (_as_int(filter_h, "filter_h"), _as_int(filter_w, "filter_w"))
    stride, pad = _check_stride_pad(stride, pad)
    OH, OW = output_hw((H, W), filter_hw, stride, pad, check_rounding(rounding))
    expected = (N * OH * OW, C * filter_hw[0] * filter_hw[1])
    if tuple(col.shape) != expected:
        raise ValueError(
            f"col must have shape (N*OH*OW, C*FH*FW) = {expected} for input_shape "
            f"{(N, C, H, W)}, got {tuple(col.shape)}")
    return backends.get_path("naive").col2im(
        np.ascontiguousarray(col), (N, C, H, W), filter_hw, stride, pad, (OH, OW))
