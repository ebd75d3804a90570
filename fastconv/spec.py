"""The frozen description of one convolution or pooling problem.

A :class:`ConvSpec` or :class:`PoolSpec` is built once, at the public entry
point (``fastconv.functional``), from the array shapes and the layer's
arguments, and every argument is checked while it is built. Dispatch, the
auto-tuner, ``explain`` and the kernels then read its fields and never check or
normalise anything again: a spec that exists is valid.

Specs are immutable and hashable, so they serve as dictionary keys (the
auto-tuner's memory) and the builders keep the specs of recent shapes
(``functools.lru_cache``), so that a layer called again with the same shapes
pays for no checking at all.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import (_as_int, as_pair, check_ceil_rounding, check_dilation, check_rounding,
                       output_hw, pool_output_hw, span)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
POOL_MODES = ("max", "avg")


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution (cross-correlation): the shapes and arguments, checked.

    x_shape (N, C, H, W); w_shape (FN, C // groups, FH, FW); stride, pad,
    dilation: (h, w) pairs; out_hw: (OH, OW); dtype: float32 or float64.
    input_grad: whether backward computes dx; False for a network's first
    layer, which has no layer below to take it (dx costs about as much as dW).
    forward_only: no backward will follow (``fastconv.conv2d``): the paths keep
    nothing for one, so they copy neither x nor W, and return None as the cache.
    """

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out_hw: tuple[int, int]
    dtype: np.dtype
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    input_grad: bool = True
    forward_only: bool = False

    op = "conv"

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, FN, OH, OW)."""
        return (self.x_shape[0], self.w_shape[0], *self.out_hw)

    @property
    def filter_hw(self) -> tuple[int, int]:
        return self.w_shape[2], self.w_shape[3]

    @property
    def extent(self) -> tuple[int, int]:
        """(h, w) input cells one filter spans: dilation*(F-1) + 1 per axis (F without dilation)."""
        return tuple(span(f, d) for f, d in zip(self.filter_hw, self.dilation))

    @property
    def field(self) -> int:
        """Values one output sums over: C/groups * FH * FW (the GEMM's reduction length)."""
        return self.w_shape[1] * self.w_shape[2] * self.w_shape[3]

    @property
    def flops(self) -> int:
        """Forward FLOPs, a multiply and an add counting one each: 2*N*FN*field*OH*OW."""
        N, FN = self.x_shape[0], self.w_shape[0]
        return 2 * N * FN * self.field * self.out_hw[0] * self.out_hw[1]

    def describe(self) -> str:
        extra = "" if self.dilation == (1, 1) else f" dilation={self.dilation}"
        extra += "" if self.groups == 1 else f" groups={self.groups}"
        return (f"conv x={self.x_shape} W={self.w_shape} stride={self.stride} pad={self.pad}"
                f"{extra} {self.dtype.name} -> out {self.out_shape}"
                f"{'' if self.input_grad else ', no dx'}")


@dataclass(frozen=True)
class PoolSpec:
    """One 2-D pooling: x_shape (N, C, H, W), pool_hw, stride, pad, out_hw, mode, dtype.

    The options that change what is computed, PyTorch's: ceil_mode (keep a last,
    partial window, clipped to the input), count_include_pad (avg: padded cells
    count in the divisor), divisor_override (avg: this divisor for every window,
    or None) and dilation (max: taps (h, w) cells apart).
    """

    x_shape: tuple[int, int, int, int]
    pool_hw: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out_hw: tuple[int, int]
    mode: str
    dtype: np.dtype
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    dilation: tuple[int, int] = (1, 1)

    op = "pool"

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, C, OH, OW)."""
        return (*self.x_shape[:2], *self.out_hw)

    @property
    def options(self) -> dict:
        """The computation options as keywords of ``pool_spec``/``pool2d``."""
        return dict(ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override, dilation=self.dilation)

    @property
    def extent(self) -> tuple[int, int]:
        """(h, w) cells one window spans: dilation*(pool - 1) + 1 along each axis."""
        return tuple(span(k, d) for k, d in zip(self.pool_hw, self.dilation))

    def describe(self) -> str:
        extra = "".join(f" {name}={value}" for name, value in self.options.items()
                        if value != POOL_DEFAULTS[name])
        return (f"{self.mode} pool x={self.x_shape} window={self.pool_hw} stride={self.stride} "
                f"pad={self.pad}{extra} {self.dtype.name} -> out {self.out_shape}")


POOL_DEFAULTS = dict(ceil_mode=False, count_include_pad=True, divisor_override=None,
                     dilation=(1, 1))


# ------------------------------------------------------------------- builders

def _shape(value, name: str, layout: str) -> tuple[int, ...]:
    if isinstance(value, np.ndarray) and value.ndim > 1:
        # an array where its shape belongs: name the shape, not thousands of values
        raise ValueError(f"{name} must be a 4-tuple {layout}, got an array of shape "
                         f"{value.shape}; pass its .shape")
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise ValueError(f"{name} must be a 4-tuple {layout}, got {value!r}")
    dims = tuple(_as_int(v, name) for v in value)
    if min(dims) < 1:
        raise ValueError(f"{name} must not be empty (every dimension >= 1), got {dims}")
    return dims


def _dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _stride_pad(stride, pad) -> tuple[tuple[int, int], tuple[int, int]]:
    stride, pad = as_pair(stride, "stride"), as_pair(pad, "pad")
    if min(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if min(pad) < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return stride, pad


@lru_cache(maxsize=512)
def _conv_spec(x_shape, w_shape, stride, pad, dtype, rounding, dilation, groups) -> ConvSpec:
    x_shape = _shape(x_shape, "x", "(N, C, H, W)")
    w_shape = _shape(w_shape, "W", "(FN, C, FH, FW)")
    dilation, groups = check_dilation(dilation), check_groups(groups)
    C, FN = x_shape[1], w_shape[0]
    if groups == 1 and C != w_shape[1]:
        raise ValueError(
            f"x has C={C} channels (x.shape={x_shape}) but W expects "
            f"C={w_shape[1]} (W.shape={w_shape})")
    if C % groups:
        raise ValueError(
            f"groups={groups} must divide the input channels C={C} "
            f"(x.shape={x_shape}, W.shape={w_shape})")
    if C != w_shape[1] * groups:
        raise ValueError(
            f"x has C={C} channels (x.shape={x_shape}) but W.shape={w_shape} with "
            f"groups={groups} expects C = W.shape[1]*groups = {w_shape[1] * groups}")
    if FN % groups:
        raise ValueError(
            f"groups={groups} must divide the number of filters FN={FN} "
            f"(W.shape={w_shape}, x.shape={x_shape})")
    stride, pad = _stride_pad(stride, pad)
    out_hw = output_hw(x_shape[2:], w_shape[2:], stride, pad, check_rounding(rounding),
                       "W's filter", dilation)
    return ConvSpec(x_shape, w_shape, stride, pad, out_hw, _dtype(dtype), dilation, groups)


@lru_cache(maxsize=512)
def without_input_grad(spec: ConvSpec) -> ConvSpec:
    """``spec`` with ``input_grad=False``: backward computes dW and db only."""
    return dataclasses.replace(spec, input_grad=False)


@lru_cache(maxsize=512)
def as_forward_only(spec: ConvSpec, only: bool = True) -> ConvSpec:
    """``spec`` with ``forward_only=only`` (True: no cache is kept for a backward)."""
    return dataclasses.replace(spec, forward_only=only)


def check_groups(groups) -> int:
    """``groups`` as an int >= 1 (whether it divides C and FN needs the shapes: the spec checks)."""
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return groups


PAIR_FORMS = "an int or an (h, w) pair of ints"
PAD_FORMS = "an int, an (h, w) pair, ((top, bottom), (left, right)), 'valid' or 'same'"


def cache_key(value, name: str, forms: str = PAIR_FORMS):
    """``value`` in a form the specs' caches can hash: NumPy arrays and lists (nested
    too) become tuples; anything else unhashable is a TypeError naming ``name``.

    The entry points call it only after a cache look-up failed on an unhashable
    argument, so a layer that passes tuples never pays for it.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        value = tuple(cache_key(v, name, forms) if isinstance(v, (list, tuple, np.ndarray))
                      else v for v in value)
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{name} must be {forms}, got {value!r} "
                        f"({type(value).__name__})") from None
    return value


