"""fastconv.warmup and autotune_network: what they compile and choose, and what they leave alone;
the one-line notice before a compile; kernels compiled in one specialisation only."""
import json
import os
import subprocess
import types

import numpy as np
import pytest

import fastconv
from fastconv import tuner
from fastconv.kernels import cpu_pooling
from support import PYTHON


@pytest.fixture
def own_pooling(monkeypatch):
    """One more path: the naive kernels with pooling functions of their own, so that "auto"
    has a pooling to time (im2col and direct share theirs: nothing to time between them)."""
    naive = fastconv.backends.get_path("naive")
    path = types.SimpleNamespace(**{k: getattr(naive, k) for k in dir(naive) if not k.startswith("__")})
    path.pool_forward = lambda x, spec: naive.pool_forward(x, spec)
    path.pool_backward = lambda dout, cache: naive.pool_backward(dout, cache)
    monkeypatch.setitem(fastconv.backends.PATHS, "own_pool", path)


def _snapshot(net):
    return ({k: v.copy() for k, v in net.params.items()}, net.path_counts(),
            {name: getattr(lay, "_saved", None) for name, lay in net.layers.items()})


def test_warmup_of_a_network_leaves_it_untouched():
    net = fastconv.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4},
                                 hidden_size=8, seed=0, backend="direct")
    params, counts, saved = _snapshot(net)
    report = fastconv.warmup(net)
    assert report.runs == [("Conv1", "conv", "direct"), ("Pool1", "pool", "direct")]
    after_params, after_counts, after_saved = _snapshot(net)
    for key in params:
        assert np.array_equal(params[key], after_params[key]), key
    assert after_counts == counts and after_saved == saved
    assert report.tuned == {} and report.seconds > 0


def test_explicit_paths_and_lenet_layers():
    net = fastconv.LeNet(seed=0)                  # conv, pool, conv, pool before the Affines
    report = fastconv.warmup(net, paths="im2col")
    assert [(name, op) for name, op, _ in report.runs] == [
        ("Conv1", "conv"), ("Pool1", "pool"), ("Conv2", "conv"), ("Pool2", "pool")]
    assert {p for _, _, p in report.runs} == {"im2col"}


def test_auto_layers_under_the_static_rule_compile_its_pick_only(monkeypatch):
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    net = fastconv.SimpleConvNet(seed=0)          # 1->30 5x5: field 25, the rule says direct
    report = fastconv.warmup(net)
    assert report.runs == [("Conv1", "conv", "direct"), ("Pool1", "pool", "direct")]


def test_shapes_in_the_layer_suite_format_and_float64():
    layers = [{"id": "tiny", "N": 3, "C": 2, "H": 9, "W": 9, "K": 4, "FH": 3, "FW": 3,
               "stride": 1, "pad": 1},
              {"id": "tiny_pool", "N": 3, "C": 4, "H": 9, "W": 9, "FH": 2, "FW": 2,
               "stride": 2, "pad": 0, "mode": "avg"}]
    report = fastconv.warmup(layers, dtype="float64", paths=["direct"])
    assert report.runs == [("tiny", "conv", "direct"), ("tiny_pool", "pool", "direct")]
    assert any("float64" in str(sig) for sig in cpu_pooling._avg_pool.signatures)


def test_a_layer_suite_file(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"layers": [{"id": "one", "N": 2, "C": 1, "H": 8, "W": 8, "K": 2,
                                             "FH": 3, "FW": 3, "stride": 1, "pad": 0}],
                                 "pooling": [{"id": "two", "N": 2, "C": 2, "H": 6, "W": 6,
                                              "FH": 2, "FW": 2, "stride": 2, "pad": 0,
                                              "mode": "max"}]}))
    report = fastconv.warmup(str(suite), paths="direct")
    assert report.runs == [("one", "conv", "direct"), ("two", "pool", "direct")]


