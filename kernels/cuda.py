"""The cuda path: ``numba.cuda`` kernels for convolution and pooling on an NVIDIA GPU.

Same API and semantics as ``fastconv.kernels.naive`` (cross-correlation; zero
padding for convolution and average pooling; max pooling reads input cells
only; PyTorch's pooling options and divisors; the first maximum in row-major
window order wins ties). float32 stays float32 and float64 stays float64: every
kernel is built once per dtype (``_kernels``), with its accumulators, constants
and shared-memory tiles in that dtype.

Arrays in and out:
- NumPy arrays are copied to the device, the kernels run, and NumPy arrays come
  back;
- Numba device arrays (or anything with ``__cuda_array_interface__``) stay on
  the device and device arrays are returned, so activations can stay on the GPU
  from layer to layer. A call returns device arrays when any of its array
  arguments is on the device.

Dilation and groups: tap (fy, fx) of output (i, j) reads padded input cell
(i*sh + fy*dh, j*sw + fx*dw), and filter k reads only the C/groups channels of
its group g = k // (FN/groups), from channel g*C/groups on; every kernel does
this in its index arithmetic (integers only, so float32 kernels stay float32).

Race-free and deterministic: every output element is written by exactly one
thread, which sums its terms in a fixed order. ``dx`` is computed in gather form
(one thread per input element sums the outputs that touch it) instead of
scattering with atomics; ``dW`` (one block per filter-channel pair) and ``db``
(one block per filter) add per-thread partial sums with a fixed-shape tree in
shared memory, never float atomics, so repeated runs give bit-identical results.

Two forward kernels: ``"tiled"`` (the default, an implicit GEMM with
shared-memory tiles) and ``"simple"`` (one thread per output, the readable
baseline); ``FORWARD_KERNEL`` names the one ``conv_forward`` runs.

Import this module only through ``fastconv.backends``; it needs a GPU or the
simulator (``NUMBA_ENABLE_CUDASIM=1``) at call time, not at import time.
"""
import functools
import math
from typing import NamedTuple

import numpy as np

from ._cuda_shim import cuda

FORWARD_KERNELS = ("tiled", "simple")
# The forward kernel conv_forward runs; "simple" is the readable baseline.
FORWARD_KERNEL = "tiled"

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    x: object              # device copies of x and W
    W: object
    spec: object


class PoolCache(NamedTuple):
    argmax: object         # device (N, C, OH, OW) int64 h*W + w, or a (1, 1, 1, 1) placeholder for avg
    spec: object


def supports(spec):
    """Every spec fastconv can describe, any dilation and groups included."""
    return True


