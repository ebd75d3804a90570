"""The direct path's register tiles. The float32 forward loop: a tile of filters by a
strip of the wide grid (4 by 16 cells on AVX2 targets, 8 by 48 on AVX-512; half as
many filters by strips twice as long for small groups) that sums a chunk of taps per
store (float64 runs the passes over an accumulator; the same cases cover it). dW,
both dtypes: a tile of lane sums of KB filters by DW_TAPS taps.

What that loop adds to the path: strips that overrun the end of a task's wide
grid (its length is rarely a multiple of the strip, sometimes shorter than
one), planes with spare rows for what the last strip reads, chunks of taps
that end inside a channel list, and filter blocks with unused rows. Expected
values come from the naive path in float64 (it takes dilation and groups
itself), compared with the TOLERANCES of tests/support.py.
"""
import os
import subprocess
import sys

import llvmlite.binding
import numba
import numpy as np
import pytest
from support import assert_close, assert_same_cells

from fastconv.kernels import direct, naive
from fastconv.kernels._jit import JIT_OPTIONS, vector_registers
from fastconv.spec import conv_spec

DTYPES = [np.float32, np.float64]

# (x shape, W shape, stride, pad, dilation, groups): what each case reaches
CASES = {
    # wide grid of 2*2 = 4 cells: shorter than one strip
    "1x1, grid shorter than a strip": ((1, 1, 2, 2), (1, 1, 1, 1), 1, 0, 1, 1),
    # 7 rows of pitch 11 = 77 cells: a multiple of neither strip width; FN = 5
    "3x3, 77 cells, FN 5": ((2, 3, 7, 9), (5, 3, 3, 3), 1, 1, 1, 1),
    # 1x1 over 70 channels: 64 taps per chunk, then a chunk of 6
    "1x1, two chunks": ((2, 70, 5, 5), (9, 70, 1, 1), 1, 0, 1, 1),
    "1x7": ((2, 4, 9, 17), (6, 4, 1, 7), 1, 0, 1, 1),
    "7x1": ((2, 4, 17, 9), (6, 4, 7, 1), 1, 0, 1, 1),
    "5x5, FN 16": ((3, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),
    # 12 filters: a full tile and a partial one (AVX-512); 9 rows of pitch 11
    "3x3, FN 12": ((2, 3, 9, 9), (12, 3, 3, 3), 1, 1, 1, 1),
    "5x5, stride 2": ((2, 5, 13, 12), (7, 5, 5, 5), 2, 2, 1, 1),
    "3x3, dilation 2": ((2, 3, 11, 10), (6, 3, 3, 3), 1, 2, 2, 1),
    # three filters per group: every block is partial and must not cross groups
    "3x3, groups 2": ((2, 4, 9, 8), (6, 2, 3, 3), 1, 1, 1, 2),
    "1x7, stride 2, dilation 2, groups 2": ((1, 4, 9, 31), (6, 2, 1, 7), (1, 2), (0, 1), (1, 2),
                                            2),
    # 18 filters per group: blocks of 8 (8, 8, 2) on AVX-512 targets, of 4 (five
    # blocks, the last with two rows) on AVX2, where with four blocks per task a
    # task of four blocks and one of one in each group
    "3x3, groups 2, blocks per task": ((4, 4, 9, 8), (36, 2, 3, 3), 1, 1, 1, 2),
    # 70 output rows of pitch 77: several row blocks per image, float64 twice as many
    "3x3, several row blocks": ((1, 2, 72, 77), (6, 2, 3, 3), 1, 0, 1, 1),
}


def _problem(case, dtype, seed=0):
    x_shape, w_shape, stride, pad, dilation, groups = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    return x, W, b, spec


def _naive_forward(x, W, b, spec):
    """(out, cache) of the naive forward in float64 on the same values."""
    x64, W64, b64 = (np.asarray(a, dtype=np.float64) for a in (x, W, b))
    spec64 = conv_spec(x.shape, W.shape, spec.stride, spec.pad, np.float64,
                       dilation=spec.dilation, groups=spec.groups)
    with np.errstate(invalid="ignore", over="ignore"):
        return naive.conv_forward(x64, W64, b64, spec64)


def _naive(x, W, b, spec):
    """The naive forward in float64 on the same values, cast back to x's dtype."""
    return _naive_forward(x, W, b, spec)[0].astype(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_naive(case, dtype):
    x, W, b, spec = _problem(case, dtype)
    x_before, W_before = x.copy(), W.copy()
    out = direct.conv_forward(x, W, b, spec)[0]
    assert out.shape == (x.shape[0], W.shape[0], *spec.out_hw)
    assert_close(out, _naive(x, W, b, spec), case)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(W, W_before)


@pytest.mark.parametrize("case", ["3x3, 77 cells, FN 5", "1x1, two chunks", "1x7",
                                  "3x3, groups 2, blocks per task", "3x3, several row blocks"])
def test_chunks_blocks_and_row_blocks_do_not_change_a_bit(case, monkeypatch):
    # each cell adds its taps one by one in tap order, whatever the chunk of taps
    # per visit of a strip, the blocks a task holds and where its strip starts
    x, W, b, spec = _problem(case, np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)     # as many blocks per task as there are tasks for
        out = direct.conv_forward(x, W, b, spec)[0]
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr(direct, "BLOCKS_PER_TASK", 1)
    np.testing.assert_array_equal(direct.conv_forward(x, W, b, spec)[0], out)
    monkeypatch.setattr(direct, "CHUNK_TAPS", 1)   # one channel per chunk
    np.testing.assert_array_equal(direct.conv_forward(x, W, b, spec)[0], out)
    monkeypatch.setattr(direct, "CHUNK_TAPS", 10 ** 6)
    monkeypatch.setattr(direct, "CHUNK_BYTES", 10 ** 9)   # all taps in one chunk
    np.testing.assert_array_equal(direct.conv_forward(x, W, b, spec)[0], out)
    monkeypatch.setattr(direct, "ACC_BYTES", 1)    # one output row per task
    np.testing.assert_array_equal(direct.conv_forward(x, W, b, spec)[0], out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["3x3, 77 cells, FN 5", "1x7", "7x1", "5x5, stride 2",
                                  "3x3, dilation 2", "3x3, groups 2"])
def test_nan_and_inf_land_where_naive_puts_them(case, dtype):
    # what the strips read past a row's last output, past the grid's end, and the
    # zero rows of a partial filter block must never reach an output cell
    x, W, b, spec = _problem(case, dtype, seed=1)
    rng = np.random.default_rng(2)
    specials = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    x_bad = x.copy()
    hit = rng.random(x.shape) < 0.02
    x_bad[hit] = rng.choice(specials, size=int(hit.sum()))
    x_bad[..., -1] = np.nan            # the last column and row: some windows miss them
    x_bad[..., -1, :] = np.inf
    W_bad = W.copy()
    W_bad[-1, 0, 0, -1] = np.inf       # the last filter: in a partial block when FN % 4 != 0
    W_bad[0, -1, -1, 0] = np.nan
    for name, xs, Ws in (("x", x_bad, W), ("W", x, W_bad)):
        got = direct.conv_forward(xs, Ws, b, spec)[0]
        assert got.dtype == x.dtype
        assert_same_cells(got, _naive(xs, Ws, b, spec), f"{case}, non-finite {name}")


def _fresh(kernel):
    """``kernel`` compiled afresh (Numba cannot show the machine code it loaded from
    its cache); the test is skipped where the CPU has no AVX2 or FMA."""
    features = llvmlite.binding.get_host_cpu_features()
    if not (features.get("avx2") and features.get("fma")):
        pytest.skip("the CPU has no AVX2 or FMA")
    return numba.njit(**dict(JIT_OPTIONS, cache=False))(kernel.py_func)


def _vector_fmas(compiled):
    """The fused multiply-adds on the target's full-width registers (zmm with AVX-512,
    ymm with AVX2) in the machine code of ``compiled``'s first signature."""
    vector = "zmm" if vector_registers()[1] == 64 else "ymm"
    return [line for line in compiled.inspect_asm(compiled.signatures[0]).splitlines()
            if "vfmadd" in line and vector in line]


def test_strip_loop_compiles_to_vector_multiply_adds():
    # the tile's cells stay in vector registers: each tap is fused multiply-adds on
    # ymm registers with AVX2 (8 per tap), on zmm registers with AVX-512 (24 per
    # tap: prefer_wide_vectors lets LLVM use them), for blocks of TILE_ROWS filters
    # and of half as many alike; and its sums are right for both block sizes
    strips = _fresh(direct._forward_strips)
    for rows in (direct.TILE_ROWS, direct.TILE_ROWS // 2):
        width = direct._strip_cells(rows, 4)
        acc = np.zeros(rows * 2 * width, np.float32)
        src = np.arange(3 * width + 5, dtype=np.float32)
        taps = np.array([0, 1, 4], dtype=np.uint64)
        w = np.arange(3 * rows, dtype=np.float32)
        strips(acc, src, taps, w, 1, 2)    # two strips, chunks of two taps then one
        want = [[sum(w[t * rows + r] * src[taps[t] + 1 + m] for t in range(3))
                 for m in range(2 * width)] for r in range(rows)]
        np.testing.assert_array_equal(acc.reshape(rows, -1), np.array(want, np.float32))
    # one tap's worth (the tile's registers) for each block size
    assert len(_vector_fmas(strips)) >= 2 * direct.TILE_BYTES // vector_registers()[1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dw_tile_compiles_to_vector_multiply_adds(dtype):
    # dW's tile of KB filters x DW_TAPS columns stays in vector registers: a step
    # is TILE_REGISTERS fused multiply-adds on full-width registers; a fresh
    # compile, as above. Integer data: every sum is exact, in any order.
    tile = _fresh(direct._dw_tile)
    cells = direct.TILE_BYTES // np.dtype(dtype).itemsize
    vw = cells // direct.TILE_REGISTERS
    rng = np.random.default_rng(3)
    xs, ds = 8 * vw, 12 * vw                 # cells per image: x planes, dout planes
    lanes = rng.integers(-4, 5, cells).astype(dtype)
    src = rng.integers(-4, 5, 3 * xs).astype(dtype)
    dsrc = rng.integers(-4, 5, 3 * ds).astype(dtype)
    cols = rng.integers(0, 4 * vw, direct.DW_TAPS).astype(np.uint64)
    drows = (np.arange(direct.KB) * 2 * vw + 1).astype(np.uint64)
    want = lanes.astype(np.float64).reshape(direct.KB, direct.DW_TAPS, vw)
    for n in (1, 2):             # images 1 and 2 of 3
        for m in (vw, 2 * vw):   # two steps, from the second vector on
            for r in range(direct.KB):
                for p in range(direct.DW_TAPS):
                    d0, x0 = n * ds + int(drows[r]) + m, n * xs + int(cols[p]) + m
                    want[r, p] += dsrc[d0:d0 + vw] * src[x0:x0 + vw]
    tile(lanes, src, dsrc, cols, drows, 1, 3, xs, ds, vw, 2 * vw)
    np.testing.assert_array_equal(lanes, want.reshape(-1).astype(dtype))
    assert len(_vector_fmas(tile)) >= direct.TILE_REGISTERS


@pytest.mark.parametrize("dtype", DTYPES)
def test_dw_lanes_tile_compiles_to_vector_multiply_adds(dtype):
    # the tile of DW_ROWS columns x DW_LANE_VECTORS vectors of filters: a step is
    # TILE_REGISTERS fused multiply-adds on full-width registers, each a broadcast
    # x value times a vector of dout; a fresh compile, integer data, as above
    tile = _fresh(direct._dw_lanes_tile)
    cells = direct.TILE_BYTES // np.dtype(dtype).itemsize
    F = cells // direct.DW_ROWS                          # filters of the tile
    rng = np.random.default_rng(5)
    acc = rng.integers(-4, 5, cells).astype(dtype)
    src = rng.integers(-4, 5, 200).astype(dtype)
    dT = rng.integers(-4, 5, 12 * F).astype(dtype)
    cols = rng.integers(0, 100, direct.DW_ROWS).astype(np.uint64)
    xn, dn, m0, L = 7, F, 3, 5
    want = acc.astype(np.float64).reshape(direct.DW_ROWS, F)
    for m in range(m0, m0 + L):
        for p in range(direct.DW_ROWS):
            want[p] += src[xn + int(cols[p]) + m] * dT[dn + m * F:dn + (m + 1) * F]
    tile(acc, src, dT, cols, xn, dn, m0, L)
    np.testing.assert_array_equal(acc, want.reshape(-1).astype(dtype))
    assert len(_vector_fmas(tile)) >= direct.TILE_REGISTERS


# dW with the filters in the vector lanes (``_conv_dw_lanes``): groups of 64 filters
# or more (blocks of 64 float32 filters on AVX-512, of 32 on AVX2 and in float64 on
# AVX-512), x finite.
LANE_CASES = {
    # 70 filters: a full block and a partial one (float64 on AVX-512: two and one)
    "3x3, FN 70": ((2, 3, 9, 11), (70, 3, 3, 3), 1, 1, 1, 1),
    "5x5, stride 2, FN 64": ((2, 4, 13, 12), (64, 4, 5, 5), 2, 2, 1, 1),
    "3x3, dilation 2, groups 2": ((1, 4, 11, 10), (128, 2, 3, 3), 1, 2, 2, 2),
    # 16 channels x 9 taps: 144 columns, more blocks than one task takes
    "3x3, 144 columns": ((2, 16, 6, 7), (64, 16, 3, 3), 1, 1, 1, 1),
}


def _lane_problem(case, dtype):
    x_shape, w_shape, stride, pad, dilation, groups = LANE_CASES[case]
    rng = np.random.default_rng(4)
    x, W, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1]))
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    return x, W, b, spec, rng


