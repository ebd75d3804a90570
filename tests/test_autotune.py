"""backend="auto": measured once per key, stored on disk, reused, never changing results."""
import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest

import fastconv
from fastconv import backends
from support import PYTHON


at = importlib.import_module("fastconv.tuner")

SMALL_X, SMALL_W = (2, 3, 8, 8), (4, 3, 3, 3)

# Until two compiled paths exist, "auto" has a single candidate and measures
# nothing; these stand-ins (the naive kernels under other names) give it two,
# so the measuring and caching machinery is tested either way.
TWIN_SETUP = """
from fastconv import backends
from fastconv.tuner import candidates
for _name in ("twin_a", "twin_b"):
    if len(candidates()) >= 2:
        break
    backends.PATHS[_name] = backends.get_path("naive")
"""

# every test starts from an empty cache with measuring on (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def own_pooling(monkeypatch):
    """One more path, "own_pool": the naive kernels, with pooling functions of its own.

    im2col and direct pool with the very same functions (kernels.cpu_pooling), so
    "auto" has nothing to time between them; this path gives it a pooling to time.
    """
    naive = backends.get_path("naive")
    path = types.SimpleNamespace(**{k: getattr(naive, k) for k in dir(naive) if not k.startswith("__")})
    path.pool_forward = lambda x, spec: naive.pool_forward(x, spec)
    path.pool_backward = lambda dout, cache: naive.pool_backward(dout, cache)
    monkeypatch.setitem(backends.PATHS, "own_pool", path)
    return at.candidates()


def stored_files(root):
    return sorted(root.glob("autotune/*/*.json"))


def small_arrays(dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(SMALL_X).astype(dtype),
            rng.standard_normal(SMALL_W).astype(dtype),
            rng.standard_normal(SMALL_W[0]).astype(dtype))


# ------------------------------------------------------------ where and what

def test_cache_dir_follows_env_then_xdg_then_home(tmp_path, monkeypatch):
    assert at.cache_root() == tmp_path / "cache"
    if sys.platform in ("win32", "darwin"):
        return
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert at.cache_root() == tmp_path / "xdg" / "fastconv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert at.cache_root() == tmp_path / "home" / ".cache" / "fastconv"


def test_namespace_names_cpu_and_versions(monkeypatch):
    ns = at.namespace()
    assert f"numba-{numba.__version__}" in ns and f"numpy-{np.__version__}" in ns
    assert f"fastconv-{fastconv.__version__}-{at.kernels_digest()}" in ns
    assert at.cache_dir().name == ns
    monkeypatch.setattr(at, "cpu_model", lambda: "Some Other CPU @ 3.0GHz")
    assert at.namespace() != ns and "Some-Other-CPU" in at.namespace()


def test_kernels_digest_follows_the_kernels_source(tmp_path):
    # an install of changed kernels under the same version number must not
    # reuse choices measured for the old code: the namespace carries a digest
    # of the kernels' source, name and content
    import fastconv.kernels

    installed = Path(fastconv.kernels.__file__).parent
    copy = tmp_path / "kernels"
    copy.mkdir()
    for path in installed.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    assert at.kernels_digest(str(copy)) == at.kernels_digest()
    (copy / "direct.py").write_bytes((copy / "direct.py").read_bytes() + b"\n")
    changed = at.kernels_digest(str(copy))
    assert changed != at.kernels_digest() and len(changed) == 8
    (copy / "direct.py").rename(copy / "direct2.py")
    assert at.kernels_digest(str(copy)) not in (changed, at.kernels_digest())


def test_key_holds_every_field():
    key = at.make_key("conv", SMALL_X, SMALL_W, 2, (1, 0), np.float64)
    assert key == {"op": "conv", "x_shape": list(SMALL_X), "w_shape": list(SMALL_W),
                   "stride": [2, 2], "pad": [1, 0], "dtype": "float64",
                   "threads": numba.get_num_threads(), "mode": None}


# --------------------------------------------------------------- candidates

