"""The direct path: convolution and pooling as blocked loops, no unrolled matrix.

Everything here rests on one data layout, the *phase planes* of a padded image.
With stride (sh, sw), padded pixel (r, s) lives in plane (r % sh, s % sw) at row
r // sh, column s // sw. An output pixel (i, j) then reads filter tap (fy, fx)
from plane (fy % sh, fx % sw) at (i + fy // sh, j + fx // sw): for every stride,
a tap is a plain shift. Only the phases the window can read get a plane:
min(sh, FH) x min(sw, FW) per channel (FH, FW: the window's extent, see
dilation below), so a stride larger than the image costs no memory beyond
what the output needs. Each plane is stored flat with row pitch Wq, and outputs
are computed on a *wide* grid of the same pitch (Wq >= OW columns, the extra
columns are thrown away), so a tap is one shift of one long contiguous run:
``acc[m] += w * plane[m + offset]`` for all output rows at once. That loop is
what LLVM vectorises. The float32 forward and dx turn it inside out: a tile
of output channels by a strip of the run (4 channels by 16 cells in eight
AVX2 registers, 8 by 48 cells in 24 of AVX-512's 32; half as many channels by
strips twice as long for small groups) stays in registers while it sums a
chunk of taps, in order, and is stored once per chunk (``_forward_strips``).
The float64 forward and dx run it as passes over a four-channel accumulator,
up to three taps per pass (one load of the input feeds four multiply-adds, one
store of the accumulator carries twelve).

- forward: out(n, k) = sum over (c, fy, fx) of W[k, c, fy, fx] * shifted x planes.
- dx: the same correlation run backwards. Per phase (a, b) of dx, the taps with
  fy = a (mod sh), fx = b (mod sw) shift a zero-bordered copy of dout (same pitch
  Wq); each task owns a block of dx channels of one image: gather, no races.
- dW: for each (k, c, fy, fx), one long dot product of the zero-bordered dout
  plane with the shifted x plane. A register tile holds the vector lanes of
  KB filters x DW_TAPS of these products (4 x 6 on AVX-512) over the grids of
  all images; the lanes are summed once, at the end. Each task owns blocks of
  filters x blocks of (channel, tap) columns and adds images in order. Where a
  group has DW_LANE_VECTORS vectors of filters (and 64) or more and x is finite, the
  filters are the lanes instead (``_conv_dw_lanes``): dout laid pixel-major,
  one broadcast x value per column and step, no lane sums.
- db: summed while dout is copied into its bordered planes.
- dilation (dh, dw): tap (fy, fx) sits at (fy*dh, fx*dw) of the window, so it
  reads plane (fy*dh % sh, fx*dw % sw) at (i + fy*dh // sh, j + fx*dw // sw);
  taps of one phase then sit dw // gcd(sw, dw) cells apart (``_tap_step``),
  the ``step`` the grouped passes move by. The planes cover the phases the
  dilated window (extent d*(F-1)+1) reads.
- groups: filter k reads the channels of its group g = k // (FN/groups) only.
  Channel blocks never straddle two groups; the tap tables are those of one
  group (C/groups channels, FN/groups filters) and each task adds its group's
  first plane to the table's plane numbers.
- transposed: the wide grid spends Wq cells on OW outputs per row, so a
  filter much wider than tall on a small map (Inception's 1x7) wastes a good
  part of it. The float32 forward then runs the problem with H and W swapped
  (``_transposes``): the planes read x across, the output is stored across,
  and the taps run in W's own order, so not a bit of the result changes.
  The backward's dW runs on the same planes, transposed; dx runs on the
  problem as given (its zero borders waste as much either way round).
- depthwise (groups == C > 1, FN = C*m): a kernel of its own, one (n, c)
  plane per task (``_depthwise_forward`` and friends); the blocked loops
  above would run with one filter of four per block. A depthwise dx with a
  weight that is not finite runs the blocked loops (see below).
- pooling: ``cpu_pooling.py``, on the same planes (``_planes.py``); the
  im2col path pools with it too.

Every parallel task writes only its own output elements and sums in a fixed
order, so results are bit-identical from run to run for any thread count. The
public functions hold ``launch_lock`` of ``fastconv.kernels._jit``, so several
Python threads may call them at once.
Conventions (cross-correlation, padding values, PH*PW divisor, first maximum
wins) are those of ``fastconv.kernels.naive``.

Non-finite values: the zero borders and spare columns stand for "no term",
which is exact only while the factor they meet is finite (0 * inf and 0 * nan
are nan). So dx sums only the taps that read inside dout when a weight is
not finite, and dW sums only the real output columns when x holds nan or
inf; either way every result cell has the same terms as in the naive path,
and nan and +-inf land in the same cells. Cells that no window reads
(dropped by floor rounding, or between a dilated filter's taps) never touch
a result.
"""

import dataclasses
import math
from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import (jit, one_launch_at_a_time, prefer_wide_vectors, stack_array,
                   vector_registers)
from ._planes import _fill_planes, _phases, _to_planes
from ._workspace import Workspace
from .cpu_pooling import PoolCache, pool_backward, pool_forward  # noqa: F401  (this path's pooling)

# Output channels per block: four accumulator rows stay in L1 next to the input.
KB = 4
# Bytes of accumulator per block (4 rows): sets how many wide output rows one
# task covers, so its working set stays in the first two cache levels.
ACC_BYTES = 32 * 1024
# Cells of the wide grid per dW run: KB dout rows of this length stay in L1.
DW_CHUNK = 1024
# Bytes of the register tile (float32 forward and dx: filters x a strip of
# the wide grid; dW, both dtypes: see DW_TAPS), in all but SPARE_REGISTERS of
# the target's vector registers (forward: they hold a tap's weights and the
# input it loads, or with 8 filters the strip's input and one weight). AVX2: 8
# ymm registers; AVX-512: 24 zmm registers (``prefer_wide_vectors``).
# Measured with tiles of 4 filters (before TILE_ROWS, below), paired, on the
# direct layers of the benchmark suite,
# AVX-512 machine, forward: 24 ymm registers 0.75-0.93x the time of 8, then 24
# zmm 0.73-0.94x the time of 24 ymm (12 zmm: 0.79-0.88x); dx 0.93-1.03x. On an
# AVX2 target 12 registers took 1.12-1.31x the time of 8, 24 up to 1.65x: they
# spill.
_REGISTERS, _VECTOR_BYTES = vector_registers()
SPARE_REGISTERS = 8
TILE_REGISTERS = _REGISTERS - SPARE_REGISTERS
TILE_BYTES = TILE_REGISTERS * _VECTOR_BYTES
# Filters per register tile: 8 by 48 cells on AVX-512 (the tile's 24 registers),
# 4 by 16 on AVX2; blocks of half as many filters, with strips twice as long,
# where a group has no more filters (or dx channels) than that (``_tile_rows``).
# Measured, paired (forward, 8 by 48 over 4 by 96, AVX-512, 1 thread, CPU time
# of the process: the machine lost a third of its time to other guests; medians
# of 7 rounds, three runs): LeNet's 5x5 layer on 10x10 maps 0.79-0.82x the time
# (a 140-cell grid fills 144 cells of 48-cell strips, 192 of 96), the 1x7 and
# 7x1 layers 0.93-0.95x, the 3x3 on 32x32 maps 0.92-0.96x, 5x5 stride 2 and the
# one-channel 5x5 0.95-0.99x; backward (dx) 0.93-1.00x.
TILE_ROWS = 8 if _REGISTERS >= 32 else KB
# Columns (taps of a channel) per dW register tile, by KB filters: the tile's
# registers hold KB x DW_TAPS vectors of lane sums, the spare ones the KB dout
# vectors and one x vector of a step (6 on AVX-512, 2 on AVX2).
DW_TAPS = TILE_REGISTERS // KB
# dW with the filters in the vector lanes (``_dw_lanes_tile``), where a group has
# DW_LANE_VECTORS vectors of filters, and 64 filters, or more (``_lanes_fit``): a
# tile of DW_ROWS columns by DW_LANE_VECTORS vectors of filters (6 x 4 zmm on
# AVX-512, 2 x 4 ymm on AVX2), over runs of DW_RUN cells of one image: its dout
# run (64 KiB in float32 on AVX-512) stays in L2 for all of a task's columns.
# Measured, paired (1 thread): runs of 1024 cells took 1.0-1.36x the time of 256
# on dW of the 3x3 and 7x1 layers of the benchmark suite; 512 1.0-1.1x.
DW_LANE_VECTORS = 4
DW_ROWS = TILE_REGISTERS // DW_LANE_VECTORS
DW_RUN = 256
# Taps the forward sums per visit of a strip: whole channels, at least one,
# at most CHUNK_TAPS taps and CHUNK_BYTES of the input rows they read, so that
# a row is still in L1 when the strip one output row further reads it again.
CHUNK_TAPS = 64
CHUNK_BYTES = 8 * 1024
# Blocks of filters per forward task: the input rows of a chunk of taps,
# read into L1 once, serve all of them (measured 5-15% faster than one block).
BLOCKS_PER_TASK = 4

_workspace = Workspace()

SCOPE = "every convolution and pooling"


class ConvCache(NamedTuple):
    xq: np.ndarray         # the input split into stride-phase planes, padded (those of
    W: np.ndarray          # the transposed problem where the forward ran it)
    spec: object
    Hq: int                # rows and columns of one phase plane
    Wq: int


def supports(spec):
    """Every spec fastconv can describe, any dilation and groups included."""
    return True


def _is_depthwise(spec):
    """One input channel per group (groups == C > 1): the depthwise kernels run."""
    return spec.op == "conv" and spec.groups > 1 and spec.groups == spec.x_shape[1]


def plan(spec):
    """What this path does for ``spec``: phase planes, then the general blocked loops
    over wide output rows or, for a depthwise convolution, the per-plane kernel;
    ``transposed_forward``: the forward runs with H and W swapped (``_transposes``)."""
    sh, sw = spec.stride
    if spec.op != "conv":
        return {"method": "direct loops over wide output rows", "phase_planes": sh * sw}
    EH, EW = spec.extent
    info = {"phase_planes": _phases(sh, EH) * _phases(sw, EW),
            "dilation": spec.dilation, "groups": spec.groups,
            "transposed_forward": _transposes(spec)}
    if _is_depthwise(spec):
        return {"method": "depthwise kernel: one (image, channel) plane per task, "
                          "a vectorised pass along output rows", "kernel": "depthwise", **info}
    tile, cells, outputs = _forward_grid(spec)
    return {"method": "direct loops over wide output rows", "kernel": "general",
            "forward_tile": tile, "grid_cells": cells, "grid_fill": outputs / cells, **info}


