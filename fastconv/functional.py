"""Checked entry points: check the arrays, build the spec, dispatch to a kernel.

Everything a kernel may assume is established here, before it runs: arrays of
the right rank and matching shapes, one floating dtype (float32 or float64),
C-contiguous memory, and a frozen spec (``fastconv.spec``) whose arguments are
checked. Errors name the argument and the shapes involved. Nothing downstream
checks again.
"""
from __future__ import annotations

import contextlib
import threading
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import backends, tuner
from .geometry import _as_int, resolve_padding
from .spec import (FLOAT_DTYPES, PAD_FORMS, POOL_MODES, ConvSpec, PoolSpec, as_forward_only,
                   cache_key, check_flag, check_return_indices, conv_spec, pool_spec,
                   without_input_grad)

MODES = POOL_MODES
# an int, or an (h, w) pair
Pair = int | tuple[int, int]
# a Pair, ((top, bottom), (left, right)), "valid" or "same" (see conv2d)
Padding = Pair | tuple[tuple[int, int], tuple[int, int]] | str

__all__ = ["conv2d", "pool2d", "conv_forward", "conv_backward", "pool_forward", "pool_backward",
           "im2col", "col2im", "Saved", "FLOAT_DTYPES", "MODES"]


HALF = np.dtype(np.float16)


class Restore(NamedTuple):
    """How results go back to a caller whose arrays differ from what the kernels ran on."""

    unbatched: bool              # x was one (C, H, W) image
    out_dtype: np.dtype          # the dtype of out, and of the dout backward takes
    grad_dtypes: tuple           # the dtypes of dx (x's), and of dW, db (W's, b's)


class Saved(NamedTuple):
    """What forward keeps for backward: the path that ran, its cache, the spec,
    (for unbatched, mixed-dtype or float16 input) how to hand results back, and
    (for asymmetric padding) the zeros added to x before the kernel ran,
    ``((top, bottom), (left, right))``, which backward crops off dx."""

    path: str
    cache: tuple
    spec: ConvSpec | PoolSpec
    restore: Restore | None = None
    excess: tuple | None = None


# -------------------------------------------------------------- no_grad

_grad_mode = threading.local()


def grad_enabled() -> bool:
    """False inside :func:`no_grad` (in this thread)."""
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def _grad_mode_set(enabled):
    previous = grad_enabled()
    _grad_mode.enabled = enabled
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad():
    """Forwards inside keep nothing for a backward, like ``torch.no_grad()``.

    ``conv_forward`` (and so ``Convolution.forward``) then copies neither x nor
    W for a backward; a backward of such a forward raises RuntimeError, and
    ``backend="auto"`` runs the path with the fastest forward
    (``fastconv.tuner.forward_pick``). For
    inference and evaluation (``Network.evaluate`` runs under it). Per thread;
    contexts nest (:func:`enable_grad` undoes it inside).
    """
    return _grad_mode_set(False)


def enable_grad():
    """Inside :func:`no_grad`: forwards keep what a backward needs again (``torch.enable_grad``).

    A ``with`` block, or a decorator (``@enable_grad()``) for a function that
    runs backwards of its own."""
    return _grad_mode_set(True)


def is_device_array(a) -> bool:
    """True for a CUDA device array (Numba's, or anything with the CUDA array interface).

    The simulator's device arrays have no CUDA array interface; like Numba's
    real ones they set ``__cuda_ndarray__``.
    """
    if isinstance(a, np.ndarray):
        return False
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def check_array(a, name: str, ndim: int | tuple[int, ...], layout: str):
    """``a`` as a C-contiguous ndarray (or the CUDA device array itself) of ``ndim`` dims
    (one of them, for a tuple).

    Refuses what is not an array, masked arrays and matrices (their mask or
    their algebra would be silently lost), other ranks, empty arrays and
    non-float dtypes.
    """
    ndims = ndim if isinstance(ndim, tuple) else (ndim,)
    if not isinstance(a, np.ndarray):
        if is_device_array(a):
            if a.ndim != ndims[-1]:
                raise ValueError(f"{name} must be {ndims[-1]}-D {layout} when it is a CUDA device "
                                 f"array, got shape {tuple(a.shape)}")
            check_dtypes(**{name: a})
            return a
        raise TypeError(
            f"{name} must be a numpy array of shape {layout}, got {type(a).__name__}; "
            f"convert it with np.asarray({name}, dtype=np.float32)")
    if isinstance(a, (np.ma.MaskedArray, np.matrix)):
        lost = "mask" if isinstance(a, np.ma.MaskedArray) else "matrix algebra"
        raise TypeError(
            f"{name} is a {type(a).__name__}, whose {lost} fastconv would ignore; pass a "
            f"plain array, e.g. {name}.filled(0) or np.asarray({name})")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must be {' or '.join(f'{n}-D' for n in ndims)} {layout}, "
                         f"got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if a.dtype not in FLOAT_DTYPES and a.dtype != HALF:
        raise TypeError(
            f"{name} has dtype {a.dtype}; fastconv computes in float32 or float64 (float16 "
            f"is stored as float16 and computed in float32): convert it first, e.g. "
            f"{name}.astype(np.float32)")
    return np.ascontiguousarray(a)


