"""Host/device round trips: NumPy in -> NumPy out, device array in -> device
array out (same numbers), layers chained on the device, and dispatch of device
arrays through fastconv's public functions."""
import numpy as np
import pytest
from support import assert_close
from cuda_support import DTYPES, skip_without_cuda

import fastconv
from fastconv import Convolution, Pooling, conv2d, pool2d
from fastconv.functional import is_device_array
from fastconv.kernels import naive
from fastconv.kernels._cuda_shim import cuda

skip_without_cuda()


def host(a):
    assert is_device_array(a), f"expected a device array, got {type(a).__name__}"
    return a.copy_to_host()


def test_cuda_is_an_available_backend():
    assert "cuda" in fastconv.available_backends()


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_layer_keeps_device_arrays_on_the_device(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    dout = rng.standard_normal((2, 4, 3, 7)).astype(dtype)

    on_host = Convolution(W, b, stride=(2, 1), pad=(1, 1), backend="cuda")
    out_h = on_host.forward(x)
    dx_h = on_host.backward(dout)
    assert isinstance(out_h, np.ndarray) and isinstance(dx_h, np.ndarray)
    assert isinstance(on_host.dW, np.ndarray) and isinstance(on_host.db, np.ndarray)

    xd, Wd, bd, doutd = (cuda.to_device(a) for a in (x, W, b, dout))
    on_device = Convolution(Wd, bd, stride=(2, 1), pad=(1, 1))     # "auto" sees device arrays
    out_d = on_device.forward(xd)
    assert on_device.path == "cuda"
    dx_d = on_device.backward(doutd)
    # the same kernels ran in both cases: bit-identical results
    np.testing.assert_array_equal(host(out_d), out_h)
    np.testing.assert_array_equal(host(dx_d), dx_h)
    np.testing.assert_array_equal(host(on_device.dW), on_host.dW)
    np.testing.assert_array_equal(host(on_device.db), on_host.db)
    assert host(out_d).dtype == dtype
    # and they are right
    ref, cache = naive.conv_forward(x, W, b, fastconv.conv_spec(x.shape, W.shape, (2, 1), (1, 1), x.dtype))
    assert_close(out_h, ref, "out")
    for name, got, expected in zip(("dx", "dW", "db"), (dx_h, on_host.dW, on_host.db),
                                   naive.conv_backward(dout, cache)):
        assert_close(got, expected, name)
    # device inputs are not modified
    for d, a in ((xd, x), (Wd, W), (bd, b), (doutd, dout)):
        np.testing.assert_array_equal(d.copy_to_host(), a)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_layer_round_trip(mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    dout = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    on_host = Pooling(2, 2, stride=(2, 1), pad=(1, 0), mode=mode, backend="cuda")
    out_h, dx_h = on_host.forward(x), on_host.backward(dout)
    on_device = Pooling(2, 2, stride=(2, 1), pad=(1, 0), mode=mode)
    out_d = on_device.forward(cuda.to_device(x))
    dx_d = on_device.backward(cuda.to_device(dout))
    assert on_device.path == "cuda"
    np.testing.assert_array_equal(host(out_d), out_h)
    np.testing.assert_array_equal(host(dx_d), dx_h)
    assert_close(out_h, pool2d(x, 2, 2, (2, 1), (1, 0), mode, backend="naive"), "out")


def test_conv_pool_conv_chain_stays_on_the_device():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 8, 7)).astype(np.float32)
    W1 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    W2 = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    h = conv2d(cuda.to_device(x), cuda.to_device(W1), pad=1)
    h = pool2d(h, 2, 2, stride=2)
    h = conv2d(h, cuda.to_device(W2))
    expected = conv2d(pool2d(conv2d(x, W1, pad=1, backend="naive"), 2, 2, stride=2,
                             backend="naive"), W2, backend="naive")
    assert_close(host(h), expected, "chain")


def test_mixed_host_and_device_arguments_return_device_arrays():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float64)
    W = rng.standard_normal((2, 2, 3, 3)).astype(np.float64)
    out = conv2d(x, cuda.to_device(W), pad=1)
    assert_close(host(out), conv2d(x, W, pad=1, backend="naive"), "out")


def test_flip_of_a_device_filter_is_true_convolution():
    # W[:, :, ::-1, ::-1] on a device array is a negative-stride view: the
    # kernels index with strides, so no copy is needed.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 1, 5, 6)).astype(np.float64)
    W = rng.standard_normal((1, 1, 3, 2)).astype(np.float64)
    out = conv2d(cuda.to_device(x), cuda.to_device(W), flip=True)
    assert_close(host(out), conv2d(x, W, flip=True, backend="naive"), "flipped")


def test_device_arrays_are_validated_before_any_kernel_runs():
    xd = cuda.to_device(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"x has C=3 channels.*W expects C=2"):
        conv2d(xd, cuda.to_device(np.zeros((4, 2, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="mixed dtypes"):
        conv2d(xd, cuda.to_device(np.zeros((4, 3, 3, 3), np.float64)))
    with pytest.raises(TypeError, match="CUDA device array but backend='naive'"):
        conv2d(xd, np.zeros((4, 3, 3, 3), np.float32), backend="naive")
    with pytest.raises(ValueError, match="x must be 4-D"):
        pool2d(cuda.to_device(np.zeros((3, 5, 5), np.float32)), 2, 2)
