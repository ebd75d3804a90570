"""SimpleConvNet and LeNet: backprop against finite differences (float64), params kept
in sync with the layers, dtype kept, and learning on real MNIST images."""
import numpy as np
import pytest

import fastconv
from fastconv import Adam, LeNet, SimpleConvNet, SGD
from fastconv.nets import LinkedParams
from gradcheck import numerical_gradient, rel_error
from mnist_subset import mnist_subset
from support import skip_unless_supported

MAX_REL_ERROR = 1e-6


def tiny_simple(path="auto", dtype=np.float64, seed=0):
    # 7x7 input, 3x3 filters -> 5x5 maps -> 2x2 after pooling: every parameter matters
    return SimpleConvNet(input_dim=(1, 7, 7), conv_param={"filter_num": 2, "filter_size": 3},
                         hidden_size=6, output_size=3, weight_init_std=0.5, backend=path,
                         dtype=dtype, seed=seed)


def sampled_gradient(loss, a, count, rng):
    """Central differences for ``count`` random elements of ``a``: (indices, values)."""
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    values = []
    for i in idx:
        old = flat[i]
        flat[i] = old + 1e-5
        up = loss()
        flat[i] = old - 1e-5
        down = loss()
        flat[i] = old
        values.append((up - down) / 2e-5)
    return idx, np.array(values)


def test_simple_conv_net_gradient_matches_finite_differences(path):
    # a network runs every layer on one path: that path must pool too
    skip_unless_supported(path, fastconv.pool_spec((2, 2, 5, 5), 2, 2, 2))
    rng = np.random.default_rng(0)
    net = tiny_simple(path)
    x = rng.standard_normal((2, 1, 7, 7))
    t = np.array([0, 2])
    grads = net.gradient(x, t)
    assert set(grads) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    for key, p in net.params.items():
        numeric = numerical_gradient(lambda: float(net.loss(x, t)), p)
        assert grads[key].shape == p.shape
        assert rel_error(grads[key], numeric) < MAX_REL_ERROR, key


def test_network_numerical_gradient_method_agrees_with_finite_differences():
    rng = np.random.default_rng(1)
    net = tiny_simple()
    x = rng.standard_normal((2, 1, 7, 7))
    t = np.array([1, 0])
    mine = net.numerical_gradient(x, t)
    for key, p in net.params.items():
        assert rel_error(mine[key], numerical_gradient(lambda: float(net.loss(x, t)), p)) < 1e-6


@pytest.mark.parametrize("activation, pooling", [("relu", "max"), ("sigmoid", "avg")])
def test_lenet_gradient_matches_finite_differences(path, activation, pooling):
    skip_unless_supported(path, fastconv.pool_spec((2, 6, 12, 12), 2, 2, 2, 0, pooling))
    rng = np.random.default_rng(2)
    # 12x12 keeps every layer: 12 -> conv(pad 2) 12 -> pool 6 -> conv 2 -> pool 1
    net = LeNet(input_dim=(1, 12, 12), output_size=4, activation=activation, pooling=pooling,
                backend=path, dtype=np.float64, seed=3)
    x = rng.standard_normal((2, 1, 12, 12))
    t = np.array([3, 1])
    grads = net.gradient(x, t)
    assert list(grads) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4", "W5", "b5"]
    for key, p in net.params.items():
        idx, numeric = sampled_gradient(lambda: float(net.loss(x, t)), p, 12, rng)
        analytic = grads[key].reshape(-1)[idx]
        scale = max(np.abs(grads[key]).max(), 1e-12)
        assert np.max(np.abs(analytic - numeric)) / scale < 1e-5, key


def test_lenet_shapes_follow_the_1998_layout():
    net = LeNet(seed=0)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (6, 1, 5, 5), "b1": (6,), "W2": (16, 6, 5, 5), "b2": (16,),
                      "W3": (400, 120), "b3": (120,), "W4": (120, 84), "b4": (84,),
                      "W5": (84, 10), "b5": (10,)}
    with pytest.raises(ValueError, match="activation"):
        LeNet(activation="tanh")
    with pytest.raises(ValueError, match="pooling"):
        LeNet(pooling="min")


def test_simple_conv_net_matches_the_seeds_shapes_and_init():
    net = SimpleConvNet(seed=0)
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (30, 1, 5, 5), "b1": (30,), "W2": (30 * 12 * 12, 100), "b2": (100,),
        "W3": (100, 10), "b3": (10,)}
    assert all(v.dtype == np.float32 for v in net.params.values())
    assert 0.009 < net.params["W2"].std() < 0.011         # weight_init_std 0.01
    assert not net.params["b2"].any()
    with pytest.raises(ValueError, match="unknown keys"):
        SimpleConvNet(conv_param={"filters": 3})
    with pytest.raises(TypeError, match="float32 or float64"):
        SimpleConvNet(dtype=np.int32)