def check_dtypes(**arrays) -> np.dtype:
    """All arrays of one float dtype (float16, float32 or float64); returns that dtype."""
    for name, a in arrays.items():
        if np.dtype(a.dtype) not in FLOAT_DTYPES and np.dtype(a.dtype) != HALF:
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


def _path_for(backend: str, spec, on_device: bool):
    """The kernel module and path name for ``backend`` ("auto" or a path) and this spec.

    CUDA device arrays only go to (and "auto" sends them to) 'cuda'.
    """
    if on_device:
        if backend not in ("auto", "cuda"):
            raise TypeError(
                f"a CUDA device array but backend={backend!r}; use backend='cuda', or copy it "
                f"to the host with .copy_to_host()")
        backend = "cuda"
    elif backend == "auto":
        backend = tuner.choose(spec)
    else:
        check_backend(backend)
    if backend == "cuda" and not backends.cuda_present():
        raise RuntimeError(
            "backend 'cuda' was selected but no CUDA device was found. Install "
            "numba-cuda and run on a machine with an NVIDIA GPU, or set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported to use the simulator.")
    module = backends.get_path(backend)
    if not module.supports(spec):
        raise ValueError(f"backend {backend!r} runs {module.SCOPE}; it cannot run "
                         f"{spec.describe()}")
    return module, backend


def check_backend(backend: str) -> str:
    """Raise ValueError for a name that is neither 'auto' nor a path of the table."""
    if backend != "auto" and backend not in backends.PATHS:
        valid = ", ".join(repr(n) for n in ("auto", *backends.PATHS))
        raise ValueError(f"backend must be one of {valid}; got {backend!r}")
    return backend


# ----------------------------------------------------------------- convolution

def conv_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair = 1,
                 pad: Padding = 0, rounding: str = "floor", backend: str = "auto",
                 dilation: Pair = 1, groups: int = 1, *,
                 input_grad: bool = True) -> tuple[np.ndarray, Saved]:
    """Checked convolution forward -> (out, saved); ``saved`` feeds conv_backward.

    x: (N, C, H, W), W: (FN, C // groups, FH, FW), b: (FN,) or None -> out
    (N, FN, OH, OW). pad takes every form :func:`conv2d` does.
    input_grad=False: the backward of this call computes dW and db only and
    returns None for dx (a network's first layer: nothing below it takes dx,
    which costs about as much as dW); "auto" then times that backward.
    Under :func:`no_grad`, ``saved`` holds nothing and cannot feed a backward.
    """
    return _conv_forward(x, W, b, stride, pad, rounding, backend, dilation, groups,
                         check_flag(input_grad, "input_grad"), forward_only=not grad_enabled())