@pytest.mark.parametrize("available, expected", [
    (["naive", "im2col", "direct", "cuda"], ["im2col", "direct"]),
    (["naive", "im2col"], ["im2col"]),
    (["naive", "cuda"], ["naive"]),
    (["naive"], ["naive"]),
])
def test_candidates_leave_out_naive_and_cuda(monkeypatch, available, expected):
    monkeypatch.setattr(backends, "PATHS", {name: backends.get_path("naive") for name in available})
    assert at.candidates() == expected


def test_candidates_leave_out_paths_that_do_not_support_the_spec(monkeypatch):
    naive = backends.get_path("naive")

    class Picky:                           # a path for 1x1 convolutions only
        SCOPE = "1x1 convolutions"

        @staticmethod
        def supports(spec):
            return spec.op == "conv" and spec.filter_hw == (1, 1)

    monkeypatch.setattr(backends, "PATHS", {"naive": naive, "direct": naive, "picky": Picky})
    assert at.candidates(fastconv.conv_spec((1, 2, 6, 6), (3, 2, 1, 1))) == ["direct", "picky"]
    assert at.candidates(fastconv.conv_spec((1, 2, 6, 6), (3, 2, 3, 3))) == ["direct"]
    with pytest.raises(ValueError, match="backend 'picky' runs 1x1 convolutions"):
        fastconv.conv2d(np.zeros((1, 2, 6, 6)), np.zeros((3, 2, 3, 3)), backend="picky")


def test_single_candidate_is_chosen_without_measuring(monkeypatch, fresh_cache):
    monkeypatch.setattr(backends, "PATHS", {"naive": backends.get_path("naive")})
    d = at.decide("conv", SMALL_X, SMALL_W)
    assert (d.path, d.source) == ("naive", "only")
    assert at.stats["measured"] == 0 and stored_files(fresh_cache) == []


@pytest.mark.parametrize("x_shape, w_shape, stride, pad, want", [
    ((100, 1, 28, 28), (30, 1, 5, 5), 1, 0, "direct"),       # C*FH*FW = 25
    ((64, 3, 32, 32), (32, 3, 3, 3), 1, 1, "direct"),        # 27
    ((8, 7, 32, 32), (8, 7, 3, 3), 2, 1, "direct"),          # 63
    ((8, 64, 56, 56), (128, 64, 3, 3), 2, 1, "im2col"),      # 576
    ((8, 3, 224, 224), (96, 3, 11, 11), 4, 2, "im2col"),     # 363
    ((8, 256, 56, 56), (64, 256, 1, 1), 1, 0, "im2col"),     # 256
])
def test_static_rule(x_shape, w_shape, stride, pad, want):
    path, reason = at.static_choice("conv", x_shape, w_shape, ["im2col", "direct"], stride, pad)
    assert path == want and reason.startswith("static rule")
    # a missing path falls back to the other one
    other = {"im2col": "direct", "direct": "im2col"}[want]
    assert at.static_choice("conv", x_shape, w_shape, [other], stride, pad)[0] == other
    assert at.static_choice("pool", (8, 3, 32, 32), (2, 2), ["im2col", "direct"])[0] == "direct"


def test_autotune_off_follows_static_rule_and_stores_nothing(monkeypatch, fresh_cache,
                                                            two_candidates):
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    d = at.decide("conv", SMALL_X, SMALL_W)
    assert d.source == "static" and d.path in two_candidates
    assert d.path == at.static_choice("conv", SMALL_X, SMALL_W, two_candidates)[0]
    if {"im2col", "direct"} <= set(two_candidates):
        assert at.decide("conv", (1, 4, 9, 9), (2, 4, 3, 3)).path == "direct"     # 36
        assert at.decide("conv", (1, 8, 9, 9), (2, 8, 3, 3)).path == "im2col"     # 72
    x, w, b = small_arrays()
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b), fastconv.conv2d(x, w, b, backend=d.path))
    assert at.stats["measured"] == 0 and stored_files(fresh_cache) == []


# ------------------------------------------------------ measuring and caching