def test_seed_fixes_the_initial_weights():
    a, b, c = SimpleConvNet(seed=5), SimpleConvNet(seed=5), SimpleConvNet(seed=6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


def _layer_arrays(net):
    return {"W1": net.layers["Conv1"].W, "b1": net.layers["Conv1"].b,
            "W2": net.layers["Affine1"].W, "b2": net.layers["Affine1"].b,
            "W3": net.layers["Affine2"].W, "b3": net.layers["Affine2"].b}


@pytest.mark.parametrize("optimizer", [SGD(lr=0.1), Adam(lr=0.01)])
def test_params_and_layers_stay_in_sync_after_an_optimizer_step(optimizer):
    rng = np.random.default_rng(4)
    net = tiny_simple(dtype=np.float32)
    before = {k: v.copy() for k, v in net.params.items()}
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    t = np.array([0, 1, 2])
    optimizer.update(net.params, net.gradient(x, t))
    for key, arr in _layer_arrays(net).items():
        assert arr is net.params[key]
        assert not np.array_equal(arr, before[key]), key
    # what the network computes is what its params say
    scores = net.predict(x)
    h = np.maximum(fastconv.conv2d(x, net.params["W1"], net.params["b1"]), 0)
    h = fastconv.pool2d(h, 2, 2, stride=2).reshape(3, -1)
    expected = np.maximum(h @ net.params["W2"] + net.params["b2"], 0) @ net.params["W3"] \
        + net.params["b3"]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_params_and_layers_stay_in_sync_after_load_params(tmp_path):
    source, target = tiny_simple(seed=1), tiny_simple(seed=2)
    source.save_params(tmp_path / "p.npz")
    arrays_before = _layer_arrays(target)
    target.load_params(tmp_path / "p.npz")
    for key, arr in _layer_arrays(target).items():
        assert arr is arrays_before[key] is target.params[key]
        assert np.array_equal(arr, source.params[key])
    x = np.random.default_rng(0).standard_normal((2, 1, 7, 7))
    assert np.array_equal(target.predict(x), source.predict(x))


def test_assigning_a_param_writes_into_the_layer_array():
    net = tiny_simple()
    w = net.layers["Affine2"].W
    net.params["W3"] = np.ones_like(w)
    assert net.layers["Affine2"].W is w and (w == 1).all()
    net.params["W3"] -= 0.5                      # the book's in-place idiom
    assert (w == 0.5).all()
    with pytest.raises(ValueError, match="W3"):
        net.params["W3"] = np.ones((2, 2))
    with pytest.raises(ValueError, match="float32"):
        net.params["W3"] = np.ones(w.shape, dtype=np.float32)
    with pytest.raises(KeyError, match="W9"):
        net.params["W9"] = w
    assert isinstance(net.params, LinkedParams)


def test_float32_stays_float32_through_the_network():
    rng = np.random.default_rng(5)
    net = tiny_simple(dtype=np.float32)
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    assert net.predict(x).dtype == np.float32
    assert net.loss(x, np.array([0, 1])).dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradient(x, np.array([0, 1])).values())
    # float64 images through float32 parameters promote as NumPy does
    np.testing.assert_allclose(net.predict(x.astype(np.float64)), net.predict(x), rtol=1e-5,
                               atol=1e-6)
    assert net.predict(x.astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match=r"astype\(np.float32\)"):
        net.predict(x.astype(np.int32))


def test_accuracy_takes_labels_or_one_hot_and_any_batch_size():
    rng = np.random.default_rng(6)
    net = tiny_simple()
    x = rng.standard_normal((7, 1, 7, 7))
    t = rng.integers(0, 3, size=7)
    expected = np.mean(net.predict(x).argmax(axis=1) == t)
    assert net.accuracy(x, t, batch_size=3) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(3)[t], batch_size=100) == pytest.approx(expected)
    loss, acc = net.evaluate(x, t, batch_size=2)
    assert loss == pytest.approx(float(net.loss(x, t)), rel=1e-12)


def test_simple_conv_net_learns_real_mnist():
    x_train, t_train, x_test, t_test = mnist_subset(500, 200)
    net = SimpleConvNet(seed=0, conv_param={"filter_num": 8}, weight_init_std=0.05)
    before = net.accuracy(x_test, t_test)
    opt = Adam(lr=0.005)
    rng = np.random.default_rng(0)
    for _ in range(2):
        order = rng.permutation(len(x_train))
        for i in range(0, len(x_train), 25):
            idx = order[i:i + 25]
            opt.update(net.params, net.gradient(x_train[idx], t_train[idx]))
    after = net.accuracy(x_test, t_test)
    # chance is 0.1; two passes over 500 images reach about 0.84
    assert before < 0.3 and after > 0.75, (before, after)


def test_set_backend_reaches_conv_and_pool_layers():
    net = tiny_simple()
    net.set_backend("naive")
    net.predict(np.zeros((1, 1, 7, 7)))
    assert net.paths() == {"Conv1": "naive", "Pool1": "naive"}
    with pytest.raises(ValueError, match="backend"):
        net.set_backend("fortran")


def test_named_weight_inits_scale_with_fan_in():
    net = SimpleConvNet(weight_init_std="he", seed=0)
    # fan_in: 1*5*5 for W1, 30*12*12 for W2, 100 for W3
    for key, fan_in in (("W1", 25), ("W2", 4320), ("W3", 100)):
        assert net.params[key].std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.15), key
    lenet = LeNet(activation="sigmoid", seed=0)          # Xavier for sigmoid by default
    assert lenet.params["W3"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.1)
    with pytest.raises(ValueError, match="weight_init_std"):
        SimpleConvNet(weight_init_std="glorot")
    with pytest.raises(ValueError, match="weight_init_std"):
        LeNet(weight_init_std=0)
