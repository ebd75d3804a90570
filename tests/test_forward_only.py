"""A forward with no backward after it: ``fastconv.conv2d`` and forwards under
``fastconv.no_grad()`` keep nothing for one.

``conv_forward`` returns what its backward needs, and every path copies x and W
into it (a backward must see them as they were). ``conv2d`` returns the output
alone, so it runs the spec with ``forward_only=True``: the paths copy nothing
and return None as the cache. Checked here: the output is bit for bit the one
``conv_forward`` gives (and the float64 naive oracle's, within tolerance), the
copies are really gone, and "auto" runs a forward-only call where it runs the
training call of the same problem, without timing it again. ``no_grad()`` does
the same for ``conv_forward`` and the layers (per thread, like torch's), and a
network's evaluation runs under it.
"""
import threading
import tracemalloc

import numpy as np
import pytest
from support import (CONV_BRANCHES, PATHS, assert_close, conv_branch, lowered_spec, oracle_conv,
                     skip_unless_supported)

import fastconv
from fastconv import backends, tuner
from fastconv import functional as F
from fastconv.spec import as_forward_only

CASES = CONV_BRANCHES


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("path", PATHS)
def test_conv2d_gives_the_forward_of_conv_forward(path, case, dtype):
    x, W, b, kw = conv_branch(case, dtype)
    skip_unless_supported(path, lowered_spec(x, W, kw))
    x_before, W_before = x.copy(), W.copy()
    out = fastconv.conv2d(x, W, b, backend=path, **kw)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(W, W_before)
    # the same arithmetic, whether or not a cache is kept beside it
    np.testing.assert_array_equal(out, F.conv_forward(x, W, b, backend=path, **kw)[0])
    assert out.dtype == np.dtype(dtype)
    if case != "unequal_pad" and kw["dilation"] == kw["groups"] == 1:
        expected = oracle_conv(x, W, b, kw["stride"], kw["pad"], np.zeros_like(out))[0]
        assert_close(out, expected, "out")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("path", PATHS)
def test_every_path_keeps_no_cache_for_a_forward_only_spec(path, case):
    x, W, b, kw = conv_branch(case, np.float32, seed=5)
    spec = lowered_spec(x, W, kw)
    skip_unless_supported(path, spec)
    if case == "unequal_pad":
        x = np.pad(x, ((0, 0), (0, 0), (0, 1), (2, 0)))      # what the entry point adds
    module = backends.get_path(path)
    out, cache = module.conv_forward(x, W, b, as_forward_only(spec))
    assert cache is None
    out_kept, cache_kept = module.conv_forward(x, W, b, spec)
    assert cache_kept is not None
    np.testing.assert_array_equal(out, out_kept)


def test_winograd_fallback_keeps_no_cache_either():
    # a nan in x sends the winograd path to im2col: forward-only there too
    if "winograd" not in PATHS:
        pytest.skip("the winograd path is not tested in this run")
    x, W, b, kw = conv_branch("3x3", np.float32, seed=2)
    x[0, 1, 3, 4] = np.nan
    module = backends.get_path("winograd")
    out, cache = module.conv_forward(x, W, b, as_forward_only(lowered_spec(x, W, kw)))
    assert cache is None
    np.testing.assert_array_equal(out, F.conv_forward(x, W, b, backend="im2col", **kw)[0])


@pytest.mark.parametrize("path", [p for p in ("naive", "im2col", "winograd") if p in PATHS])
def test_forward_only_copies_neither_x_nor_W(path):
    # conv_forward's cache holds copies of x and W: what a call leaves allocated,
    # its result held, is at least their bytes more than what conv2d leaves
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    W = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    fastconv.conv2d(x, W, b, pad=1, backend=path)       # compile, and fill scratch buffers
    F.conv_forward(x, W, b, 1, 1, backend=path)

    def held(call):
        tracemalloc.start()
        try:
            result = call()            # noqa: F841 (held while the memory is read)
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    kept = held(lambda: F.conv_forward(x, W, b, 1, 1, backend=path))
    only = held(lambda: fastconv.conv2d(x, W, b, pad=1, backend=path))
    assert kept - only >= x.nbytes + W.nbytes, (kept, only)


# (training pick, forward times in ms) -> what a forward-only call runs: the fastest
# forward when it beats the training pick's forward by MARGIN (10%) or more, else the
# training pick; a decision with no timings (the static rule's) as it is.
FORWARD_PICKS = [
    ("im2col", {"im2col": 30.0, "direct": 15.0, "winograd": 40.0}, "direct"),
    ("im2col", {"im2col": 30.0, "direct": 28.0, "winograd": 40.0}, "im2col"),
    ("direct", {"im2col": 30.0, "direct": 15.0, "winograd": 40.0}, "direct"),
    ("winograd", {"im2col": 20.0, "direct": 10.0, "winograd": 40.0}, "direct"),
    ("naive", {}, "naive"),
]