def test_first_call_measures_then_memory_then_disk(monkeypatch, fresh_cache, two_candidates):
    monkeypatch.setattr(at, "MARGIN", 0.0)     # the fastest wins, however narrowly
    d1 = at.decide("conv", SMALL_X, SMALL_W, 1, 1, "float32")
    assert d1.source == "measured" and d1.path in two_candidates
    assert set(d1.times_ms) == set(two_candidates)
    assert all(t["forward"] > 0 and t["backward"] > 0 for t in d1.times_ms.values())
    best = min(d1.times_ms, key=lambda p: d1.times_ms[p]["forward"] + d1.times_ms[p]["backward"])
    assert d1.path == best
    (stored,) = stored_files(fresh_cache)
    data = json.loads(stored.read_text())
    assert data["path"] == d1.path and data["key"] == d1.key
    assert data["candidates"] == two_candidates and data["numba"] == numba.__version__

    def no_measuring(*args, **kwargs):
        raise AssertionError("a known key must not be measured again")

    monkeypatch.setattr(at.timing, "time_paths", no_measuring)
    d_mem = at.decide("conv", SMALL_X, SMALL_W, 1, 1, "float32")
    assert (d_mem.path, d_mem.source, d_mem.times_ms) == (d1.path, "cache", d1.times_ms)
    assert at.stats["memory"] == 1
    at._memory.clear()
    d2 = at.decide("conv", SMALL_X, SMALL_W, 1, 1, "float32")
    assert (d2.path, d2.source, d2.times_ms) == (d1.path, "cache", d1.times_ms)
    assert at.stats == {"measured": 1, "disk": 1, "memory": 1}


@pytest.mark.parametrize("im2col_ms, direct_ms, want", [
    (10.0, 9.5, "im2col"),       # direct 5% faster: within the margin, the static pick stays
    (10.0, 8.5, "direct"),       # 15% faster: the measurement overrides the rule
    (8.0, 10.0, "im2col"),
])
def test_a_measured_winner_needs_a_clear_margin(im2col_ms, direct_ms, want):
    key = at.make_key("conv", SMALL_X, (4, 3, 5, 5), 1, 0, "float32")   # rule: im2col (75)
    times = {"im2col": {"forward": im2col_ms / 2, "backward": im2col_ms / 2},
             "direct": {"forward": direct_ms / 2, "backward": direct_ms / 2}}
    static = at.static_choice("conv", SMALL_X, (4, 3, 5, 5), ["im2col", "direct"])[0]
    assert static == "im2col"
    assert at._decision_from_times(key, ["im2col", "direct"], times, static).path == want


def test_batch_sizes_share_a_decision_by_power_of_two_bucket(fresh_cache, two_candidates):
    at.decide("conv", (33, 3, 8, 8), SMALL_W)
    assert at.decide("conv", (64, 3, 8, 8), SMALL_W).source == "cache"
    assert at.decide("conv", (65, 3, 8, 8), SMALL_W).source == "measured"
    assert at.stats["measured"] == 2


def test_every_candidate_is_timed_on_identical_inputs(monkeypatch, two_candidates):
    naive = backends.get_path("naive")
    seen = {}

    class Recorder:
        def __init__(self, name):
            self.name = name

        def supports(self, spec):
            return True

        def conv_forward(self, x, W, b, spec):
            seen.setdefault(self.name, []).append((x.copy(), W.copy(), b.copy()))
            return naive.conv_forward(x, W, b, spec)

        def conv_backward(self, dout, cache):
            seen.setdefault(self.name + "/dout", []).append(dout.copy())
            return naive.conv_backward(dout, cache)

    monkeypatch.setattr(backends, "get_path", lambda name: Recorder(name))
    at.decide("conv", SMALL_X, SMALL_W)
    first, second = two_candidates[:2]
    for a, b in zip(seen[first] + seen[first + "/dout"], seen[second] + seen[second + "/dout"]):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(u, v)
    assert len(seen[first]) >= 2          # warm-up plus at least one timed run


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_gives_the_chosen_paths_result_bit_for_bit(dtype, two_candidates):
    x, w, b = small_arrays(dtype)
    copies = [a.copy() for a in (x, w, b)]
    layer = fastconv.Convolution(w, b, stride=1, pad=1)          # backend="auto"
    out = layer.forward(x)
    assert at.stats["measured"] == 1 and layer.path in two_candidates
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dout)
    ref = fastconv.Convolution(w, b, stride=1, pad=1, backend=layer.path)
    np.testing.assert_array_equal(out, ref.forward(x))
    np.testing.assert_array_equal(dx, ref.backward(dout))
    np.testing.assert_array_equal(layer.dW, ref.dW)
    np.testing.assert_array_equal(layer.db, ref.db)
    assert out.dtype == dtype and dx.dtype == dtype
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)                       # inputs untouched


