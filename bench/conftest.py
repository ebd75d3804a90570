"""Shared machinery of fastconv's benchmark suite (pytest-benchmark).

Full run (minutes on 2 cores), results saved for ``python bench/plot.py``::

    pytest bench --benchmark-json=results.json

Smoke run (what CI does: every benchmark runs once, results are checked
against the naive path, layers shrunk)::

    pytest bench --bench-small --benchmark-disable      # or FASTCONV_BENCH_SMALL=1

Quick timed run (a couple of minutes; ratios between paths usable, absolute
figures rough): a quarter of each layer's batch, no naive path, 3 rounds of
at most 0.1 s per benchmark::

    pytest bench --bench-quick --benchmark-json=quick.json

What is timed, and how:

- the layers of ``bench/layers.json`` (the project's suite), float32, forward and
  backward as separate benchmarks; backward = ``dx, dW, db`` (or ``dx`` for
  pooling) from a forward saved before timing starts;
- every path of ``fastconv.available_backends()`` plus the baselines
  ``book_numpy`` (``bench/book_numpy.py``, the reference NumPy code of "Deep
  Learning from Scratch", ch. 7), ``torch`` (CPU, 2 threads, skipped
  when torch is not importable) and ``gemm`` (the numpy sgemm of each layer's
  im2col matrix product: the ceiling an im2col path can reach);
- layers with ``dilation`` / ``groups`` pass them to fastconv and torch; a path
  that cannot run one is skipped with fastconv's reason;
- ``test_resnet18.py``: ResNet-18's 20 convolutions as one network, forward and
  a training step, every path that runs them all, "auto" and torch;
- the ``naive`` path is a Python loop over output positions, so its time grows
  linearly with the batch; in full mode it runs at batch 1 (its own groups,
  ``<layer>[N=1]``) and is compared by throughput (GFLOP/s), never by time;
- each benchmark calls its function once untimed first (JIT compilation, cache
  loading, first-touch of buffers), then pytest-benchmark's own defaults apply
  (at least 5 rounds, up to ~1 s per benchmark; change them with
  ``--benchmark-min-rounds`` / ``--benchmark-max-time``);
- ``benchmark.group`` is ``"<layer> <direction>"`` and ``benchmark.extra_info``
  holds everything a plot needs (kind, layer, path, direction, dtype, threads,
  batch N, FLOPs, and in the JSON ``gflops`` from the best round): see
  ``bench/plot.py``. Tests are parametrized by plain string ids
  (``"<path>-<layer>-<direction>"``), so the JSON's ``params`` are strings;
- the JSON keeps pytest-benchmark's statistics but not every round's time
  (``--benchmark-save-data`` keeps them), and ``machine_info["fastconv_bench"]``
  records which BLAS library, kernel (OpenBLAS' core type) and thread count
  ran (from threadpoolctl, when installed) and numpy's float32 matrix-product
  rate on 1024x1024 matrices measured in the same run (``sgemm_gflops``): the
  ceiling an im2col path can reach. A warning is printed when
  ``OPENBLAS_CORETYPE`` is set, since it makes OpenBLAS run another CPU's
  kernels than the one it would pick.

Benchmarks run layer by layer: all paths of one layer and direction back to
back, so that load from other processes (it changes over minutes on a shared
machine) hits the paths of one comparison alike. Different thread pools
(Numba, OpenBLAS, PyTorch's OpenMP) then meet at every path switch; the
untimed first call absorbs what a previous pool leaves spinning.
"""
import os
import time

# torch first, when installed, before fastconv (which harness imports): each library's
# OpenMP runtime then starts as in a process of its own. Imported after fastconv, torch
# shares the GNU OpenMP that Numba loaded (the same soname), whose threads fastconv
# asks to sleep between loops, and its small convolutions took up to 2.3x their own
# time (fastconv.kernels._jit).
try:
    import torch  # noqa: F401
except ImportError:
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from harness import QUICK_BATCH_DIVISOR, make_cases, quick_mode, small_mode  # noqa: E402

# --bench-quick: these pytest-benchmark settings (and harness.QUICK_BATCH_DIVISOR)
QUICK_OPTIONS = dict(benchmark_min_rounds=3, benchmark_max_time=0.1, benchmark_warmup=False)
# Side of the square float32 matrices whose product gives the sgemm ceiling
SGEMM_SIZE = 1024


def pytest_addoption(parser):
    parser.addoption(
        "--bench-small", action="store_true", default=False,
        help="fastconv: shrink every layer (batch <= 2, channels <= 8, size <= 12) for a "
             "smoke run; the same as FASTCONV_BENCH_SMALL=1")
    parser.addoption(
        "--bench-quick", action="store_true", default=False,
        help="fastconv: a quick timed run (a quarter of each batch, no naive path, 3 rounds "
             "of at most 0.1 s): ratios between paths in a couple of minutes")


