"""Skipping the input gradient: ``conv_forward(..., input_grad=False)`` and a network's first layer.

A network's first convolution has no layer below it to take dx, so its
backward computes dW and db only. Checked here on every path: dx is None, its
kernels never run, and dW, db are exactly what the full backward gives (and
match the float64 naive oracle).
"""
import numpy as np
import pytest
from support import (CONV_BRANCHES, PATHS, assert_close, conv_branch, lowered_spec, oracle_conv,
                     skip_unless_supported)

import fastconv
from fastconv import backends
from fastconv import functional as F

CASES = CONV_BRANCHES


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("path", PATHS)
def test_without_dx_the_weight_gradients_are_unchanged(path, case, dtype):
    x, W, b, kw = conv_branch(case, dtype)
    skip_unless_supported(path, lowered_spec(x, W, kw))
    out_full, saved_full = F.conv_forward(x, W, b, backend=path, **kw)
    out, saved = F.conv_forward(x, W, b, backend=path, input_grad=False, **kw)
    np.testing.assert_array_equal(out, out_full)
    assert saved.spec.input_grad is False and saved_full.spec.input_grad is True
    dout = np.cos(out)
    dx_full, dW_full, db_full = F.conv_backward(dout, saved_full)
    dx, dW, db = F.conv_backward(dout, saved)
    assert dx is None
    # the same arithmetic, whether or not dx was computed alongside
    np.testing.assert_array_equal(dW, dW_full)
    np.testing.assert_array_equal(db, db_full)
    assert dW.dtype == db.dtype == np.dtype(dtype)
    if kw["dilation"] == 1 and kw["groups"] == 1:
        # the oracle helper speaks stride and pad only
        expected = oracle_conv(x, W, b, kw["stride"], kw["pad"], dout)
        assert_close(dW, expected[2], "dW")
        assert_close(db, expected[3], "db")
        assert_close(dx_full, expected[1], "dx")


# The functions that compute dx on each path: with input_grad=False none may run.
DX_KERNELS = {
    "im2col": ["_col2im"],
    "direct": ["_conv_dx", "_conv_dx_strips", "_depthwise_dx"],
    "winograd": ["_correlate"],
}


@pytest.mark.parametrize("case", ["3x3", "1x1", "depthwise"])
@pytest.mark.parametrize("path", [p for p in PATHS if p in DX_KERNELS])
def test_without_dx_its_kernels_do_not_run(path, case, monkeypatch):
    x, W, b, kw = conv_branch(case, np.float32)
    skip_unless_supported(path, lowered_spec(x, W, kw))
    out, saved = F.conv_forward(x, W, b, backend=path, input_grad=False, **kw)
    _, saved_full = F.conv_forward(x, W, b, backend=path, **kw)
    module = backends.get_path(path)

    def refuse(*args, **kwargs):
        raise AssertionError("a dx kernel ran although dx was not asked for")

    for name in DX_KERNELS[path]:
        monkeypatch.setattr(module, name, refuse)
    dx, dW, db = F.conv_backward(np.ones_like(out), saved)
    assert dx is None and dW.shape == W.shape
    if case == "1x1" and path != "winograd":
        return          # the 1x1 branch of im2col has no col2im to refuse
    with pytest.raises(AssertionError, match="dx kernel ran"):
        F.conv_backward(np.ones_like(out), saved_full)


@pytest.mark.parametrize("value", [None, 0, 1, "no", np.array([True])])
def test_input_grad_must_be_a_bool(value):
    x, W, b, kw = conv_branch("3x3", np.float64)
    with pytest.raises(TypeError, match="input_grad"):
        F.conv_forward(x, W, b, backend="naive", input_grad=value, **kw)


@pytest.mark.parametrize("path", PATHS)
def test_unbatched_and_float16_input_without_dx(path):
    """The entry point's hand-back (one image, float16 promotion) copes with a missing dx."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 8)).astype(np.float16)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    out, saved_full = F.conv_forward(x, W, None, 1, 1, backend=path)
    _, saved = F.conv_forward(x, W, None, 1, 1, backend=path, input_grad=False)
    dx_full, dW_full, db_full = F.conv_backward(np.ones_like(out), saved_full)
    dx, dW, db = F.conv_backward(np.ones_like(out), saved)
    assert dx is None and dx_full.shape == x.shape
    assert dW.dtype == dW_full.dtype == np.float16
    np.testing.assert_array_equal(dW, dW_full)
    np.testing.assert_array_equal(db, db_full)


@pytest.mark.parametrize("path", PATHS)
def test_layer_without_input_grad_returns_none_and_the_same_gradients(path):
    x, W, b, kw = conv_branch("3x3", np.float64)
    layers = [fastconv.Convolution(W, b, 1, 1, backend=path) for _ in range(2)]
    layers[1].needs_input_grad = False
    dout = np.cos(layers[0].forward(x))
    layers[1].forward(x)
    dx = layers[0].backward(dout)
    assert dx.shape == x.shape
    assert layers[1].backward(dout) is None
    np.testing.assert_array_equal(layers[1].dW, layers[0].dW)
    np.testing.assert_array_equal(layers[1].db, layers[0].db)


@pytest.mark.parametrize("net_cls", [fastconv.SimpleConvNet, fastconv.LeNet])
def test_a_network_skips_dx_of_its_first_layer_only(net_cls):
    net = net_cls(seed=0)
    convs = [layer for layer in net.layers.values() if isinstance(layer, fastconv.Convolution)]
    first = next(iter(net.layers.values()))
    assert first is convs[0] and first.needs_input_grad is False
    assert all(c.needs_input_grad for c in convs[1:])


def test_auto_keeps_a_separate_choice_for_a_backward_without_dx():
    """The tuner's key says whether dx is computed, so the first layer's choice is
    measured on the backward it runs, and a plain layer's key is the one it always had."""
    from fastconv import tuner

    spec = fastconv.conv_spec((8, 1, 28, 28), (30, 1, 5, 5), 1, 0, "float32")
    no_dx = fastconv.spec.without_input_grad(spec)
    assert "input_grad" not in tuner.spec_key(spec)
    assert tuner.spec_key(no_dx)["input_grad"] is False
    assert no_dx != spec and "no dx" in no_dx.describe()


def test_warmup_of_a_network_runs_its_first_layer_without_dx(monkeypatch):
    seen = []
    real = F.conv_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("input_grad", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "conv_forward", spy)
    fastconv.warmup(fastconv.LeNet(seed=0), paths=["naive"])
    assert seen == [False, True]            # LeNet: conv1 without dx, conv2 with