def test_pooling_is_measured_when_told_the_window(own_pooling, fresh_cache):
    d = at.decide("pool", (2, 3, 8, 8), (2, 2), 2, 0, "float32", mode="max")
    assert d.source == "measured" and d.key["mode"] == "max" and d.key["w_shape"] == [2, 2]
    assert at.choose(fastconv.pool_spec((2, 3, 8, 8), 2, 2, 2, 0, "max", "float32")) == d.path
    # pool2d on the same key uses the stored choice: nothing measured again
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    fastconv.pool2d(x, 2, 2, stride=2)
    assert at.stats["measured"] == 1 and len(stored_files(fresh_cache)) == 1


def test_pooling_on_paths_that_share_its_kernels_is_not_timed(monkeypatch, fresh_cache):
    """im2col and direct run one pooling implementation: the static rule's pick, nothing timed."""
    naive = backends.get_path("naive")
    monkeypatch.setattr(backends, "PATHS", {"naive": naive, "im2col": naive, "direct": naive})
    spec = fastconv.pool_spec((2, 3, 8, 8), 2, 2, 2, 0, "max", "float32")
    assert at.kernel_groups(spec, ["im2col", "direct"]) == [["im2col", "direct"]]
    timed = []
    monkeypatch.setattr(at.timing, "time_paths", lambda *a, **k: timed.append(a) or {})
    d = at.decide("pool", (2, 3, 8, 8), (2, 2), 2, 0, "float32", mode="max")
    assert (d.path, d.source) == ("direct", "shared") and "same kernels" in d.reason
    assert d.key["mode"] == "max" and d.key["w_shape"] == [2, 2]
    assert timed == [] and at.stats["measured"] == 0 and stored_files(fresh_cache) == []
    # the decision is kept: asked again, it comes from memory; "auto" runs the rule's pick
    assert at.decide("pool", (2, 3, 8, 8), (2, 2), 2, 0, "float32", mode="max") == d
    assert at.stats["memory"] == 1 and at.choose(spec) == "direct"
    # convolutions on the same stand-ins share kernels too; distinct ones are timed
    conv = fastconv.conv_spec(SMALL_X, SMALL_W)
    assert at.kernel_groups(conv, ["im2col", "direct"]) == [["im2col", "direct"]]


def test_paths_sharing_kernels_are_timed_once_and_share_the_figures(monkeypatch, fresh_cache,
                                                                    own_pooling):
    timed = []
    real = at.timing.time_paths

    def spy(spec, paths, **kwargs):
        timed.append(list(paths))
        return real(spec, paths, **kwargs)

    monkeypatch.setattr(at.timing, "time_paths", spy)
    d = at.decide("pool", (2, 3, 8, 8), (2, 2), 2, 0, "float32", mode="avg")
    spec = fastconv.pool_spec((2, 3, 8, 8), 2, 2, 2, 0, "avg")
    cands = at.candidates(spec)
    groups = at.kernel_groups(spec, cands)
    assert len(groups) >= 2 and len(timed) == 1 and len(timed[0]) == len(groups)
    assert set(d.times_ms) == set(cands)
    for group in groups:
        assert all(d.times_ms[p] == d.times_ms[group[0]] for p in group)