def pytest_configure(config):
    # the thread environment as the run starts: a Dask cluster started by a
    # benchmark (distributed's Nanny) sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in
    # this process's environment for its workers, which the BLAS and Numba
    # already running here never read
    config._fastconv_env = {name: os.environ[name] for name in THREAD_ENV if name in os.environ}
    # runs before pytest-benchmark's own configure (which is trylast), so these apply
    if quick_mode(config):
        for name, value in QUICK_OPTIONS.items():
            setattr(config.option, name, value)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype:
        config.issue_config_time_warning(UserWarning(
            f"OPENBLAS_CORETYPE={coretype} is set: OpenBLAS runs the {coretype} kernels instead "
            f"of the ones it would pick for this CPU, so the BLAS-bound figures (im2col, gemm, "
            f"book_numpy) are not what users get. Rerun with "
            f"`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench ...`"), stacklevel=2)


def pytest_report_header(config):
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    blas = _blas_info()
    small = small_mode(config.getoption("--bench-small"))
    mode = "small (smoke) mode" if small else "quick mode" if quick_mode(config) else "full mode"
    lines = [f"fastconv bench: {mode}"
             + (f"; BLAS {blas['internal_api']} {blas['version']} {blas['architecture']} "
                f"kernel, {blas['num_threads']} threads" if blas else "")]
    if coretype:
        lines.append(f"WARNING: OPENBLAS_CORETYPE={coretype} is set (see the warning summary)")
    return lines


def _quick_cases(cases):
    from dataclasses import replace

    return [replace(c, N=max(1, c.N // QUICK_BATCH_DIVISOR),
                    ref_N=max(1, c.ref_N // QUICK_BATCH_DIVISOR))
            for c in cases if c.path != "naive"]


# (kind, id) -> Case: tests are parametrized by the plain id, the fixture hands out the Case
_CASES = {}


def pytest_generate_tests(metafunc):
    for name, kind in (("conv_case", "conv"), ("pool_case", "pool")):
        if name in metafunc.fixturenames:
            cases = make_cases(kind, small_mode(metafunc.config.getoption("--bench-small")))
            if quick_mode(metafunc.config):
                cases = _quick_cases(cases)
            _CASES.update({(kind, c.id): c for c in cases})
            ids = [c.id for c in cases]
            metafunc.parametrize(name, ids, ids=ids, indirect=True)


@pytest.fixture
def conv_case(request):
    """The conv benchmark Case named by the test's string parameter."""
    return _CASES["conv", request.param]


@pytest.fixture
def pool_case(request):
    """The pooling benchmark Case named by the test's string parameter."""
    return _CASES["pool", request.param]


# Settings that change how the thread pools behave; saved with the results.
THREAD_ENV = ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
              "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "MKL_NUM_THREADS",
              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _blas_info():
    """The BLAS behind numpy as threadpoolctl sees it (library, version, kernel, threads),
    or None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    # numpy's own BLAS first: SciPy (which Numba imports) may load a second one
    pools.sort(key=lambda pool: "numpy" not in str(pool.get("filepath", "")))
    if not pools:
        return None
    return {key: pools[0].get(key) for key in
            ("internal_api", "version", "architecture", "num_threads", "threading_layer",
             "filepath")}


def measure_sgemm_gflops(n=SGEMM_SIZE, repeats=5):
    """numpy's float32 matrix product on n x n matrices: best of ``repeats``, in GFLOP/s."""
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)            # first call: thread start-up, first touch
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


@pytest.fixture(scope="session", autouse=True)
def sgemm_ceiling(request):
    """The sgemm rate of this run, measured before the benchmarks (skipped when timing is off)."""
    config = request.config
    if config.getoption("benchmark_disable", False):
        return None
    config._fastconv_sgemm = measure_sgemm_gflops()
    return config._fastconv_sgemm


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba

    sgemm = getattr(config, "_fastconv_sgemm", None)
    machine_info["fastconv_bench"] = dict(
        small=small_mode(config.getoption("--bench-small")),
        quick=bool(quick_mode(config)),
        numba=numba.__version__, numpy=np.__version__,
        numba_threads=numba.get_num_threads(),
        env=(config._fastconv_env if hasattr(config, "_fastconv_env")
             else {name: os.environ[name] for name in THREAD_ENV if name in os.environ}),
        blas=_blas_info(),
        sgemm_gflops=sgemm if sgemm is not None else measure_sgemm_gflops(),
        sgemm_size=SGEMM_SIZE,
    )


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """GFLOP/s of the best and median rounds into extra_info; every round's raw time
    dropped unless --benchmark-save-data asks for it (it makes the file megabytes)."""
    keep_data = config.getoption("benchmark_save_data", False)
    for bench in output_json.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if not keep_data:
            stats.pop("data", None)
        flops = (bench.get("extra_info") or {}).get("flops")
        if flops and stats.get("min"):
            bench["extra_info"]["gflops"] = flops / stats["min"] / 1e9
            bench["extra_info"]["gflops_median"] = flops / stats["median"] / 1e9


@pytest.fixture(scope="session")
def bench_small(request):
    """True in smoke mode: layers shrunk, and every result checked against naive."""
    return small_mode(request.config.getoption("--bench-small"))
