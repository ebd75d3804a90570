"""Single-channel convolution against SciPy: correlate2d, and convolve2d for flip=True."""
import numpy as np
import pytest
from scipy import signal

from support import assert_close, skip_unless_supported
from fastconv import conv2d, conv_spec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_matches_scipy_correlate_and_convolve(path, dtype, seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 13, size=2)
    fh, fw = rng.integers(1, 5, size=2)
    img = rng.standard_normal((h, w))
    ker = rng.standard_normal((fh, fw))
    x, k = img.astype(dtype)[None, None], ker.astype(dtype)[None, None]
    skip_unless_supported(path, conv_spec(x.shape, k.shape))
    # SciPy's float64 result is the reference for both dtypes
    assert_close(conv2d(x, k, backend=path)[0, 0],
                 signal.correlate2d(img, ker, mode="valid").astype(dtype))
    assert_close(conv2d(x, k, flip=True, backend=path)[0, 0],
                 signal.convolve2d(img, ker, mode="valid").astype(dtype))
    # SciPy's "full" mode is zero padding by filter-1 on each side
    assert_close(conv2d(x, k, pad=(fh - 1, fw - 1), backend=path)[0, 0],
                 signal.correlate2d(img, ker, mode="full").astype(dtype))


def test_flip_differs_from_correlation_for_an_asymmetric_filter(path):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    k = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    assert not np.allclose(conv2d(x, k, backend=path), conv2d(x, k, flip=True, backend=path))


def test_multichannel_is_sum_of_per_channel_correlations_plus_bias(path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 8))
    W = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    skip_unless_supported(path, conv_spec(x.shape, W.shape))
    out = conv2d(x, W, b, backend=path)
    for n in range(2):
        for k in range(4):
            expected = sum(signal.correlate2d(x[n, c], W[k, c], mode="valid") for c in range(3)) + b[k]
            assert_close(out[n, k], expected)