def test_announces_each_shape_it_times(fresh_cache, two_candidates):
    with pytest.warns(fastconv.CompileNotice, match=r"backend='auto' is timing .* on conv "
                                                    r"x=\(2, 3, 8, 8\) W=\(4, 3, 3, 3\)") as notes:
        at.decide("conv", SMALL_X, SMALL_W)
    # the line says how to skip the timing, and what would run instead
    static = at.static_choice("conv", SMALL_X, SMALL_W, at.candidates())[0]
    assert any(f"FASTCONV_AUTOTUNE=0 skips the timing and runs the static rule's pick, {static}"
               in str(n.message) for n in notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at.decide("conv", SMALL_X, SMALL_W)         # known now: no notice


def test_timing_stops_early_once_one_path_is_far_ahead():
    from fastconv import timing
    calls = {"fast": lambda: None, "slow": lambda: sum(range(200_000))}
    rounds = []

    def stop(runs):
        rounds.append(1)
        return min(runs["fast"]) <= 0.5 * min(runs["slow"])

    result = timing.measure(calls, rounds=5, min_runs=5, budget_s=float("inf"), stop=stop)
    assert len(rounds) == 1 and result["fast"].runs == result["slow"].runs == 1
    runs = {("a", "forward"): [1.0], ("a", "backward"): [1.0],
            ("b", "forward"): [2.0, 1.5], ("b", "backward"): [3.0, 2.5]}
    assert timing.decisive_gap(runs, ["a", "b"], 0.5)          # 2 <= 0.5 * 4
    assert not timing.decisive_gap(runs, ["a", "b"], 0.4)      # 2 > 0.4 * 4
    assert not timing.decisive_gap(runs, ["a"], 0.5)           # one path: nothing to compare


def test_key_includes_thread_count(fresh_cache, two_candidates):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        d1 = at.decide("conv", SMALL_X, SMALL_W)
        numba.set_num_threads(2)
        d2 = at.decide("conv", SMALL_X, SMALL_W)
    finally:
        numba.set_num_threads(before)
    assert (d1.key["threads"], d2.key["threads"]) == (1, 2)
    assert at.stats["measured"] == 2 and len(stored_files(fresh_cache)) == 2


def test_stale_namespace_is_not_reused(monkeypatch, fresh_cache, two_candidates):
    at.decide("conv", SMALL_X, SMALL_W)
    at._memory.clear()
    monkeypatch.setattr(at, "namespace", lambda: "another-cpu_numba-0.0.1")
    assert at.decide("conv", SMALL_X, SMALL_W).source == "measured"
    assert at.stats["measured"] == 2 and len(stored_files(fresh_cache)) == 2


def test_choice_measured_among_other_candidates_is_not_reused(monkeypatch, fresh_cache,
                                                              two_candidates):
    at.decide("conv", SMALL_X, SMALL_W)
    at._memory.clear()
    # a new path became available: the old comparison did not include it
    monkeypatch.setitem(backends.PATHS, "twin_c", backends.get_path("naive"))
    d = at.decide("conv", SMALL_X, SMALL_W)
    assert d.source == "measured" and "twin_c" in d.times_ms


@pytest.mark.parametrize("content", ["", "{not json", '{"format": 1}', "[1, 2]"])
def test_damaged_file_is_measured_again_and_replaced(fresh_cache, two_candidates, content):
    d = at.decide("conv", SMALL_X, SMALL_W)
    (stored,) = stored_files(fresh_cache)
    stored.write_text(content)
    at._memory.clear()
    assert at.decide("conv", SMALL_X, SMALL_W).source == "measured"
    assert json.loads(stored.read_text())["key"] == d.key


def test_unwritable_cache_warns_and_keeps_the_choice_in_memory(monkeypatch, tmp_path,
                                                              two_candidates):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker))
    monkeypatch.setattr(at, "_warned", set())
    with pytest.warns(RuntimeWarning, match="could not store"):
        d = at.decide("conv", SMALL_X, SMALL_W)
    assert at.decide("conv", SMALL_X, SMALL_W).path == d.path
    assert at.stats["measured"] == 1