def conv_spec(x_shape, w_shape, stride=1, pad=0, dtype="float32", rounding="floor", *,
              dilation=1, groups=1) -> ConvSpec:
    """The checked :class:`ConvSpec` for x: (N, C, H, W) and W: (FN, C // groups, FH, FW).

    stride, pad and dilation are ints or (h, w) pairs (pad symmetric: the
    padding forms of ``fastconv.conv2d`` are resolved there, before a spec is
    built); groups is an int that divides C and FN; rounding is "floor" or
    "exact" (see ``fastconv.conv_output_size``). Raises ValueError or
    TypeError naming the argument and the shapes.
    """
    # The hot path, a layer that passes tuples, pays one lookup and no Python-level
    # checking.
    try:
        return _conv_spec(tuple(x_shape), tuple(w_shape), stride, pad, np.dtype(dtype), rounding,
                          dilation, groups)
    except TypeError:
        # an unhashable argument never reaches the checks inside the cache: name it,
        # or (a list, an array) make it hashable and look again
        return _conv_spec(tuple(x_shape), tuple(w_shape), cache_key(stride, "stride"),
                          cache_key(pad, "pad"), np.dtype(dtype),
                          cache_key(rounding, "rounding", "'floor' or 'exact'"),
                          cache_key(dilation, "dilation"), cache_key(groups, "groups", "an int"))