def _forward_grid(spec):
    """The general forward's work per output map -> (tile, cells, outputs).

    tile: (filters, cells of a strip) of the float32 register tile, None for
    the float64 passes; cells: wide-grid cells the forward computes per map
    (rows at the planes' pitch, each task's band of rows rounded up to whole
    strips; of the transposed problem when it runs that one); outputs: OH*OW.
    Their ratio is the part of the forward's multiply-adds that lands in the
    output.
    """
    run = _transposed(spec) if _transposes(spec) else spec
    OH, OW = run.out_hw
    itemsize = spec.dtype.itemsize
    if spec.dtype != np.float32:
        return None, OH * _plane_geometry(run, strips=False)[1], OH * OW
    Wq = _plane_geometry(run, strips=True)[1]
    rows = _tile_rows(spec.w_shape[0] // spec.groups)
    vw = _strip_cells(rows, itemsize)
    RB = _rows_per_block(Wq, itemsize)
    cells = sum(-(-min(RB, OH - i0) * Wq // vw) * vw for i0 in range(0, OH, RB))
    return (rows, vw), cells, OH * OW


def release_workspace():
    """Free this path's scratch buffers (they are reallocated when next needed)."""
    _workspace.release()


def _rows_per_block(pitch, itemsize):
    return max(1, ACC_BYTES // (KB * itemsize * pitch))


def _tap_step(stride, dilation):
    """Cells between two taps of one phase along an axis: taps f and f + s/g (g =
    gcd(s, d)) share a phase, and their offsets differ by d/g (1 without dilation)."""
    return dilation // math.gcd(stride, dilation)


def _tile_rows(rows):
    """Filters (or dx channels) per register tile for a group of ``rows`` of them:
    TILE_ROWS, or half as many when the group fits in half a tile."""
    return TILE_ROWS // 2 if rows <= TILE_ROWS // 2 else TILE_ROWS


def _strip_cells(rows, itemsize):
    """Cells of the wide grid per strip of a register tile of ``rows`` filters."""
    return TILE_BYTES // rows // itemsize


# ------------------------------------------------------- the shared inner loop

@jit
def _accumulate(acc, nb, src, ops, o_start, o_end, wt, base, step, p0):
    """acc[r, m] += sum over taps t of wt[t, r] * src[p0 + plane, base + offset_t + m].

    acc: (KB, M), rows < nb in use; src: (planes, L) of one image; ops:
    (n_ops, 6) rows (plane, offset, count, t0, t1, t2): ``count`` taps sitting
    at offset, offset+step, offset+2*step of one plane, done in one pass so each
    store of the accumulator carries up to 3*nb multiply-adds; wt: (n_taps, KB);
    p0: the first plane of the group the table is read for.
    """
    M = acc.shape[1]
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    for o in range(o_start, o_end):
        plane = p0 + ops[o, 0]
        start = base + ops[o, 1]
        count = ops[o, 2]
        t0 = ops[o, 3]
        t1 = ops[o, 4]
        t2 = ops[o, 5]
        s0 = src[plane, start:start + M]
        s1 = src[plane, start + step:start + step + M] if count > 1 else s0
        s2 = src[plane, start + 2 * step:start + 2 * step + M] if count > 2 else s0
        if nb == KB and count == 3:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            v0, v1, v2, v3 = wt[t1, 0], wt[t1, 1], wt[t1, 2], wt[t1, 3]
            w0, w1, w2, w3 = wt[t2, 0], wt[t2, 1], wt[t2, 2], wt[t2, 3]
            for m in range(M):
                p = s0[m]
                q = s1[m]
                r = s2[m]
                a0[m] += u0 * p + v0 * q + w0 * r
                a1[m] += u1 * p + v1 * q + w1 * r
                a2[m] += u2 * p + v2 * q + w2 * r
                a3[m] += u3 * p + v3 * q + w3 * r
        elif nb == KB and count == 2:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            v0, v1, v2, v3 = wt[t1, 0], wt[t1, 1], wt[t1, 2], wt[t1, 3]
            for m in range(M):
                p = s0[m]
                q = s1[m]
                a0[m] += u0 * p + v0 * q
                a1[m] += u1 * p + v1 * q
                a2[m] += u2 * p + v2 * q
                a3[m] += u3 * p + v3 * q
        elif nb == KB:
            u0, u1, u2, u3 = wt[t0, 0], wt[t0, 1], wt[t0, 2], wt[t0, 3]
            for m in range(M):
                p = s0[m]
                a0[m] += u0 * p
                a1[m] += u1 * p
                a2[m] += u2 * p
                a3[m] += u3 * p
        else:
            # a partial block: one row at a time, the taps still fused
            for row in range(nb):
                ar = acc[row]
                u = wt[t0, row]
                if count == 3:
                    v = wt[t1, row]
                    w = wt[t2, row]
                    for m in range(M):
                        ar[m] += u * s0[m] + v * s1[m] + w * s2[m]
                elif count == 2:
                    v = wt[t1, row]
                    for m in range(M):
                        ar[m] += u * s0[m] + v * s1[m]
                else:
                    for m in range(M):
                        ar[m] += u * s0[m]


def _weight_blocks(Wm, groups=1, block=KB):
    """Wm: (rows, taps) -> (groups * ceil(rows/groups/block), taps, block): each
    group's rows in blocks of their own (rows past a group's end zero), so that no
    block holds rows of two groups.

    Plain NumPy, not compiled: one copy and one transpose, and one kernel fewer
    to compile on first use.
    """
    R, T = Wm.shape
    Rg = R // groups
    nb = (Rg + block - 1) // block
    padded = np.zeros((groups, nb * block, T), dtype=Wm.dtype)
    padded[:, :Rg] = Wm.reshape(groups, Rg, T)
    return np.ascontiguousarray(padded.reshape(groups * nb, block, T).transpose(0, 2, 1))


# ------------------------------------------------------------- forward conv

# Taps per pass of the inner loop (see _accumulate): three measured best
# (1.3-1.7x two on 3x3 and 11x11 filters); more runs out of registers.
GROUP = 3


# The tap tables are small (one row per group of taps) and depend on the
# geometry alone: built in Python once per geometry and kept, rather than
# compiled (each compiled helper costs about a second on first use).
@lru_cache(maxsize=64)
def _forward_ops(C, FH, FW, sh, sw, Wq, dh=1, dw=1):
    """Tap table of the forward pass, ordered by channel; see _accumulate.

    Tap (c, fy, fx) is weight index (c*FH + fy)*FW + fx; it sits at (fy*dh,
    fx*dw) of the window and reads plane (c, fy*dh % sh, fx*dw % sw) at offset
    (fy*dh // sh)*Wq + fx*dw // sw. Taps fx, fx+q, fx+2q (q = sw / gcd(sw, dw))
    share a phase and sit ``_tap_step(sw, dw)`` cells apart (one, without
    dilation): one group.
    """
    Ph = _phases(sh, dh * (FH - 1) + 1)
    Pw = _phases(sw, dw * (FW - 1) + 1)
    q = sw // math.gcd(sw, dw)
    ops = np.full((C * FH * FW, 6), -1, dtype=np.int64)
    n = 0
    for c in range(C):
        for fy in range(FH):
            ey = fy * dh
            for fx0 in range(min(q, FW)):
                fx = fx0
                while fx < FW:
                    ops[n, 0] = (c * Ph + ey % sh) * Pw + fx * dw % sw
                    ops[n, 1] = (ey // sh) * Wq + fx * dw // sw
                    count = 0
                    while count < GROUP and fx < FW:
                        ops[n, 3 + count] = (c * FH + fy) * FW + fx
                        fx += q
                        count += 1
                    ops[n, 2] = count
                    n += 1
    return ops[:n].copy()


@lru_cache(maxsize=64)
def _forward_taps(C, FH, FW, sh, sw, Hq, Wq, dh=1, dw=1):
    """(C*FH*FW,) uint64: where tap t = (c*FH + fy)*FW + fx of one group starts in
    the group's planes laid end to end (Hq*Wq cells each).

    The tap reads plane (c, fy*dh % sh, fx*dw % sw) at offset (fy*dh // sh)*Wq
    + fx*dw // sw, as in ``_forward_ops``, one tap per entry, in weight order.
    """
    Ph = _phases(sh, dh * (FH - 1) + 1)
    Pw = _phases(sw, dw * (FW - 1) + 1)
    c, fy, fx = np.meshgrid(np.arange(C), np.arange(FH) * dh, np.arange(FW) * dw,
                            indexing="ij")
    plane = (c * Ph + fy % sh) * Pw + fx % sw
    return (plane * (Hq * Wq) + (fy // sh) * Wq + fx // sw).astype(np.uint64).reshape(-1)


@intrinsic
def _register_tile(typingctx, like):
    """A 1-D array of TILE_BYTES of ``like``'s dtype on the stack, not the heap: LLVM
    sees all of it, so with constant indices it keeps every cell in a register."""
    cells = TILE_BYTES // (like.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        prefer_wide_vectors(builder)
        return stack_array(context, builder, like.dtype, cells)

    return types.Array(like.dtype, 1, "C")(like), codegen


def _vector_at(context, builder, array_type, array, start, vector):
    """Pointer to the run of ``vector.count`` cells of a 1-D array from ``start``, as a
    vector; under ``NUMBA_BOUNDSCHECK`` its first and last cell are checked like an
    index."""
    array = context.make_array(array_type)(context, builder, array)
    if context.enable_boundscheck:
        size = builder.extract_value(array.shape, 0)
        for cell in (start, builder.add(start, start.type(vector.count - 1))):
            cgutils.do_boundscheck(context, builder, cell, size)
    return builder.bitcast(builder.gep(array.data, [start]), vector.as_pointer())


def _madd_code(context, builder, acc_type, acc, i, factor, b_type, b, k):
    """acc[i:i+L] += factor * b[k:k+L] in vector registers; factor: a vector, or a
    scalar to broadcast (a function of the vector type)."""
    itemsize = acc_type.dtype.bitwidth // 8
    vector = llvm_ir.VectorType(context.get_value_type(acc_type.dtype),
                                vector_registers()[1] // itemsize)
    acc_p = _vector_at(context, builder, acc_type, acc, i, vector)
    b_v = builder.load(_vector_at(context, builder, b_type, b, k, vector), align=itemsize)
    flags = ("nsz", "contract")      # those of in_order (``jit``): fused, as LLVM fuses scalars
    product = builder.fmul(factor(vector, itemsize), b_v, flags=flags)
    total = builder.fadd(builder.load(acc_p, align=itemsize), product, flags=flags)
    builder.store(total, acc_p, align=itemsize)
    return context.get_dummy_value()


# The register tiles of dW write their multiply-adds as vector operations: as
# scalar loops over a vector's lanes, LLVM vectorised them for AVX-512 targets
# but, depending on the loop order and on the function they were inlined into,
# left them scalar for AVX2 ones, where dW then took 3.5 to 7 times as long.
@intrinsic
def _madd_vector(typingctx, acc, i, a, j, b, k):
    """acc[i:i+L] += a[j:j+L] * b[k:k+L] on 1-D arrays of one dtype, L the lanes of one of
    the target's vector registers (``vector_registers``): one vector load of each
    run, a multiply-add and a vector store."""
    if not all(isinstance(t, types.Array) and t.dtype == acc.dtype for t in (a, b)):
        return None

    def codegen(context, builder, signature, args):
        def factor(vector, itemsize):
            return builder.load(_vector_at(context, builder, a, args[2], args[3], vector),
                                align=itemsize)
        return _madd_code(context, builder, acc, args[0], args[1], factor, b, args[4], args[5])

    return types.void(acc, i, a, j, b, k), codegen


@intrinsic
def _madd_broadcast(typingctx, acc, i, x, b, k):
    """acc[i:i+L] += x * b[k:k+L], x a scalar of the arrays' dtype: ``_madd_vector``
    with x in every lane."""
    if x != acc.dtype or not (isinstance(b, types.Array) and b.dtype == acc.dtype):
        return None

    def codegen(context, builder, signature, args):
        def factor(vector, itemsize):
            lanes = builder.insert_element(llvm_ir.Constant(vector, None), args[2],
                                           llvm_ir.Constant(llvm_ir.IntType(32), 0))
            return builder.shuffle_vector(lanes, lanes,
                                          llvm_ir.Constant(llvm_ir.VectorType(
                                              llvm_ir.IntType(32), vector.count), None))
        return _madd_code(context, builder, acc, args[0], args[1], factor, b, args[3], args[4])

    return types.void(acc, i, x, b, k), codegen


# Why faster than passes over the accumulator (``_accumulate``): the tile of
# filters x a strip stays in registers for a chunk of taps, one store per up to
# 64 taps instead of a load and a store of the accumulator per three taps.
# in_order (no 'reassoc'): with it LLVM may split a cell's sum over the taps
# into partial sums, and the order of the terms would then depend on the chunk
# length.
@jit(in_order=True)
def _forward_strips(acc, src, taps, w, base, first):
    """acc[r, m] (+)= sum over taps t of w[t*R + r] * src[taps[t] + base + m]: one chunk of taps.

    R, the block's filters, is TILE_ROWS or TILE_ROWS / 2 (``_tile_rows``): w:
    (T*R,) the chunk's weights of one block (``_weight_blocks``); acc: (R*Mp,),
    an (R, Mp) accumulator flat, Mp a multiple of the strip width
    (``_strip_cells``), overwritten when ``first`` and added to otherwise;
    src: (planes*Hq*Wq,), one image's planes flat; taps: (T,) uint64 offsets
    of the chunk's taps (``_forward_taps``); base: where the group's planes
    and the task's rows start in src. Each cell adds its taps one by one in
    tap order, wherever its strip starts, so results do not depend on how
    rows, blocks and chunks are split.
    """
    tile = _register_tile(acc)
    if w.size == TILE_ROWS * taps.size:
        _strips(tile, acc, src, taps, w, base, first, TILE_ROWS)
    else:
        _strips(tile, acc, src, taps, w, base, first, TILE_ROWS // 2)


@jit(in_order=True, inline=True)
def _strips(tile, acc, src, taps, w, base, first, rows):
    """``_forward_strips`` for blocks of ``rows`` filters, a constant where it is
    called, so that LLVM unrolls the loops over rows and cells and keeps the tile in
    registers. Indices are unsigned: Numba emits no wrap-around for them."""
    R = np.uint64(rows)
    vw = np.uint64(tile.size // rows)
    Mp = np.uint64(acc.size // rows)
    T = np.uint64(taps.size)
    ub = np.uint64(base)
    for m0 in range(np.uint64(0), Mp, vw):
        for r in range(R):
            for m in range(vw):
                tile[r * vw + m] = 0 if first else acc[r * Mp + m0 + m]
        for t in range(T):
            s = taps[t] + ub + m0
            wb = R * t
            if rows < SPARE_REGISTERS:
                # the block's weights and one loaded vector in the spare registers
                for m in range(vw):
                    p = src[s + m]
                    for r in range(R):
                        tile[r * vw + m] += w[wb + r] * p
            else:
                # too many weights for them: the strip's vectors and one weight instead
                for r in range(R):
                    u = w[wb + r]
                    for m in range(vw):
                        tile[r * vw + m] += u * src[s + m]
        for r in range(R):
            for m in range(vw):
                acc[r * Mp + m0 + m] = tile[r * vw + m]


@jit(parallel=True)
def _conv_forward(xq, wt, taps, b, FN, OH, OW, Wq, RB, groups, chunk, bpt, swapped):
    """The float32 forward. xq: planes of x (N, C*planes, Hq*Wq), wt: (groups * FNg/R,
    C/groups*FH*FW, R), blocks of R filters (``_tile_rows``) -> out: (N, FN, OH, OW),
    or (N, FN, OW, OH) when ``swapped``
    (the transposed problem's output, stored the right way round).

    taps: the tap offsets of one group (``_forward_taps``); chunk: taps per
    visit of a strip; bpt: blocks per task. A task is (image,
    up to bpt blocks of one group, band of RB output rows): for each chunk of
    taps it runs ``_forward_strips`` for each of its blocks, so the chunk's
    input rows, still in L1, serve all of them. Blocks of group g read that
    group's planes only (C/groups channels from plane g * planes-per-group).
    A task computes its rows' wide grid rounded up to whole strips; the planes
    hold enough spare rows for the last strip's reads. Rows of a partial block
    have zero weights and are not written.
    """
    N = xq.shape[0]
    nkb = wt.shape[0] // groups       # blocks per group
    FNg = FN // groups
    Pg = xq.shape[1] // groups        # planes per group
    L = xq.shape[2]
    T = wt.shape[1]
    R = wt.shape[2]                   # filters per block
    vw = TILE_BYTES // R // xq.itemsize
    nrb = (OH + RB - 1) // RB
    ntb = (nkb + bpt - 1) // bpt      # tasks per group, image and band
    out = np.empty((N, FN, OW, OH) if swapped else (N, FN, OH, OW), dtype=xq.dtype)
    for task in prange(N * groups * ntb * nrb):
        n = task // (groups * ntb * nrb)
        g = (task // (ntb * nrb)) % groups
        b0 = (task // nrb) % ntb * bpt
        b1 = min(nkb, b0 + bpt)
        i0 = (task % nrb) * RB
        i1 = min(OH, i0 + RB)
        Mp = -(-(i1 - i0) * Wq // vw) * vw
        acc = np.empty((b1 - b0, R * Mp), dtype=xq.dtype)
        src = xq[n].reshape(xq.shape[1] * L)
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            for j in range(b1 - b0):
                _forward_strips(acc[j], src, taps[t0:t1],
                                wt[g * nkb + b0 + j, t0:t1].reshape((t1 - t0) * R),
                                g * Pg * L + i0 * Wq, t0 == 0)
        for j in range(b1 - b0):
            k0 = g * FNg + (b0 + j) * R
            for r in range(min(R, (g + 1) * FNg - k0)):
                bias = b[k0 + r]
                plane = out[n, k0 + r]
                for i in range(i0, i1):
                    row = acc[j, r * Mp + (i - i0) * Wq:r * Mp + (i - i0) * Wq + OW]
                    if swapped:
                        for jj in range(OW):
                            plane[jj, i] = row[jj] + bias
                    else:
                        orow = plane[i]
                        for jj in range(OW):
                            orow[jj] = row[jj] + bias
    return out


@jit(parallel=True)
def _conv_forward_passes(xq, wt, ops, b, FN, OH, OW, Wq, RB, groups, step):
    """The float64 forward: passes of ``_accumulate`` over a (KB, rows*Wq) accumulator.

    xq: planes of x, wt: (groups * FNg/KB, C/groups*FH*FW, KB) -> out: (N, FN, OH, OW);
    ops: the tap table of one group (``_forward_ops``); a block of filters of
    group g reads that group's planes only. (LLVM keeps no float64 register
    tile of ``_forward_strips`` in registers: measured two to eight times slower.)
    """
    N = xq.shape[0]
    nblk = wt.shape[0]
    nkb = nblk // groups              # blocks per group
    FNg = FN // groups
    Pg = xq.shape[1] // groups        # planes per group
    nrb = (OH + RB - 1) // RB
    out = np.empty((N, FN, OH, OW), dtype=xq.dtype)
    for task in prange(N * nblk * nrb):
        n = task // (nblk * nrb)
        blk = (task // nrb) % nblk
        g = blk // nkb
        i0 = (task % nrb) * RB
        i1 = min(OH, i0 + RB)
        k0 = g * FNg + (blk % nkb) * KB
        nb = min(KB, (g + 1) * FNg - k0)
        acc = np.zeros((KB, (i1 - i0) * Wq), dtype=xq.dtype)
        # np.int64(0), not 0: a literal 0 would compile a second _accumulate
        _accumulate(acc, nb, xq[n], ops, np.int64(0), ops.shape[0], wt[blk], i0 * Wq, step,
                    g * Pg)
        for r in range(nb):
            bias = b[k0 + r]
            for i in range(i0, i1):
                row = acc[r, (i - i0) * Wq:(i - i0) * Wq + OW]
                for j in range(OW):
                    out[n, k0 + r, i, j] = row[j] + bias
    return out


# ------------------------------------------------------ the transposed problem

# The transposed problem runs when its wide grid has at most LESS/MORE of the
# cells of the problem as given: a square problem, or one whose grids are a
# row or two apart, keeps its own layout.
MORE, LESS = 5, 4


def _transposes(spec):
    """Whether the float32 forward runs the transposed problem: H and W swapped in x and
    the output, W's taps read across (see ``_forward_f32``).

    The wide grid computes OH rows of Wq = ceil((W + 2*pw) / sw) cells for OW
    outputs each. A filter wider than tall on a small map wastes much of it
    (Inception's 1x7 on 17x17 maps: 17 cells per row for 11 outputs, a third
    thrown away); swapped, the same layer is a 7x1 and wastes nothing. Measured
    on that layer (batch 8, 128 channels): 0.69-0.74x the time under
    ``conv2d``. A forward for training keeps the same planes for the backward's
    dW (it built those of the problem as given before, and took 0.84-0.86x
    the time of the plain forward; then 0.72-0.78x of that, paired, 1 thread);
    the backward took 0.89-0.97x the time with its dW on the transposed grid.
    Only the float32 register tile sums taps one by one, so only there does
    the swap leave every sum, and so every result bit, as it was. Backward,
    float64 and depthwise layers run the problem as given.
    """
    if spec.op != "conv" or spec.dtype != np.float32 or _is_depthwise(spec):
        return False
    OH, OW = spec.out_hw
    Wq = _plane_geometry(spec, strips=False)[1]
    Wq_t = _plane_geometry(_transposed(spec), strips=False)[1]
    return LESS * OH * Wq >= MORE * OW * Wq_t


def _swap(pair):
    return pair[::-1]


def _transposed(spec):
    """The same convolution with the two spatial axes swapped everywhere."""
    (N, C, H, W), (FN, Cg, FH, FW) = spec.x_shape, spec.w_shape
    return dataclasses.replace(spec, x_shape=(N, C, W, H), w_shape=(FN, Cg, FW, FH),
                               stride=_swap(spec.stride), pad=_swap(spec.pad),
                               out_hw=_swap(spec.out_hw), dilation=_swap(spec.dilation))


@one_launch_at_a_time
def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C/groups, FH, FW), b: (FN,) -> out: (N, FN, OH, OW), cache."""
    _, C, H, Wd = x.shape
    FN, Cg, FH, FW = W.shape
    (sh, sw), (ph, pw), (OH, OW) = spec.stride, spec.pad, spec.out_hw
    (dh, dw), G = spec.dilation, spec.groups
    EH, EW = spec.extent
    if _is_depthwise(spec):
        Hq, Wq, r_end, s_end = _plane_geometry(spec, strips=False)
        Ph, Pw = _phases(sh, EH), _phases(sw, EW)
        out, xq = _depthwise_forward(x, np.ascontiguousarray(W.reshape(FN, FH * FW)),
                                     _depthwise_taps(FH, FW, sh, sw, dh, dw, Wq, Pw), b,
                                     FN // C, sh, sw, ph, pw, OH, OW, Hq, Wq, Ph, Pw,
                                     min(H, r_end - ph), min(Wd, s_end - pw))
    elif _transposes(spec):
        # the planes read x across, the kernel stores its output across: no
        # copies; backward's dW runs on the same planes (``_transposed_dw``)
        spec_t = _transposed(spec)
        xq, Hq, Wq = _planes(x.swapaxes(2, 3), spec_t, strips=True)
        out = _forward_f32(xq, W, b, spec_t, Hq, Wq, swapped=True)
    elif x.dtype == np.float32:
        xq, Hq, Wq = _planes(x, spec, strips=True)
        out = _forward_f32(xq, W, b, spec, Hq, Wq)
    else:
        # float64: passes over the accumulator (see _conv_forward_passes)
        xq, Hq, Wq = _planes(x, spec, strips=False)
        wt = _weight_blocks(W.reshape(FN, Cg * FH * FW), G)
        ops = _forward_ops(Cg, FH, FW, sh, sw, Wq, dh, dw)
        out = _conv_forward_passes(xq, wt, ops, b, FN, OH, OW, Wq, _rows_per_block(Wq, x.itemsize),
                                   G, _tap_step(sw, dw))
    if spec.forward_only:
        return out, None
    # xq is already a copy; W is copied so that backward sees it as it was
    return out, ConvCache(xq, W.copy(), spec, Hq, Wq)


def _plane_geometry(spec, strips):
    """(Hq, Wq, r_end, s_end): rows and columns of spec's phase planes, and the padded
    row and column past the last cell a window reads.

    Spare rows of zeros: the wide grid's last row reads up to a row past OH,
    and dW's last vector (``_conv_dw``) runs up to VW - 1 cells past the grid's
    end. With ``strips`` (the float32 register tile) the last strip runs up to
    a strip's cells past it: more spare rows cover what its taps read there.
    """
    (sh, sw), pw, (OH, OW) = spec.stride, spec.pad[1], spec.out_hw
    EH, EW = spec.extent
    itemsize = spec.dtype.itemsize
    Wq = -(-(spec.x_shape[3] + 2 * pw) // sw)
    past = _strip_cells(TILE_ROWS // 2, itemsize) if strips else _VECTOR_BYTES // itemsize
    spare = -(-((EW - 1) // sw + past) // Wq)
    return OH + (EH - 1) // sh + spare, Wq, (OH - 1) * sh + EH, (OW - 1) * sw + EW


def _planes(x, spec, strips):
    """x split into spec's phase planes -> (xq, Hq, Wq); see ``_plane_geometry``."""
    (sh, sw), (ph, pw) = spec.stride, spec.pad
    Hq, Wq, r_end, s_end = _plane_geometry(spec, strips)
    return _to_planes(x, sh, sw, ph, pw, Hq, Wq, r_end, s_end, x.dtype.type(0),
                      *spec.extent), Hq, Wq


def _forward_f32(xq, W, b, spec, Hq, Wq, swapped=False):
    """The float32 forward on the register tile: xq, spec's planes -> out (N, FN, OH, OW).

    swapped: spec is the transposed problem (``_transposed``) of the one W
    belongs to, W: (FN, C/groups, FW, FH) as given, and out is the output of
    that one, (N, FN, OW, OH). The taps run in W's order, so every cell sums
    the same terms in the same order as it would in the problem as given: the
    results are bit-identical either way.
    """
    N = xq.shape[0]
    FN, Cg = W.shape[:2]
    FH, FW = spec.filter_hw
    (sh, sw), (dh, dw), (OH, OW) = spec.stride, spec.dilation, spec.out_hw
    G = spec.groups
    taps = _forward_taps(Cg, FH, FW, sh, sw, Hq, Wq, dh, dw)
    if swapped:
        # tap (c, a, b) of the transposed filter is W's tap (c, b, a)
        taps = taps.reshape(Cg, FH, FW).transpose(0, 2, 1).reshape(-1)
    wt = _weight_blocks(W.reshape(FN, Cg * FH * FW), G, _tile_rows(FN // G))
    chunk = max(1, min(CHUNK_TAPS // (FH * FW),
                       CHUNK_BYTES // (FH * _phases(sw, spec.extent[1]) * Wq * xq.itemsize)))
    RB = _rows_per_block(Wq, xq.itemsize)
    # fewer blocks per task where there would be too few tasks to share out
    # (the results do not depend on it)
    tasks = N * wt.shape[0] * -(-OH // RB)
    bpt = max(1, min(BLOCKS_PER_TASK, tasks // (4 * numba.get_num_threads())))
    return _conv_forward(xq, wt, taps, b, FN, OH, OW, Wq, RB, G, chunk * FH * FW, bpt, swapped)


# ----------------------------------------------------------------- depthwise
#
# groups == C > 1 (MobileNet's layers): output plane k reads input plane
# c = k // m alone, so there is no sum over channels to block filters over; the
# blocked loops would run with one live row of four. Here one (image, channel)
# plane is one task, a tap is one shifted row of a phase plane (as above), and
# each output row is one vectorised pass with all the taps' weights in
# registers (3x3: the nine taps in one pass, one store per output). The padded
# planes of a channel are written by the task that reads them, while they are
# still in cache.
# Why faster than the blocked loops: they would use one of four accumulator rows
# and store the accumulator once per three taps; here nine taps cost one store.

@lru_cache(maxsize=64)
def _depthwise_taps(FH, FW, sh, sw, dh, dw, Wq, Pw):
    """(FH*FW, 2) int64: tap t = fy*FW + fx reads phase plane (fy*dh % sh)*Pw + fx*dw % sw
    of its channel at offset (fy*dh // sh)*Wq + fx*dw // sw (the layout of ``_to_planes``)."""
    taps = np.empty((FH * FW, 2), dtype=np.int64)
    for fy in range(FH):
        for fx in range(FW):
            taps[fy * FW + fx, 0] = (fy * dh % sh) * Pw + fx * dw % sw
            taps[fy * FW + fx, 1] = (fy * dh // sh) * Wq + fx * dw // sw
    return taps


@jit
def _depthwise_row(orow, bias, w, xq_n, p0, taps, base):
    """orow[j] = bias + sum over taps t of w[t] * xq_n[p0 + plane_t, base + offset_t + j]."""
    OW = orow.shape[0]
    T = taps.shape[0]
    if T == 9:
        # 3x3, any stride and dilation: every tap's weight in a register, one store per output
        s0 = xq_n[p0 + taps[0, 0], base + taps[0, 1]:base + taps[0, 1] + OW]
        s1 = xq_n[p0 + taps[1, 0], base + taps[1, 1]:base + taps[1, 1] + OW]
        s2 = xq_n[p0 + taps[2, 0], base + taps[2, 1]:base + taps[2, 1] + OW]
        s3 = xq_n[p0 + taps[3, 0], base + taps[3, 1]:base + taps[3, 1] + OW]
        s4 = xq_n[p0 + taps[4, 0], base + taps[4, 1]:base + taps[4, 1] + OW]
        s5 = xq_n[p0 + taps[5, 0], base + taps[5, 1]:base + taps[5, 1] + OW]
        s6 = xq_n[p0 + taps[6, 0], base + taps[6, 1]:base + taps[6, 1] + OW]
        s7 = xq_n[p0 + taps[7, 0], base + taps[7, 1]:base + taps[7, 1] + OW]
        s8 = xq_n[p0 + taps[8, 0], base + taps[8, 1]:base + taps[8, 1] + OW]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        for j in range(OW):
            orow[j] = (bias + w0 * s0[j] + w1 * s1[j] + w2 * s2[j] + w3 * s3[j] + w4 * s4[j]
                       + w5 * s5[j] + w6 * s6[j] + w7 * s7[j] + w8 * s8[j])
        return
    for j in range(OW):
        orow[j] = bias
    t = 0
    while t < T:
        # other sizes: up to three taps per pass
        s0 = xq_n[p0 + taps[t, 0], base + taps[t, 1]:base + taps[t, 1] + OW]
        u = w[t]
        if t + 2 < T:
            s1 = xq_n[p0 + taps[t + 1, 0], base + taps[t + 1, 1]:base + taps[t + 1, 1] + OW]
            s2 = xq_n[p0 + taps[t + 2, 0], base + taps[t + 2, 1]:base + taps[t + 2, 1] + OW]
            v = w[t + 1]
            z = w[t + 2]
            for j in range(OW):
                orow[j] += u * s0[j] + v * s1[j] + z * s2[j]
            t += 3
        elif t + 1 < T:
            s1 = xq_n[p0 + taps[t + 1, 0], base + taps[t + 1, 1]:base + taps[t + 1, 1] + OW]
            v = w[t + 1]
            for j in range(OW):
                orow[j] += u * s0[j] + v * s1[j]
            t += 2
        else:
            for j in range(OW):
                orow[j] += u * s0[j]
            t += 1


@jit(parallel=True)
def _depthwise_forward(x, wd, taps, b, m, sh, sw, ph, pw, OH, OW, Hq, Wq, Ph, Pw, h_end, w_end):
    """x: (N, C, H, W), wd: (C*m, FH*FW), taps: ``_depthwise_taps``, b: (C*m,)
    -> out: (N, C*m, OH, OW) (filter k reads channel k // m), xq: the planes of x.

    One task per (n, c): it writes channel c's planes, then its m output planes row by row.
    """
    N, C = x.shape[0], x.shape[1]
    P = Ph * Pw
    xq = np.empty((N, C * P, Hq * Wq), dtype=x.dtype)
    out = np.empty((N, C * m, OH, OW), dtype=x.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        xq_n = xq[n]
        _fill_planes(x[n, c], xq_n, c * P, sh, sw, ph, pw, Hq, Wq, h_end, w_end, Ph, Pw,
                     x.dtype.type(0))
        for j in range(m):
            k = c * m + j
            w = wd[k]
            for i in range(OH):
                _depthwise_row(out[n, k, i], b[k], w, xq_n, c * P, taps, i * Wq)
    return out, xq


@jit(parallel=True)
def _depthwise_dx(dout, wd, ops, starts, C, H, W, sh, sw, ph, pw, Wq, Hd, Ty, Tx, Ph, Pw, step):
    """dout: (N, C*m, OH, OW), wd: (C, m*FH*FW) (channel c's m filters) -> dx: (N, C, H, W).

    ops, starts: ``_backward_ops`` of m filters. One task per (n, c): it copies
    its m dout planes into zero-bordered planes of its own (as ``_dout_image``
    does, pitch Wq), then gathers each dx phase row by row. The zero border
    stands for "no term": every weight must be finite (the caller checks).
    """
    N, K, OH, OW = dout.shape
    m = K // C
    P = Ph * Pw
    # phases past the window's extent (stride > extent) get no gradient
    if P < sh * sw:
        dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    else:
        dx = np.empty((N, C, H, W), dtype=dout.dtype)
    for task in prange(N * C):
        n = task // C
        c = task % C
        dp = np.zeros((m, Hd * Wq), dtype=dout.dtype)
        for j in range(m):
            for i in range(OH):
                src = dout[n, c * m + j, i]
                dst = dp[j, (Ty - 1 + i) * Wq + Tx - 1:(Ty - 1 + i) * Wq + Tx - 1 + OW]
                for q in range(OW):
                    dst[q] = src[q]
        w = wd[c]
        acc = np.empty(Wq, dtype=dout.dtype)
        for phase in range(P):
            a = phase // Pw
            bq = phase % Pw
            u_lo = (ph - a + sh - 1) // sh if ph > a else 0
            u_hi = (ph + H - 1 - a) // sh + 1 if ph + H - 1 >= a else 0
            v_lo = (pw - bq + sw - 1) // sw if pw > bq else 0
            v_hi = min(Wq, (pw + W - 1 - bq) // sw + 1) if pw + W - 1 >= bq else 0
            for u in range(u_lo, u_hi):
                acc[:] = 0
                for o in range(starts[phase], starts[phase + 1]):
                    plane = dp[ops[o, 0]]
                    start = u * Wq + ops[o, 1]
                    count = ops[o, 2]
                    s0 = plane[start:start + Wq]
                    e0 = w[ops[o, 3]]
                    if count == 3:
                        s1 = plane[start + step:start + step + Wq]
                        s2 = plane[start + 2 * step:start + 2 * step + Wq]
                        e1 = w[ops[o, 4]]
                        e2 = w[ops[o, 5]]
                        for v in range(Wq):
                            acc[v] += e0 * s0[v] + e1 * s1[v] + e2 * s2[v]
                    elif count == 2:
                        s1 = plane[start + step:start + step + Wq]
                        e1 = w[ops[o, 4]]
                        for v in range(Wq):
                            acc[v] += e0 * s0[v] + e1 * s1[v]
                    else:
                        for v in range(Wq):
                            acc[v] += e0 * s0[v]
                h = u * sh + a - ph
                for v in range(v_lo, v_hi):
                    dx[n, c, h, v * sw + bq - pw] = acc[v]
    return dx


@jit(parallel=True)
def _depthwise_dw(xq, dout, taps, m, FH, FW, Wq):
    """xq: the planes of x (``_depthwise_forward``), dout: (N, C*m, OH, OW)
    -> dW: (C*m, 1, FH, FW), db: (C*m,).

    One task per filter k: it alone writes dW[k] and db[k], adding rows and
    images in order. Only the OW real columns of each row are summed, so a
    non-finite x meets only the dout cells whose windows read it.
    """
    N, K, OH, OW = dout.shape
    C = K // m
    P = xq.shape[1] // C
    T = taps.shape[0]
    dW = np.empty((K, 1, FH, FW), dtype=dout.dtype)
    db = np.empty(K, dtype=dout.dtype)
    zero = dout.dtype.type(0)
    for k in prange(K):
        p0 = (k // m) * P
        acc = np.zeros(T, dtype=dout.dtype)
        total = zero
        for n in range(N):
            xq_n = xq[n]
            for i in range(OH):
                d = dout[n, k, i]
                base = i * Wq
                t = 0
                while t < T:
                    # up to three taps per pass over the dout row
                    o0 = base + taps[t, 1]
                    x0 = xq_n[p0 + taps[t, 0], o0:o0 + OW]
                    if t + 2 < T:
                        o1 = base + taps[t + 1, 1]
                        o2 = base + taps[t + 2, 1]
                        x1 = xq_n[p0 + taps[t + 1, 0], o1:o1 + OW]
                        x2 = xq_n[p0 + taps[t + 2, 0], o2:o2 + OW]
                        s0 = s1 = s2 = zero
                        for j in range(OW):
                            e = d[j]
                            s0 += e * x0[j]
                            s1 += e * x1[j]
                            s2 += e * x2[j]
                        acc[t] += s0
                        acc[t + 1] += s1
                        acc[t + 2] += s2
                        t += 3
                    else:
                        s0 = zero
                        for j in range(OW):
                            s0 += d[j] * x0[j]
                        acc[t] += s0
                        t += 1
                s = zero
                for j in range(OW):
                    s += d[j]
                total += s
        for t in range(T):
            dW[k, 0, t // FW, t % FW] = acc[t]
        db[k] = total
    return dW, db


# ------------------------------------------------------------ backward conv

@jit
def _dout_image(dout_n, Ty, Tx, Wq, dp_n, sums):
    """dout_n: (K, OH, OW) -> dp_n: (K, Hd*Wq), dout at row Ty-1, column Tx-1, zeros around.

    Every cell of dp_n is written, so it may be a reused (dirty) buffer; each
    map's sum is added to sums: (K,), so db costs no second pass over dout.
    The plane is zeroed whole, then dout's rows are copied in with unsigned
    indices: no wrap-around tests and no views per row, which on small maps
    cost more than the copy (measured against per-row views and fills:
    0.53x the time on LeNet's 10x10 maps, 0.68x on 16x16 maps).
    """
    K, OH, OW = dout_n.shape
    uw = np.uint64(OW)
    for k in range(K):
        plane = dp_n[k]
        plane[:] = 0
        src = dout_n[k].reshape(OH * OW)
        total = dout_n.dtype.type(0)
        for i in range(OH):
            at = np.uint64((Ty - 1 + i) * Wq + Tx - 1)
            row = np.uint64(i) * uw
            for j in range(uw):
                v = src[row + j]
                plane[at + j] = v
                total += v
        sums[k] += total


@jit(parallel=True)
def _dout_planes(dout, Ty, Tx, Wq, dp):
    """dout: (N, K, OH, OW) -> dp: (N, K, Hd*Wq) and per-map sums (N, K)."""
    N, K = dout.shape[:2]
    sums = np.zeros((N, K), dtype=dout.dtype)
    for n in prange(N):
        _dout_image(dout[n], Ty, Tx, Wq, dp[n], sums[n])
    return dp, sums


@lru_cache(maxsize=64)
def _backward_ops(K, FH, FW, sh, sw, Wq, Ty, Tx, dh=1, dw=1):
    """Tap tables of dx, one per phase (a, b) of dx: rows ops[starts[p]:starts[p+1]].

    Tap (fy, fx) sits at (fy*dh, fx*dw) of the window: dx phase (a, b) =
    (fy*dh % sh, fx*dw % sw) at (u, v) gathers dout(u - ty, v - tx) * W[k, c,
    fy, fx] with ty = fy*dh // sh, tx = fx*dw // sw; in the zero-bordered dout
    planes that is offset (Ty-1-ty)*Wq + (Tx-1-tx). The taps of one phase and
    filter row, taken by falling tx, sit ``_tap_step(sw, dw)`` cells apart (one,
    without dilation): up to three make one group. Only the phases a < Ph,
    b < Pw of the dilated window (see ``_phases``) have a table, p = a*Pw + b,
    possibly empty (dilation skips some phases); dx cells of the phases without
    taps get no gradient.
    """
    Ph = _phases(sh, dh * (FH - 1) + 1)
    Pw = _phases(sw, dw * (FW - 1) + 1)
    ops = np.full((K * FH * FW, 6), -1, dtype=np.int64)
    starts = np.zeros(Ph * Pw + 1, dtype=np.int64)
    n = 0
    for a in range(Ph):
        for b in range(Pw):
            # the filter columns of phase b, by falling tx
            fxs = [fx for fx in range(FW - 1, -1, -1) if fx * dw % sw == b]
            for k in range(K):
                for fy in range(FH):
                    if fy * dh % sh != a:
                        continue
                    ty = fy * dh // sh
                    for g0 in range(0, len(fxs), GROUP):
                        group = fxs[g0:g0 + GROUP]
                        ops[n, 0] = k
                        ops[n, 1] = (Ty - 1 - ty) * Wq + Tx - 1 - group[0] * dw // sw
                        for count, fx in enumerate(group):
                            ops[n, 3 + count] = (k * FH + fy) * FW + fx
                        ops[n, 2] = len(group)
                        n += 1
            starts[a * Pw + b + 1] = n
    return ops[:n].copy(), starts


@jit
def _accumulate_within(acc, nb, src, ops, o_start, o_end, wt, base, step, p0, Wq, r_lo, r_hi,
                       c_lo, c_hi):
    """``_accumulate`` restricted to the terms whose source cell lies inside the
    rectangle rows r_lo..r_hi, columns c_lo..c_hi of src's planes (row pitch Wq).

    The zero border around that rectangle stands for "no term here"; that is
    exact only while every weight is finite (0 * nan and 0 * inf are nan).
    This variant reads inside the rectangle only, one tap and one source row
    at a time, so every cell sums exactly the terms the naive path has.
    """
    M = acc.shape[1]
    for o in range(o_start, o_end):
        plane = src[p0 + ops[o, 0]]
        for g in range(ops[o, 2]):
            t = ops[o, 3 + g]
            s0 = base + ops[o, 1] + g * step    # the source cell of acc[:, 0]
            for rr in range(max(r_lo, s0 // Wq), min(r_hi, (s0 + M - 1) // Wq + 1)):
                lo = max(s0, rr * Wq + c_lo)
                hi = min(s0 + M, rr * Wq + c_hi)
                if hi <= lo:
                    continue
                s = plane[lo:hi]
                for r in range(nb):
                    u = wt[t, r]
                    ar = acc[r, lo - s0:hi - s0]
                    for m in range(hi - lo):
                        ar[m] += u * s[m]


@jit
def _all_finite(a):
    """True when no element of the contiguous float array a is nan or +-inf.

    nan and inf are the values whose exponent bits are all ones, so a is finite
    when the largest of its elements' exponent fields (an integer max over the
    bits, which runs in vector lanes) is below all ones. A float test per element
    that stops at the first non-finite one does not vectorise: it took 4x the time
    (0.2 ms against 0.05 ms on a CIFAR batch's input planes, float32).
    """
    flat = a.reshape(a.size)
    if a.itemsize == 4:
        return _no_field_full(flat.view(np.uint32), np.uint32(0x7F800000))
    return _no_field_full(flat.view(np.uint64), np.uint64(0x7FF0000000000000))


@jit
def _no_field_full(bits, mask):
    """True when no element of bits has every bit of mask set: the max over the
    elements of bits & mask (in bits' unsigned type) is below mask."""
    m = bits.dtype.type(0)
    for i in range(bits.size):
        m = max(m, bits[i] & mask)
    return m != mask


@jit
def _phase_rows(phase, rb, Pw, sh, sw, ph, pw, H, W, Wq, RB):
    """Where dx phase ``phase`` (a, b = divmod(phase, Pw)), row block rb, lands in dx:
    (a, b, u0, u1, v_lo, v_hi). Cell (u, v) of the phase's grid (row pitch Wq) is
    dx cell (u*sh + a - ph, v*sw + b - pw); rows u0..u1-1 and columns v_lo..v_hi-1
    are those inside dx (u0 >= u1: the block holds no dx row)."""
    a = phase // Pw
    bq = phase % Pw
    u_lo = (ph - a + sh - 1) // sh if ph > a else 0
    u_hi = (ph + H - 1 - a) // sh + 1 if ph + H - 1 >= a else 0
    u0 = u_lo + rb * RB
    u1 = min(u_hi, u0 + RB)
    v_lo = (pw - bq + sw - 1) // sw if pw > bq else 0
    v_hi = min(Wq, (pw + W - 1 - bq) // sw + 1) if pw + W - 1 >= bq else 0
    return a, bq, u0, u1, v_lo, v_hi


@jit
def _store_phase_rows(dx_n, acc, nb, c0, a, bq, u0, u1, v_lo, v_hi, sh, sw, ph, pw, Wq):
    """dx_n[c0 + r] at the cells of rows u0..u1-1 of phase (a, bq) (``_phase_rows``)
    = acc[r, (u - u0)*Wq + v], for the block's nb channels; acc: (KB, >= (u1-u0)*Wq)."""
    for r in range(nb):
        for u in range(u0, u1):
            h = u * sh + a - ph
            row = acc[r, (u - u0) * Wq:(u - u0 + 1) * Wq]
            for v in range(v_lo, v_hi):
                dx_n[c0 + r, h, v * sw + bq - pw] = row[v]


@jit
def _dx_block(dx_n, dp_n, wt_cb, ops, starts, phase, rb, c0, nb, sh, sw, Pw, ph, pw, Wq, RB,
              within, Ty, Tx, OH, OW, step, p0):
    """dx of one image, channels c0..c0+nb-1 (one block), one phase, one block of rows.

    dx_n: (C, H, W) written; dp_n: (K, Hd*Wq) dout planes of that image, dout
    at rows Ty-1.., columns Tx-1.. (OH x OW); the block's group reads the
    dout planes from p0 on. within: sum only the taps that read inside dout
    (``_accumulate_within``), needed when a weight is not finite.
    """
    C, H, W = dx_n.shape
    a, bq, u0, u1, v_lo, v_hi = _phase_rows(phase, rb, Pw, sh, sw, ph, pw, H, W, Wq, RB)
    if u0 >= u1:
        return
    acc = np.zeros((KB, (u1 - u0) * Wq), dtype=dp_n.dtype)
    if within:
        _accumulate_within(acc, nb, dp_n, ops, starts[phase], starts[phase + 1], wt_cb, u0 * Wq,
                           step, p0, Wq, Ty - 1, Ty - 1 + OH, Tx - 1, Tx - 1 + OW)
    else:
        _accumulate(acc, nb, dp_n, ops, starts[phase], starts[phase + 1], wt_cb, u0 * Wq, step,
                    p0)
    _store_phase_rows(dx_n, acc, nb, c0, a, bq, u0, u1, v_lo, v_hi, sh, sw, ph, pw, Wq)


def _dx_row_blocks(H, sh, RB):
    # dx rows of phase a are u*sh + a - ph for u in [u_lo, u_hi): at most ceil(H/sh)
    return ((H + sh - 1) // sh + RB - 1) // RB


@jit(parallel=True)
def _conv_dx(dp, wt, ops, starts, C, H, W, sh, sw, ph, pw, Wq, RB, nrb, EH, EW, OH, OW, groups,
             step):
    """dp: dout planes (N, K, Hd*Wq), wt: (groups * Cg/KB, Kg*FH*FW, KB) -> dx: (N, C, H, W).

    EH, EW: the dilated filter's extent; ops, starts: the tap tables of one
    group (Kg = K/groups filters); a block of dx channels of group g reads that
    group's dout planes only.
    """
    N = dp.shape[0]
    nblk = wt.shape[0]
    ncb = nblk // groups              # blocks per group
    Cg = C // groups
    Kg = dp.shape[1] // groups
    Pw = _phases(sw, EW)
    P = _phases(sh, EH) * Pw
    # every dx cell of a phase the window covers lies in exactly one task's
    # (phase, row block); the other phases (stride > extent) get no gradient
    if P < sh * sw:
        dx = np.zeros((N, C, H, W), dtype=dp.dtype)
    else:
        dx = np.empty((N, C, H, W), dtype=dp.dtype)
    within = not _all_finite(wt)
    Ty = (EH - 1) // sh + 1
    Tx = (EW - 1) // sw + 1
    for task in prange(N * nblk * P * nrb):
        n = task // (nblk * P * nrb)
        blk = (task // (P * nrb)) % nblk
        g = blk // ncb
        c0 = g * Cg + (blk % ncb) * KB
        _dx_block(dx[n], dp[n], wt[blk], ops, starts, (task // nrb) % P, task % nrb,
                  c0, min(KB, (g + 1) * Cg - c0), sh, sw, Pw, ph, pw, Wq, RB, within, Ty, Tx,
                  OH, OW, step, g * Kg)
    return dx


@lru_cache(maxsize=64)
def _backward_taps(K, FH, FW, sh, sw, Hd, Wq, Ty, Tx, dh=1, dw=1):
    """The dx tap tables of ``_conv_dx_strips``: (taps, which, starts).

    Phase p = a*Pw + b of dx owns entries starts[p]:starts[p+1] (possibly none).
    An entry is one tap (k, fy, fx) of the phase (as in ``_backward_ops``):
    taps: uint64 offset of its dout cell in the group's bordered dout planes
    laid end to end (Hd*Wq cells each), k*Hd*Wq + (Ty-1-ty)*Wq + Tx-1-tx;
    which: int64 weight index (k*FH + fy)*FW + fx, to gather the weights.
    """
    Ph = _phases(sh, dh * (FH - 1) + 1)
    Pw = _phases(sw, dw * (FW - 1) + 1)
    taps, which, starts = [], [], [0]
    for a in range(Ph):
        for b in range(Pw):
            for k in range(K):
                for fy in range(FH):
                    for fx in range(FW):
                        if fy * dh % sh == a and fx * dw % sw == b:
                            ty, tx = fy * dh // sh, fx * dw // sw
                            taps.append(k * Hd * Wq + (Ty - 1 - ty) * Wq + Tx - 1 - tx)
                            which.append((k * FH + fy) * FW + fx)
            starts.append(len(taps))
    return (np.array(taps, dtype=np.uint64), np.array(which, dtype=np.int64),
            np.array(starts, dtype=np.int64))


# Why faster than _conv_dx's passes: as in the forward, a tile of dx channels x a strip
# stays in registers for a chunk of taps, one store per chunk instead of a
# load and a store of the accumulator per three taps.
@jit(parallel=True)
def _conv_dx_strips(dp, wtp, taps, starts, C, H, W, sh, sw, ph, pw, Wq, RB, nrb, EH, EW, groups,
                    chunk):
    """The float32 dx with finite weights. dp: bordered dout planes (N, K, Hd*Wq),
    wtp: (groups * Cg/R, T, R), blocks of R channels (``_tile_rows``), each block's
    weights in the order of the tap table (``_backward_taps``: taps, starts) of
    one group -> dx: (N, C, H, W).

    A task is (image, block of R dx channels, phase, block of RB rows of the
    phase), as in ``_conv_dx``; it runs ``_forward_strips`` over its phase's
    taps, chunk taps per visit of a strip, on the group's dout planes. The
    strips run up to VW - 1 cells past the task's rows: dp holds spare rows
    for the last plane's reads, and those cells are never written to dx.
    """
    N = dp.shape[0]
    nblk = wtp.shape[0]
    ncb = nblk // groups              # blocks per group
    Cg = C // groups
    Kg = dp.shape[1] // groups
    L = dp.shape[2]
    Pw = _phases(sw, EW)
    P = _phases(sh, EH) * Pw
    R = wtp.shape[2]                  # dx channels per block
    vw = TILE_BYTES // R // dp.itemsize
    # as in _conv_dx: phases the window does not cover get no gradient
    if P < sh * sw:
        dx = np.zeros((N, C, H, W), dtype=dp.dtype)
    else:
        dx = np.empty((N, C, H, W), dtype=dp.dtype)
    for task in prange(N * nblk * P * nrb):
        n = task // (nblk * P * nrb)
        blk = (task // (P * nrb)) % nblk
        phase = (task // nrb) % P
        g = blk // ncb
        c0 = g * Cg + (blk % ncb) * R
        nb = min(R, (g + 1) * Cg - c0)
        a, bq, u0, u1, v_lo, v_hi = _phase_rows(phase, task % nrb, Pw, sh, sw, ph, pw, H, W, Wq,
                                                RB)
        if u0 >= u1:
            continue
        Mp = -(-(u1 - u0) * Wq // vw) * vw
        acc = np.zeros(R * Mp, dtype=dp.dtype)
        src = dp[n].reshape(dp.shape[1] * L)
        t_lo = starts[phase]
        t_hi = starts[phase + 1]
        for t0 in range(t_lo, t_hi, chunk):
            t1 = min(t_hi, t0 + chunk)
            _forward_strips(acc, src, taps[t0:t1], wtp[blk, t0:t1].reshape((t1 - t0) * R),
                            g * Kg * L + u0 * Wq, t0 == t_lo)
        _store_phase_rows(dx[n], acc.reshape(R, Mp), nb, c0, a, bq, u0, u1, v_lo, v_hi, sh, sw,
                          ph, pw, Wq)
    return dx


# Why faster than dot products of whole rows (the kernel this replaced): each of
# those ended in a horizontal sum of its vector lanes and a scalar tail, and on
# LeNet's 140-cell maps the tail and the sums cost more than the vector loop.
# Here the tile keeps KB filters x DW_TAPS taps of lane sums in registers over
# the whole grid of every image: one vector load of each dout row and of each
# shifted x row feeds KB*DW_TAPS multiply-adds, and the lanes are summed once,
# at the end. Measured, paired against that kernel (1 thread, CPU time of the
# process): dW 0.43-0.61x the time on the 1x7, 7x1, 5x5 and grouped layers of
# the benchmark suite, 0.73-0.78x on the one-channel 5x5. A visit of the tile
# covers several images of a small map (``per_visit``), so that its lanes are
# loaded and stored less often: dW 0.79-0.87x the time again on LeNet's 5x5
# and the 7x1 layer, the same sums bit for bit.
@jit(in_order=True, inline=True)
def _dw_tile(lanes, src, dsrc, cols, drows, n0, n1, xs, ds, m0, L):
    """lanes[(r*DW_TAPS + p)*VW + j] += sum over images n0 <= n < n1, then over steps m
    of dsrc[n*ds + drows[r] + m + j] * src[n*xs + cols[p] + m + j], m = m0, m0 + VW,
    ... < m0 + L (L a multiple of VW).

    lanes: (TILE_BYTES / itemsize,) the lane sums of KB filters x DW_TAPS
    columns (one tap of one channel each); src: x planes of all images flat,
    xs cells per image; dsrc: dout planes of all images flat, ds cells per
    image; cols: (DW_TAPS,) uint64 offsets of the columns' taps in an image's
    planes; drows: (KB,) uint64 offsets of the filters' dout planes in an
    image's. Each step is KB x DW_TAPS vector multiply-adds (``_madd_vector``).
    """
    tile = _register_tile(lanes)
    VW = np.uint64(tile.size // TILE_REGISTERS)
    R = np.uint64(KB)
    P = np.uint64(DW_TAPS)
    for i in range(np.uint64(tile.size)):
        tile[i] = lanes[i]
    um0 = np.uint64(m0)
    for n in range(np.uint64(n0), np.uint64(n1)):
        xn = n * np.uint64(xs) + um0
        dn = n * np.uint64(ds) + um0
        for m in range(np.uint64(0), np.uint64(L), VW):
            for p in range(P):
                for r in range(R):
                    _madd_vector(tile, (r * P + p) * VW, dsrc, dn + drows[r] + m,
                                 src, xn + cols[p] + m)
    for i in range(np.uint64(tile.size)):
        lanes[i] = tile[i]


@jit
def _dw_tail(lanes, src, dsrc, cols, drows, n0, n1, xs, ds, m0, L):
    """``_dw_tile`` for a run of L < VW cells from m0, one cell per lane: the ends of
    the output rows, where dW sums row by row (x holds nan or inf)."""
    VW = lanes.size // TILE_REGISTERS
    for n in range(n0, n1):
        for p in range(DW_TAPS):
            for r in range(KB):
                for j in range(L):
                    lanes[(r * DW_TAPS + p) * VW + j] += (dsrc[n * ds + drows[r] + m0 + j]
                                                          * src[n * xs + cols[p] + m0 + j])


@jit(parallel=True)
def _conv_dw(xq, dp, cols, Cg, FN, FH, FW, OH, OW, Wq, base, groups, fpt, bpt):
    """dW[k, c, fy, fx] = sum over n and the wide grid of dout * shifted x planes.

    xq: (N, C*planes, Hq*Wq), dp: (N, FN, Hd*Wq) dout planes, read from cell
    ``base`` on; cols: the group's Cg*FH*FW tap offsets (``_dw_columns``),
    padded to blocks of DW_TAPS -> dW: (FN, Cg, FH, FW). One task per group,
    ``fpt`` blocks of KB filters and ``bpt`` blocks of columns: it alone writes
    those dW entries. Each lane of a tile adds its cells in the order of the
    images and of the grid, and the lanes are summed in order at the end, so
    the result does not depend on how the tasks are cut.

    Normally the grid is the whole OH*Wq cells in DW_CHUNK runs, the last one
    rounded up to a whole vector: the spare columns, and the cells past the
    grid, hold zero dout, and zero times a finite x adds nothing (the planes
    have spare rows of zeros for the last vector). When x holds nan or inf
    (0 * inf is nan) the grid is the OW real columns of each row.
    """
    N = xq.shape[0]
    T = FH * FW
    FNg = FN // groups
    nkb = (FNg + KB - 1) // KB
    nfc = (nkb + fpt - 1) // fpt
    nblk = cols.shape[0] // DW_TAPS
    ntc = (nblk + bpt - 1) // bpt
    cells = TILE_BYTES // xq.itemsize
    VW = cells // TILE_REGISTERS
    Pg = xq.shape[1] // groups * xq.shape[2]        # cells of one group's planes
    HdW = dp.shape[2]
    within = not _all_finite(xq)
    rows, run, pitch = (OH, OW, Wq) if within else (1, -(-OH * Wq // VW) * VW, 0)
    # images per visit of a tile: on small maps a visit covers several, so
    # that the tile's lanes are loaded and stored once per about DW_CHUNK cells
    per_visit = max(1, DW_CHUNK // (rows * run))
    src = xq.reshape(xq.size)
    dsrc = dp.reshape(dp.size)
    xs = xq.shape[1] * xq.shape[2]
    ds = dp.shape[1] * HdW
    dW = np.empty((FN, Cg, FH, FW), dtype=xq.dtype)
    for task in prange(groups * nfc * ntc):
        g = task // (nfc * ntc)
        kb0 = (task // ntc) % nfc * fpt
        kb1 = min(nkb, kb0 + fpt)
        b0 = task % ntc * bpt
        b1 = min(nblk, b0 + bpt)
        nbt = b1 - b0
        lanes = np.zeros(((kb1 - kb0) * nbt, cells), dtype=xq.dtype)
        # the filter blocks' dout planes; a partial block repeats its last filter
        drows = np.empty((kb1 - kb0, KB), dtype=np.uint64)
        for kb in range(kb0, kb1):
            k0 = g * FNg + kb * KB
            for r in range(KB):
                drows[kb - kb0, r] = min(k0 + r, (g + 1) * FNg - 1) * HdW + base
        xcols = cols + np.uint64(g * Pg)
        for n0 in range(0, N, per_visit):
            n1 = min(N, n0 + per_visit)
            for i in range(rows):
                for m0 in range(i * pitch, i * pitch + run, DW_CHUNK):
                    L = min(DW_CHUNK, i * pitch + run - m0)
                    Lv = L - L % VW
                    # the dout runs of a filter block (KB rows, at most about
                    # DW_CHUNK cells over the visit's images) stay in L1 for
                    # all its column blocks
                    for kb in range(kb0, kb1):
                        for blk in range(b0, b1):
                            q = (kb - kb0) * nbt + blk - b0
                            cb = xcols[blk * DW_TAPS:(blk + 1) * DW_TAPS]
                            _dw_tile(lanes[q], src, dsrc, cb, drows[kb - kb0], n0, n1, xs, ds,
                                     m0, Lv)
                            if Lv < L:
                                _dw_tail(lanes[q], src, dsrc, cb, drows[kb - kb0], n0, n1, xs,
                                         ds, m0 + Lv, L - Lv)
        for kb in range(kb0, kb1):
            k0 = g * FNg + kb * KB
            for blk in range(b0, b1):
                q = (kb - kb0) * nbt + blk - b0
                for p in range(DW_TAPS):
                    col = blk * DW_TAPS + p
                    if col >= Cg * T:
                        break
                    for r in range(min(KB, (g + 1) * FNg - k0)):
                        at = (r * DW_TAPS + p) * VW
                        s = lanes[q, at]
                        for j in range(1, VW):
                            s += lanes[q, at + j]
                        dW[k0 + r, col // T, col % T // FW, col % FW] = s
    return dW


# Why faster than ``_dw_tile`` where a group has DW_LANE_VECTORS vectors of
# filters (and 64) or more: each step loads one vector of dout per vector of filters
# (contiguous: dout is laid pixel-major) and one x value per column, broadcast,
# for DW_ROWS * DW_LANE_VECTORS multiply-adds; the lanes are filters, so no lane
# sums at the end and no vector tails, and the run is the grid as it is, not
# rounded up to a vector. Measured, paired (1 thread, CPU time of the process),
# backward without dx: 0.59-0.66x the time on the 7x1, 1x7 and 5x5 stride-2
# layers of the benchmark suite, 0.72-0.76x on the 3x3 stride-2 and ResNet's
# 128-channel 3x3, 0.89-0.92x on the 56x56 3x3 maps; with dx 0.73-0.89x, 0.98-1.06x
# on the 56x56 maps. With fewer filters most lanes would idle: 1.8x the time of
# ``_dw_tile`` on LeNet's 16.
@jit(in_order=True, inline=True)
def _dw_lanes_tile(acc, src, dT, cols, xn, dn, m0, L):
    """acc[p*F + l] += sum over m0 <= m < m0 + L of src[xn + cols[p] + m] * dT[dn + m*F + l],
    in the order of m; F = DW_LANE_VECTORS vectors of lanes, p < DW_ROWS.

    acc: (TILE_BYTES / itemsize,) the tile, DW_ROWS columns (one tap of one
    channel each) by F filters; src: x planes, flat; dT: dout of F filters laid
    pixel-major, flat; cols: (DW_ROWS,) uint64 offsets of the columns' taps.
    """
    tile = _register_tile(acc)
    F = np.uint64(tile.size // DW_ROWS)
    VL = F // np.uint64(DW_LANE_VECTORS)               # lanes of one vector
    P = np.uint64(DW_ROWS)
    for i in range(np.uint64(tile.size)):
        tile[i] = acc[i]
    for m in range(np.uint64(m0), np.uint64(m0 + L)):
        d0 = np.uint64(dn) + m * F
        for p in range(P):
            xv = src[np.uint64(xn) + cols[p] + m]
            for v in range(np.uint64(DW_LANE_VECTORS)):
                _madd_broadcast(tile, p * F + v * VL, xv, dT, d0 + v * VL)
    for i in range(np.uint64(tile.size)):
        acc[i] = tile[i]


# Why faster than writing each filter's map into its lane: a cell's F lanes are
# written as one run, read from F maps whose lines stay in L1 from one cell to
# the next, where a map written lane by lane touched a line of dT per cell and
# had it evicted before the next filter's pass. ResNet-18's stem (8x3x224x224,
# 64 7x7 filters, stride 2): 6-7 ms against 40-42; its backward without dx
# 0.50x the time (float32, 2 threads, paired in one process, medians of 4
# alternating rounds of 7 calls); the suite's direct layers with 64 filters or
# more 0.89-0.98x (AlexNet's first layer 1.03, noise).
@jit(parallel=True)
def _dout_lanes(dout, groups, F, Wq, dT):
    """dout: (N, FN, OH, OW) -> dT: (groups, nfb, N, OH*Wq, F), each group's filters
    in blocks of F lanes, pixel-major on the wide grid of pitch Wq: cell
    (oy, ox) at m = oy*Wq + ox; zeros in the spare columns and in the lanes past
    the group's filters. Also the per-map sums of dout, (N, FN)."""
    N, FN, OH, OW = dout.shape
    FNg = FN // groups
    nfb = dT.shape[1]
    P = OH * OW
    ds = dout.reshape(N * FN * P)
    sums = np.zeros((N, FN), dtype=dout.dtype)
    uF = np.uint64(F)
    uP = np.uint64(P)
    for task in prange(groups * nfb * N):
        n = task % N
        blk = task // N                          # g * nfb + fb
        g, fb = blk // nfb, blk % nfb
        out = dT[g, fb, n].reshape(OH * Wq * F)
        k0 = g * FNg + fb * F
        lanes = np.uint64(min(F, FNg - fb * F))
        for oy in range(OH):
            for ox in range(Wq):
                o = np.uint64((oy * Wq + ox) * F)
                if ox < OW:
                    q = np.uint64((n * FN + k0) * P + oy * OW + ox)
                    for f in range(lanes):
                        out[o + f] = ds[q + f * uP]
                    for f in range(lanes, uF):
                        out[o + f] = 0
                else:
                    for f in range(uF):
                        out[o + f] = 0
        for f in range(lanes):
            q = np.uint64((n * FN + k0) * P) + f * uP
            total = dout.dtype.type(0)
            for v in range(uP):
                total += ds[q + v]
            sums[n, k0 + f] = total
    return sums


@jit(parallel=True)
def _conv_dw_lanes(xq, dT, cols, Cg, FN, FH, FW, OH, Wq, groups, rpt):
    """dW[k, c, fy, fx] = sum over n and the wide grid of dout * shifted x planes,
    with the filters in the lanes.

    xq: (N, C*planes, Hq*Wq) x planes, all finite (a spare column's zero dout
    times x must add nothing); dT: (groups, nfb, N, OH*Wq, F) (``_dout_lanes``);
    cols: one group's Cg*FH*FW tap offsets (``_dw_columns``) -> dW: (FN, Cg,
    FH, FW). One task per group, block of F filters and ``rpt`` blocks of
    DW_ROWS columns: it alone writes those dW entries, and each of them adds
    its terms image by image, in grid order, whatever the tasks.
    """
    N = xq.shape[0]
    T = FH * FW
    FNg = FN // groups
    nfb, M, F = dT.shape[1], dT.shape[3], dT.shape[4]
    nrb = -(-Cg * T // DW_ROWS)
    ntr = -(-nrb // rpt)
    cells = TILE_BYTES // xq.itemsize
    Pg = xq.shape[1] // groups * xq.shape[2]        # cells of one group's planes
    xs = xq.shape[1] * xq.shape[2]
    src = xq.reshape(xq.size)
    dW = np.empty((FN, Cg, FH, FW), dtype=xq.dtype)
    for task in prange(groups * nfb * ntr):
        g = task // (nfb * ntr)
        fb = task // ntr % nfb
        r0 = task % ntr * rpt
        r1 = min(nrb, r0 + rpt)
        tiles = np.zeros((r1 - r0, cells), dtype=xq.dtype)
        xcols = cols + np.uint64(g * Pg)
        d = dT[g, fb].reshape(N * M * F)
        for n in range(N):
            for m0 in range(0, M, DW_RUN):
                L = min(DW_RUN, M - m0)
                for rb in range(r0, r1):
                    _dw_lanes_tile(tiles[rb - r0], src, d, xcols[rb * DW_ROWS:(rb + 1) * DW_ROWS],
                                   n * xs, n * M * F, m0, L)
        for rb in range(r0, r1):
            for p in range(DW_ROWS):
                col = rb * DW_ROWS + p
                if col >= Cg * T:
                    break
                for f in range(min(F, FNg - fb * F)):
                    dW[g * FNg + fb * F + f, col // T, col % T // FW, col % FW] = tiles[rb - r0,
                                                                                      p * F + f]
    return dW


@lru_cache(maxsize=64)
def _dw_columns(C, FH, FW, sh, sw, Hq, Wq, dh=1, dw=1):
    """dW's columns, (c, fy, fx) in W's order: each tap's offset in one group's planes
    (``_forward_taps``), the last one repeated up to a whole block of DW_TAPS (and
    of DW_ROWS)."""
    taps = _forward_taps(C, FH, FW, sh, sw, Hq, Wq, dh, dw)
    return np.concatenate([taps, np.repeat(taps[-1:], -taps.size % math.lcm(DW_TAPS, DW_ROWS))])


def _dw_tasks(blocks, columns, threads):
    """(fpt, bpt): filter blocks and column blocks per dW task. Up to 8 x 8: a filter
    block's dout runs stay in L1 for 8 blocks of columns, and a visit's x rows
    serve 8 filter blocks (measured, 1 thread: 0.64-0.66x the time of 1 x 1 on
    the 1x7, 7x1 and 5x5 layers of the benchmark suite, within noise of 4 x 4
    and 16 x 4); fewer where there would be fewer than four tasks per thread."""
    fpt, bpt = min(8, blocks), min(8, columns)
    while -(-blocks // fpt) * -(-columns // bpt) < 4 * threads and max(fpt, bpt) > 1:
        if fpt >= bpt:
            fpt = -(-fpt // 2)
        else:
            bpt = -(-bpt // 2)
    return fpt, bpt


def _lane_tasks(blocks, rows, threads):
    """Blocks of DW_ROWS columns per ``_conv_dw_lanes`` task, for ``blocks`` filter
    blocks (all groups) and ``rows`` column blocks: up to 16, so that a run of dout
    serves many columns from L2; fewer where there would be fewer than four tasks
    per thread."""
    rpt = min(16, rows)
    while blocks * -(-rows // rpt) < 4 * threads and rpt > 1:
        rpt = -(-rpt // 2)
    return rpt


def _conv_db(sums):
    """sums: (N, K) per-map sums of dout -> db: (K,), added image by image (NumPy, not compiled)."""
    db = sums[0].copy()
    for n in range(1, sums.shape[0]):
        db += sums[n]
    return db


@one_launch_at_a_time
def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C/groups, FH, FW), db: (FN,).

    dx is None, and its kernels do not run, when ``spec.input_grad`` is False.
    """
    xq, W, spec, Hq, Wq = cache
    need_dx = spec.input_grad
    # xq: planes of the transposed problem (conv_forward); dx runs on the problem
    # as given, whose planes have rows of Wq cells
    transposed = _transposes(spec)
    if transposed:
        Hq, Wq = None, _plane_geometry(spec, strips=True)[1]
    (sh, sw), (ph, pw), (OH, OW) = spec.stride, spec.pad, spec.out_hw
    (dh, dw), G = spec.dilation, spec.groups
    N, C, H, Wd = spec.x_shape
    FN, Cg, FH, FW = W.shape
    EH, EW = spec.extent
    Ty = (EH - 1) // sh + 1
    Tx = (EW - 1) // sw + 1
    # rows: dout shifted down by Ty-1, plus what the last dx row of any phase
    # reads, and what dW's last vector reads
    Hd = max(max(OH, (ph + H - 1) // sh + 1) + Ty,
             _dw_rows((Ty - 1) * Wq + Tx - 1, OH, Wq, dout.itemsize))
    step = _tap_step(sw, dw)
    depthwise = _is_depthwise(spec)
    # dW with the filters in the lanes: enough filters per group, and x finite
    # (a spare column's zero dout times x must add nothing)
    lanes = not depthwise and _lanes_fit(FN // G, dout.dtype) and _all_finite(xq)
    # a depthwise convolution with a weight that is not finite runs the general
    # dx loops: they sum only the terms the naive path has
    depthwise_dx = need_dx and depthwise and _all_finite(W)
    dx = None
    if depthwise_dx:
        m = FN // C
        ops, starts = _backward_ops(m, FH, FW, sh, sw, Wq, Ty, Tx, dh, dw)
        dx = _depthwise_dx(dout, W.reshape(C, m * FH * FW), ops, starts, C, H, Wd, sh, sw, ph,
                           pw, Wq, Hd, Ty, Tx, _phases(sh, EH), _phases(sw, EW), step)
    elif need_dx or not (depthwise or transposed or lanes):
        # dx on the register tile: float32, blocks of KB channels (with fewer,
        # the tile's spare rows cost more than it saves: measured 1.1-1.6x
        # slower with 3 channels), finite weights (a zero border times a weight
        # must add nothing). Its last strip reads up to VW - 1 cells past the
        # last plane: spare rows of zeros.
        strips = need_dx and dout.dtype == np.float32 and Cg >= KB and _all_finite(W)
        if strips:
            Hd += -(-_strip_cells(TILE_ROWS // 2, dout.itemsize) // Wq)
        # dout in bordered planes: read by the general dx loops and the general dW
        scratch = _workspace.get(N * FN * Hd * Wq, dout.dtype).reshape(N, FN, Hd * Wq)
        dp, sums = _dout_planes(dout, Ty, Tx, Wq, scratch)
        if need_dx:
            RB = _rows_per_block(Wq, dout.itemsize)
            nrb = _dx_row_blocks(H, sh, RB)
            # per group: (Cg, FNg*FH*FW), dx channel c's weights over the group's filters
            Wt = W.reshape(G, FN // G, Cg, FH * FW).transpose(0, 2, 1, 3)
            # blocks of the register tile's channels, or of the passes' KB
            wt = _weight_blocks(np.ascontiguousarray(Wt).reshape(C, FN // G * FH * FW), G,
                                _tile_rows(Cg) if strips else KB)
            if strips:
                taps, which, starts = _backward_taps(FN // G, FH, FW, sh, sw, Hd, Wq, Ty, Tx,
                                                     dh, dw)
                dx = _conv_dx_strips(dp, np.ascontiguousarray(wt[:, which]), taps, starts, C,
                                     H, Wd, sh, sw, ph, pw, Wq, RB, nrb, EH, EW, G, CHUNK_TAPS)
            else:
                ops, starts = _backward_ops(FN // G, FH, FW, sh, sw, Wq, Ty, Tx, dh, dw)
                dx = _conv_dx(dp, wt, ops, starts, C, H, Wd, sh, sw, ph, pw, Wq, RB, nrb, EH,
                              EW, OH, OW, G, step)
    if depthwise:
        dW, db = _depthwise_dw(xq, dout, _depthwise_taps(FH, FW, sh, sw, dh, dw, Wq,
                                                         _phases(sw, EW)), FN // C, FH, FW, Wq)
        return dx, dW, db
    if transposed:
        dW, sums = _transposed_dw(xq, dout, W.shape, _transposed(spec), cache.Hq, cache.Wq,
                                  lanes)
    elif lanes:
        dW, sums = _weight_grad_lanes(xq, dout, W.shape, spec, Hq, Wq)
    else:
        dW = _weight_grad(xq, dp, (Ty - 1) * Wq + Tx - 1, W.shape, spec, Hq, Wq)
    return dx, dW, _conv_db(sums)


def _dw_rows(base, OH, Wq, itemsize):
    """Rows of a dout plane that dW reads when dout's first cell is at ``base``: its
    grid of OH rows of Wq cells runs in whole vectors (``_conv_dw``), up to a vector
    less one cell past the grid's end."""
    vw = _VECTOR_BYTES // itemsize
    return -(-(base + -(-OH * Wq // vw) * vw) // Wq)


def _weight_grad(xq, dp, base, w_shape, spec, Hq, Wq):
    """dW: (FN, C/groups, FH, FW) from spec's planes xq and the dout planes dp (dout's
    first cell at ``base``): ``_conv_dw`` with its columns and task sizes."""
    FN, Cg, FH, FW = w_shape
    (sh, sw), (dh, dw), G = spec.stride, spec.dilation, spec.groups
    cols = _dw_columns(Cg, FH, FW, sh, sw, Hq, Wq, dh, dw)
    fpt, bpt = _dw_tasks(-(-FN // G // KB), cols.size // DW_TAPS, numba.get_num_threads())
    return _conv_dw(xq, dp, cols, Cg, FN, FH, FW, *spec.out_hw, Wq, base, G, fpt, bpt)


def _lanes_per_block(dtype):
    """Filters in one block of ``_conv_dw_lanes``: DW_LANE_VECTORS vectors of lanes."""
    return DW_LANE_VECTORS * _VECTOR_BYTES // np.dtype(dtype).itemsize


def _lanes_fit(FNg, dtype):
    """True when a group's FNg filters fill a block of lanes (``_lanes_per_block``),
    and are 64 or more: dW then runs with the filters in the lanes
    (``_conv_dw_lanes``).

    The 64: compiled for an AVX2 target (one block of 4 ymm is 32 float32
    filters), the backward without dx took, paired with ``_dw_tile`` (1 thread,
    CPU time of the process), 1.63x the time on cifar_3to32's 32 filters, 0.90x
    on 32 filters of 32 channels on 28x28 maps, 1.23x on 48 filters of 16
    channels on 24x24 maps; 0.82-0.91x with 64 to 128 filters (the 5x5
    stride-2, 7x1 and ResNet 128-channel layers of the benchmark suite).
    """
    return FNg >= max(64, _lanes_per_block(dtype))


def _weight_grad_lanes(xq, dout, w_shape, spec, Hq, Wq):
    """(dW, per-map sums of dout) from spec's planes xq (all finite) and dout: (N, FN,
    OH, OW), with the filters in the lanes: ``_conv_dw_lanes`` on dout laid
    pixel-major (``_dout_lanes``)."""
    FN, Cg, FH, FW = w_shape
    (sh, sw), (dh, dw), G = spec.stride, spec.dilation, spec.groups
    N, OH = dout.shape[0], dout.shape[2]
    F = _lanes_per_block(dout.dtype)
    nfb = -(-(FN // G) // F)
    dT = _workspace.get(G * nfb * N * OH * Wq * F, dout.dtype, slot=2)
    dT = dT.reshape(G, nfb, N, OH * Wq, F)
    sums = _dout_lanes(dout, G, F, Wq, dT)
    cols = _dw_columns(Cg, FH, FW, sh, sw, Hq, Wq, dh, dw)
    rpt = _lane_tasks(G * nfb, cols.size // DW_ROWS, numba.get_num_threads())
    return _conv_dw_lanes(xq, dT, cols, Cg, FN, FH, FW, OH, Wq, G, rpt), sums


def _transposed_dw(xq_t, dout, w_shape, spec_t, Hq_t, Wq_t, lanes):
    """(dW, per-map sums of dout) of a layer whose forward ran transposed, from that
    forward's planes xq_t of spec_t (``_transposed``): the grid of the transposed
    problem has no spare columns to waste (``_transposes``). dout is laid across,
    with the filters in the lanes (``lanes``) or in planes of its own, at row 0,
    column 0: dW needs no border."""
    N = dout.shape[0]
    FN, Cg, FH, FW = w_shape
    dout_t = np.ascontiguousarray(dout.swapaxes(2, 3))
    if lanes:
        dW_t, sums = _weight_grad_lanes(xq_t, dout_t, (FN, Cg, FW, FH), spec_t, Hq_t, Wq_t)
    else:
        OH_t = spec_t.out_hw[0]
        Hd_t = _dw_rows(0, OH_t, Wq_t, dout.itemsize)
        scratch = _workspace.get(N * FN * Hd_t * Wq_t, dout.dtype, slot=1)
        dp_t, sums = _dout_planes(dout_t, 1, 1, Wq_t, scratch.reshape(N, FN, Hd_t * Wq_t))
        dW_t = _weight_grad(xq_t, dp_t, 0, (FN, Cg, FW, FH), spec_t, Hq_t, Wq_t)
    return np.ascontiguousarray(dW_t.transpose(0, 1, 3, 2)), sums