def test_writes_are_atomic_for_concurrent_readers(fresh_cache, two_candidates):
    """A reader racing many writers of one key only ever sees a whole file."""
    d = at.decide("conv", SMALL_X, SMALL_W)
    (stored,) = stored_files(fresh_cache)
    directory, cands = stored.parent, at.candidates()
    stop, bad = threading.Event(), []

    def read_loop():
        while not stop.is_set():
            try:
                json.loads(stored.read_text())
            except ValueError as err:      # a torn or empty file
                bad.append(err)

    def write_loop():
        for _ in range(150):
            at._write(directory, d.key, cands, d)

    reader = threading.Thread(target=read_loop)
    reader.start()
    writers = [threading.Thread(target=write_loop) for _ in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert bad == []
    assert [p.name for p in directory.iterdir()] == [stored.name]   # no temporary files left


def _run_child(cache, script, *args):
    env = dict(os.environ, FASTCONV_CACHE_DIR=str(cache))
    env.pop("FASTCONV_AUTOTUNE", None)
    return subprocess.Popen([*PYTHON, "-c", script, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_processes_then_a_fresh_process_reuses_the_choice(tmp_path, fresh_cache):
    go = tmp_path / "go"
    script = TWIN_SETUP + textwrap.dedent(f"""
        import json, os, sys, time
        import numpy as np
        import fastconv
        from fastconv.tuner import decide, stats
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
        w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
        writer = sys.argv[1] == "writer"
        if writer:
            # start together, then measure and write the same key over and over
            while not os.path.exists({str(go)!r}):
                time.sleep(0.01)
            for _ in range(10):
                decide("conv", x.shape, w.shape, (2, 2), (1, 1), x.dtype, force=True)
        layer = fastconv.Convolution(w, stride=2, pad=1)
        layer.forward(x)
        print(json.dumps({{"path": layer.path, **stats}}))
    """)
    writers = [_run_child(fresh_cache, script, "writer") for _ in range(2)]
    go.touch()
    for p in writers:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["measured"] >= 10
    (stored,) = stored_files(fresh_cache)
    assert [f.name for f in stored.parent.iterdir()] == [stored.name]   # no temporary files
    stored_path = json.loads(stored.read_text())["path"]
    # a fresh process reuses the stored choice without measuring
    p = _run_child(fresh_cache, script, "reader")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again == {"path": stored_path, "measured": 0, "disk": 1, "memory": 0}


# ------------------------------------------------------ autotune, clear_cache

def test_autotune_specs_then_clear_cache(tmp_path, fresh_cache, own_pooling):
    specs = [
        {"id": "small", "N": 2, "C": 1, "H": 10, "W": 10, "K": 3, "FH": 3, "FW": 3,
         "stride": 1, "pad": 0},
        ((1, 2, 6, 7), (2, 2, 2, 3), (1, 2), 1),
        {"x_shape": [1, 2, 6, 6], "w_shape": [3, 2, 1, 1], "dtype": "float64"},
        {"id": "pool", "N": 2, "C": 2, "H": 8, "W": 8, "FH": 2, "FW": 2, "stride": 2, "pad": 0,
         "mode": "avg"},
    ]
    decisions = fastconv.autotune(specs)
    assert [d.source for d in decisions] == ["measured"] * 4
    assert [d.key["op"] for d in decisions] == ["conv", "conv", "conv", "pool"]
    assert decisions[1].key["stride"] == [1, 2] and decisions[2].key["dtype"] == "float64"
    assert len(stored_files(fresh_cache)) == 4
    # tuned ahead: the layer's first forward does not measure
    x = np.random.default_rng(0).standard_normal((2, 1, 10, 10)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 1, 3, 3)).astype(np.float32)
    fastconv.conv2d(x, w)
    assert at.stats["measured"] == 4
    assert [d.source for d in fastconv.autotune(specs)] == ["cache"] * 4
    assert [d.source for d in fastconv.autotune(specs[:1], force=True)] == ["measured"]

    assert fastconv.clear_cache() == 4
    assert stored_files(fresh_cache) == []
    assert at.decide("conv", (2, 1, 10, 10), (3, 1, 3, 3)).source == "measured"


def test_autotune_reads_a_layer_suite_file(tmp_path, own_pooling, monkeypatch):
    suite = {"layers": [{"id": "a", "N": 1, "C": 2, "H": 6, "W": 6, "K": 2, "FH": 3, "FW": 3,
                         "stride": 1, "pad": 1}],
             "pooling": [{"id": "p", "N": 1, "C": 2, "H": 6, "W": 6, "FH": 3, "FW": 3,
                          "stride": 2, "pad": 1, "mode": "max"}]}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")    # an explicit call measures anyway
    decisions = fastconv.autotune(path)
    assert [(d.key["op"], d.source) for d in decisions] == [("conv", "measured"), ("pool", "measured")]


def test_autotune_rejects_a_bad_spec():
    with pytest.raises(TypeError, match="layer spec"):
        fastconv.autotune([42])


def test_repo_layer_suite_parses():
    """bench/layers.json's entries are understood (shapes only; nothing is timed)."""
    suite_path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "layers.json")
    with open(suite_path) as f:
        suite = json.load(f)
    for spec in suite["layers"]:
        built = at.layer_spec(spec, "float32")
        groups, dilation = spec.get("groups", 1), spec.get("dilation", 1)
        assert built.op == "conv" and built.groups == groups
        assert built.x_shape == (spec["N"], spec["C"], spec["H"], spec["W"])
        assert built.w_shape == (spec["K"], spec["C"] // groups, spec["FH"], spec["FW"])
        assert built.dilation == (dilation, dilation)
    assert {at.layer_spec(s, "float32").op for s in suite["pooling"]} == {"pool"}
    assert any(s.get("groups", 1) > 1 for s in suite["layers"])
    assert any(s.get("dilation", 1) > 1 for s in suite["layers"])


def test_command_line(tmp_path, capsys, fresh_cache, two_candidates):
    from fastconv.cli import main

    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"layers": [{"id": "a", "N": 1, "C": 2, "H": 6, "W": 6, "K": 2,
                                             "FH": 3, "FW": 3, "stride": 1, "pad": 1}]}))
    assert main(["autotune", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "conv x=(1, 2, 6, 6) w=(2, 2, 3, 3)" in out and "(measured)" in out
    assert len(stored_files(fresh_cache)) == 1
    assert main(["autotune", "--clear"]) == 0
    assert "removed 1 stored choice" in capsys.readouterr().out
    assert stored_files(fresh_cache) == []


# ------------------------------------------------- a cache that lies or blocks

def _stored_path(fresh_cache):
    at.decide("conv", SMALL_X, SMALL_W)
    (stored,) = stored_files(fresh_cache)
    at._memory.clear()
    at._by_spec.clear()
    return stored


@pytest.mark.parametrize("corrupt", [
    lambda d: d.update(times_ms={p: {"forward": "fast", "backward": 1} for p in d["times_ms"]}),
    lambda d: d.update(times_ms={p: {"forward": float("nan"), "backward": 1} for p in d["times_ms"]}),
    lambda d: d.update(times_ms=[]),
    lambda d: d.update(path=7),
    lambda d: d.update(candidates="im2col"),
    lambda d: d.update(measured_at={"when": "now"}),
    lambda d: d.pop("times_ms"),
])
def test_a_file_with_wrong_types_is_ignored_once_and_replaced(fresh_cache, two_candidates,
                                                              monkeypatch, corrupt):
    stored = _stored_path(fresh_cache)
    data = json.loads(stored.read_text())
    corrupt(data)
    stored.write_text(json.dumps(data))
    monkeypatch.setattr(at, "_warned", set())
    with pytest.warns(RuntimeWarning, match="damaged auto-tuning file"):
        d = at.decide("conv", SMALL_X, SMALL_W)
    assert d.source == "measured"
    assert json.loads(stored.read_text())["times_ms"] == d.times_ms        # replaced
    x, w, b = small_arrays()
    fastconv.conv2d(x, w, b)                                               # auto works


def test_deeply_nested_json_is_ignored(fresh_cache, two_candidates):
    stored = _stored_path(fresh_cache)
    stored.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.warns(RuntimeWarning):
        assert at.decide("conv", SMALL_X, SMALL_W).source == "measured"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_at_the_cache_path_never_blocks(fresh_cache, two_candidates):
    stored = _stored_path(fresh_cache)
    stored.unlink()
    os.mkfifo(stored)
    result = []
    worker = threading.Thread(target=lambda: result.append(at.decide("conv", SMALL_X, SMALL_W)),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert result and result[0].source == "measured"
    assert stored.is_file()                                                # replaced by a file


def test_a_directory_named_like_a_choice_is_survived(fresh_cache, two_candidates):
    stored = _stored_path(fresh_cache)
    stored.unlink()
    stored.mkdir()
    with pytest.warns(RuntimeWarning, match="could not store"):
        d = at.decide("conv", SMALL_X, SMALL_W)
    assert at.decide("conv", SMALL_X, SMALL_W).path == d.path               # kept in memory
    assert fastconv.clear_cache() == 0 and stored.is_dir()                  # not ours to remove
