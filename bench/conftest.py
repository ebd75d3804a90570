"""Shared machinery of fastconv's benchmark suite (pytest-benchmark).

Full run (minutes on 2 cores), results saved for ``fastconv plot-bench``::

    pytest bench --benchmark-json=results.json

Smoke run (what CI does: every benchmark runs once, results are checked
against the naive path, layers shrunk)::

    pytest bench --bench-small --benchmark-disable      # or FASTCONV_BENCH_SMALL=1

What is timed, and how:

- the layers of ``bench/layers.json`` (the project's suite), float32, forward and
  backward as separate benchmarks; backward = ``dx, dW, db`` (or ``dx`` for
  pooling) from a forward saved before timing starts;
- every path of ``fastconv.available_backends()`` plus the baselines
  ``book_numpy`` (``bench/book_numpy.py``, the reference NumPy code of "Deep
  Learning from Scratch", ch. 7), ``torch`` (CPU, 2 threads, skipped
  when torch is not importable) and ``gemm`` (the numpy sgemm of each layer's
  im2col matrix product: the ceiling an im2col path can reach);
- the ``naive`` path is a Python loop over output positions, so its time grows
  linearly with the batch; in full mode it runs at batch 1 (its own groups,
  ``<layer>[N=1]``) and is compared by throughput (GFLOP/s), never by time;
- each benchmark calls its function once untimed first (JIT compilation, cache
  loading, first-touch of buffers), then pytest-benchmark's own defaults apply
  (at least 5 rounds, up to ~1 s per benchmark; change them with
  ``--benchmark-min-rounds`` / ``--benchmark-max-time``);
- ``benchmark.group`` is ``"<layer> <direction>"`` and ``benchmark.extra_info``
  holds everything a plot needs (kind, layer, path, direction, dtype, threads,
  batch N, FLOPs): see ``fastconv.benchplot``.

Benchmarks run layer by layer: all paths of one layer and direction back to
back, so that load from other processes (it changes over minutes on a shared
machine) hits the paths of one comparison alike. Different thread pools
(Numba, OpenBLAS, PyTorch's OpenMP) then meet at every path switch; the
untimed first call absorbs what a previous pool leaves spinning.
"""
import os

import pytest
from harness import make_cases, small_mode


def pytest_addoption(parser):
    parser.addoption(
        "--bench-small", action="store_true", default=False,
        help="fastconv: shrink every layer (batch <= 2, channels <= 8, size <= 12) for a "
             "smoke run; the same as FASTCONV_BENCH_SMALL=1")


def pytest_generate_tests(metafunc):
    for name, kind in (("conv_case", "conv"), ("pool_case", "pool")):
        if name in metafunc.fixturenames:
            cases = make_cases(kind, small_mode(metafunc.config.getoption("--bench-small")))
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


# Settings that change how the thread pools behave; saved with the results.
THREAD_ENV = ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
              "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "MKL_NUM_THREADS")


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba
    import numpy

    machine_info["fastconv_bench"] = dict(
        small=small_mode(config.getoption("--bench-small")),
        numba=numba.__version__, numpy=numpy.__version__,
        numba_threads=numba.get_num_threads(),
        env={name: os.environ[name] for name in THREAD_ENV if name in os.environ},
    )


@pytest.fixture(scope="session")
def bench_small(request):
    """True in smoke mode: layers shrunk, and every result checked against naive."""
    return small_mode(request.config.getoption("--bench-small"))
