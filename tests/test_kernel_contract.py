"""The kernel contract of fastconv.kernels, checked over every entry of the dispatch table.

Every path module exposes the same public functions with the same
signatures, returns named caches, and says through ``supports(spec)`` which
problems it runs. Path-specific extras stay private (a leading underscore).
"""
import inspect

import numpy as np
import pytest
from support import PATHS

import fastconv
from fastconv import backends

CONTRACT = {
    "supports": ["spec"],
    "plan": ["spec"],
    "conv_forward": ["x", "W", "b", "spec"],
    "conv_backward": ["dout", "cache"],
    "pool_forward": ["x", "spec"],
    "pool_backward": ["dout", "cache"],
    "release_workspace": [],
}
# Re-exported names a path may carry besides the contract (the im2col path's
# workspace budget, shared with the direct path).
EXTRAS = {"set_workspace_budget", "get_workspace_budget"}

CONV = fastconv.conv_spec((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 0), "float64")
CONV_3X3 = fastconv.conv_spec((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, "float64")
POOL = fastconv.pool_spec((2, 3, 7, 6), 3, 2, 2, 1, "max", "float64")
# The paths that run every problem fastconv can describe; others (winograd)
# declare a narrower SCOPE and are checked on the test problems they support.
GENERAL = {"naive", "im2col", "direct", "cuda"}


def table_modules():
    """Every path of the table whose module can be imported here (cuda needs numba.cuda)."""
    names = [n for n in backends.PATHS if n != "cuda" or "cuda" in PATHS]
    return [(n, backends.get_path(n)) for n in names]


@pytest.mark.parametrize("name, module", table_modules(), ids=lambda v: getattr(v, "__name__", v))
def test_every_path_exposes_the_same_functions_and_signatures(name, module):
    assert isinstance(module.SCOPE, str) and module.SCOPE
    for fn_name, params in CONTRACT.items():
        fn = getattr(module, fn_name, None)
        assert callable(fn), f"{name} lacks {fn_name}"
        assert list(inspect.signature(fn).parameters) == params, f"{name}.{fn_name}"
    public = {n for n, v in vars(module).items()
              if callable(v) and not n.startswith("_") and not inspect.isclass(v)
              and getattr(v, "__module__", None) == module.__name__}
    assert public <= set(CONTRACT) | EXTRAS, f"{name} has public extras {public - set(CONTRACT)}"


def _check_conv(module, spec):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.x_shape)
    W = rng.standard_normal(spec.w_shape)
    b = rng.standard_normal(spec.w_shape[0])
    out, cache = module.conv_forward(x, W, b, spec)
    assert hasattr(cache, "_fields") and "spec" in cache._fields, type(cache)
    out = np.asarray(out)
    assert out.shape == spec.out_shape and out.dtype == np.float64
    dx, dW, db = module.conv_backward(np.ones(spec.out_shape), cache)
    assert np.shape(dx) == spec.x_shape and np.shape(dW) == spec.w_shape
    assert np.shape(db) == (spec.w_shape[0],)


def _check_pool(module, spec):
    x = np.random.default_rng(0).standard_normal(spec.x_shape)
    out, cache = module.pool_forward(x, spec)
    assert hasattr(cache, "_fields") and "spec" in cache._fields, type(cache)
    assert np.shape(out) == spec.out_shape
    assert np.shape(module.pool_backward(np.ones(spec.out_shape), cache)) == spec.x_shape


@pytest.mark.parametrize("name", PATHS)
def test_caches_are_named_structures_and_results_follow_the_contract(name):
    module = backends.get_path(name)
    specs = (CONV, CONV_3X3, POOL)
    supported = [spec for spec in specs if module.supports(spec)]
    if name in GENERAL:
        assert supported == list(specs)
    assert supported, f"{name} supports none of the test problems"
    for spec in supported:
        (_check_conv if spec.op == "conv" else _check_pool)(module, spec)
    for spec in specs:                          # plan answers for every spec, supported or not
        assert isinstance(module.plan(spec), dict)
    module.release_workspace()


def test_the_table_holds_modules_and_names_only():
    assert set(backends.PATHS) >= {"naive", "im2col", "direct", "cuda"}
    for name, module in backends.PATHS.items():
        assert module is None or inspect.ismodule(module), name


def test_a_path_that_does_not_support_a_spec_is_refused_by_name(monkeypatch):
    naive = backends.get_path("naive")

    class OnlyPooling:
        SCOPE = "pooling only"
        supports = staticmethod(lambda spec: spec.op == "pool")
        pool_forward, pool_backward = naive.pool_forward, naive.pool_backward

    monkeypatch.setitem(backends.PATHS, "poolonly", OnlyPooling)
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"backend 'poolonly' runs pooling only; it cannot run conv"):
        fastconv.conv2d(x, np.zeros((1, 2, 3, 3)), backend="poolonly")
    assert fastconv.pool2d(x, 2, 2, 2, backend="poolonly").shape == (1, 2, 2, 2)


def test_cpu_pooling_is_one_module_both_cpu_paths_use():
    from fastconv.kernels import cpu_pooling

    for name in ("im2col", "direct"):
        module = backends.get_path(name)
        assert module.pool_forward is cpu_pooling.pool_forward
        assert module.pool_backward is cpu_pooling.pool_backward