def _conv_forward(x, W, b, stride, pad, rounding, backend, dilation, groups, input_grad,
                  forward_only):
    """conv_forward; ``forward_only=True`` (conv2d, no_grad): the path keeps no cache,
    and so copies neither x nor W, and the returned Saved holds None."""
    x = check_array(x, "x", (3, 4), "(N, C, H, W) or one image (C, H, W)")
    W = check_array(W, "W", 4, "(FN, C, FH, FW)")
    if b is None:
        b = np.zeros(W.shape[0], dtype=W.dtype)
    else:
        b = check_array(b, "b", 1, "(FN,)")
        if b.shape[0] != W.shape[0]:
            raise ValueError(f"b must have shape (FN,) = ({W.shape[0]},) to match "
                             f"W.shape={tuple(W.shape)}, got {tuple(b.shape)}")
    restore = None
    if x.ndim == 3 or not x.dtype == W.dtype == b.dtype or x.dtype == HALF:
        (x, W, b), restore = _adapt((x, W, b))
    spec, excess = lowered_conv_spec(x.shape, W.shape, stride, pad, x.dtype, rounding,
                                     dilation, groups)
    if not input_grad:
        spec = without_input_grad(spec)
    if forward_only:
        spec = as_forward_only(spec)
    on_device = not isinstance(x, np.ndarray) or not isinstance(W, np.ndarray)
    if excess is not None:
        if on_device:
            raise ValueError(f"pad={pad!r} needs unequal zeros on opposite sides, which CUDA "
                             f"device arrays do not take (x.shape={tuple(x.shape)}); pad x "
                             f"yourself and pass a symmetric pad, or use host arrays")
        # PyTorch's lowering of unequal padding: the kernels pad both sides alike
        # (spec.pad, the smaller side) and x is padded by the rest here, a copy
        x = np.pad(x, ((0, 0), (0, 0), *excess))
    module, path = _path_for(backend, spec, on_device)
    out, cache = module.conv_forward(x, W, b, spec)
    if restore is not None:
        out = _restored(out, restore.out_dtype, restore.unbatched)
    return out, Saved(path, cache, spec, restore, excess)


def lowered_conv_spec(x_shape, w_shape, stride: Pair = 1, pad: Padding = 0, dtype="float32",
                      rounding: str = "floor", dilation: Pair = 1,
                      groups: int = 1) -> tuple[ConvSpec, tuple | None]:
    """The spec the kernels run for ``pad`` in any form -> (spec, excess).

    x_shape: (N, C, H, W), w_shape: (FN, C // groups, FH, FW). pad is resolved
    (``fastconv.geometry.resolve_padding``) to zeros on each side; the spec
    gets the symmetric part, ``(min(top, bottom), min(left, right))``, and
    ``excess`` is what is left, ``((top, bottom), (left, right))`` to add to x
    before the kernel runs (then spec.x_shape is the padded shape), or None
    when the padding is symmetric and x runs as it is.
    """
    # A warmed layer, which passes tuples, pays one cache look-up here and no
    # Python-level checking.
    try:
        return _lowered_conv_spec(tuple(x_shape), tuple(w_shape), stride, pad, np.dtype(dtype),
                                  rounding, dilation, groups)
    except TypeError:
        # an unhashable argument never reaches the checks inside the cache: name it,
        # or (a list, an array) make it hashable and look again
        return _lowered_conv_spec(tuple(x_shape), tuple(w_shape), cache_key(stride, "stride"),
                                  cache_key(pad, "pad", PAD_FORMS), np.dtype(dtype),
                                  cache_key(rounding, "rounding", "'floor' or 'exact'"),
                                  cache_key(dilation, "dilation"),
                                  cache_key(groups, "groups", "an int"))


@lru_cache(maxsize=512)
def _lowered_conv_spec(x_shape, w_shape, stride, pad, dtype, rounding, dilation, groups):
    (top, bottom), (left, right) = resolve_padding(pad, x_shape[-2:], w_shape[-2:], stride,
                                                   dilation)
    sym = (min(top, bottom), min(left, right))
    if top == bottom and left == right:
        return conv_spec(x_shape, w_shape, stride, sym, dtype, rounding,
                         dilation=dilation, groups=groups), None
    excess = ((top - sym[0], bottom - sym[0]), (left - sym[1], right - sym[1]))
    *lead, H, Wd = x_shape
    padded = (*lead, H + sum(excess[0]), Wd + sum(excess[1]))
    try:
        spec = conv_spec(padded, w_shape, stride, sym, dtype, rounding, dilation=dilation,
                         groups=groups)
    except ValueError as err:
        raise ValueError(f"{err} (x.shape={tuple(x_shape)} with pad ((top, bottom), (left, "
                         f"right))={((top, bottom), (left, right))} runs as an input padded "
                         f"to (H, W)=({padded[-2]}, {padded[-1]}) with pad={sym})") from None
    return spec, excess