def _naive_backward(x, W, b, spec, dout):
    """(dx, dW, db) of the naive path in float64, cast back to x's dtype."""
    cache = _naive_forward(x, W, b, spec)[1]
    with np.errstate(invalid="ignore", over="ignore"):
        return [g.astype(x.dtype) for g in naive.conv_backward(dout.astype(np.float64), cache)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LANE_CASES))
def test_dw_with_the_filters_in_the_lanes(case, dtype, monkeypatch):
    x, W, b, spec, rng = _lane_problem(case, dtype)
    assert direct._lanes_fit(W.shape[0] // spec.groups, dtype)
    calls = []
    lanes_kernel = direct._conv_dw_lanes

    def counted(*args):
        calls.append(args)
        return lanes_kernel(*args)

    monkeypatch.setattr(direct, "_conv_dw_lanes", counted)
    cache = direct.conv_forward(x, W, b, spec)[1]
    dout = rng.standard_normal((x.shape[0], W.shape[0], *spec.out_hw)).astype(dtype)
    dout_before = dout.copy()
    got = direct.conv_backward(dout, cache)
    assert len(calls) == 1
    np.testing.assert_array_equal(dout, dout_before)
    for name, g, w in zip(("dx", "dW", "db"), got, _naive_backward(x, W, b, spec, dout)):
        assert_close(g, w, f"{case} {name}")

    # each dW entry adds its terms image by image, in grid order: the same bits
    # for one column block per task, and for one thread
    monkeypatch.setattr(direct, "_lane_tasks", lambda blocks, rows, threads: 1)
    np.testing.assert_array_equal(direct.conv_backward(dout, cache)[1], got[1])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(direct.conv_backward(dout, cache)[1], got[1])
    finally:
        numba.set_num_threads(before)

    # nan and inf in dout meet the spare columns' zeros only in dout's own cells:
    # they land where the naive path puts them
    bad = dout.copy()
    bad[0, 0, 0, 0], bad[-1, -1, -1, -1], bad[0, W.shape[0] // 2, 1, 0] = np.nan, np.inf, -np.inf
    for name, g, w in zip(("dx", "dW", "db"), direct.conv_backward(bad, cache),
                          _naive_backward(x, W, b, spec, bad)):
        assert_same_cells(g, w, f"{case} {name}, dout with nan and inf")

    # x with an inf: dW sums the real output columns row by row (``_conv_dw``)
    calls.clear()
    x_bad = x.copy()
    x_bad[0, 0, 1, 1] = np.inf
    cache = direct.conv_forward(x_bad, W, b, spec)[1]
    for name, g, w in zip(("dx", "dW", "db"), direct.conv_backward(dout, cache),
                          _naive_backward(x_bad, W, b, spec, dout)):
        assert_same_cells(g, w, f"{case} {name}, x with an inf")
    assert not calls


# With NUMBA_BOUNDSCHECK=1 every array read is checked: a strip, or dW's last
# vector, that read past the end of an image's planes or of its dout planes
# would raise IndexError. x with an inf runs dW row by row, with the rows'
# ends outside the tile. A fresh process per dtype, its own Numba cache
# (bounds-checked code must not reach the shared one).
_BOUNDS = r"""
import numpy as np
from fastconv.kernels import direct, naive
from fastconv.spec import conv_spec
cases = [((1, 1, 2, 2), (1, 1, 1, 1), 1, 0, 1, 1), ((1, 2, 3, 5), (5, 2, 3, 1), 1, 0, 1, 1),
         ((2, 2, 5, 19), (3, 2, 1, 7), (1, 2), 0, 1, 1), ((1, 4, 7, 9), (2, 2, 3, 3), 2, 2, 2, 2),
         ((2, 3, 9, 21), (9, 3, 2, 2), 1, 0, 1, 1), ((1, 2, 6, 7), (70, 2, 3, 3), 1, 1, 1, 1),
         ((1, 4, 9, 8), (128, 2, 3, 3), 2, 1, 1, 2)]
dtype = np.%s
for x_shape, w_shape, stride, pad, dilation, groups in cases:
    for inf in (False, True):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(x_shape).astype(dtype)
        x[0, 0, -1, -1] = np.inf if inf else x[0, 0, -1, -1]
        W = rng.standard_normal(w_shape).astype(dtype)
        b = np.zeros(w_shape[0], dtype)
        spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation,
                         groups=groups)
        got, cache = direct.conv_forward(x, W, b, spec)
        want, naive_cache = naive.conv_forward(x, W, b, spec)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True), x_shape
        dout = rng.standard_normal(want.shape).astype(dtype)
        got_dW = direct.conv_backward(dout, cache)[1]
        want_dW = naive.conv_backward(dout, naive_cache)[1]
        assert np.allclose(got_dW, want_dW, rtol=1e-4, atol=1e-4, equal_nan=True), x_shape
print("ok")
"""

# The tiles are sized from the registers of the CPU Numba compiles for. On an
# AVX-512 machine the same cases (forward and dW) also run compiled for AVX2
# alone (16 registers, strips of 16 cells, dW tiles of 4 filters x 2 taps), in
# a fresh process with its own Numba cache.
_AVX2_TARGET = r"""
import numpy as np
from fastconv.kernels import direct, naive
from fastconv.kernels._jit import vector_registers
from fastconv.spec import conv_spec
print(vector_registers(), direct.TILE_BYTES)
for x_shape, w_shape, stride, pad, dilation, groups in %r:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    W = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    spec = conv_spec(x_shape, w_shape, stride, pad, np.float32, dilation=dilation,
                     groups=groups)
    got, cache = direct.conv_forward(x, W, b, spec)
    want, naive_cache = naive.conv_forward(*(a.astype(np.float64) for a in (x, W, b)), spec)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max()), x_shape
    dout = rng.standard_normal(want.shape).astype(np.float32)
    got = direct.conv_backward(dout, cache)[1]
    want = naive.conv_backward(dout.astype(np.float64), naive_cache)[1]
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max()), x_shape
print("ok")
"""


def _wide():
    return bool(llvmlite.binding.get_host_cpu_features().get("avx512f"))


def _avx2_env(tmp):
    features = llvmlite.binding.get_host_cpu_features()
    for name in features:
        if name.startswith(("avx512", "avx10", "amx", "evex")):
            features[name] = False
    return dict(os.environ, NUMBA_CPU_FEATURES=features.flatten(), NUMBA_CACHE_DIR=str(tmp))


@pytest.fixture(scope="module")
def fresh_compiles(tmp_path_factory):
    """The children above, started together: each compiles every kernel afresh on
    one core, so side by side they take the time of the slowest, not the sum."""
    def start(code, env):
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    children = {}
    for dtype in ("float32", "float64"):
        cache = tmp_path_factory.mktemp(f"bounds_{dtype}")
        children[dtype] = start(_BOUNDS % dtype,
                                dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache)))
    if _wide():
        children["avx2"] = start(_AVX2_TARGET % ([*CASES.values(), *LANE_CASES.values()],),
                                 _avx2_env(tmp_path_factory.mktemp("avx2")))
        children["avx2 machine code"] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
             "-k", "compiles_to_vector_multiply_adds"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(__file__),
            env=_avx2_env(tmp_path_factory.mktemp("avx2_code")))
    yield children
    for child in children.values():
        child.kill()
        child.wait()


