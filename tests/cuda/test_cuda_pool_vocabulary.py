"""The cuda path's pooling with PyTorch's options (ceil_mode, count_include_pad,
divisor_override, dilation, return_indices) against the naive oracle and worked
examples. Shapes are tiny because the simulator runs every CUDA thread as a
Python thread."""
import numpy as np
import pytest
from support import assert_close, pool_through_entry
from cuda_support import DTYPES, skip_without_cuda

from fastconv import Pooling, pool2d, pool_spec
from fastconv import functional as F
from fastconv.functional import is_device_array
from fastconv.kernels._cuda_shim import cuda

skip_without_cuda()

# (x shape, (PH, PW), stride, pad, mode, options)
CASES = {
    "ceil_max": ((1, 2, 5, 4), (2, 3), (2, 2), (1, 1), "max", dict(ceil_mode=True)),
    "ceil_avg_pad": ((1, 2, 6, 5), (3, 3), (2, 2), (1, 1), "avg", dict(ceil_mode=True)),
    "exclude_pad_ceil": ((2, 1, 5, 6), (3, 2), (2, 3), (1, 1), "avg",
                         dict(ceil_mode=True, count_include_pad=False)),
    "divisor_override": ((1, 2, 5, 4), (2, 3), (2, 1), (1, 1), "avg", dict(divisor_override=5)),
    "dilated_padded_max": ((1, 2, 6, 7), (3, 2), (2, 1), (1, 2), "max", dict(dilation=(2, 3))),
    "dilated_ceil_max": ((2, 1, 7, 5), (2, 2), (3, 2), (1, 1), "max",
                         dict(dilation=2, ceil_mode=True)),
}




@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_options_match_naive(case, dtype):
    shape, pool_hw, stride, pad, mode, options = CASES[case]
    spec = pool_spec(shape, *pool_hw, stride, pad, mode, dtype, **options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    out, dx, indices = pool_through_entry(x, dout, spec, "cuda")
    out_ref, dx_ref, indices_ref = pool_through_entry(x.astype(np.float64), dout.astype(np.float64), spec,
                                        "naive")
    assert out.dtype == dtype and dx.dtype == dtype             # float32 stays float32
    assert_close(out, out_ref.astype(dtype), "out")
    assert_close(dx, dx_ref.astype(dtype), "dx")
    if mode == "max":
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, indices_ref)


def test_worked_examples():
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    out, indices = pool2d(x, 2, 2, ceil_mode=True, return_indices=True, backend="cuda")
    expected = np.array([[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(indices[0, 0], expected)
    avg = pool2d(x, 2, 2, mode="avg", ceil_mode=True, backend="cuda")
    np.testing.assert_array_equal(avg[0, 0], [[3, 5, 6.5], [13, 15, 16.5], [20.5, 22.5, 24]])
    x16 = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    corner = pool2d(x16, 3, 3, 1, 1, "avg", count_include_pad=False, backend="cuda")[0, 0]
    assert corner[0, 0] == (0 + 1 + 4 + 5) / 4 and corner[0, 1] == (0 + 1 + 2 + 4 + 5 + 6) / 6
    assert pool2d(x16, 3, 3, 1, 1, "avg", divisor_override=2, backend="cuda")[0, 0, 0, 0] == 5
    dil, dil_idx = pool2d(x16, 2, 2, 1, 1, dilation=2, return_indices=True, backend="cuda")
    assert dil[0, 0, 0, 0] == 5 and dil_idx[0, 0, 0, 0] == 5 and dil_idx[0, 0, 3, 3] == 10


def test_padding_never_wins_and_ties_go_first():
    x = np.full((1, 1, 1, 2), -np.inf)
    out, indices, saved = F.pool_forward(x, 1, 2, 1, (0, 1), backend="cuda", return_indices=True)
    np.testing.assert_array_equal(indices[0, 0, 0], [0, 0, 1])
    np.testing.assert_array_equal(F.pool_backward(np.ones((1, 1, 1, 3)), saved)[0, 0, 0],
                                  [2.0, 1.0])
    x = np.array([[[[3.0, 3.0, 1.0, np.nan, np.nan, 2.0]]]], dtype=np.float32)
    _, indices = pool2d(x, 1, 2, (1, 2), backend="cuda", return_indices=True)
    np.testing.assert_array_equal(indices[0, 0, 0], [0, 3, 4])


def test_device_input_gets_device_indices_and_a_private_copy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    xd = cuda.to_device(x)
    out, indices = pool2d(xd, 2, 2, 1, 1, dilation=2, ceil_mode=True, return_indices=True)
    assert is_device_array(out) and is_device_array(indices)
    ref, ref_indices = pool2d(x, 2, 2, 1, 1, dilation=2, ceil_mode=True, return_indices=True,
                              backend="naive")
    np.testing.assert_array_equal(out.copy_to_host(), ref)
    np.testing.assert_array_equal(indices.copy_to_host(), ref_indices)
    layer = Pooling(2, 2, 1, 1, return_indices=True, dilation=2, ceil_mode=True)
    layer.forward(xd)
    assert layer.path == "cuda" and is_device_array(layer.indices)
    dx = layer.backward(cuda.to_device(np.ones(ref.shape, np.float32)))
    expected = F.pool_backward(np.ones(ref.shape, np.float32),
                               F.pool_forward(x, 2, 2, 1, 1, backend="naive", dilation=2,
                                              ceil_mode=True)[1])
    np.testing.assert_array_equal(dx.copy_to_host(), expected)