def _adapt(arrays):
    """Arrays the kernels can run, and how to hand results back -> (arrays, Restore).

    One (C, H, W) image becomes a batch of one. Mixed float dtypes promote as
    NumPy does (``np.result_type``: float32 images through float64 parameters
    compute in float64). float16 is computed in float32 (no float16 running
    sums) and handed back as float16. CUDA device arrays must already be
    batched and of one float32 or float64 dtype.
    """
    if any(not isinstance(a, np.ndarray) for a in arrays):
        if arrays[0].ndim != 4:
            raise ValueError(f"x must be 4-D (N, C, H, W) when it is a CUDA device array, got "
                             f"shape {tuple(arrays[0].shape)}")
        dtypes = [np.dtype(a.dtype) for a in arrays]
        if len(set(dtypes)) > 1:
            listing = ", ".join(f"{n} is {d}" for n, d in zip(("x", "W", "b"), dtypes))
            raise TypeError(f"mixed dtypes ({listing}); CUDA device arrays must share one "
                            f"dtype: convert them first, e.g. on the host with .astype")
        raise TypeError(f"CUDA device arrays of dtype {dtypes[0]} are not supported; use "
                        f"float32 or float64")
    out_dtype = np.result_type(*arrays)
    compute = np.dtype(np.float32) if out_dtype == HALF else out_dtype
    restore = Restore(arrays[0].ndim == 3, out_dtype, tuple(a.dtype for a in arrays))
    x = arrays[0][None] if restore.unbatched else arrays[0]
    return (x.astype(compute, copy=False),
            *(a.astype(compute, copy=False) for a in arrays[1:])), restore


def compute_dtype(*arrays) -> tuple[np.dtype, np.dtype]:
    """(the dtype results are handed back in, the dtype to compute in) for float arrays.

    NumPy's promotion (``np.result_type``), except that float16 computes in
    float32. Integer or bool arrays raise TypeError naming the cast to use.
    """
    for a in arrays:
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"an array has dtype {a.dtype}; fastconv computes on floats: "
                            f"convert it first, e.g. with .astype(np.float32)")
    out = np.result_type(*arrays)
    return out, (np.dtype(np.float32) if out == HALF else out)


def _restored(a, dtype, unbatched):
    a = np.asarray(a).astype(dtype, copy=False)
    return a[0] if unbatched else a


def _check_dout(dout, saved: Saved):
    """dout as the kernels take it: the forward output's shape and dtype (the caller's)."""
    shape, dtype = saved.spec.out_shape, saved.spec.dtype
    if saved.restore is not None:
        shape = shape[1:] if saved.restore.unbatched else shape
        dtype = saved.restore.out_dtype
    dout = check_array(dout, "dout", len(shape), str(shape))
    if tuple(dout.shape) != shape:
        raise ValueError(f"dout must have the forward output's shape {shape}, "
                         f"got {tuple(dout.shape)}")
    if dout.dtype != dtype:
        raise TypeError(f"dout has dtype {dout.dtype} but forward ran in {dtype}; "
                        f"convert it with dout.astype(np.{dtype})")
    if saved.restore is not None:
        dout = (dout[None] if saved.restore.unbatched else dout).astype(saved.spec.dtype,
                                                                        copy=False)
    return dout