def plan(spec):
    """How this path computes ``spec``: the forward kernel and its launch shape."""
    if spec.op != "conv":
        return {"method": "one thread per output (forward) and per input (backward)"}
    N, FN, OH, OW = spec.out_shape
    # the tiled kernel's filter tiles never straddle two groups
    return {"method": f"{FORWARD_KERNEL} forward kernel", "forward_kernel": FORWARD_KERNEL,
            "blocks": (math.ceil(N * OH * OW / TILE_P),
                       spec.groups * math.ceil(FN // spec.groups / TILE_K)),
            "dilation": spec.dilation, "groups": spec.groups}


def release_workspace():
    """Nothing to release: device memory is freed with the arrays that hold it."""

# One-thread-per-element kernels: 1-D blocks of this many threads.
_THREADS = 128

# Tiled forward: a block computes a TILE_K x TILE_P tile of the output matrix
# out[k, p] (k = output channel, p = flattened (n, i, j) position) with 16x16
# threads, each owning MICRO x MICRO outputs; the reduction axis
# r = (c, fy, fx) is walked in slices of TILE_R.
_TB = 16
_MICRO = 4
TILE_K = _TB * _MICRO
TILE_P = _TB * _MICRO
TILE_R = 16
_X_ROWS_PER_PASS = _TB * _TB // TILE_P     # im2col tile rows one pass of the block loads
_W_COLS_PER_PASS = _TB * _TB // TILE_R     # filter tile channels one pass loads
# +1 column: the filter tile is written down its columns, and the padding
# spreads those writes over the shared-memory banks.
_SW_COLS = TILE_K + 1
_SW_SIZE = TILE_R * _SW_COLS
_SX_SIZE = TILE_R * TILE_P
# Indexing with an unsigned integer lets Numba skip its negative-index fix-up.
_U = np.uint64

# Reductions (dW, db): blocks of at most this many threads (a power of two).
_REDUCE_THREADS = 256
# ... and at least this many terms per thread, so a small problem gets a small
# block (no idle threads) and the strided per-thread loop always runs.
_TERMS_PER_THREAD = 4


def _build(dtype):
    """Compile-on-first-call kernels for one dtype (np.float32 or np.float64)."""
    ft = dtype.type
    zero = ft(0)
    neg_inf = ft(-np.inf)

    # Forward, simple: one thread per output (n, k, i, j) walks its whole
    # C x FH x FW window from global memory; readable, but every input value is
    # re-read by each of the K filters and FH*FW neighbouring outputs.
    @cuda.jit
    def conv_forward_simple(x, W, b, out, sh, sw, ph, pw, dh, dw, groups):
        N, C, H, Wd = x.shape
        K, Cg, FH, FW = W.shape
        OH, OW = out.shape[2], out.shape[3]
        idx = cuda.grid(1)
        if idx >= N * K * OH * OW:
            return
        j = idx % OW
        t = idx // OW
        i = t % OH
        t //= OH
        k = t % K
        n = t // K
        c0 = (k // (K // groups)) * Cg          # the first channel of filter k's group
        acc = zero
        for c in range(Cg):
            for fy in range(FH):
                iy = i * sh - ph + fy * dh
                for fx in range(FW):
                    ix = j * sw - pw + fx * dw
                    # a padded cell is a zero term, as in the naive path: with a
                    # weight that is inf or nan it makes the output nan
                    v = zero
                    if iy >= 0 and iy < H and ix >= 0 and ix < Wd:
                        v = x[n, c0 + c, iy, ix]
                    acc += v * W[k, c, fy, fx]
        out[n, k, i, j] = acc + b[k]

    # Forward, tiled: implicit GEMM out[k, p] = W[k, r] @ col[r, p]; each block
    # stages a TILE_R slice of the filters and of the (never materialised)
    # im2col matrix in shared memory, and each thread keeps a 4x4 register tile
    # of outputs, so every value loaded from global memory is reused 64 times
    # and every shared-memory read feeds 4 multiply-adds. rtab[r] = (c, fy, fx)
    # replaces the 64-bit divisions that would otherwise decode r in each slice.
    # With groups, blockIdx.y numbers (group, filter tile of that group): a
    # block's filters all read the same C/groups channels.
    @cuda.jit
    def conv_forward_tiled(x, W, b, rtab, out, sh, sw, ph, pw, dh, dw, groups):
        N, C, H, Wd = x.shape
        K, Cg, FH, FW = W.shape
        OH, OW = out.shape[2], out.shape[3]
        OHW = OH * OW
        P = N * OHW
        R = Cg * FH * FW
        Kg = K // groups
        k_tiles = (Kg + TILE_K - 1) // TILE_K    # filter tiles per group
        sWf = cuda.shared.array(_SW_SIZE, ft)        # [r, k] at r * _SW_COLS + k
        sXf = cuda.shared.array(_SX_SIZE, ft)        # [r, p] at r * TILE_P + p
        acc = cuda.local.array((_MICRO, _MICRO), ft)
        xs = cuda.local.array(_MICRO, ft)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * _TB + tx
        p0 = cuda.blockIdx.x * TILE_P
        g = cuda.blockIdx.y // k_tiles
        k0 = g * Kg + (cuda.blockIdx.y % k_tiles) * TILE_K
        k_end = (g + 1) * Kg
        c0 = g * Cg
        for a in range(_MICRO):
            for q in range(_MICRO):
                acc[a, q] = zero

        # The im2col column this thread loads is fixed: decode its position once.
        lp = tid % TILE_P
        lr0 = tid // TILE_P
        p = p0 + lp
        p_ok = p < P
        n = p // OHW
        s = p - n * OHW
        oi = s // OW
        iy0 = oi * sh - ph
        ix0 = (s - oi * OW) * sw - pw
        # The filter column (reduction index) this thread loads, per slice.
        lr_w = tid % TILE_R
        lk0 = tid // TILE_R

        for r0 in range(0, R, TILE_R):
            for q in range(TILE_R // _X_ROWS_PER_PASS):
                lr = lr0 + q * _X_ROWS_PER_PASS
                r = r0 + lr
                v = zero
                if p_ok and r < R:
                    iy = iy0 + rtab[r, 1] * dh
                    ix = ix0 + rtab[r, 2] * dw
                    if iy >= 0 and iy < H and ix >= 0 and ix < Wd:
                        v = x[n, c0 + rtab[r, 0], iy, ix]
                sXf[lr * TILE_P + lp] = v
            r = r0 + lr_w
            if r < R:
                c = rtab[r, 0]
                fy = rtab[r, 1]
                fx = rtab[r, 2]
            for q in range(TILE_K // _W_COLS_PER_PASS):
                lk = lk0 + q * _W_COLS_PER_PASS
                k = k0 + lk
                v = zero
                if r < R and k < k_end:
                    v = W[k, c, fy, fx]
                sWf[lr_w * _SW_COLS + lk] = v
            cuda.syncthreads()
            # unsigned offsets into the flat tiles: no negative-index fix-ups
            # in the innermost loop
            xo = _U(tx)
            wo = _U(ty)
            for rr in range(TILE_R):
                for q in range(_MICRO):
                    xs[q] = sXf[xo + _U(q * _TB)]
                for a in range(_MICRO):
                    w = sWf[wo + _U(a * _TB)]
                    for q in range(_MICRO):
                        acc[a, q] += w * xs[q]
                xo += _U(TILE_P)
                wo += _U(_SW_COLS)
            cuda.syncthreads()

        for q in range(_MICRO):
            p = p0 + tx + q * _TB
            if p < P:
                n = p // OHW
                s = p - n * OHW
                i = s // OW
                j = s - i * OW
                for a in range(_MICRO):
                    k = k0 + ty + a * _TB
                    if k < k_end:
                        out[n, k, i, j] = acc[a, q] + b[k]

    # dx, gather form: one thread per input element (n, c, y, x) sums
    # dout * W over the outputs whose windows cover it; no two threads write
    # the same element, so no atomics and a fixed summation order.
    # With groups, channel c gathers from its group's filters only.
    @cuda.jit
    def conv_dx(dout, W, dx, sh, sw, ph, pw, dh, dw, groups):
        N, C, H, Wd = dx.shape
        K, Cg, FH, FW = W.shape
        OH, OW = dout.shape[2], dout.shape[3]
        idx = cuda.grid(1)
        if idx >= N * C * H * Wd:
            return
        xq = idx % Wd
        t = idx // Wd
        y = t % H
        t //= H
        c = t % C
        n = t // C
        g = c // Cg
        cg = c - g * Cg                           # c's index within its group
        Kg = K // groups
        acc = zero
        for fy in range(FH):
            ty = y + ph - fy * dh                 # = i * sh for the output row i that uses it
            if ty < 0 or ty % sh != 0 or ty // sh >= OH:
                continue
            i = ty // sh
            for fx in range(FW):
                tx = xq + pw - fx * dw
                if tx < 0 or tx % sw != 0 or tx // sw >= OW:
                    continue
                j = tx // sw
                for k in range(g * Kg, (g + 1) * Kg):
                    acc += dout[n, k, i, j] * W[k, cg, fy, fx]
        dx[n, c, y, xq] = acc

    # dW: one block per (k, c) pair (c within filter k's group); for each
    # (fy, fx) its threads sum strided slices of the N*OH*OW products
    # (neighbouring threads read neighbouring dout and x cells), then a
    # fixed-shape tree in shared memory adds the partial sums, so the order
    # never depends on timing.
    @cuda.jit
    def conv_dw(x, dout, dW, sh, sw, ph, pw, dh, dw, groups):
        N, C, H, Wd = x.shape
        K, Cg, FH, FW = dW.shape
        OH, OW = dout.shape[2], dout.shape[3]
        OHW = OH * OW
        buf = cuda.shared.array(_REDUCE_THREADS, ft)
        t = cuda.threadIdx.x
        T = cuda.blockDim.x
        k = cuda.blockIdx.x // Cg
        c = cuda.blockIdx.x % Cg
        cx = (k // (K // groups)) * Cg + c        # c's channel in x
        for fy in range(FH):
            for fx in range(FW):
                part = zero
                for n in range(N):
                    for s in range(t, OHW, T):
                        i = s // OW
                        j = s - i * OW
                        iy = i * sh - ph + fy * dh
                        ix = j * sw - pw + fx * dw
                        # a padded cell is a zero term (nan against an inf in dout)
                        v = zero
                        if iy >= 0 and iy < H and ix >= 0 and ix < Wd:
                            v = x[n, cx, iy, ix]
                        part += dout[n, k, i, j] * v
                buf[t] = part
                cuda.syncthreads()
                half = T // 2
                while half > 0:
                    if t < half:
                        buf[t] += buf[t + half]
                    cuda.syncthreads()
                    half //= 2
                # No barrier needed before the next (fy, fx) refills buf: the
                # tree's last reads were fenced by its last syncthreads, and
                # buf[0] is only ever written by thread 0 itself.
                if t == 0:
                    dW[k, c, fy, fx] = buf[0]

    # db: one block per filter k, the same strided sum and fixed tree over
    # dout[:, k] as dW uses.
    @cuda.jit
    def conv_db(dout, db):
        N, K, OH, OW = dout.shape
        OHW = OH * OW
        buf = cuda.shared.array(_REDUCE_THREADS, ft)
        t = cuda.threadIdx.x
        T = cuda.blockDim.x
        k = cuda.blockIdx.x
        part = zero
        for n in range(N):
            for s in range(t, OHW, T):
                i = s // OW
                part += dout[n, k, i, s - i * OW]
        buf[t] = part
        cuda.syncthreads()
        half = T // 2
        while half > 0:
            if t < half:
                buf[t] += buf[t + half]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            db[k] = buf[0]

    # An average window's divisor along one axis: the window clipped to the
    # padded input (count_include_pad), or to the input alone. start is the
    # window's first cell in input coordinates (negative in the padding).
    @cuda.jit(device=True)
    def pool_length(start, k, size, pad, count_include_pad):
        stop = min(start + k, size + pad)
        if not count_include_pad:
            start = max(start, 0)
            stop = min(stop, size)
        return stop - start

    # Pooling forward: one thread per output (n, c, i, j) scans its window's
    # input cells in row-major order (taps dh, dw apart; cells past the input,
    # padding or ceil_mode's clipped edge, are skipped); max keeps the first
    # maximum (as np.argmax: NaN wins; padding never does) and its index
    # h*W + w for backward, avg divides the sum by the window's divisor
    # (divisor_override when it is > 0).
    @cuda.jit
    def pool_forward(x, out, argmax, PH, PW, sh, sw, ph, pw, dh, dw, is_max, count_include_pad,
                     divisor_override):
        N, C, H, Wd = x.shape
        OH, OW = out.shape[2], out.shape[3]
        idx = cuda.grid(1)
        if idx >= N * C * OH * OW:
            return
        j = idx % OW
        t = idx // OW
        i = t % OH
        t //= OH
        c = t % C
        n = t // C
        y0 = i * sh - ph
        x0 = j * sw - pw
        if is_max:
            best = neg_inf
            best_at = -1
            for ky in range(PH):
                iy = y0 + ky * dh
                if iy < 0 or iy >= H:
                    continue
                for kx in range(PW):
                    ix = x0 + kx * dw
                    if ix < 0 or ix >= Wd:
                        continue
                    v = x[n, c, iy, ix]
                    if best_at < 0 or v > best or (v != v and best == best):
                        best = v
                        best_at = iy * Wd + ix
            out[n, c, i, j] = best
            argmax[n, c, i, j] = best_at
        else:
            acc = zero
            for ky in range(PH):
                iy = y0 + ky
                if iy < 0 or iy >= H:
                    continue
                for kx in range(PW):
                    ix = x0 + kx
                    if ix >= 0 and ix < Wd:
                        acc += x[n, c, iy, ix]
            if divisor_override > 0:
                divisor = divisor_override
            else:
                divisor = (pool_length(y0, PH, H, ph, count_include_pad)
                           * pool_length(x0, PW, Wd, pw, count_include_pad))
            out[n, c, i, j] = acc / ft(divisor)

    # Pooling backward, gather form: one thread per input element sums the
    # gradients of the windows that cover it (max: only where it was the
    # recorded maximum), in the same (i, j) order as the naive scatter.
    @cuda.jit
    def pool_backward(dout, argmax, dx, PH, PW, sh, sw, ph, pw, dh, dw, is_max,
                      count_include_pad, divisor_override):
        N, C, H, Wd = dx.shape
        OH, OW = dout.shape[2], dout.shape[3]
        idx = cuda.grid(1)
        if idx >= N * C * H * Wd:
            return
        xq = idx % Wd
        t = idx // Wd
        y = t % H
        t //= H
        c = t % C
        n = t // C
        ty = y + ph                          # padded coordinates of this cell
        tx = xq + pw
        span_h = (PH - 1) * dh + 1
        span_w = (PW - 1) * dw + 1
        # windows i with i*sh <= ty < i*sh + span_h, clipped to the output
        i_lo = 0 if ty < span_h else (ty - span_h) // sh + 1
        i_hi = min(OH - 1, ty // sh)
        j_lo = 0 if tx < span_w else (tx - span_w) // sw + 1
        j_hi = min(OW - 1, tx // sw)
        here = y * Wd + xq
        acc = zero
        for i in range(i_lo, i_hi + 1):
            for j in range(j_lo, j_hi + 1):
                if is_max:
                    if argmax[n, c, i, j] == here:
                        acc += dout[n, c, i, j]
                else:
                    if divisor_override > 0:
                        divisor = divisor_override
                    else:
                        divisor = (pool_length(i * sh - ph, PH, H, ph, count_include_pad)
                                   * pool_length(j * sw - pw, PW, Wd, pw, count_include_pad))
                    acc += dout[n, c, i, j] / ft(divisor)
        dx[n, c, y, xq] = acc

    return dict(conv_forward_simple=conv_forward_simple, conv_forward_tiled=conv_forward_tiled,
                conv_dx=conv_dx, conv_dw=conv_dw, conv_db=conv_db,
                pool_forward=pool_forward, pool_backward=pool_backward)


_BUILT = {}


def _kernels(dtype):
    """The kernel set for ``dtype``, built on first use (each kernel compiles on its first launch)."""
    dtype = np.dtype(dtype)
    if dtype not in _BUILT:
        _BUILT[dtype] = _build(dtype)
    return _BUILT[dtype]


# ------------------------------------------------------------ host <-> device

def _on_device(a):
    return not isinstance(a, np.ndarray)


def _to_device(a):
    """A Numba device array for ``a``: host arrays are copied over, device arrays are used as they are."""
    if isinstance(a, np.ndarray):
        return cuda.to_device(a)
    if getattr(a, "__cuda_ndarray__", False):          # a Numba device array (or the simulator's)
        return a
    return cuda.as_cuda_array(a)                       # e.g. CuPy / PyTorch: a zero-copy view


def _private(given, on_device):
    """A device array the caller cannot change: ``on_device`` itself if it was copied from
    host memory, else a device-side copy of it."""
    if isinstance(given, np.ndarray):
        return on_device
    if not on_device.is_c_contiguous():       # e.g. a flipped view: no single-region copy
        return cuda.to_device(np.ascontiguousarray(on_device.copy_to_host()))
    copy = cuda.device_array(on_device.shape, dtype=on_device.dtype)
    copy.copy_to_device(on_device)
    return copy


def _returned(arrays, keep_on_device):
    """Device results as they are, or copied back to NumPy for a host call."""
    if keep_on_device:
        return arrays
    return tuple(a.copy_to_host() for a in arrays)


def _launch_1d(kernel, total, *args):
    """Run ``kernel`` with one thread per element of a ``total``-element output."""
    threads = min(_THREADS, 32 * math.ceil(total / 32))
    kernel[math.ceil(total / threads), threads](*args)


@functools.lru_cache(maxsize=64)
def _reduction_table(C, FH, FW):
    """Device int32 (C*FH*FW, 3): row r of the im2col matrix is (channel, filter row, filter column)."""
    c, fy, fx = np.unravel_index(np.arange(C * FH * FW), (C, FH, FW))
    return cuda.to_device(np.stack([c, fy, fx], axis=1).astype(np.int32))


def _reduce_threads(terms):
    """Threads for a block that sums ``terms`` values: a power of two, at most _REDUCE_THREADS."""
    threads = 1
    while threads < _REDUCE_THREADS and threads * _TERMS_PER_THREAD < terms:
        threads *= 2
    return threads


# ----------------------------------------------------------------- convolution

def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C/groups, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache.

    Runs the forward kernel named by ``FORWARD_KERNEL``. The cache keeps the
    device copies of x and W.
    """
    return _conv_forward(x, W, b, spec, FORWARD_KERNEL)


def _conv_forward(x, W, b, spec, kernel):
    """conv_forward with the forward kernel named: "tiled" or "simple"."""
    if kernel not in FORWARD_KERNELS:
        raise ValueError(f"kernel must be one of {FORWARD_KERNELS}, got {kernel!r}")
    device_call = _on_device(x) or _on_device(W) or _on_device(b)
    xd, Wd, bd = _to_device(x), _to_device(W), _to_device(b)
    out = cuda.device_array(spec.out_shape, dtype=x.dtype)
    _launch_conv_forward(out, xd, Wd, bd, spec.stride, spec.pad, kernel, spec.dilation,
                         spec.groups)
    (out,) = _returned((out,), device_call)
    if spec.forward_only:
        return out, None
    # backward must see x and W as they were: host inputs were copied over
    # already; device inputs, which the caller may change, are copied on the device
    return out, ConvCache(_private(x, xd), _private(W, Wd), spec)


def _launch_conv_forward(out, x, W, b, stride, pad, kernel="tiled", dilation=(1, 1), groups=1):
    """Launch one forward kernel into a preallocated out: (N, FN, OH, OW); all device arrays.

    What conv_forward does after the transfers; benchmarks call it to time the
    kernel alone, without allocating the output.
    """
    k = _kernels(out.dtype)
    N, FN, OH, OW = out.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    if kernel == "tiled":
        grid = (math.ceil(N * OH * OW / TILE_P), groups * math.ceil(FN // groups / TILE_K))
        rtab = _reduction_table(*W.shape[1:])
        k["conv_forward_tiled"][grid, (_TB, _TB)](x, W, b, rtab, out, sh, sw, ph, pw, dh, dw,
                                                  groups)
    else:
        _launch_1d(k["conv_forward_simple"], N * FN * OH * OW, x, W, b, out, sh, sw, ph, pw,
                   dh, dw, groups)


def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C/groups, FH, FW), db: (FN,).

    dx is None, and its kernel is not launched, when ``spec.input_grad`` is False.
    """
    xd, Wd, spec = cache
    (sh, sw), (ph, pw), (dh, dw) = spec.stride, spec.pad, spec.dilation
    groups = spec.groups
    device_call = _on_device(dout)
    dtype = np.dtype(dout.dtype)
    k = _kernels(dtype)
    dd = _to_device(dout)
    N, C, H, W_ = xd.shape
    FN, Cg, FH, FW = Wd.shape
    OH, OW = dout.shape[2], dout.shape[3]
    dW = cuda.device_array((FN, Cg, FH, FW), dtype=dtype)
    db = cuda.device_array((FN,), dtype=dtype)
    threads = _reduce_threads(N * OH * OW)
    k["conv_dw"][FN * Cg, threads](xd, dd, dW, sh, sw, ph, pw, dh, dw, groups)
    k["conv_db"][FN, threads](dd, db)
    if not spec.input_grad:
        return (None, *_returned((dW, db), device_call))
    dx = cuda.device_array((N, C, H, W_), dtype=dtype)
    _launch_1d(k["conv_dx"], N * C * H * W_, dd, Wd, dx, sh, sw, ph, pw, dh, dw, groups)
    return _returned((dx, dW, db), device_call)


# --------------------------------------------------------------------- pooling

def _pool_options(spec):
    """The kernels' trailing pooling arguments: dilation, is_max, count_include_pad and
    divisor_override (0 for none)."""
    return (*spec.dilation, spec.mode == "max", spec.count_include_pad,
            spec.divisor_override or 0)


def pool_forward(x, spec):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), cache; every channel pooled on its own."""
    pool_hw, stride, pad, out_hw, mode = spec.pool_hw, spec.stride, spec.pad, spec.out_hw, spec.mode
    device_call = _on_device(x)
    dtype = np.dtype(x.dtype)
    k = _kernels(dtype)
    xd = _to_device(x)
    N, C = x.shape[0], x.shape[1]
    OH, OW = out_hw
    is_max = mode == "max"
    out = cuda.device_array((N, C, OH, OW), dtype=dtype)
    # avg pooling has no argmax; a one-element placeholder keeps one kernel signature
    argmax = cuda.device_array((N, C, OH, OW) if is_max else (1, 1, 1, 1), dtype=np.int64)
    _launch_1d(k["pool_forward"], N * C * OH * OW, xd, out, argmax, *pool_hw, *stride, *pad,
               *_pool_options(spec))
    (out,) = _returned((out,), device_call)
    return out, PoolCache(argmax, spec)


def pool_backward(dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    argmax, spec = cache
    x_shape, pool_hw, stride, pad = spec.x_shape, spec.pool_hw, spec.stride, spec.pad
    device_call = _on_device(dout)
    dtype = np.dtype(dout.dtype)
    k = _kernels(dtype)
    dd = _to_device(dout)
    N, C, H, W_ = x_shape
    dx = cuda.device_array(x_shape, dtype=dtype)
    _launch_1d(k["pool_backward"], N * C * H * W_, dd, argmax, dx, *pool_hw, *stride, *pad,
               *_pool_options(spec))
    return _returned((dx,), device_call)[0]