def check_flag(value, name: str) -> bool:
    """``value`` as a bool: True or False (NumPy's too), else a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_pool_options(mode, ceil_mode=False, count_include_pad=True, divisor_override=None,
                       dilation=1) -> tuple[bool, bool, int | None, tuple[int, int]]:
    """The pooling options checked and normalised -> (ceil_mode, count_include_pad,
    divisor_override, dilation as an (h, w) pair); the one place they are checked.

    count_include_pad and divisor_override choose an average's divisor and
    dilation spreads a maximum's taps: each is refused with the other mode, as
    PyTorch's max_pool2d and avg_pool2d have no such argument.
    """
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    ceil_mode = check_flag(ceil_mode, "ceil_mode")
    count_include_pad = check_flag(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = _as_int(divisor_override, "divisor_override")
        if divisor_override < 1:
            raise ValueError(f"divisor_override must be an int >= 1 or None, got {divisor_override}")
    dilation = check_dilation(dilation)
    if mode == "avg" and dilation != (1, 1):
        raise ValueError(f"dilation {dilation} applies to max pooling only; average pooling "
                         f"has no dilation (PyTorch's avg_pool2d neither)")
    if mode == "max" and (divisor_override is not None or not count_include_pad):
        raise ValueError(
            f"count_include_pad and divisor_override choose the divisor of average pooling; "
            f"max pooling takes neither (got count_include_pad={count_include_pad}, "
            f"divisor_override={divisor_override})")
    return ceil_mode, count_include_pad, divisor_override, dilation


def check_return_indices(mode, return_indices, where: str = "") -> bool:
    """``return_indices`` as a bool, refused with average pooling; ``where`` ends the
    message (e.g. the input's shape)."""
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"return_indices must be True or False, got {return_indices!r} "
                        f"({type(return_indices).__name__})")
    if return_indices and mode != "max":
        raise ValueError(f"return_indices=True needs mode='max': average pooling has no "
                         f"maximum to point at{where}")
    return bool(return_indices)


