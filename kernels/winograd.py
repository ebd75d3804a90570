"""The winograd path: 3x3 stride-1 convolutions with Winograd's minimal filtering.

A 3x3 stride-1 convolution computes each output pixel from 9 products. Winograd's
minimal filtering algorithm F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016) computes an m x m block of outputs from an
(m+2) x (m+2) tile of input with (m+2)^2 products instead of 9*m^2: 16 instead of
36 for F(2x2, 3x3), 36 instead of 144 for F(4x4, 3x3). With a = m + 2:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

where d is an a x a input tile, g the 3x3 filter, * the elementwise product and
Y the m x m output block. Over channels and filters the elementwise products
become a sum over channels for each of the a*a positions of the tile, which is a
matrix product: for every (xi, nu) of the a x a transformed tile,

    M[xi, nu] (FN, tiles) = U[xi, nu] (FN, C) @ V[xi, nu] (C, tiles),

run here as one batched BLAS call, ``numpy.matmul`` on (a*a, FN, C) x (a*a, C,
tiles). The transforms (V from the input, U from the filters, Y from M, and
the back-transform of dW) are Numba parallel loops; most of the FLOPs are in
the products.

Where B, G and A come from (Toom-Cook): first the 1-D linear convolution of
an m-sample signal with a 3-tap filter. Read both as polynomials, of degree
m - 1 and 2; their product has degree m + 1, so its m + 2 coefficients are
fixed by its values at m + 2 points. So: evaluate the filter polynomial at the
points (the matrix G), evaluate the signal polynomial there too, multiply the
m + 2 pairs (the only general multiplications), and recover the coefficients
by Lagrange interpolation, which is the Chinese remainder theorem for the
moduli (x - p) of the points p. The point "inf" stands for the leading
coefficient (the value of x^deg f(1/x) at 0) and saves one large point. The
interpolation's denominators (2 for the points 0, 1, -1; 4, 6 and 24 once 2
and -2 join) are folded into G, where they cost nothing at run time since the
filters are transformed once per call. A correlation, y_i = sum_k d[i+k]
g[k], which is what convolution layers compute, is the transpose of that
linear convolution with respect to the signal (the transposition principle):
transposing the algorithm turns the interpolation matrix into B^T, which
combines the m + 2 input samples, and the signal's evaluation matrix into
A^T, which maps the m + 2 products to the m outputs (up to the signs chosen
for the point at infinity). The 2-D algorithm applies the 1-D one along rows
and along columns: B^T d B, G g G^T, A^T (.) A.

F(2x2, 3x3), points 0, 1, -1, inf::

    B^T = [[1,  0, -1,  0],      G = [[  1,    0,    0],      A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],           [1/2,  1/2,  1/2],             [0, 1, -1, -1]]
           [0, -1,  1,  0],           [1/2, -1/2,  1/2],
           [0,  1,  0, -1]]           [  0,    0,    1]]

F(4x4, 3x3), points 0, 1, -1, 2, -2, inf::

    B^T = [[4,  0, -5,  0, 1, 0],      G = [[ 1/4,     0,    0],
           [0, -4, -4,  1, 1, 0],           [-1/6,  -1/6, -1/6],
           [0,  4, -4, -1, 1, 0],           [-1/6,   1/6, -1/6],
           [0, -2, -1,  2, 1, 0],           [1/24,  1/12,  1/6],
           [0,  2, -1, -2, 1, 0],           [1/24, -1/12,  1/6],
           [0,  4,  0, -5, 0, 1]]           [   0,     0,    1]]

    A^T = [[1, 1,  1, 1,  1, 0],
           [0, 1, -1, 2, -2, 0],
           [0, 1,  1, 4,  4, 0],
           [0, 1, -1, 8, -8, 1]]

The larger points of F(4x4) (2 and -2, hence the 4s, 8s and 1/24) make it less
accurate. Measured in float32 against the float64 naive path, as the largest
error divided by the largest output value (random normal data, weights scaled
by 1/sqrt(9C), the four ResNet-18 stages at batch 1-2, C = 64 to 512):
F(2x2) errs by 3e-7 to 7e-7 (forward, dx and dW alike, about as much as the
im2col path's 2e-7 to 5e-7); F(4x4) by 4e-6 to 8e-6 forward, 8e-6 to 1.5e-5
for dx and 2e-6 to 9e-6 for dW: 10 to 30 times more, still below 1e-4.
Measured again once the filter transform and dW's back-transform had become
Numba loops (other random data, batch 2 for the first two stages and 1 for
the others): F(2x2) 3e-7 to 1e-6, F(4x4) 7e-6 to 1.3e-5 forward, 7e-6 to
1.4e-5 for dx, 2e-6 to 1.2e-5 for dW, each within 10% of what the BLAS
transforms gave on the same data.
``_tile_for`` and ``_dw_tile_for`` say which one runs.

Gradients (g rotated means flipped in both directions):

- dx: the gradient of a 3x3 stride-1 convolution with padding p is itself a 3x3
  stride-1 convolution of dout padded by 2 - p, with every filter rotated 180
  degrees and the roles of input and output channels swapped. It runs through
  the same forward code (a padding below zero crops dout instead).
- dW: by the transposition principle, the 3x3 dW of one tile pair is
  ``G^T [ (A e A^T) * (B^T d B) ] G`` with e the m x m tile of dout and d the
  a x a tile of (padded) x, the same V as the forward pass. Summed over tiles
  and images this is again one batched product,
  ``(a*a, FN, tiles) x (a*a, tiles, C)``, and the back-transform runs once.
- db: the sum of dout over images and positions.

Speed (float32, 2 Numba and 2 BLAS threads, one full ``pytest bench`` run on
the shared 2-core development machine, time of this path over time of the
other, forward / backward): against im2col, ResNet-18 stage 1 (8x64x56x56, 64
filters, pad 1) 0.86 / 0.91, stage 2 (8x128x28x28) 1.12 / 1.12, stage 3
(8x256x14x14) 0.77 / 1.02, stage 4 (8x512x7x7) 1.31 / 1.15, the VGG-16 block
at batch 1 (1x64x224x224) 0.58 / 0.70, a 3x3 layer at batch 1 (1x128x28x28)
1.54 / 1.54; against PyTorch's CPU convolution 0.60 / 0.79 on the VGG block,
0.9 to 1.45 on the others. "auto" measures the candidates, so it picks this
path only where it wins.

Where the time goes (stage 1 forward, medians of 7 calls): the input
transform 6.7 ms, the products 7.4 ms, the output transform 4.8 ms. The
products need 4x fewer multiply-adds than im2col's (F(4x4)), but BLAS runs
a*a separate products with a short reduction (C = 64) at about 62 GFLOP/s,
and the transformed input and products (14 MB each) pass through memory. On
a band of tiles small enough to stay in cache, the same products on the
direct path's register tile measured 112 GFLOP/s (1.8x); but the transforms
of such a band, whose rows are then one tile row (14 tiles) long, took 2.9x
and 3.9x as long as these whole-plane ones, which is why the stages stay
separate.

F(4x4) has transform kernels of its own (``_input_transform_f4``,
``_output_transform_f4``, and ``_dout_transform_f4`` for dW); F(2x2) keeps
the general loops. With a plane's rows in row-phase order, every tile finds its
36 samples one stride from the last tile's, so 64 tiles are transformed side
by side in vector lanes, a tile's values in registers from load to store.
On small maps, one iteration takes a channel (or filter) of several images,
their planes stacked (``_stack``), so the lanes fill up (a 7x7 map has 4
tiles) and each iteration stores runs of all their tiles; the module's
operands sit in slabs padded off 4 KiB multiples (``SLAB_PAD``).
The output transform first copies a band's 36 runs of products one run after
another (read side by side straight from memory, they defeated the
prefetcher: 1.05-1.25x the general kernel's time on 56x56 and 224x224 maps).
Measured against the general kernels (2 threads, paired in one process, the
machine shared and loaded): the input transform alone 0.45x the time
(8x128x28x28) to 0.77x (1x64x224x224); whole layers, forward / backward, with
both new kernels: ResNet-18 stage 1 (8x64x56x56) 0.75 / 0.81, stage 2
(8x128x28x28) 0.64 / 0.71, a 3x3 layer at batch 1 (1x128x28x28) 0.82 / 0.88,
the VGG-16 block at batch 1 0.90 / 0.90; the ResNet-18 stack of
``bench/test_resnet18.py`` (winograd on its 3x3 stride-1 layers, im2col on
the others, with the tile rules below) 0.79 and 0.87 forward, 0.90 and 0.84
per training step (two runs). The price is first compile: the path's float32
forward and backward took 15.6 and 17.6 s (two runs) from an empty Numba
cache, against 9.3 and 11.0 s before, once per machine.
Transforming image by image instead of the whole batch at once (V and the
products in cache) was slower: 1.03-1.31x on the ResNet-18 stages.

Where the time goes now (forward, float32, 2 threads, medians; after the
F(4x4) kernels learnt to stack images, the filter transforms became loops
and the slabs got their padding): 8x64x56x56 (stage 1): U 0.05 ms, V 2.1 ms,
products 6.1 ms (76 GFLOP/s), output 1.0 ms; 8x256x14x14 (stage 3): 0.86,
1.2, 5.4 (112 GFLOP/s), 0.74; 8x512x7x7 (stage 4): 4.1, 0.79, 6.0 (101
GFLOP/s), 0.43. The products are now most of it, at 40-60% of what numpy's
sgemm reaches on 2048^3 in the same process: a*a products with a short
reduction (C) and, on small maps, few columns. Running them on the direct
path's register tile instead (``direct._forward_strips``, then 4 filters by
96 cells; the channels as taps) took 0.85-1.6x numpy's time on these layers,
so numpy's batched matmul stays.

The fused forward (``_fused_f4``; float32, F(4x4), where ``_fuses`` allows).
On large maps the three stages above pass V and M through memory, and the
products run at 60-80 GFLOP/s. Fused, one iteration takes a band of a few
tile rows of one image through all three stages: the input transform of its
tiles into a scratch Vb of at most 1.5 MiB (``FUSED_BYTES``), which stays in
L2; the products, one block of 8 filters at a time, on the direct path's
register tile (``direct._forward_strips``: 8 filters by 48 tiles in 24 zmm
registers, the channels as taps, summed in channel order); and the output
transform of that block. A band's tiles are rounded up to whole 48-tile
strips, so the band height is chosen to waste the fewest columns
(``_fused_rows``), and the path runs fused only where an image's bands
compute at most 1.5 columns per tile (``FUSED_WASTE``): with 128 channels or
more, a band of 1.5 MiB holds a single strip. Measured on ResNet-18's stage 1
(8x64x56x56, float32, 2 threads, medians): the fused correlation 9-10 ms,
of which the products 4.5-5 ms (about 110 GFLOP/s), the input transform 2-2.7
ms, the output transform 1.2-2.3 ms; whole layers, fused over unfused, paired
(4 alternating rounds of 7 calls, two runs): stage 1 0.69-0.71 forward,
0.81-0.88 backward (dx is fused, dW is not), the VGG-16 block at batch 1
0.70-0.78 / 0.85-0.88. ``FUSED_WASTE`` has the other shapes measured.

The fused dW (``_fused_dw_f4``; float32, F(4x4), where ``_fuses_dw`` allows)
does the same for dW's stages: a band of tile rows gets its V (as above) and
its E = A e A^T, laid out tile by tile with 64 filters side by side
(``_band_dout``), and adds E[kk] V[kk]^T into sums X of its own lane (an
iteration of the parallel loop) on the direct path's dW register tile (6
channels by 64 filters, ``direct._dw_lanes_tile``). The lanes' sums are added
in lane order at the end, so results repeat exactly for a given number of
threads. Band height: as many tile rows as fill the transform kernels' 64
lanes (``DW_BAND_LANES``); the reduction runs over exactly the band's tiles,
so nothing is rounded up. Measured on ResNet-18's stage 1: dW 10.1 ms fused,
15.0 unfused (0.67x); the first E^T, written filter by filter with a stride
of 64 lanes, took 10 ms on its own: building a block of 64 filters' E in a
scratch block and then transposing it tile by tile made the fused dW 0.56x
its time.

Non-finite values: Winograd mixes the values of a whole tile, so a nan or inf
in x would spread to outputs of its tile that the naive path leaves finite. To
propagate non-finite values exactly as the naive path does, every call first
checks its operands (one max/min reduction per array); when one holds a nan or
an inf, or values large enough that the transforms (which scale values by up to
about 4e4) could overflow where the naive sum does not, that call runs on the
im2col path instead, whose matrix products sum the same terms as the naive
loops.

Threads: the transforms follow ``numba.set_num_threads``, the products run on
numpy's BLAS; the public functions hold ``launch_lock`` of
``fastconv.kernels._jit``. Every parallel loop writes only its own elements
(one (image, channel) or one filter per iteration) and sums in a fixed order,
so results are bit-identical from run to run for a given thread count of BLAS.

Pooling has no 3x3 filter to transform: ``supports`` is False for every
pooling spec and ``pool_forward``/``pool_backward`` raise ValueError.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from . import im2col
from .direct import (DW_ROWS, TILE_BYTES, TILE_ROWS, _dw_lanes_tile, _forward_strips, _lanes_per_block,
                     _strip_cells)
from ._jit import inline_copies, jit, no_library_calls, one_launch_at_a_time, stack_array
from ._workspace import Workspace

SCOPE = "3x3 stride-1 convolutions (dilation 1, groups 1)"

_workspace = Workspace()

# The transform matrices, float64; each call uses a copy in the data's dtype.
_F2 = dict(
    BT=np.array([[1, 0, -1, 0],
                 [0, 1, 1, 0],
                 [0, -1, 1, 0],
                 [0, 1, 0, -1]], dtype=np.float64),
    G=np.array([[1, 0, 0],
                [1 / 2, 1 / 2, 1 / 2],
                [1 / 2, -1 / 2, 1 / 2],
                [0, 0, 1]], dtype=np.float64),
    AT=np.array([[1, 1, 1, 0],
                 [0, 1, -1, -1]], dtype=np.float64),
)
_F4 = dict(
    BT=np.array([[4, 0, -5, 0, 1, 0],
                 [0, -4, -4, 1, 1, 0],
                 [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0],
                 [0, 4, 0, -5, 0, 1]], dtype=np.float64),
    G=np.array([[1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1]], dtype=np.float64),
    AT=np.array([[1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], dtype=np.float64),
)
TRANSFORMS = {2: _F2, 4: _F4}

# Largest factor by which the transforms can scale a value (F(4x4): the input
# transform's rows sum to at most 10 in absolute value, 100 in 2-D; the output
# transform's to at most 19, 361 in 2-D). Operands whose product, times the
# reduction length and this factor, comes near the dtype's largest finite
# value run on the im2col path, where only the naive sum's own terms occur.
_GROWTH = 1e5


class ConvCache(NamedTuple):
    x: np.ndarray
    W: np.ndarray
    spec: object
    x_magnitude: float     # largest |value| of x and of W (``_magnitude``), measured by
    W_magnitude: float     # the forward, so that the backward's overflow check reads dout only


class _Fallback(NamedTuple):
    """Cache of a call that ran on the im2col path (non-finite or huge operands)."""
    inner: object
    spec: object


def supports(spec):
    """True for a 3x3, stride-1, dilation-1, single-group convolution (any padding)."""
    return (spec.op == "conv" and spec.filter_hw == (3, 3) and spec.stride == (1, 1)
            and getattr(spec, "dilation", (1, 1)) == (1, 1) and getattr(spec, "groups", 1) == 1)


# The tile rules below come from one grid measured on the 2-core development
# machine (float32, 2 threads, F(4x4) time over F(2x2) time, paired in one
# process, medians of 5 rounds; square maps of 4, 6, 7, 10 and 14 outputs,
# batches of 1, 2 and 8, C = FN = 64, 256 and 512, pad 1), after the F(4x4)
# kernels learnt to stack images:
#
#   forward     C=64                 C=256                C=512
#   batch 1     1.37 1.29 1.60 1.10 0.92   1.38 1.14 1.29 1.56 1.08   1.65 1.66 1.65 1.50 1.20
#   batch 2     1.15 1.24 1.09 0.83 0.79   1.09 1.33 1.07 1.10 0.86   1.55 1.41 1.31 1.28 1.04
#   batch 8     0.58 0.63 0.46 0.58 0.55   0.64 0.76 0.61 0.74 0.65   0.88 0.97 0.77 0.94 0.76
#   dW
#   batch 1     2.27 1.13 1.17 1.20 0.94   6.03 1.16 1.13 1.65 1.29   5.63 2.41 2.28 2.21 2.03
#   batch 2     1.10 1.05 0.87 0.88 0.71   1.05 1.48 1.40 1.26 1.02   2.37 2.31 1.95 1.92 1.58
#   batch 8     0.60 0.71 0.48 0.60 0.63   0.90 0.87 0.71 0.74 0.67   1.59 1.50 1.16 1.24 0.97
#
# (maps 4, 6, 7, 10, 14 left to right in each block). What decides is how much
# of the work scales with the filters rather than with the tiles: U (forward)
# and the dW products' result X are a*a x FN x C, 36 against 16 per filter
# tap pair, while the per-tile work is 2.25x smaller with F(4x4). Few tiles
# against many filters (batch 1 or 2, C = 256 or 512) favour F(2x2); a batch
# of 8 favours F(4x4), except for dW where X of F(4x4) outgrows the caches
# (512 x 512 filters: 38 MB).
#
# Checked afterwards on five shapes outside the grid (1x128x28x28, 1x64x56x56,
# 2x128x28x28, 1x256x28x28, 1x512x14x14): the rules pick the faster tile in 4 of
# 5 forwards and 4 of 5 dWs (a tie counted as right); the two wrong picks cost
# 1.10x (1x256x28x28 forward, F(2x2)) and 1.10x (1x128x28x28 dW, F(4x4)).


def _few_tiles(N, C, FN, out_hw):
    """True when the F(4x4) tiles of the batch are few against the filters:
    2 * tiles * (C + FN) < C * FN (per filter tap pair, the filter-sized work
    against the tile-sized work)."""
    th, tw = _tiles(out_hw, 4)
    return 2 * N * th * tw * (C + FN) < C * FN


def _tile_for(N, C, FN, out_hw):
    """m of F(m x m, 3x3) for a correlation (forward, or dx with the channels
    swapped) of N images of C channels with FN filters and output maps of
    ``out_hw`` = (OH, OW): 2 or 4.

    F(4x4) needs 36 products per 16 outputs (2.25 per output), F(2x2) 16 per 4
    (4 per output), but a 4x4 tile wastes the part that hangs over the map's
    edge, its filter transform U is 2.25x as large, and on maps below 4x4 it
    has nothing left to save. Rule, from the grid above: F(4x4) on maps of 4 or
    more when the batch has 4 images or more, and on maps of 7 or more when
    the tiles are not few against the filters (``_few_tiles``); F(2x2)
    otherwise, which also keeps small layers exact where their values are
    (its G holds halves only, F(4x4)'s sixths and 24ths). It picks the faster
    tile in 44 of the grid's 45 cases; in the other (C = 256, batch 2, 14x14
    maps) its F(2x2) takes 1.16x the time of F(4x4).
    """
    return _tile_rule(N, C, FN, out_hw, N >= 4)


def _tile_rule(N, C, FN, out_hw, batch_clause):
    """The rule both tile choices share: F(2x2) on maps below 4; F(4x4) when
    ``batch_clause`` holds; else F(4x4) on maps of 7 or more whose tiles are not
    few against the filters."""
    if min(out_hw) < 4:
        return 2
    if batch_clause:
        return 4
    return 4 if min(out_hw) >= 7 and not _few_tiles(N, C, FN, out_hw) else 2


def _dw_tile_for(N, C, FN, out_hw):
    """m of F(m x m, 3x3) for dW of N images of C channels, FN filters, output maps
    ``out_hw``: 2 or 4.

    dW's products reduce over the tiles into X, a*a x FN x C, which F(4x4)
    makes 2.25x as large, and back-transform once. Rule, from the grid above:
    F(4x4) on maps of 4 or more when X of F(4x4) fits in 16 MiB and the batch
    has 4 images or more, and on maps of 7 or more when the tiles are not few
    against the filters; F(2x2) otherwise.
    It picks the faster tile in 44 of the 45 cases; in the other (C = 64,
    batch 2, 7x7 maps) F(4x4) would have taken 0.87x the time of its F(2x2).
    """
    # X's size counted in float32 cells, the dtype the grid measured, for any dtype
    return _tile_rule(N, C, FN, out_hw, N >= 4 and 36 * FN * C * 4 <= 16 * 2**20)


def _tiles(out_hw, m):
    return -(-out_hw[0] // m), -(-out_hw[1] // m)


def plan(spec):
    """How this path computes ``spec``: the tile, the number of tiles, the product shapes.

    Returns a dict: ``method``, ``tile`` ("F(4x4,3x3)" or "F(2x2,3x3)"),
    ``m`` and ``alpha`` (output block and input tile side), ``tiles_per_image``,
    ``tiles`` (whole batch), ``U_shape`` (a*a, FN, C), ``V_shape`` (a*a, C,
    tiles), ``M_shape`` (a*a, FN, tiles), ``fused`` (the forward's three stages
    run band by band, ``_fused_f4``; V and M then exist a band at a time),
    ``dx_tile`` and ``dW_tile`` (m used for dx and for dW), ``dW_fused`` (dW's
    stages run band by band, ``_fused_dw_f4``), and ``fallback``
    (when im2col runs instead). Pooling and unsupported specs get a dict
    saying so.
    """
    if not supports(spec):
        return {"method": f"not run by this path (it runs {SCOPE})"}
    N, C = spec.x_shape[:2]
    FN = spec.w_shape[0]
    m = _tile_for(N, C, FN, spec.out_hw)
    th, tw = _tiles(spec.out_hw, m)
    a = m + 2
    tiles = N * th * tw
    return {"method": "Winograd minimal filtering: transforms in Numba loops, "
                      "one batched BLAS product over the a*a tile positions",
            "tile": f"F({m}x{m},3x3)", "m": m, "alpha": a,
            "tiles_per_image": th * tw, "tiles": tiles,
            "U_shape": (a * a, FN, C), "V_shape": (a * a, C, tiles),
            "M_shape": (a * a, FN, tiles), "fused": _fuses(m, spec.dtype, C, spec.out_hw),
            "dx_tile": _tile_for(N, FN, C, spec.x_shape[2:]),
            "dW_tile": _dw_tile_for(N, C, FN, spec.out_hw),
            "dW_fused": _fuses_dw(_dw_tile_for(N, C, FN, spec.out_hw), spec.dtype, C, FN),
            "fallback": "im2col, for a call whose operands hold nan or inf (or values "
                        "near overflow)"}


def release_workspace():
    """Free this path's scratch buffers (they are reallocated when next needed)."""
    _workspace.release()