def _finish(child):
    """(returncode, stdout, stderr) of a child, after at most 15 minutes."""
    out, err = child.communicate(timeout=900)
    return child.returncode, out, err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strips_read_inside_the_planes(fresh_compiles, dtype):
    code, out, err = _finish(fresh_compiles[dtype])
    assert code == 0, err[-3000:]
    assert out.strip().endswith("ok")


def test_tile_follows_the_target_registers(fresh_compiles):
    wide = _wide()
    if os.environ.get("NUMBA_CPU_FEATURES") is None:
        assert vector_registers() == ((32, 64) if wide else (16, 32))
    registers, nbytes = vector_registers()
    assert direct.TILE_BYTES == (registers - 8) * nbytes
    if not wide:
        pytest.skip("the CPU has no AVX-512: the cases above ran with AVX2's tile")
    code, out, err = _finish(fresh_compiles["avx2"])
    assert code == 0, err[-3000:]
    assert out.split() == ["(16,", "32)", "256", "ok"]


def test_machine_code_on_an_avx2_target(fresh_compiles):
    # the three machine-code tests above, rerun in a process that compiles for
    # AVX2 alone: LLVM's vectorisers do not treat both targets alike (dW's tiles
    # once compiled to scalar multiply-adds on AVX2 targets only)
    if not _wide():
        pytest.skip("the CPU has no AVX-512: the tests above compiled for AVX2")
    code, out, err = _finish(fresh_compiles["avx2 machine code"])
    assert code == 0, out[-3000:] + err[-3000:]
    assert "5 passed" in out, out[-3000:]