def conv_backward(dout: np.ndarray, saved: Saved,
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dout: (N, FN, OH, OW) -> (dx, dW, db) on the path forward used; dx is None when
    forward ran with ``input_grad=False``."""
    if saved.cache is None:
        raise RuntimeError("conv_backward: the forward ran under fastconv.no_grad(), which "
                           "keeps nothing for a backward; run it outside no_grad()")
    dout = _check_dout(dout, saved)
    dx, dW, db = backends.get_path(saved.path).conv_backward(dout, saved.cache)
    if dx is not None and saved.excess is not None:
        # the gradient of the zeros forward added to x is dropped
        (top, bottom), (left, right) = saved.excess
        H, W = dx.shape[2] - top - bottom, dx.shape[3] - left - right
        dx = np.ascontiguousarray(dx[:, :, top:top + H, left:left + W])
    r = saved.restore
    if r is not None:
        if dx is not None:
            dx = _restored(dx, r.grad_dtypes[0], r.unbatched)
        dW, db = (_restored(g, d, False) for g, d in zip((dW, db), r.grad_dtypes[1:]))
    return dx, dW, db


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None, stride: Pair = 1,
           pad: Padding = 0, dilation: Pair = 1, groups: int = 1, *, flip: bool = False,
           rounding: str = "floor", backend: str = "auto") -> np.ndarray:
    """2-D convolution of a batch: x: (N, C, H, W), W: (FN, C // groups, FH, FW), b: (FN,) or None.

    Returns (N, FN, OH, OW), or (FN, OH, OW) for one image x: (C, H, W). By
    default this is cross-correlation, what deep learning calls convolution
    (``scipy.signal.correlate2d`` per channel); ``flip=True`` flips the filter
    first: true convolution, as ``scipy.signal.convolve2d``.

    stride and dilation are ints or (h, w) pairs; with dilation d the filter's
    taps are d cells apart, so an FxF filter spans d*(F-1)+1 cells. groups
    splits the C input and FN output channels into that many groups, each
    filter seeing only its group's C // groups channels (groups == C with
    FN == C is a depthwise convolution). pad is an int or (h, w) pair (zeros
    on both sides), ``((top, bottom), (left, right))``, "valid" (none) or
    "same": output size ceil(H / stride) per axis, the zeros split with the
    odd one at the bottom/right; with stride 1 this is PyTorch's
    ``padding='same'``, with a larger stride TensorFlow's "SAME" rule (which
    PyTorch refuses). Unequal padding copies x once, zero-padded on the side
    that has more.
    """
    if flip:
        W = check_array(W, "W", 4, "(FN, C, FH, FW)")[:, :, ::-1, ::-1]
    # no backward follows: the path keeps (and copies) nothing for one
    out, _ = _conv_forward(x, W, b, stride, pad, rounding, backend, dilation, groups,
                           input_grad=True, forward_only=True)
    return out


# --------------------------------------------------------------------- pooling

def pool_forward(x: np.ndarray, pool_h: int, pool_w: int, stride: Pair | None = None,
                 pad: Pair = 0,
                 mode: str = "max", rounding: str = "floor",
                 backend: str = "auto", *, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, dilation: Pair = 1,
                 return_indices: bool = False) -> tuple:
    """Checked pooling forward -> (out, saved); ``saved`` feeds pool_backward.

    With return_indices=True (max pooling): (out, indices, saved), indices as
    :func:`pool2d` returns them. The other keywords are :func:`pool2d`'s.
    """
    x = check_array(x, "x", (3, 4), "(N, C, H, W) or one image (C, H, W)")
    restore = None
    if x.ndim == 3 or x.dtype == HALF:
        (x,), restore = _adapt((x,))
    spec = pool_spec(x.shape, pool_h, pool_w, stride, pad, mode, x.dtype, rounding,
                     ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                     divisor_override=divisor_override, dilation=dilation)
    check_return_indices(spec.mode, return_indices, f" (x.shape={tuple(x.shape)})")
    module, path = _path_for(backend, spec, not isinstance(x, np.ndarray))
    out, cache = module.pool_forward(x, spec)
    if restore is not None:
        out = _restored(out, restore.out_dtype, restore.unbatched)
    saved = Saved(path, cache, spec, restore)
    if return_indices:
        return out, _indices(cache.argmax, restore, not isinstance(x, np.ndarray)), saved
    return out, saved


def _indices(argmax, restore, on_device):
    """An int64 copy of a max pooling cache's indices (h*W + w per (n, c) plane), so the
    caller may change them without changing backward; on the device for a device call."""
    if isinstance(argmax, np.ndarray):
        indices = argmax.astype(np.int64)             # always a copy
    elif on_device:                      # device input is batched and float32/64: no restore
        from .kernels._cuda_shim import cuda

        indices = cuda.device_array_like(argmax)
        indices.copy_to_device(argmax)
        return indices
    else:
        indices = argmax.copy_to_host()
    return indices[0] if restore is not None and restore.unbatched else indices


def pool_backward(dout: np.ndarray, saved: Saved) -> np.ndarray:
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W) on the path forward used."""
    dout = _check_dout(dout, saved)
    dx = backends.get_path(saved.path).pool_backward(dout, saved.cache)
    r = saved.restore
    return dx if r is None else _restored(dx, r.grad_dtypes[0], r.unbatched)


