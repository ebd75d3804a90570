"""PyTorch-style conveniences on every path: unbatched input, NumPy's dtype promotion,
float16 inference, pooling's default stride, layers built from sizes.

Expected values come from the naive path (in float64 where rounding matters).
"""
import numpy as np
import pytest
from support import assert_close

import fastconv
from fastconv import Convolution, Pooling, conv2d, pool2d


def arrays(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3, 7, 6)).astype(dtype),
            rng.standard_normal((4, 3, 3, 3)).astype(dtype),
            rng.standard_normal(4).astype(dtype))


def test_one_image_gives_one_output_and_one_gradient(path):
    x, W, b = arrays()
    layer = Convolution(W, b, pad=1, backend=path)
    out = layer.forward(x)
    ref = Convolution(W, b, pad=1, backend="naive")
    expected = ref.forward(x[None])
    assert out.shape == expected.shape[1:]
    assert_close(out, expected[0], "out")
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    assert_close(dx, ref.backward(dout[None])[0], "dx")
    assert_close(layer.dW, ref.dW, "dW")
    pool = Pooling(2, 2, backend="direct" if path == "winograd" else path)
    pooled = pool.forward(x)
    assert_close(pooled, pool2d(x[None], 2, 2, backend="naive")[0], "pooled")
    assert pool.backward(np.ones_like(pooled)).shape == x.shape
    with pytest.raises(ValueError, match=r"dout must be 3-D \(4, 7, 6\)"):
        layer.backward(dout[None])


def test_float32_images_through_float64_parameters_compute_in_float64(path):
    x64, W, b = arrays(2)
    x = x64.astype(np.float32)[None]
    layer = Convolution(W, b, pad=1, backend=path)
    out = layer.forward(x)
    assert out.dtype == np.float64
    ref = Convolution(W, b, pad=1, backend="naive")
    assert_close(out, ref.forward(x.astype(np.float64)), "out")
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dx = layer.backward(dout)
    assert dx.dtype == np.float32 and layer.dW.dtype == np.float64 and layer.db.dtype == np.float64
    np.testing.assert_allclose(dx, ref.backward(dout).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert_close(layer.dW, ref.dW, "dW")


def test_float32_stays_float32_bit_for_bit_with_the_same_path(path):
    x, W, b = (a.astype(np.float32) for a in arrays(4))
    np.testing.assert_array_equal(conv2d(x[None], W, b, backend=path),
                                  conv2d(x, W, b, backend=path)[None])


@pytest.mark.parametrize("bad", [np.int32, np.int64, np.bool_, np.uint8])
def test_integer_and_bool_input_name_the_cast(bad):
    x, W, b = arrays()
    with pytest.raises(TypeError, match=r"astype\(np.float32\)"):
        conv2d(x.astype(bad), W, b)
    with pytest.raises(TypeError, match=r"astype\(np.float32\)"):
        pool2d(x.astype(bad), 2, 2)


def test_float16_is_stored_as_float16_and_computed_in_float32(path):
    x, W, b = (a.astype(np.float16) for a in arrays(5))
    out = conv2d(x, W, b, pad=1, backend=path)
    assert out.dtype == np.float16
    # the float32 result rounded once to float16: no float16 running sum
    expected = conv2d(*(a.astype(np.float32) for a in (x, W, b)), pad=1, backend="naive")
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    pooled = pool2d(x[None], 2, 2, mode="avg", backend="direct" if path == "winograd" else path)
    assert pooled.dtype == np.float16


def test_a_network_converts_to_float16_in_one_call_and_keeps_its_answers():
    rng = np.random.default_rng(6)
    net = fastconv.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4, "filter_size": 3},
                                 hidden_size=8, weight_init_std="he", backend="naive", seed=0)
    x = rng.standard_normal((5, 1, 12, 12)).astype(np.float32)
    scores32 = net.predict(x)
    assert net.astype(np.float16) is net
    assert all(p.dtype == np.float16 for p in net.params.values())
    assert all(net.layers[name].W is net.params[key] for name, key in (("Conv1", "W1"),
                                                                       ("Affine1", "W2")))
    scores16 = net.predict(x.astype(np.float16))
    assert scores16.dtype == np.float16
    np.testing.assert_allclose(scores16.astype(np.float32), scores32, rtol=2e-2, atol=2e-2)
    np.testing.assert_array_equal(scores16.argmax(axis=1), scores32.argmax(axis=1))
    with pytest.raises(TypeError, match="training in float16 is not supported"):
        fastconv.Trainer(net, x.astype(np.float16), np.zeros(5, int), x.astype(np.float16),
                         np.zeros(5, int))


def test_pooling_steps_by_its_window_by_default():
    x = np.random.default_rng(7).standard_normal((2, 3, 30, 30))
    assert pool2d(x, 2, 2).shape == (2, 3, 15, 15)
    assert Pooling(2, 2).forward(x).shape == (2, 3, 15, 15)
    assert Pooling(3, 2).stride == (3, 2)
    np.testing.assert_array_equal(pool2d(x, 2, 2, backend="naive"),
                                  pool2d(x, 2, 2, stride=2, backend="naive"))
    assert pool2d(x, 2, 2, stride=1).shape == (2, 3, 29, 29)


def test_convolution_from_sizes():
    layer = Convolution.from_shape(3, 16, 5, stride=2, pad=(1, 2), seed=3)
    assert layer.W.shape == (16, 3, 5, 5) and layer.b.shape == (16,)
    assert layer.W.dtype == np.float32 and not layer.b.any()
    assert layer.stride == (2, 2) and layer.pad == (1, 2)
    # He: std sqrt(2 / fan_in), fan_in = 3*5*5 = 75
    assert abs(layer.W.std() / np.sqrt(2 / 75) - 1) < 0.1
    np.testing.assert_array_equal(layer.W, Convolution.from_shape(3, 16, 5, seed=3).W)
    rect = Convolution.from_shape(2, 4, (1, 7), init=0.5, dtype=np.float64, seed=1)
    assert rect.W.shape == (4, 2, 1, 7) and rect.W.dtype == np.float64
    no_bias = Convolution.from_shape(2, 4, 3, bias=False, backend="naive")
    out = no_bias.forward(np.ones((1, 2, 5, 5), np.float32))
    no_bias.backward(np.ones_like(out))
    assert not no_bias.db.any()
    for kwargs, match in ((dict(in_channels=0), "in_channels"), (dict(kernel_size=0), "kernel_size"),
                          (dict(init="glorot"), "init"), (dict(init=-1.0), "init"),
                          (dict(dtype=np.int32), "dtype")):
        args = dict(in_channels=2, out_channels=4, kernel_size=3) | kwargs
        with pytest.raises((ValueError, TypeError), match=match):
            Convolution.from_shape(**args)


def test_affine_and_softmax_follow_numpy_promotion():
    rng = np.random.default_rng(8)
    affine = fastconv.Affine(rng.standard_normal((6, 3)), np.zeros(3))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    out = affine.forward(x)
    assert out.dtype == np.float64
    dx = affine.backward(np.ones_like(out))
    assert dx.dtype == np.float32 and affine.dW.dtype == np.float64
    loss = fastconv.SoftmaxWithLoss()
    value = loss.forward(x.astype(np.float16), np.array([0, 1, 2, 3]) % 6)
    assert np.isfinite(value) and loss.backward().dtype == np.float16
