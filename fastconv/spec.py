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
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import _as_int, as_pair, check_rounding, output_hw

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
POOL_MODES = ("max", "avg")


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution (cross-correlation): the shapes and arguments, checked.

    x_shape (N, C, H, W); w_shape (FN, C // groups, FH, FW); stride, pad,
    dilation: (h, w) pairs; out_hw: (OH, OW); dtype: float32 or float64.
    """

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out_hw: tuple[int, int]
    dtype: np.dtype
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    op = "conv"

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, FN, OH, OW)."""
        return (self.x_shape[0], self.w_shape[0], *self.out_hw)

    @property
    def filter_hw(self) -> tuple[int, int]:
        return self.w_shape[2], self.w_shape[3]

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
                f"{extra} {self.dtype.name} -> out {self.out_shape}")


@dataclass(frozen=True)
class PoolSpec:
    """One 2-D pooling: x_shape (N, C, H, W), pool_hw, stride, pad, out_hw, mode, dtype."""

    x_shape: tuple[int, int, int, int]
    pool_hw: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out_hw: tuple[int, int]
    mode: str
    dtype: np.dtype

    op = "pool"

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, C, OH, OW)."""
        return (*self.x_shape[:2], *self.out_hw)

    def describe(self) -> str:
        return (f"{self.mode} pool x={self.x_shape} window={self.pool_hw} stride={self.stride} "
                f"pad={self.pad} {self.dtype.name} -> out {self.out_shape}")


# ------------------------------------------------------------------- builders

def _shape(value, name: str, layout: str) -> tuple[int, ...]:
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
    dilation, groups = as_pair(dilation, "dilation"), _as_int(groups, "groups")
    if min(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if groups < 1 or x_shape[1] % groups or w_shape[0] % groups:
        raise ValueError(
            f"groups={groups} must be >= 1 and divide both x's channels C={x_shape[1]} "
            f"(x.shape={x_shape}) and W's filters FN={w_shape[0]} (W.shape={w_shape})")
    if x_shape[1] != w_shape[1] * groups:
        raise ValueError(
            f"x has C={x_shape[1]} channels (x.shape={x_shape}) but W expects "
            f"C={w_shape[1]} (W.shape={w_shape})")
    stride, pad = _stride_pad(stride, pad)
    # a dilated filter spans d*(F-1)+1 cells: the output size is that of a dense filter so large
    extent = tuple(d * (f - 1) + 1 for d, f in zip(dilation, w_shape[2:]))
    out_hw = output_hw(x_shape[2:], extent, stride, pad, check_rounding(rounding),
                       "W's filter" if dilation == (1, 1) else "W's dilated filter")
    return ConvSpec(x_shape, w_shape, stride, pad, out_hw, _dtype(dtype), dilation, groups)


def conv_spec(x_shape, w_shape, stride=1, pad=0, dtype="float32", rounding="floor", *,
              dilation=1, groups=1) -> ConvSpec:
    """The checked :class:`ConvSpec` for x: (N, C, H, W) and W: (FN, C, FH, FW).

    stride, pad and dilation are ints or (h, w) pairs; rounding is "floor" or
    "exact" (see ``fastconv.conv_output_size``). Raises ValueError or
    TypeError naming the argument and the shapes.
    """
    # Lists become tuples (the cache needs hashable keys); the hot path, a layer
    # that passes tuples, pays one lookup and no Python-level checking.
    return _conv_spec(tuple(x_shape), tuple(w_shape),
                      tuple(stride) if isinstance(stride, list) else stride,
                      tuple(pad) if isinstance(pad, list) else pad, np.dtype(dtype), rounding,
                      tuple(dilation) if isinstance(dilation, list) else dilation, groups)


@lru_cache(maxsize=512)
def _pool_spec(x_shape, pool_h, pool_w, stride, pad, mode, dtype, rounding) -> PoolSpec:
    x_shape = _shape(x_shape, "x", "(N, C, H, W)")
    pool_hw = (_as_int(pool_h, "pool_h"), _as_int(pool_w, "pool_w"))
    if min(pool_hw) < 1:
        raise ValueError(f"pool window (pool_h, pool_w) must be >= 1, got {pool_hw}")
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    stride, pad = _stride_pad(pool_hw if stride is None else stride, pad)
    if pad[0] >= pool_hw[0] or pad[1] >= pool_hw[1]:
        raise ValueError(
            f"pad {pad} must be smaller than the pool window {pool_hw}, or some windows "
            f"would hold padding only")
    out_hw = output_hw(x_shape[2:], pool_hw, stride, pad, check_rounding(rounding), "pool window")
    return PoolSpec(x_shape, pool_hw, stride, pad, out_hw, mode, _dtype(dtype))


def pool_spec(x_shape, pool_h, pool_w, stride=None, pad=0, mode="max", dtype="float32",
              rounding="floor") -> PoolSpec:
    """The checked :class:`PoolSpec` for pooling x: (N, C, H, W) with a pool_h x pool_w window.

    stride=None steps by the window (PyTorch's default).
    """
    return _pool_spec(tuple(x_shape), pool_h, pool_w,
                      tuple(stride) if isinstance(stride, list) else stride,
                      tuple(pad) if isinstance(pad, list) else pad, mode, np.dtype(dtype), rounding)


def batch_bucket(n: int) -> int:
    """The batch size that stands for ``n`` in the auto-tuner's choices: the next power of two.

    A path's relative speed changes slowly with the batch size, so one
    measurement serves every batch of 33-64 images (say) alike.
    """
    return 1 << max(0, math.ceil(math.log2(n)))