def _padding_only_window(size, stride, pad, dilation, out):
    """The first output index along one axis whose taps all land in the padding, or None.

    Only windows starting in the left padding can miss the input (a window
    starting inside it has a real first tap); their first tap at or past the
    input's start lies at (start mod dilation), which repeats every `dilation`
    windows at most.
    """
    for o in range(min(out, -(-pad // stride), dilation)):
        if (o * stride - pad) % dilation >= size:
            return o
    return None


@lru_cache(maxsize=512)
def _pool_spec(x_shape, pool_h, pool_w, stride, pad, mode, dtype, rounding, ceil_mode,
               count_include_pad, divisor_override, dilation) -> PoolSpec:
    x_shape = _shape(x_shape, "x", "(N, C, H, W)")
    pool_hw = (_as_int(pool_h, "pool_h"), _as_int(pool_w, "pool_w"))
    if min(pool_hw) < 1:
        raise ValueError(f"pool window (pool_h, pool_w) must be >= 1, got {pool_hw}")
    ceil_mode, count_include_pad, divisor_override, dilation = check_pool_options(
        mode, ceil_mode, count_include_pad, divisor_override, dilation)
    check_ceil_rounding(ceil_mode, rounding)
    stride, pad = _stride_pad(pool_hw if stride is None else stride, pad)
    extent = tuple(span(k, d) for k, d in zip(pool_hw, dilation))
    if pad[0] >= extent[0] or pad[1] >= extent[1]:
        spans = "" if dilation == (1, 1) else f" (spanning {extent} with dilation {dilation})"
        raise ValueError(
            f"pad {pad} must be smaller than the pool window {pool_hw}{spans}, or some windows "
            f"would hold padding only")
    out_hw = pool_output_hw(x_shape[2:], pool_hw, stride, pad, dilation, ceil_mode,
                            check_rounding(rounding))
    for axis, size, s, p, d, o in zip(("row", "column"), x_shape[2:], stride, pad, dilation,
                                      out_hw):
        bad = _padding_only_window(size, s, p, d, o)
        if bad is not None:
            raise ValueError(
                f"output {axis} {bad} of pooling x={x_shape} with window {pool_hw}, "
                f"dilation {dilation}, stride {stride}, pad {pad} would hold padding only "
                f"(every tap misses the input); use less padding or a smaller dilation")
    return PoolSpec(x_shape, pool_hw, stride, pad, out_hw, mode, _dtype(dtype), ceil_mode,
                    count_include_pad, divisor_override, dilation)


def pool_spec(x_shape, pool_h, pool_w, stride=None, pad=0, mode="max", dtype="float32",
              rounding="floor", *, ceil_mode=False, count_include_pad=True, divisor_override=None,
              dilation=1) -> PoolSpec:
    """The checked :class:`PoolSpec` for pooling x: (N, C, H, W) with a pool_h x pool_w window.

    stride=None steps by the window (PyTorch's default). ceil_mode,
    count_include_pad, divisor_override and dilation as PyTorch's max_pool2d and
    avg_pool2d take them (see ``fastconv.pool2d``).
    """
    try:
        return _pool_spec(tuple(x_shape), pool_h, pool_w, stride, pad, mode, np.dtype(dtype),
                          rounding, ceil_mode, count_include_pad, divisor_override, dilation)
    except TypeError:
        # an unhashable option never reaches the checks inside the cache: name it here,
        # or (an array, a nested list) make it hashable and look again
        check_pool_options(cache_key(mode, "mode", f"one of {POOL_MODES}"),
                           cache_key(ceil_mode, "ceil_mode", "True or False"),
                           cache_key(count_include_pad, "count_include_pad", "True or False"),
                           divisor_override, cache_key(dilation, "dilation"))
        return _pool_spec(tuple(x_shape), cache_key(pool_h, "pool_h", "an int"),
                          cache_key(pool_w, "pool_w", "an int"), cache_key(stride, "stride"),
                          cache_key(pad, "pad"), mode, np.dtype(dtype),
                          cache_key(rounding, "rounding", "'floor' or 'exact'"), ceil_mode,
                          count_include_pad, divisor_override, cache_key(dilation, "dilation"))


def batch_bucket(n: int) -> int:
    """The batch size that stands for ``n`` in the auto-tuner's choices: the next power of two.

    A path's relative speed changes slowly with the batch size, so one
    measurement serves every batch of 33-64 images (say) alike.
    """
    return 1 << max(0, math.ceil(math.log2(n)))