def pool_forward(x, spec):
    """Not run by this path: raises ValueError (pooling has no 3x3 filter to transform)."""
    raise ValueError(f"the winograd path runs {SCOPE}; it cannot run {spec.describe()}")


def pool_backward(dout, cache):
    """Not run by this path: raises ValueError (see ``pool_forward``)."""
    raise ValueError(f"the winograd path runs {SCOPE}; it cannot run pooling")


# ------------------------------------------------------------ compiled kernels

@jit(parallel=True)
def _tile_transform(src, L, m, ph, pw, th, tw, dst):
    """dst[xi*ao + nu, c, n*th*tw + ty*tw + tx] = (L d L^T)[xi, nu] for every tile.

    src: (N, C, H, W); L: (ao, ai); d is the ai x ai tile of src whose top-left
    corner is at (ty*m - ph, tx*m - pw), with zeros outside src (padding, and
    the part of the last tiles that hangs over the edge). dst: (ao*ao, C,
    N*th*tw). The input transform is L = B^T (ai = ao = m + 2); the dout
    transform of dW is L = A (ai = m, ao = m + 2).

    One channel of a group of images (``_stack``) per iteration: it writes
    dst[:, c, tiles of those images] only, and its scratch buffers serve all
    the group's planes (allocated per plane, they cost more than a 7x7
    plane's arithmetic: with them, 0.82-0.89x the time of a batch-8 layer's F(2x2)
    forward or dW on 5x5 to 28x28 maps, 2 threads, paired medians of 7
    rounds). A plane is copied once into a zero-bordered buffer; the vertical
    pass combines its rows for every row of tiles at once, the horizontal pass
    gathers each tile column position into a run over all tiles of the plane
    first: every sum is a contiguous loop. Inner loops index with unsigned
    integers (``a[o + s]``, o and s unsigned): an index Numba cannot prove
    non-negative gets a wrap-around test, which keeps the loop scalar, and a
    view per row costs more than the row's arithmetic on small maps. Measured
    against signed offsets, 2 threads: 0.55-0.75x the time on 7x7 to 224x224
    maps.
    """
    N, C, H, W = src.shape
    ao, ai = L.shape
    T = th * tw
    Hp = (th - 1) * m + ai          # rows and columns of padded plane the tiles read
    Wp = (tw - 1) * m + ai
    r_lo, r_hi = min(Hp, max(0, ph)), max(min(Hp, max(0, ph)), min(Hp, H + ph))
    c_lo, c_hi = min(Wp, max(0, pw)), max(min(Wp, max(0, pw)), min(Wp, W + pw))
    um = np.uint64(m)
    g = _stack(N, T)
    groups = -(-N // g)
    for t in prange(C * groups):
        c = t // groups
        n0 = (t - c * groups) * g
        # the buffers serve all the group's planes: pp's border stays zero
        pp = np.zeros((Hp, Wp), dtype=src.dtype)
        flat = pp.reshape(Hp * Wp)
        rows = np.empty((ao, th * Wp), dtype=src.dtype)
        cols = np.empty((ai, T), dtype=src.dtype)
        for n in range(n0, min(N, n0 + g)):
            pp[r_lo:r_hi, c_lo:c_hi] = src[n, c, r_lo - ph:r_hi - ph, c_lo - pw:c_hi - pw]
            # vertical pass: rows[xi, ty*Wp + s] = sum_i L[xi, i] pp[ty*m + i, s]
            rows[:] = 0
            for xi in range(ao):
                out_row = rows[xi]
                for i in range(ai):
                    coef = L[xi, i]
                    if coef != 0:
                        for ty in range(th):
                            o = np.uint64(ty * Wp)
                            q = np.uint64((ty * m + i) * Wp)
                            for s in range(np.uint64(Wp)):
                                out_row[o + s] += coef * flat[q + s]
            # horizontal pass: tile (ty, tx) reads rows[xi, ty*Wp + tx*m + j]; gathered
            # first into cols[j, tile], so that the sums run over contiguous tiles
            for xi in range(ao):
                in_row = rows[xi]
                for j in range(ai):
                    col = cols[j]
                    for ty in range(th):
                        o = np.uint64(ty * tw)
                        q = np.uint64(ty * Wp + j)
                        for tx in range(np.uint64(tw)):
                            col[o + tx] = in_row[q + tx * um]
                for nu in range(ao):
                    d = dst[xi * ao + nu, c, n * T:(n + 1) * T]
                    d[:] = 0
                    for j in range(ai):
                        coef = L[nu, j]
                        if coef != 0:
                            col = cols[j]
                            for p in range(T):
                                d[p] += coef * col[p]


# Tiles the F(4x4) input transform computes side by side: one stack block holds
# their 36 transformed values each (9 KiB in float32, 18 KiB in float64).
LANES = 64


@intrinsic
def _lane_block(typingctx, like):
    """A stack array of 36 * LANES cells of ``like``'s dtype (``_jit.stack_array``); the
    function that takes one keeps its short copy loops (``_jit.no_library_calls``)."""
    def codegen(context, builder, signature, args):
        no_library_calls(builder)
        return stack_array(context, builder, like.dtype, 36 * LANES)

    return types.Array(like.dtype, 1, "C")(like), codegen


@jit
def _bt4(d, two, four, five):
    """B^T of F(4x4, 3x3) times the six samples of tuple d (a row or a column of a
    tile): the rows of B^T above, their shared terms computed once. two, four,
    five: those numbers in the data's dtype (an integer literal would turn the
    arithmetic into float64)."""
    d0, d1, d2, d3, d4, d5 = d
    a = d4 - four * d2
    b = d3 - four * d1
    c = d4 - d2
    e = two * (d3 - d1)
    return (four * d0 - five * d2 + d4, a + b, a - b, c + e, c - e, four * d1 - five * d3 + d5)


@jit
def _column(Y, rows, at):
    """The six samples Y[rows[i] + at], i = 0..5: one column of a tile."""
    return (Y[rows[0] + at], Y[rows[1] + at], Y[rows[2] + at],
            Y[rows[3] + at], Y[rows[4] + at], Y[rows[5] + at])


@jit
def _put(blk, xi, p, v):
    """Row xi of a transformed tile, v = (six values), into lane p of the block."""
    lanes = np.uint64(LANES)
    k = np.uint64(6 * xi) * lanes + p
    blk[k] = v[0]
    blk[k + lanes] = v[1]
    blk[k + np.uint64(2) * lanes] = v[2]
    blk[k + np.uint64(3) * lanes] = v[3]
    blk[k + np.uint64(4) * lanes] = v[4]
    blk[k + np.uint64(5) * lanes] = v[5]


@jit
def _bt4_plane(Y, rows, TG, th, tw, two, four, five, ds, first, step):
    """B^T d B of every tile of the planes stacked in Y (``_input_transform_f4``'s
    layout, TG tile rows: th per plane and one spare row between planes) into
    ds: value 6*xi + nu of tile t of the g-th plane at
    ds[first + (6*xi + nu)*step + g*th*tw + t].

    A function of its own, compiled once outside Numba's parallel passes (which
    took seconds over its long unrolled body); its stack block is its own, so
    LLVM knows that the lanes' stores cannot touch Y.
    """
    Kp = tw + 1
    Pw = TG * Kp
    T = th * tw
    blk = _lane_block(Y)
    for p0 in range(0, Pw, LANES):
        count = min(LANES, Pw - p0)
        # all LANES lanes, past the grid's end too (they read Y's spare zeros and are
        # not stored): a constant trip count needs no scalar remainder loop
        for p in range(np.uint64(LANES)):
            q = np.uint64(4) * (np.uint64(p0) + p)
            # B^T d: the six columns, each combined over its rows
            c0 = _bt4(_column(Y, rows, q), two, four, five)
            c1 = _bt4(_column(Y, rows, q + np.uint64(1)), two, four, five)
            c2 = _bt4(_column(Y, rows, q + np.uint64(2)), two, four, five)
            c3 = _bt4(_column(Y, rows, q + np.uint64(3)), two, four, five)
            c4 = _bt4(_column(Y, rows, q + np.uint64(4)), two, four, five)
            c5 = _bt4(_column(Y, rows, q + np.uint64(5)), two, four, five)
            # (B^T d) B: each row xi combined over its columns
            _put(blk, 0, p, _bt4((c0[0], c1[0], c2[0], c3[0], c4[0], c5[0]), two, four, five))
            _put(blk, 1, p, _bt4((c0[1], c1[1], c2[1], c3[1], c4[1], c5[1]), two, four, five))
            _put(blk, 2, p, _bt4((c0[2], c1[2], c2[2], c3[2], c4[2], c5[2]), two, four, five))
            _put(blk, 3, p, _bt4((c0[3], c1[3], c2[3], c3[3], c4[3], c5[3]), two, four, five))
            _put(blk, 4, p, _bt4((c0[4], c1[4], c2[4], c3[4], c4[4], c5[4]), two, four, five))
            _put(blk, 5, p, _bt4((c0[5], c1[5], c2[5], c3[5], c4[5], c5[5]), two, four, five))
        # the block's real tiles: wide p = Ty*Kp + tx (tx < tw, and Ty not a spare row)
        # is tile ty*tw + tx of plane g, where Ty = g*(th + 1) + ty
        for Ty in range(p0 // Kp, (p0 + count - 1) // Kp + 1):
            g = Ty // (th + 1)
            ty = Ty - g * (th + 1)
            if ty == th:
                continue
            a = max(p0, Ty * Kp)
            e = min(p0 + count, Ty * Kp + tw)
            o = g * T + ty * tw - Ty * Kp
            for k in range(36):
                d0 = np.uint64(first + k * step + o + a)
                b0 = np.uint64(k * LANES + a - p0)
                for v in range(np.uint64(max(0, e - a))):
                    ds[d0 + v] = blk[b0 + v]


# Tiles an iteration of the transform kernels gets, at least, where the batch allows.
STACK_TILES = 4 * LANES


@jit
def _stack(N, tiles):
    """Images per iteration of the transform kernels (F(4x4)'s and the general ones),
    at most N: enough for STACK_TILES tiles (``tiles`` per image), so that small
    maps fill the F(4x4) kernels' vector lanes and the general kernels' scratch
    buffers serve several planes."""
    return min(N, max(1, -(-STACK_TILES // tiles)))


# Why faster than ``_tile_transform`` (0.45-0.77x its time on the 28x28, 56x56 and
# 224x224 maps of the benchmark layers, 2 threads): the 36 values of a tile stay
# in registers from load to store, LANES tiles side by side in vector lanes,
# where the general kernel passes over memory once per coefficient of B^T and
# gathers every tile's columns one value at a time. Stacking a channel's planes
# of several images fills the lanes on small maps and stores runs of all their
# tiles at once (see ``_input_transform_f4``).
@jit(parallel=True)
def _input_transform_f4(src, BT, ph, pw, th, tw, dst):
    """dst[xi*6 + nu, c*N*th*tw + n*th*tw + ty*tw + tx] = (B^T d B)[xi, nu] of F(4x4,
    3x3) for every tile: what ``_tile_transform`` computes with L = B^T and m = 4,
    with the sums grouped as in ``_bt4``.

    src: (N, C, H, W), padded by (ph, pw) (a pad below zero crops); BT: (6, 6)
    in src's dtype; dst: (36, S), S >= C*N*th*tw: row k holds the (C, tiles)
    matrix V[k] in its first C*N*th*tw cells (the rest, the slab padding of
    ``_slabs``, is left alone). One channel of a group of images
    (``_stack``) per iteration, which writes only its runs dst[:, c, tiles of
    those images].

    Layout: the group's padded planes are stacked into Y, 4*(th + 1) rows
    each, with the rows in row-phase order: stacked row r at
    ((r % 4)*(TH + 1) + r // 4) * 4*(tw + 1), TH = (th + 1) * group. Tile (Ty,
    tx) of the *wide* grid of TH x (tw + 1) tiles, p = Ty*(tw + 1) + tx, then
    finds its sample (i, j) at ``rows[i] + 4p + j``: the same stride for all
    tiles of the group, so a loop over p runs in vector lanes. The wide grid's
    column tx = tw and each plane's row ty = th are spare (they read the next
    row's or plane's first cells); they are dropped when a block is stored.

    Whole layers (3x3, pad 1, as many filters as channels; float32, 2 threads,
    paired in one process, medians of 7 rounds), forward / backward time with
    the stacking (here, in ``_output_transform_f4`` and in
    ``_dout_transform_f4``), ``_jit.no_library_calls`` and ``SLAB_PAD`` over
    the time with one plane per iteration: 8x256x14x14 0.72 / 0.69,
    8x512x7x7 0.90 / 0.96, 8x128x28x28 0.89 / 0.86, 8x64x56x56 0.94 / 0.90,
    1x128x28x28 0.95 / 0.99, 1x64x224x224 1.00 / 0.91. Results are bit for bit
    the same: every value is summed as before.
    """
    N, C, H, W = src.shape
    T = th * tw
    P = N * T
    S = dst.shape[1]
    Kp = tw + 1
    Wr = 4 * Kp
    Hp = 4 * th + 2
    r_lo = min(Hp, max(0, ph))
    r_hi = max(r_lo, min(Hp, H + ph))
    c_lo = min(Wr, max(0, pw))
    c_hi = max(c_lo, min(Wr, W + pw))
    xs = src.reshape(N * C * H * W)
    ds = dst.reshape(36 * S)
    two, four, five = BT[3, 3], BT[0, 0], -BT[0, 2]
    g = _stack(N, (th + 1) * Kp)
    groups = -(-N // g)
    TH = g * (th + 1)
    R = np.uint64((TH + 1) * Wr)
    rows = (np.uint64(0), R, np.uint64(2) * R, np.uint64(3) * R,
            np.uint64(Wr), R + np.uint64(Wr))
    for t in prange(C * groups):
        inline_copies()
        c = t // groups
        n0 = (t - c * groups) * g
        gn = min(g, N - n0)
        Y = np.zeros(4 * (TH + 1) * Wr + 4 * LANES, dtype=src.dtype)
        for i in range(gn):
            for r in range(r_lo, r_hi):
                s0 = np.uint64((((n0 + i) * C + c) * H + r - ph) * W - pw)
                y0 = np.uint64(((r % 4) * (TH + 1) + i * (th + 1) + r // 4) * Wr)
                for v in range(np.uint64(c_lo), np.uint64(c_hi)):
                    Y[y0 + v] = xs[s0 + v]
        # the last plane's spare row is left out
        _bt4_plane(Y, rows, gn * (th + 1) - 1, th, tw, two, four, five, ds, c * P + n0 * T, S)


@jit
def _a4(e, two, four, eight):
    """A of F(4x4, 3x3) (the transpose of A^T above) times the four samples of tuple
    e: the dout transform of dW, six values; two, four, eight in the data's dtype."""
    e0, e1, e2, e3 = e
    s = e0 + e2
    d = e1 + e3
    s4 = e0 + four * e2
    d4 = two * e1 + eight * e3
    return (e0, s + d, s - d, s4 + d4, s4 - d4, e3)


@jit
def _a4_plane(Y, rows, T, two, four, eight, ds, first, step):
    """A e A^T of every tile of one dout plane, held in Y in ``_dout_transform_f4``'s
    layout, into ds: value 6*xi + nu of tile p at ds[first + (6*xi + nu)*step + p].
    A function of its own for the reasons given at ``_bt4_plane``."""
    blk = _lane_block(Y)
    for p0 in range(0, T, LANES):
        count = min(LANES, T - p0)
        for p in range(np.uint64(LANES)):
            q = np.uint64(4) * (np.uint64(p0) + p)
            # A e: the four columns, each combined over its rows
            c0 = _a4((Y[rows[0] + q], Y[rows[1] + q], Y[rows[2] + q], Y[rows[3] + q]),
                     two, four, eight)
            q = q + np.uint64(1)
            c1 = _a4((Y[rows[0] + q], Y[rows[1] + q], Y[rows[2] + q], Y[rows[3] + q]),
                     two, four, eight)
            q = q + np.uint64(1)
            c2 = _a4((Y[rows[0] + q], Y[rows[1] + q], Y[rows[2] + q], Y[rows[3] + q]),
                     two, four, eight)
            q = q + np.uint64(1)
            c3 = _a4((Y[rows[0] + q], Y[rows[1] + q], Y[rows[2] + q], Y[rows[3] + q]),
                     two, four, eight)
            # (A e) A^T: each row xi combined over its columns
            _put(blk, 0, p, _a4((c0[0], c1[0], c2[0], c3[0]), two, four, eight))
            _put(blk, 1, p, _a4((c0[1], c1[1], c2[1], c3[1]), two, four, eight))
            _put(blk, 2, p, _a4((c0[2], c1[2], c2[2], c3[2]), two, four, eight))
            _put(blk, 3, p, _a4((c0[3], c1[3], c2[3], c3[3]), two, four, eight))
            _put(blk, 4, p, _a4((c0[4], c1[4], c2[4], c3[4]), two, four, eight))
            _put(blk, 5, p, _a4((c0[5], c1[5], c2[5], c3[5]), two, four, eight))
        for k in range(36):
            d0 = np.uint64(first + k * step + p0)
            b0 = np.uint64(k * LANES)
            for v in range(np.uint64(count)):
                ds[d0 + v] = blk[b0 + v]


@jit(parallel=True)
def _dout_transform_f4(src, AT, th, tw, dst):
    """dst[xi*6 + nu, k*N*th*tw + n*th*tw + ty*tw + tx] = (A e A^T)[xi, nu] of F(4x4,
    3x3) for every 4x4 tile e of src: what ``_tile_transform`` computes with
    L = A, m = 4 and no padding, with the sums grouped as in ``_a4``.

    src: (N, FN, OH, OW) (dout); AT: (4, 6) in src's dtype; dst: (36, S), S >=
    FN*N*th*tw, as in ``_input_transform_f4``. One filter of a group of images
    (``_stack``) per iteration, which writes only its runs dst[:, k, tiles of
    those images]. The tiles do not overlap, so with the group's maps stacked
    (4*th rows each) and the rows in row-phase order (stacked row r at
    ((r % 4)*TH + r // 4) * 4*tw, TH = th * group) tile p = Ty*tw + tx finds its
    sample (i, j) at ``rows[i] + 4p + j``: no spare tiles, and the lanes'
    values go to dst in runs.
    """
    N, FN, OH, OW = src.shape
    T = th * tw
    P = N * T
    S = dst.shape[1]
    Wr = 4 * tw
    ss = src.reshape(N * FN * OH * OW)
    ds = dst.reshape(36 * S)
    two, four, eight = AT[1, 3], AT[2, 3], AT[3, 3]
    g = _stack(N, T)
    groups = -(-N // g)
    TH = g * th
    R = np.uint64(TH * Wr)
    rows = (np.uint64(0), R, np.uint64(2) * R, np.uint64(3) * R)
    for t in prange(FN * groups):
        inline_copies()
        k = t // groups
        n0 = (t - k * groups) * g
        gn = min(g, N - n0)
        # spare zeros past the end for the lanes of the last block
        Y = np.zeros(4 * TH * Wr + 4 * LANES, dtype=src.dtype)
        for i in range(gn):
            for r in range(OH):
                s0 = np.uint64((((n0 + i) * FN + k) * OH + r) * OW)
                y0 = np.uint64(((r % 4) * TH + i * th + r // 4) * Wr)
                for v in range(np.uint64(OW)):
                    Y[y0 + v] = ss[s0 + v]
        _a4_plane(Y, rows, gn * T, two, four, eight, ds, k * P + n0 * T, S)


@jit(parallel=True)
def _output_transform(Mt, AT, th, tw, b, out):
    """out[n, k] = A^T M A per tile, plus b[k], cut to (OH, OW).

    Mt: (a*a, FN, N*th*tw); AT: (m, a); out: (N, FN, OH, OW). One filter of a
    group of images (``_stack``) per iteration: it writes out[those images, k]
    only, its scratch buffers serving the group's maps. Both passes combine
    whole runs of the image's tiles (contiguous loops); the result is then
    scattered into a th*m x tw*m map whose valid part is copied out.
    """
    N, FN, OH, OW = out.shape
    m, a = AT.shape
    T = th * tw
    Wm = tw * m
    um = np.uint64(m)
    g = _stack(N, T)
    groups = -(-N // g)
    for t in prange(FN * groups):
        k = t // groups
        n0 = (t - k * groups) * g
        tmp = np.empty((a, m, T), dtype=out.dtype)     # (M A)[xi, j] of every tile
        y = np.empty(T, dtype=out.dtype)
        full = np.empty(th * m * Wm, dtype=out.dtype)
        bias = b[k]
        for n in range(n0, min(N, n0 + g)):
            tmp[:] = 0
            for xi in range(a):
                for nu in range(a):
                    src = Mt[xi * a + nu, k, n * T:(n + 1) * T]
                    for j in range(m):
                        coef = AT[j, nu]
                        if coef != 0:
                            acc = tmp[xi, j]
                            for p in range(T):
                                acc[p] += coef * src[p]
            # y[i, j, tile] = sum over xi of AT[i, xi] tmp[xi, j, tile], contiguous over
            # tiles, then scattered into a th*m x tw*m map
            for i in range(m):
                for j in range(m):
                    y[:] = 0
                    for xi in range(a):
                        coef = AT[i, xi]
                        if coef != 0:
                            src = tmp[xi, j]
                            for p in range(T):
                                y[p] += coef * src[p]
                    for ty in range(th):
                        o = np.uint64((ty * m + i) * Wm + j)
                        q = np.uint64(ty * tw)
                        for tx in range(np.uint64(tw)):
                            full[o + tx * um] = y[q + tx]
            for r in range(OH):
                orow = out[n, k, r]
                frow = full[r * Wm:r * Wm + OW]
                for x in range(OW):
                    orow[x] = frow[x] + bias


@jit
def _at4(mm, two, four, eight):
    """A^T of F(4x4, 3x3) times the six products of tuple mm (a row or a column of
    a transformed tile): the rows of A^T above, their shared sums computed once;
    two, four, eight in the data's dtype (see ``_bt4``)."""
    m0, m1, m2, m3, m4, m5 = mm
    a = m1 + m2
    b = m1 - m2
    c = m3 + m4
    e = m3 - m4
    return (m0 + a + c, b + two * e, a + four * c, b + eight * e + m5)


@jit
def _products(loc, at, stride):
    """loc[at + nu*stride], nu = 0..5: row xi of a tile's 6x6 products (at = xi*6*stride + lane)."""
    return (loc[at], loc[at + stride], loc[at + np.uint64(2) * stride],
            loc[at + np.uint64(3) * stride], loc[at + np.uint64(4) * stride],
            loc[at + np.uint64(5) * stride])


@jit
def _put4(blk, j, p, v):
    """Column j of an output block, v = (cells (0, j) .. (3, j)), into lane p: cell (i, j)
    at blk[(4i + j)*LANES + p]."""
    lanes = np.uint64(LANES)
    k = np.uint64(j) * lanes + p
    blk[k] = v[0]
    blk[k + np.uint64(4) * lanes] = v[1]
    blk[k + np.uint64(8) * lanes] = v[2]
    blk[k + np.uint64(12) * lanes] = v[3]


@jit
def _at4_band(loc, band, count, row_block, two, four, eight, full):
    """A^T M A of the ``count`` tiles of a band into ``full``: loc holds product
    (xi, nu) of tile p at loc[(6*xi + nu)*band + p]; output cell (i, j) of tile p
    goes to full[i*row_block + 4p + j] (``_output_transform_f4``'s layout).

    A function of its own for the same reasons as ``_bt4_plane``.
    """
    ub = np.uint64(band)
    lanes = np.uint64(LANES)
    blk = _lane_block(loc)
    for p0 in range(0, count, LANES):
        # all LANES lanes, past the band's end too (see ``_bt4_plane``)
        for p in range(lanes):
            at = np.uint64(p0) + p
            # M A: each row xi of the products combined over its columns
            r0 = _at4(_products(loc, at, ub), two, four, eight)
            r1 = _at4(_products(loc, at + np.uint64(6) * ub, ub), two, four, eight)
            r2 = _at4(_products(loc, at + np.uint64(12) * ub, ub), two, four, eight)
            r3 = _at4(_products(loc, at + np.uint64(18) * ub, ub), two, four, eight)
            r4 = _at4(_products(loc, at + np.uint64(24) * ub, ub), two, four, eight)
            r5 = _at4(_products(loc, at + np.uint64(30) * ub, ub), two, four, eight)
            # A^T (M A): column j, cells (i, j) at blk[(4i + j)*LANES + p]
            _put4(blk, 0, p, _at4((r0[0], r1[0], r2[0], r3[0], r4[0], r5[0]), two, four, eight))
            _put4(blk, 1, p, _at4((r0[1], r1[1], r2[1], r3[1], r4[1], r5[1]), two, four, eight))
            _put4(blk, 2, p, _at4((r0[2], r1[2], r2[2], r3[2], r4[2], r5[2]), two, four, eight))
            _put4(blk, 3, p, _at4((r0[3], r1[3], r2[3], r3[3], r4[3], r5[3]), two, four, eight))
        for i in range(4):
            f0 = np.uint64(i * row_block + 4 * p0)
            b0 = np.uint64(4 * i) * lanes
            for p in range(np.uint64(min(LANES, count - p0))):
                q = f0 + np.uint64(4) * p
                full[q] = blk[b0 + p]
                full[q + np.uint64(1)] = blk[b0 + lanes + p]
                full[q + np.uint64(2)] = blk[b0 + np.uint64(2) * lanes + p]
                full[q + np.uint64(3)] = blk[b0 + np.uint64(3) * lanes + p]


# Tiles per band of the F(4x4) output transform: the band's 36 runs of products
# are copied run by run (streams the prefetcher follows) into a buffer that then
# stays in L2 (72 KiB in float32) while the lanes read it across runs.
BAND_TILES = 512


# Why faster than ``_output_transform`` (the module docstring has the figures):
# A^T M A of a tile stays in registers, LANES tiles side by side in vector lanes,
# instead of a pass over memory per coefficient of A^T and a scatter of every
# output value one at a time.
@jit(parallel=True)
def _output_transform_f4(Mt, AT, th, tw, b, out):
    """out[n, k] = A^T M A of F(4x4, 3x3) per tile, plus b[k], cut to (OH, OW): what
    ``_output_transform`` computes for m = 4, with the sums grouped as in ``_at4``.

    Mt: (36, S), S >= FN*N*th*tw: row kk holds the (FN, tiles) matrix M[kk] in
    its first FN*N*th*tw cells (``_slabs``); AT: (4, 6) in out's dtype; out:
    (N, FN, OH, OW). One filter of a group of images (``_stack``) per
    iteration, which writes out[those images, k] only. The group's tile rows
    (th per image, one after another) go in bands of about BAND_TILES tiles:
    the band's products are copied into ``loc``, transformed LANES tiles at a
    time into a stack block, stored 4 apart into ``full`` (output row 4*Ty + i
    of the band at (i*rows + Ty)*4*tw, so that tile p's cells are at 4p + j),
    whose rows then go to out with the bias.
    """
    N, FN, OH, OW = out.shape
    T = th * tw
    P = N * T
    S = Mt.shape[1]
    Ms = Mt.reshape(36 * S)
    rows = max(1, BAND_TILES // tw)          # tile rows per band
    band = rows * tw
    two, four, eight = AT[1, 3], AT[2, 3], AT[3, 3]
    W4 = 4 * tw
    g = _stack(N, T)
    groups = -(-N // g)
    for t in prange(FN * groups):
        inline_copies()
        k = t // groups
        n0 = (t - k * groups) * g
        TR = min(g, N - n0) * th                 # the group's tile rows
        loc = np.empty(36 * band + LANES, dtype=out.dtype)
        loc[36 * band:] = 0             # what the spare lanes of the last block read
        full = np.empty(16 * band, dtype=out.dtype)
        bias = b[k]
        ub = np.uint64(band)
        for ty0 in range(0, TR, rows):
            ty1 = min(TR, ty0 + rows)
            count = (ty1 - ty0) * tw
            for kk in range(36):
                s0 = np.uint64(kk * S + k * P + n0 * T + ty0 * tw)
                l0 = np.uint64(kk) * ub
                for v in range(np.uint64(count)):
                    loc[l0 + v] = Ms[s0 + v]
            _at4_band(loc, band, count, (ty1 - ty0) * W4, two, four, eight, full)
            for yy in range(4 * ty0, 4 * ty1):
                i = yy // (4 * th)               # the image, and its output row y
                y = yy - 4 * th * i
                if y < OH:
                    orow = out[n0 + i, k, y]
                    f0 = np.uint64(((yy % 4) * (ty1 - ty0) + yy // 4 - ty0) * W4)
                    for x in range(np.uint64(OW)):
                        orow[x] = full[f0 + x] + bias


@jit
def _band_input(x, BT, ph, pw, tw, n, ty0, rt, pitch, Vb, Y):
    """V = B^T d B of F(4x4) for the tiles of tile rows ty0 .. ty0 + rt - 1 of image n
    of x (N, C, H, W), padded by (ph, pw): value kk of channel c, tile p of the
    band at Vb[kk*C*pitch + c*pitch + p] (only p < rt*tw written). Y: scratch of
    4*(rt + 2)*4*(tw + 1) + 4*LANES cells or more, for the band's padded rows in
    ``_input_transform_f4``'s row-phase layout for one plane (TH = rt + 1).
    """
    N, C, H, W = x.shape
    Wr = 4 * (tw + 1)
    c_lo = min(Wr, max(0, pw))
    c_hi = max(c_lo, min(Wr, W + pw))
    xs = x.reshape(N * C * H * W)
    TH = rt + 1
    Rw = np.uint64((TH + 1) * Wr)
    rows = (np.uint64(0), Rw, np.uint64(2) * Rw, np.uint64(3) * Rw,
            np.uint64(Wr), Rw + np.uint64(Wr))
    Y[:4 * (TH + 1) * Wr + 4 * LANES] = 0
    two, four, five = BT[3, 3], BT[0, 0], -BT[0, 2]
    for c in range(C):
        # rows outside x stay zero: every channel writes the same cells of Y
        for r in range(4 * rt + 2):
            xr = 4 * ty0 + r - ph
            if 0 <= xr < H:
                s0 = np.uint64(((n * C + c) * H + xr) * W - pw)
                y0 = np.uint64(((r % 4) * (TH + 1) + r // 4) * Wr)
                for v in range(np.uint64(c_lo), np.uint64(c_hi)):
                    Y[y0 + v] = xs[s0 + v]
        _bt4_plane(Y, rows, rt, rt, tw, two, four, five, Vb, c * pitch, C * pitch)


@jit
def _fused_band(x, Ub, BT, AT, ph, pw, tw, n, ty0, rt, b, out, buf):
    """Tile rows ty0 .. ty0 + rt - 1 of image n through the three stages of the F(4x4)
    correlation into out[n, :, 4*ty0 .. 4*(ty0 + rt) - 1] (``_fused_f4``); buf:
    scratch of ``_fused_cells`` cells or more, reused from band to band.

    buf holds, one after another: Vb (36, C, pitch), V[kk] of the band's tiles,
    pitch being the band's tiles rounded up to whole strips of the register
    tile (the columns past them zero); Mf (36, R, pitch), the products of one
    block of R filters, which then go through the output transform, and the
    cells its spare lanes read; the output block ``full``; Y, the band's
    padded rows in ``_input_transform_f4``'s row-phase layout for one plane.
    """
    C = x.shape[1]
    FN, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    nfb = Ub.shape[1]
    R = Ub.shape[2] // C
    Wr = 4 * (tw + 1)
    W4 = 4 * tw
    Tb = rt * tw
    strip = TILE_BYTES // R // x.itemsize       # cells per strip (direct._strip_cells)
    pitch = -(-Tb // strip) * strip
    TH = rt + 1
    nv = 36 * C * pitch
    nm = 36 * R * pitch
    Vb = buf[:nv]
    Mf = buf[nv:nv + nm + LANES]
    full = buf[nv + nm + LANES:nv + nm + LANES + 16 * Tb]
    y_at = nv + nm + LANES + 16 * Tb
    Y = buf[y_at:y_at + 4 * (TH + 1) * Wr + 4 * LANES]
    Mf[nm:] = 0
    for kc in range(36 * C):
        for v in range(np.uint64(kc * pitch + Tb), np.uint64((kc + 1) * pitch)):
            Vb[v] = 0
    _band_input(x, BT, ph, pw, tw, n, ty0, rt, pitch, Vb, Y)
    taps = np.arange(C).astype(np.uint64) * np.uint64(pitch)
    two, four, eight = AT[1, 3], AT[2, 3], AT[3, 3]
    for fb in range(nfb):
        for kk in range(36):
            _forward_strips(Mf[kk * R * pitch:(kk + 1) * R * pitch], Vb, taps, Ub[kk, fb],
                            kk * C * pitch, True)
        for r in range(min(R, FN - fb * R)):
            f = fb * R + r
            _at4_band(Mf[r * pitch:], R * pitch, Tb, rt * W4, two, four, eight, full)
            bias = b[f]
            for yy in range(4 * rt):
                y = 4 * ty0 + yy
                if y < OH:
                    orow = out[n, f, y]
                    f0 = np.uint64(((yy % 4) * rt + yy // 4) * W4)
                    for v in range(np.uint64(OW)):
                        orow[v] = full[f0 + v] + bias


def _fused_cells(C, tw, band_rows, itemsize):
    """Scratch cells ``_fused_band`` needs for bands of ``band_rows`` tile rows."""
    Tb = band_rows * tw
    strip = _strip_cells(TILE_ROWS, itemsize)
    pitch = -(-Tb // strip) * strip
    return 36 * (C + TILE_ROWS) * pitch + LANES + 16 * Tb + 4 * (band_rows + 2) * 4 * (tw + 1) + 4 * LANES


# Why faster than the three stages of ``_correlate`` with F(4x4) on large maps: a band
# of tiles goes through all three while its transformed input and its products
# sit in L2, where the stages pass V and M (14 MB each on ResNet-18's 56x56
# stage at batch 8) through memory, and the products run on the direct path's
# register tile, whose sums over the channels stay in registers.
@jit(parallel=True)
def _fused_f4(x, Ub, BT, AT, ph, pw, th, tw, band_rows, b, out, scratch):
    """out = the F(4x4, 3x3) correlation of x with the filters transformed into Ub, plus
    b: ``_input_transform_f4``, the products and ``_output_transform_f4`` run on
    one band of ``band_rows`` tile rows of one image at a time (``_fused_band``).

    x: (N, C, H, W) float32, padded by (ph, pw) (a pad below zero crops); Ub:
    (36, FNp/R, C*R), U[kk] in blocks of R = ``direct.TILE_ROWS`` filters,
    weight t*R + r of a block is U[kk, block*R + r, t] (``_blocked_filters``);
    out: (N, FN, OH, OW); scratch: (lanes, cells), one row per iteration
    (``_fused_cells``). Iteration ``lane`` runs bands lane, lane + lanes, ...
    of the batch's N*ceil(th/band_rows) bands on its own scratch row; a band
    writes only out[n, :, its rows], and each product sums its C terms in
    channel order, so the results do not depend on the bands or the lanes.
    """
    N = x.shape[0]
    nb = -(-th // band_rows)
    lanes = scratch.shape[0]
    for lane in prange(lanes):
        for task in range(lane, N * nb, lanes):
            n = task // nb
            ty0 = (task - n * nb) * band_rows
            _fused_band(x, Ub, BT, AT, ph, pw, tw, n, ty0, min(band_rows, th - ty0), b, out,
                        scratch[lane])


@jit
def _band_dout(dout, AT, tw, n, ty0, rt, F, pitch, Y, tmp, Et):
    """E^T of F(4x4) for the tiles of tile rows ty0 .. ty0 + rt - 1 of image n of dout
    (N, FN, OH, OW): (A e A^T)[kk] of filter fb*F + l, tile t of the band at
    Et[((kk*nfb + fb)*pitch + t)*F + l], pitch >= rt*tw; zero in the lanes past
    FN. F: lanes of a block of filters (``direct._lanes_per_block``), nfb
    blocks. Y: scratch of 4*rt*4*tw + 4*LANES cells or
    more (``_dout_transform_f4``'s row-phase layout for one map); tmp: 36*F*rt*tw
    cells, a block's transforms filter by filter before they are transposed.
    """
    N, FN, OH, OW = dout.shape
    nfb = -(-FN // F)
    Tb = rt * tw
    Wr = 4 * tw
    Rr = np.uint64(rt * Wr)
    rows = (np.uint64(0), Rr, np.uint64(2) * Rr, np.uint64(3) * Rr)
    ds = dout.reshape(N * FN * OH * OW)
    two, four, eight = AT[1, 3], AT[2, 3], AT[3, 3]
    Y[:4 * rt * Wr + 4 * LANES] = 0
    uF = np.uint64(F)
    uT = np.uint64(36 * Tb)
    for fb in range(nfb):
        lanes = min(F, FN - fb * F)
        for lane in range(lanes):
            # rows past OH stay zero: every filter writes the same cells of Y
            f = fb * F + lane
            for r in range(4 * rt):
                y = 4 * ty0 + r
                if y < OH:
                    s0 = np.uint64(((n * FN + f) * OH + y) * OW)
                    y0 = np.uint64(((r % 4) * rt + r // 4) * Wr)
                    for v in range(np.uint64(OW)):
                        Y[y0 + v] = ds[s0 + v]
            _a4_plane(Y, rows, Tb, two, four, eight, tmp, lane * 36 * Tb, Tb)
        # transpose: a tile's F lanes in one run; the F source runs stay in L1 from
        # one tile to the next
        for kk in range(36):
            e0 = np.uint64((kk * nfb + fb) * pitch) * uF
            for t in range(np.uint64(Tb)):
                q = np.uint64(kk * Tb) + t
                o = e0 + t * uF
                for lane in range(np.uint64(lanes)):
                    Et[o + lane] = tmp[lane * uT + q]
                for lane in range(np.uint64(lanes), uF):
                    Et[o + lane] = 0


# Why faster than dW's three stages (0.67-0.80x their time where ``_fuses_dw``
# allows): a band's V and E^T are made and consumed while in L2, not passed
# through memory (14 MB each on ResNet-18's 56x56 stage at batch 8), and the
# sums over its tiles run on the direct path's dW register tile, 6 channels by
# 64 filters in the lanes.
@jit(parallel=True)
def _fused_dw_f4(x, dout, BT, AT, ph, pw, th, tw, band_rows, cols, scratch, X):
    """X[lane] = the F(4x4) dW products, sum over the lane's bands of E[kk] V[kk]^T:
    one band of ``band_rows`` tile rows of one image at a time, its V and E^T
    made and consumed in cache.

    x: (N, C, H, W) padded by (ph, pw); dout: (N, FN, OH, OW); cols: (ncb,
    DW_ROWS) uint64, c*pitch for the channels of each block of DW_ROWS (the
    last block's spare columns repeat channel C - 1), pitch = band_rows*tw;
    scratch: (lanes, cells) (``_fused_dw_cells``); X: (lanes, 36, nfb, ncb,
    DW_ROWS*F), zeros, lane l's sums at X[l]: cell p*F + q of block (kk, fb, cb)
    is the product of filter fb*F + q with channel cb*DW_ROWS + p. Iteration
    ``lane`` runs bands lane, lane + lanes, ... on its own scratch and X[lane],
    each tile's terms added in band order: the sum over lanes is the caller's.
    """
    N, C = x.shape[:2]
    nfb = X.shape[2]
    F = X.shape[4] // DW_ROWS
    ncb = cols.shape[0]
    pitch = band_rows * tw
    nb = -(-th // band_rows)
    lanes = scratch.shape[0]
    nv = 36 * C * pitch
    ne = 36 * nfb * pitch * F
    ny = 4 * (band_rows + 2) * 4 * (tw + 1) + 4 * LANES
    tile = DW_ROWS * F
    for lane in prange(lanes):
        buf = scratch[lane]
        Vb = buf[:nv]
        Et = buf[nv:nv + ne]
        Y = buf[nv + ne:nv + ne + ny]
        tmp = buf[nv + ne + ny:nv + ne + ny + 36 * F * pitch]
        Xl = X[lane].reshape(36 * nfb * ncb * tile)
        for task in range(lane, N * nb, lanes):
            n = task // nb
            ty0 = (task - n * nb) * band_rows
            rt = min(band_rows, th - ty0)
            _band_input(x, BT, ph, pw, tw, n, ty0, rt, pitch, Vb, Y)
            _band_dout(dout, AT, tw, n, ty0, rt, F, pitch, Y, tmp, Et)
            for kk in range(36):
                for fb in range(nfb):
                    for cb in range(ncb):
                        a0 = ((kk * nfb + fb) * ncb + cb) * tile
                        _dw_lanes_tile(Xl[a0:a0 + tile], Vb, Et, cols[cb], kk * C * pitch,
                                       (kk * nfb + fb) * pitch * F, 0, rt * tw)


def _fused_dw_cells(C, FN, tw, band_rows, dtype):
    """Scratch cells per lane of ``_fused_dw_f4``: Vb, E^T, Y and tmp."""
    F = _lanes_per_block(dtype)
    pitch = band_rows * tw
    return (36 * C * pitch + 36 * -(-FN // F) * F * pitch
            + 4 * (band_rows + 2) * 4 * (tw + 1) + 4 * LANES + 36 * F * pitch)


def _fused_dw(dout, x, pad, th, tw):
    """dW products X: (36, FN, C) of F(4x4), fused (``_fused_dw_f4``)."""
    N, C = x.shape[:2]
    FN = dout.shape[1]
    F = _lanes_per_block(x.dtype)
    nfb = -(-FN // F)
    ncb = -(-C // DW_ROWS)
    rows = max(1, min(th, DW_BAND_LANES // (tw + 1)))
    lanes = min(N * -(-th // rows), numba.get_num_threads())
    cells = _fused_dw_cells(C, FN, tw, rows, x.dtype)
    scratch = _workspace.get(lanes * cells, x.dtype, slot=3).reshape(lanes, cells)
    channels = np.minimum(np.arange(ncb * DW_ROWS), C - 1).reshape(ncb, DW_ROWS)
    cols = (channels * rows * tw).astype(np.uint64)
    X = np.zeros((lanes, 36, nfb, ncb, DW_ROWS, F), dtype=x.dtype)
    BT, _, AT = _matrices(4, x.dtype)
    _fused_dw_f4(x, dout, BT, AT, pad[0], pad[1], th, tw, rows, cols, scratch,
                 X.reshape(lanes, 36, nfb, ncb, DW_ROWS * F))
    total = X[0]
    for lane in range(1, lanes):                 # a fixed order: the same sums every run
        total = total + X[lane]
    # (36, nfb, ncb, DW_ROWS, F) -> (36, FN, C)
    return np.ascontiguousarray(
        total.transpose(0, 1, 4, 2, 3).reshape(36, nfb * F, ncb * DW_ROWS)[:, :FN, :C])


# Why faster than the one BLAS product it replaces, kron(G, G) @ W.reshape(FN*C, 9).T
# (0.36x its time for 512 x 512 filters and F(4x4), 0.62x for 256 x 256; on a
# par for F(2x2) and for 64 x 64): that product's operand is W transposed,
# which BLAS copies and packs for products with a reduction of only 9; here
# each filter's (a*a, C) block is written in runs of C cells, once.
@jit(parallel=True)
def _filter_transform(W, G, U):
    """U[xi*a + nu, k, c] = (G g G^T)[xi, nu] for g = W[k, c] (3x3), every filter k and
    channel c.

    W: (FN, C, 3, 3), C-contiguous; G: (a, 3) in W's dtype; U: (a*a, FN, C).
    One filter per iteration: it writes U[:, k, :] only. The filter's taps are
    first laid out channel-last, so that both passes (G g, then (G g) G^T) run
    over contiguous channels.
    """
    FN, C = W.shape[:2]
    a = G.shape[0]
    ws = W.reshape(FN * C * 9)
    for k in prange(FN):
        g = np.empty((9, C), dtype=W.dtype)          # g[3i + j, c] = W[k, c, i, j]
        for c in range(C):
            for ij in range(9):
                g[ij, c] = ws[(k * C + c) * 9 + ij]
        t = np.empty((a, 3, C), dtype=W.dtype)       # t[xi, j, c] = (G g)[xi, j]
        for xi in range(a):
            for j in range(3):
                g0, g1, g2 = G[xi, 0], G[xi, 1], G[xi, 2]
                for c in range(C):
                    t[xi, j, c] = g0 * g[j, c] + g1 * g[3 + j, c] + g2 * g[6 + j, c]
        for xi in range(a):
            for nu in range(a):
                u = U[xi * a + nu, k]
                g0, g1, g2 = G[nu, 0], G[nu, 1], G[nu, 2]
                for c in range(C):
                    u[c] = t[xi, 0, c] * g0 + t[xi, 1, c] * g1 + t[xi, 2, c] * g2


# Why faster than the BLAS product it replaces, X.reshape(a*a, FN*C).T @ kron(G, G)
# (0.61x its time for 512 x 512 and 256 x 256 filters with F(4x4), 0.7-0.9x with
# F(2x2)): the same transposed operand as above; here a filter's a*a runs of C
# products are read once, in order.
@jit(parallel=True)
def _filter_back_transform(X, G, dW):
    """dW[k, c, i, j] = (G^T x G)[i, j] for x = X[:, k, c] read as an a x a matrix (x[xi,
    nu] = X[xi*a + nu, k, c]), every filter k and channel c: the back-transform of
    the dW products.

    X: (a*a, FN, C), C-contiguous; G: (a, 3) in X's dtype; dW: (FN, C, 3, 3),
    C-contiguous. One filter per iteration: it writes dW[k] only, summing in a
    fixed order.
    """
    a2, FN, C = X.shape
    a = G.shape[0]
    ds = dW.reshape(FN * C * 9)
    for k in prange(FN):
        t = np.zeros((a, 3, C), dtype=X.dtype)       # t[xi, j, c] = (x G)[xi, j]
        for xi in range(a):
            for nu in range(a):
                x = X[xi * a + nu, k]
                g0, g1, g2 = G[nu, 0], G[nu, 1], G[nu, 2]
                for c in range(C):
                    t[xi, 0, c] += x[c] * g0
                    t[xi, 1, c] += x[c] * g1
                    t[xi, 2, c] += x[c] * g2
        r = np.zeros((9, C), dtype=X.dtype)          # r[3i + j, c] = (G^T x G)[i, j]
        for i in range(3):
            for xi in range(a):
                gi = G[xi, i]
                for j in range(3):
                    for c in range(C):
                        r[3 * i + j, c] += gi * t[xi, j, c]
        for c in range(C):
            for ij in range(9):
                ds[(k * C + c) * 9 + ij] = r[ij, c]


# ------------------------------------------------------------------ the path

def _magnitude(a):
    """The largest |value| of float array a, a Python float (nan if a holds a nan, 0.0
    if a is empty)."""
    return max(float(a.max()), -float(a.min())) if a.size else 0.0


def _fits(ma, mb, length, dtype):
    """True when a sum of ``length`` products of values up to ma and mb in magnitude
    (``_magnitude``), scaled by the transforms, stays far from overflow; False when
    either is inf or nan (nan fails every comparison)."""
    return bool(ma * mb * length * _GROWTH < float(np.finfo(dtype).max))


def _matrices(m, dtype):
    t = TRANSFORMS[m]
    return t["BT"].astype(dtype), t["G"].astype(dtype), t["AT"].astype(dtype)


# Cells between the slabs of the F(4x4) kernels' operands when a slab's size is a
# multiple of 4 KiB: the 36 matrices of V, M and E then sit rows*cols + SLAB_PAD
# cells apart. On the ResNet maps that happens (8x256x14x14: V's slabs are
# 128 KiB), and a tile's 36 values, one per slab, would all map to the same
# cache sets. Measured on that layer (2 threads, paired in one process, medians
# of 7 rounds): 0.85 / 0.87 of the forward / backward time without the
# padding; 0.97-1.06, noise, on maps whose slabs are not such multiples.
SLAB_PAD = 16


def _slabs(count, rows, cols, dtype, slot, padded):
    """Scratch for ``count`` (rows, cols) matrices: (buffer of shape (count, S), the
    (count, rows, cols) view of its first rows*cols columns that numpy's matmul
    takes). S = rows*cols, plus SLAB_PAD when ``padded`` and the slab's bytes are
    a multiple of 4 KiB."""
    S = rows * cols
    if padded and S * np.dtype(dtype).itemsize % 4096 == 0:
        S += SLAB_PAD
    buf = _workspace.get(count * S, dtype, slot=slot).reshape(count, S)
    return buf, buf[:, :rows * cols].reshape(count, rows, cols)


# Bytes of a fused band's transformed input (``_fused_f4``) at most: it stays in
# L2 (2 MiB per core on the development machine) while the band goes through
# the stages. Measured, fused correlation, 2 threads, medians of 4 rotated
# rounds of 9 calls, by tile rows per band: 8x64x56x56 (14 tiles per row) 3
# rows 9.2-9.8 ms, 5 rows 10.1, 7 rows 10.5, 14 rows (2.2 MB) 11.5;
# 1x64x224x224 (56 per row) 2 rows (1.3 MB) 15.6-17.1, 3 rows (1.8 MB) 17.1-19.1;
# 8x128x56x56 3 rows (0.9 MB) 26.8, 5 rows (1.8 MB) 33.7.
FUSED_BYTES = 1536 * 1024
# Lanes of the transform kernels a fused dW band fills at most: its tile rows,
# each tw + 1 wide in the input transform's wide grid, fill LANES.
DW_BAND_LANES = LANES
# How many columns a fused image may compute per tile at most: its bands' tiles,
# each rounded up to whole 48-cell strips, over its tiles (``_fused_rows``).
# Fused over the three stages, float32, 2 threads, paired in one process,
# medians of 4 alternating rounds of 7 calls (3x3, pad 1, as many filters as
# channels): columns per tile 1.04-1.29, 0.58-0.77x the time (8x64x56x56,
# 8x128x56x56, 8x32x56x56, 2x64x56x56, 1x64x112x112, 1x64x224x224), but
# 1x64x56x56, whose two bands keep one thread each, 1.00; 1.44-1.5, 0.64-0.96x
# (8x64x40x40, 8x3x32x32 with 32 filters, 8x16x32x32, 8x64x32x32,
# 8x128x32x32); beyond, 1.09-6.3x (8x64x28x28 1.96 columns per tile,
# 1x128x112x112 1.71, 8x256x32x32 6.0, 1x256x56x56 3.4, 1x512x28x28 6.9: with
# 128 channels and more a band of 1.5 MiB holds one strip of tiles).
FUSED_WASTE = 1.5


def _fuses(m, dtype, C, out_hw):
    """True when the F(m x m) correlation of C channels with output maps ``out_hw``
    runs fused (``_fused_f4``): F(4x4), float32, and its bands compute at most
    FUSED_WASTE columns per tile."""
    if m != 4 or np.dtype(dtype) != np.float32:
        return False
    th, tw = _tiles(out_hw, m)
    return _band_columns(_fused_rows(C, tw, th, 4), tw, th, 4) <= FUSED_WASTE * th * tw


# dW runs fused where a lane's sums X (36 x FN x C, filters rounded up to a block
# of lanes, channels to a block of DW_ROWS) stay in L2, where at least half of a
# block's lanes hold a filter, and with DW_ROWS channels or more. Fused over
# unfused dW (F(4x4), float32, 2 threads, paired in one process, medians of 4
# alternating rounds of 7 calls; 3x3, pad 1, as many filters as channels unless
# said): 64 channels 0.67-0.80x the time on 28x28 to 224x224 maps at batch 1 to
# 8 (8x64x32x32 1.02), 8x32x56x56 0.70; outside the rule 128 channels 0.92-1.33
# (X 2.4 MB), 256 and 512 channels 1.8-4.1, 16 filters 1.48, 3 channels with 32
# filters 1.81, with 64 filters 1.00.
DW_FUSED_BYTES = 1024 * 1024


def _fuses_dw(m, dtype, C, FN):
    """True when dW of F(m x m), C channels and FN filters runs fused
    (``_fused_dw_f4``): F(4x4), float32, C >= DW_ROWS, FN at least half a block
    of lanes and X of one lane within DW_FUSED_BYTES."""
    if m != 4 or np.dtype(dtype) != np.float32:
        return False
    F = _lanes_per_block(np.float32)
    X = 36 * -(-FN // F) * F * -(-C // DW_ROWS) * DW_ROWS * 4
    return C >= DW_ROWS and 2 * FN >= F and X <= DW_FUSED_BYTES


def _blocked_filters(U):
    """U: (36, FN, C) -> (36, FNp/R, C*R): U[kk] in blocks of R = ``direct.TILE_ROWS``
    filters (FN padded to FNp with zero filters), weight t*R + r of a block being
    U[kk, block*R + r, t], as ``direct._forward_strips`` reads a block's weights."""
    a2, FN, C = U.shape
    nfb = -(-FN // TILE_ROWS)
    Ub = np.zeros((a2, nfb * TILE_ROWS, C), dtype=U.dtype)
    Ub[:, :FN] = U
    return np.ascontiguousarray(
        Ub.reshape(a2, nfb, TILE_ROWS, C).transpose(0, 1, 3, 2)).reshape(a2, nfb, C * TILE_ROWS)


def _band_columns(rows, tw, th, itemsize):
    """Columns the fused bands of ``rows`` tile rows compute over an image of th x tw
    tiles: each band's tiles rounded up to whole strips of the register tile."""
    strip = _strip_cells(TILE_ROWS, itemsize)
    return sum(-(-min(rows, th - t) * tw // strip) * strip for t in range(0, th, rows))


def _fused_rows(C, tw, th, itemsize, budget=None):
    """Tile rows per band of ``_fused_f4`` (an image's last band may have fewer).

    Of the heights whose Vb (36 x C x the band's columns) fits in ``budget``
    bytes (FUSED_BYTES), the one whose bands compute the fewest columns over an
    image (``_band_columns``), the shortest of equals: smaller bands stay in
    cache better (the measurements at FUSED_BYTES).
    """
    budget = FUSED_BYTES if budget is None else budget
    best, cost = 1, None
    for rows in range(1, th + 1):
        if rows > 1 and 36 * C * _band_columns(rows, tw, rows, itemsize) * itemsize > budget:
            break
        cells = _band_columns(rows, tw, th, itemsize)
        if cost is None or cells < cost:
            best, cost = rows, cells
    return best


def _input_transform(x, BT, m, pad, th, tw, V, slabs):
    """V = B^T d B of every tile of x (see ``_tile_transform``): F(4x4) on its own
    kernel, which writes V through ``slabs``, the buffer under it."""
    if m == 4:
        _input_transform_f4(x, BT, pad[0], pad[1], th, tw, slabs)
    else:
        _tile_transform(x, BT, m, pad[0], pad[1], th, tw, V)


def _correlate(x, W, b, pad, out_hw, m):
    """out: (N, FN, OH, OW) = 3x3 stride-1 correlation of x: (N, C, H, W) padded by
    ``pad`` (an entry below zero crops instead) with W: (FN, C, 3, 3), plus b."""
    N, C = x.shape[:2]
    FN = W.shape[0]
    BT, G, AT = _matrices(m, x.dtype)
    a = m + 2
    th, tw = _tiles(out_hw, m)
    P = N * th * tw
    U = _workspace.get(a * a * FN * C, x.dtype, slot=0).reshape(a * a, FN, C)
    _filter_transform(np.ascontiguousarray(W), G, U)
    if _fuses(m, x.dtype, C, out_hw):
        rows = _fused_rows(C, tw, th, x.itemsize)
        lanes = min(N * -(-th // rows), numba.get_num_threads())
        cells = _fused_cells(C, tw, rows, x.itemsize)
        scratch = _workspace.get(lanes * cells, x.dtype, slot=3).reshape(lanes, cells)
        out = np.empty((N, FN, *out_hw), dtype=x.dtype)
        _fused_f4(x, _blocked_filters(U), BT, AT, pad[0], pad[1], th, tw, rows, b, out, scratch)
        return out
    # F(2x2)'s general kernels take contiguous (a*a, rows, tiles) arrays: no padding
    Vs, V = _slabs(a * a, C, P, x.dtype, 1, m == 4)
    Ms, Mt = _slabs(a * a, FN, P, x.dtype, 2, m == 4)
    _input_transform(x, BT, m, pad, th, tw, V, Vs)
    np.matmul(U, V, out=Mt)
    out = np.empty((N, FN, *out_hw), dtype=x.dtype)
    if m == 4:
        _output_transform_f4(Ms, AT, th, tw, b, out)
    else:
        _output_transform(Mt, AT, th, tw, b, out)
    return out


@one_launch_at_a_time
def conv_forward(x, W, b, spec):
    """x: (N, C, H, W), W: (FN, C, 3, 3), b: (FN,) -> out: (N, FN, OH, OW), cache."""
    mx, mW = _magnitude(x), _magnitude(W)
    if not _fits(mx, mW, spec.field, x.dtype):
        out, inner = im2col.conv_forward(x, W, b, spec)
        return out, None if spec.forward_only else _Fallback(inner, spec)
    N, C = x.shape[:2]
    m = _tile_for(N, C, W.shape[0], spec.out_hw)
    out = _correlate(x, W, b, spec.pad, spec.out_hw, m)
    if spec.forward_only:
        return out, None
    # copies: backward must see x and W as they were, even if the caller changes them
    return out, ConvCache(x.copy(), W.copy(), spec, mx, mW)


def _conv_dw(dout, x, pad, m):
    """dW: (FN, C, 3, 3) of a 3x3 stride-1 correlation with padding ``pad``, tile m."""
    N, C = x.shape[:2]
    FN, OH, OW = dout.shape[1:]
    BT, G, AT = _matrices(m, x.dtype)
    a = m + 2
    th, tw = _tiles((OH, OW), m)
    if _fuses_dw(m, x.dtype, C, FN):
        dW = np.empty((FN, C, 3, 3), dtype=x.dtype)
        _filter_back_transform(_fused_dw(dout, x, pad, th, tw), G, dW)
        return dW
    P = N * th * tw
    Vs, V = _slabs(a * a, C, P, x.dtype, 1, m == 4)
    Es, E = _slabs(a * a, FN, P, x.dtype, 2, m == 4)
    _input_transform(x, BT, m, pad, th, tw, V, Vs)
    if m == 4:
        _dout_transform_f4(dout, AT, th, tw, Es)
    else:
        _tile_transform(dout, np.ascontiguousarray(AT.T), m, 0, 0, th, tw, E)
    X = np.matmul(E, V.transpose(0, 2, 1))                 # (a*a, FN, C)
    dW = np.empty((FN, C, 3, 3), dtype=x.dtype)
    _filter_back_transform(X, G, dW)
    return dW


@one_launch_at_a_time
def conv_backward(dout, cache):
    """dout: (N, FN, OH, OW) -> dx: (N, C, H, W), dW: (FN, C, 3, 3), db: (FN,).

    dx is None, and not computed, when ``spec.input_grad`` is False.
    """
    if isinstance(cache, _Fallback):
        return im2col.conv_backward(dout, cache.inner)
    x, W, spec, mx, mW = cache
    # one pass over dout: x and W were measured by the forward (1x64x224x224: 3 of
    # the check's 4 passes, 1.4 ms each)
    md = _magnitude(dout)
    if not (_fits(md, mW, W.shape[0] * 9, x.dtype)
            and _fits(md, mx, x.shape[0] * dout.shape[2] * dout.shape[3], x.dtype)):
        return im2col.conv_backward(dout, im2col.ConvCache(x, W, spec))
    ph, pw = spec.pad
    N, C, H, Wd = spec.x_shape
    FN = W.shape[0]
    dx = None
    if spec.input_grad:
        # dx: dout padded by 2 - pad, filters rotated 180 degrees, channels swapped
        W_rot = np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        no_bias = np.zeros(W.shape[1], dtype=x.dtype)
        m = _tile_for(N, FN, C, (H, Wd))
        dx = _correlate(dout, W_rot, no_bias, (2 - ph, 2 - pw), (H, Wd), m)
    dW = _conv_dw(dout, x, spec.pad, _dw_tile_for(N, C, FN, spec.out_hw))
    db = dout.sum(axis=(0, 2, 3))
    return dx, dW, db