def test_warmup_with_batch_sizes_stores_the_choices(fresh_cache, two_candidates, own_pooling):
    net = fastconv.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4},
                                 hidden_size=8, seed=0)
    with pytest.warns(fastconv.CompileNotice) as notices:
        report = fastconv.warmup(net, batch_sizes=[3])
    # one line before each shape is timed
    timing = [str(n.message) for n in notices if "backend='auto' is timing" in str(n.message)]
    assert len(timing) == 2 and "conv x=(3, 1, 12, 12)" in timing[0] and "max pool" in timing[1]
    assert set(report.tuned) == {"Conv1", "Pool1"}
    assert tuner.stats["measured"] == 2
    # what the first real call at batch 3 (bucket 4) would have measured is now stored
    # (the first layer's backward computes no dx: that is the problem it times)
    spec = fastconv.spec.without_input_grad(fastconv.conv_spec((4, 1, 12, 12), (4, 1, 5, 5)))
    decision = tuner.decide_spec(spec, measure=False)
    assert decision.source == "cache" and decision.path == report.tuned["Conv1"][3]
    # only the chosen paths are compiled and run afterwards
    assert {p for _, _, p in report.runs} == set(report.tuned["Conv1"].values()) | set(
        report.tuned["Pool1"].values())


def test_autotune_network_chooses_every_auto_layer(fresh_cache, two_candidates, own_pooling):
    net = fastconv.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4},
                                 hidden_size=8, seed=0)
    decisions = fastconv.autotune_network(net, 5)
    assert set(decisions) == {"Conv1", "Pool1"}
    assert all(d.source == "measured" and d.key["x_shape"][0] == 8 for d in decisions.values())
    again = fastconv.autotune_network(net, 7)     # same bucket: read back, not measured
    assert all(d.source == "cache" for d in again.values())
    assert tuner.stats["measured"] == 2
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            fastconv.autotune_network(net, bad)


# In a fresh process with an empty Numba cache: the direct path's convolution, whose forward
# and dx used to compile two specialisations of one inner loop, and the kernels whose first
# compile used to pull in Numba's string formatting (array-to-array slice copies), on tiny
# inputs.
_FRESH = r"""
import json, warnings
import numpy as np
from numba.core import event
import fastconv
from fastconv.kernels import direct, im2col

compiled = []
class Record(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass

f32 = np.float32
with warnings.catch_warnings(record=True) as caught, event.install_listener("numba:compile", Record()):
    warnings.simplefilter("always")
    x = np.ones((1, 2, 6, 6), f32)
    out, saved = fastconv.functional.conv_forward(x, np.ones((3, 2, 3, 3), f32), None,
                                                  backend="direct")
    fastconv.functional.conv_backward(np.ones_like(out), saved)
    dout = np.ones((1, 2, 3, 3), f32)
    direct._dout_planes(dout, 2, 2, 5, np.empty((1, 2, 25), f32))
    im2col._images_to_side_by_side(np.ones((2, 3, 4), f32), 0, 2, np.empty(24, f32))
    im2col._add_bias(np.ones((1, 2, 3), np.float64), np.ones(2))
    im2col._add_bias(np.ones((1, 2, 3), np.float64), np.ones(2))
print(json.dumps({"compiled": compiled, "compile_seconds": fastconv.kernels._jit.compile_seconds(),
                  "notices": [str(w.message) for w in caught
                              if issubclass(w.category, fastconv.CompileNotice)]}))
"""


def _fresh_process(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([*PYTHON, "-c", _FRESH], capture_output=True, text=True, env=env,
                          check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_first_compile_says_so_once_and_compiles_no_error_formatting(tmp_path):
    cold = _fresh_process(tmp_path)
    assert {"_dout_planes", "_images_to_side_by_side", "_add_bias"} <= set(cold["compiled"])
    assert cold["compiled"].count("_accumulate") == 1, cold["compiled"]
    # the shape-mismatch message of a slice copy needs Numba's str(); nothing compiles it now
    assert not [name for name in cold["compiled"]
                if "raise_with_shape" in name or "str_generic" in name or "unicode" in name]
    notices = cold["notices"]
    assert len(notices) == 3, notices   # direct float32, im2col float32, im2col float64
    assert sum("direct path's kernels" in n and "float32" in n for n in notices) == 1
    assert sum("im2col path's kernels for float64" in n for n in notices) == 1
    assert cold["compile_seconds"] > 0
    warm = _fresh_process(tmp_path)     # the same cache, now filled: nothing compiles
    assert warm == {"compiled": [], "compile_seconds": 0.0, "notices": []}