def pool2d(x: np.ndarray, pool_h: int, pool_w: int, stride: Pair | None = None, pad: Pair = 0,
           mode: str = "max", *, ceil_mode: bool = False, count_include_pad: bool = True,
           divisor_override: int | None = None, dilation: Pair = 1, return_indices: bool = False,
           rounding: str = "floor",
           backend: str = "auto") -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max or average pooling of x: (N, C, H, W) -> (N, C, OH, OW), or (C, H, W) -> (C, OH, OW).

    stride=None (the default) steps by the window, as PyTorch does and as the
    book's layers are used: 2x2 pooling halves each side.

    Max pooling looks at input cells only (padding never wins); average pooling
    pads with zeros and divides by pool_h*pool_w. Ties in max pooling go to the
    first maximum in row-major window order (a NaN wins, the first NaN).

    PyTorch's options (``torch.nn.functional.max_pool2d``/``avg_pool2d``):

    - ceil_mode: round the output size up, keeping a last partial window
      (clipped to the input) unless it would start in the right padding;
    - count_include_pad (avg): False divides by the input cells of each window
      only; True (default) by the window clipped to the padded input;
    - divisor_override (avg): an int >= 1 that divides every window instead;
    - dilation (max): an int or (h, w) pair, the spacing of the window's taps;
    - return_indices (max): also return indices (N, C, OH, OW) int64, the flat
      index h*W + w of each maximum in its (unpadded) input plane: ``(out, indices)``.
    """
    result = pool_forward(x, pool_h, pool_w, stride, pad, mode, rounding, backend,
                          ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                          divisor_override=divisor_override, dilation=dilation,
                          return_indices=return_indices)
    return result[:2] if return_indices else result[0]


# ------------------------------------------------------- im2col, book layout

def im2col(x: np.ndarray, filter_h: int, filter_w: int, stride: Pair = 1, pad: Pair = 0,
           rounding: str = "floor", dilation: Pair = 1) -> np.ndarray:
    """x: (N, C, H, W) -> col: (N*OH*OW, C*FH*FW), the layout of "Deep Learning from Scratch".

    Rows are output positions, batch-major; columns run over (channel, filter
    row, filter column). A (1, 3, 7, 7) input with a 5x5 filter gives (9, 75).
    With dilation d, filter tap (fy, fx) reads input cell (fy*d, fx*d) of the window.
    """
    from .kernels import unroll

    x = check_array(x, "x", 4, "(N, C, H, W)")
    FH, FW = _as_int(filter_h, "filter_h"), _as_int(filter_w, "filter_w")
    spec = conv_spec(x.shape, (1, x.shape[1], FH, FW), stride, pad, x.dtype, rounding,
                     dilation=dilation)
    return unroll.im2col(x, spec)


def col2im(col: np.ndarray, input_shape: tuple[int, int, int, int], filter_h: int, filter_w: int,
           stride: Pair = 1, pad: Pair = 0, rounding: str = "floor",
           dilation: Pair = 1) -> np.ndarray:
    """col: (N*OH*OW, C*FH*FW) -> (N, C, H, W): the adjoint of im2col (overlaps add)."""
    from .kernels import unroll

    col = check_array(col, "col", 2, "(N*OH*OW, C*FH*FW)")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    shape = tuple(_as_int(s, "input_shape") for s in input_shape)
    FH, FW = _as_int(filter_h, "filter_h"), _as_int(filter_w, "filter_w")
    spec = conv_spec(shape, (1, shape[1], FH, FW), stride, pad, col.dtype, rounding,
                     dilation=dilation)
    N, C = shape[:2]
    OH, OW = spec.out_hw
    expected = (N * OH * OW, C * FH * FW)
    if tuple(col.shape) != expected:
        raise ValueError(
            f"col must have shape (N*OH*OW, C*FH*FW) = {expected} for input_shape "
            f"{shape}, got {tuple(col.shape)}")
    return unroll.col2im(col, spec)