@pytest.mark.parametrize("training, forward_ms, expected", FORWARD_PICKS)
def test_auto_runs_a_forward_only_call_on_the_training_calls_timings(monkeypatch, training,
                                                                     forward_ms, expected):
    x, W, b, kw = conv_branch("3x3", np.float32, seed=4)
    spec = lowered_spec(x, W, kw)
    asked = []

    def decide(spec_asked):
        asked.append(spec_asked)
        times = {p: {"forward": ms, "backward": 100.0} for p, ms in forward_ms.items()}
        return tuner.Decision(training, "chosen by this test", "measured" if times else "static",
                              tuner.spec_key(spec_asked), times_ms=times)

    monkeypatch.setattr(tuner, "decide_spec", decide)
    monkeypatch.setattr(tuner, "_by_spec", {})
    assert tuner.choose(as_forward_only(spec)) == expected
    assert tuner.choose(spec) == training
    # one measurement for both, the training call's, and each answer kept in memory
    assert asked == [spec, spec]
    assert tuner.choose(as_forward_only(spec)) == expected
    assert tuner.choose(spec) == training
    assert len(asked) == 2
    assert tuner.spec_key(as_forward_only(spec)) == tuner.spec_key(spec)
    assert as_forward_only(as_forward_only(spec), False) == spec


def test_conv2d_on_auto_runs_the_forward_pick(monkeypatch):
    x, W, b, kw = conv_branch("3x3", np.float32, seed=4)
    times = {"im2col": {"forward": 30.0, "backward": 10.0},
             "direct": {"forward": 10.0, "backward": 90.0}}
    monkeypatch.setattr(tuner, "decide_spec", lambda s: tuner.Decision(
        "im2col", "chosen by this test", "measured", tuner.spec_key(s), times_ms=times))
    monkeypatch.setattr(tuner, "_by_spec", {})
    ran = []
    for name in ("im2col", "direct"):
        module = backends.get_path(name)
        monkeypatch.setattr(module, "conv_forward",
                            lambda *a, _f=module.conv_forward, _n=name: ran.append(_n) or _f(*a))
    out = fastconv.conv2d(x, W, b, **kw)
    F.conv_forward(x, W, b, backend="auto", **kw)
    assert ran == ["direct", "im2col"]
    assert_close(out, fastconv.conv2d(x, W, b, backend="naive", **kw), "out")


# ------------------------------------------------------------------ no_grad

def test_under_no_grad_a_layer_keeps_nothing_and_its_backward_says_why():
    x, W, b, _ = conv_branch("3x3", np.float32, seed=7)
    layer = fastconv.Convolution(W, b, stride=1, pad=1, backend="im2col")
    out = layer.forward(x)
    with fastconv.no_grad():
        out_no_grad = layer.forward(x)
    assert layer._saved.cache is None
    np.testing.assert_array_equal(out_no_grad, out)
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.ones_like(out))
    layer.forward(x)                    # outside no_grad: a backward as always
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape


def test_no_grad_is_per_thread_nests_and_is_undone_by_an_error():
    assert F.grad_enabled()
    with fastconv.no_grad():
        seen = []
        other = threading.Thread(target=lambda: seen.append(F.grad_enabled()))
        other.start()
        other.join()
        assert seen == [True]
        with fastconv.no_grad():
            assert not F.grad_enabled()
        assert not F.grad_enabled()
    assert F.grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with fastconv.no_grad():
            1 / 0
    assert F.grad_enabled()


def test_network_evaluation_keeps_no_copies_and_gives_the_same_figures():
    net = fastconv.SimpleConvNet(input_dim=(1, 10, 10), hidden_size=8, seed=3,
                                 conv_param={"filter_num": 4, "filter_size": 3},
                                 backend="im2col")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((12, 1, 10, 10)).astype(np.float32)
    t = rng.integers(0, 10, 12)
    loss, accuracy = net.evaluate(x, t, batch_size=5)
    conv = next(layer for layer in net.layers.values()
                if isinstance(layer, fastconv.Convolution))
    assert conv._saved.cache is None
    # the same figures from forwards that keep their caches
    scores = np.concatenate([net.predict(x[i:i + 5]) for i in range(0, 12, 5)])
    assert accuracy == np.mean(scores.argmax(axis=1) == t)
    expected = sum(float(net.last_layer.forward(net.predict(x[i:i + 5]), t[i:i + 5])) * len(x[i:i + 5])
                   for i in range(0, 12, 5)) / 12
    assert loss == pytest.approx(expected, rel=1e-6)
    assert conv._saved.cache is not None


def test_enable_grad_inside_no_grad_keeps_caches_again():
    x, W, b, kw = conv_branch("3x3", np.float32, seed=9)
    with fastconv.no_grad():
        with fastconv.enable_grad():
            assert F.grad_enabled()
            out, saved = F.conv_forward(x, W, b, backend="im2col", **kw)
        assert not F.grad_enabled()
    dx, dW, db = F.conv_backward(np.ones_like(out), saved)
    assert dx.shape == x.shape


def test_warmup_and_compare_run_their_backward_inside_no_grad():
    # both run a backward of their own: a caller's no_grad() must not break them
    from fastconv.compare import compare

    with fastconv.no_grad():
        fastconv.warmup([((2, 3, 8, 8), (4, 3, 3, 3))], paths=["im2col"])
        rows = compare(N=2, C=2, H=6, W=6, K=3, FH=3, FW=3, repeat=1, paths=["im2col"])
    assert rows[0]["max_rel_diff"] < 1e-5


def test_the_1x1_case_reaches_the_im2col_branch_without_unroll():
    from fastconv.kernels import im2col

    x, W, b, kw = conv_branch("1x1", np.float32)
    assert im2col.plan(lowered_spec(x, W, kw))["unrolls"] is False
