"""Memory of the CPU paths: bounded by what the inputs and outputs need.

- A stride larger than the image costs no memory: only the stride phases a
  window reads are kept (direct path), whatever the stride.
- The im2col path's unrolled matrix stays within its budget even when one
  output row alone exceeds it.
- The scratch store is one per process: idle Python threads that once ran a
  convolution hold no scratch memory of their own.

Memory the compiled kernels allocate is invisible to tracemalloc, so the
stride test measures the peak resident size of a child process (Linux's
VmHWM, reset just before the measured call); the others trace the numpy
allocations the Python side makes, which is where the workspaces live.
"""
import json
import subprocess
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import fastconv
from support import assert_close, oracle_conv, GENERAL_PATHS, PYTHON
from fastconv.kernels import direct, im2col

MiB = 2**20
fast_path = pytest.mark.parametrize("path", GENERAL_PATHS)


def _can_reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


PEAK_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastconv

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    path, dtype = sys.argv[1], np.dtype(sys.argv[2])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8)).astype(dtype)
    W = rng.standard_normal((3, 4, 3, 3)).astype(dtype)

    def run(stride):
        # conv forward and backward, max and average pooling forward and backward
        arrays = []
        conv = fastconv.Convolution(W, stride=stride, pad=1, backend=path)
        out = conv.forward(x)
        arrays += [out, conv.backward(np.ones_like(out)), conv.dW, conv.db]
        for mode in ("max", "avg"):
            pool = fastconv.Pooling(3, 3, stride=stride, pad=1, mode=mode, backend=path)
            out = pool.forward(x)
            arrays += [out, pool.backward(np.ones_like(out))]
        return sum(a.nbytes for a in arrays)

    run((2, 3))                      # load the compiled kernels first
    report = {}
    for stride in [(1000, 1000), (1, 10**6), (10**9, 7)]:
        open("/proc/self/clear_refs", "w").write("5")    # VmHWM := VmRSS
        before = status("VmRSS:")
        out_bytes = run(stride)
        report[str(stride)] = dict(growth=status("VmHWM:") - before, out_bytes=out_bytes)
    report["in_bytes"] = x.nbytes + W.nbytes
    print(json.dumps(report))
""")


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux's /proc/self/clear_refs")
@fast_path
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_stride_larger_than_the_image_costs_no_memory(path, dtype):
    # (2, 4, 8, 8) with a 3x3 window and stride 1000: one output per map.
    # Planes for all 10^6 stride phases would take 2*4*10^6*2 cells (64 MB
    # in float32); the phases a 3x3 window reads take 2*4*9*2 cells.
    done = subprocess.run([*PYTHON, "-c", PEAK_CHILD, path, dtype], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for stride, seen in report.items():
        if stride == "in_bytes":
            continue
        # a few MiB of interpreter noise, plus a generous multiple of the data
        bound = 8 * MiB + 16 * (report["in_bytes"] + seen["out_bytes"])
        assert seen["growth"] <= bound, (stride, seen, bound)




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_budget_holds_when_one_output_row_exceeds_it(dtype, budget):
    # 32 channels and a 7x7 filter: 1569 unrolled values per output position,
    # 94 positions per output row, so one row's unrolled matrix is 1569 * 94
    # values (0.6 MB in float32) against a budget of 64 KiB
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 32, 7, 100)).astype(dtype)
    W = rng.standard_normal((2, 32, 7, 7)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    one_row = (32 * 49 + 1) * 94 * x.itemsize
    cap = 64 * 1024
    assert one_row > 8 * cap
    budget(cap)
    im2col.release_workspace()
    conv = fastconv.Convolution(W, b, backend="im2col")
    dout = rng.standard_normal((1, 2, 1, 94)).astype(dtype)
    arrays = sum(a.nbytes for a in (x, W, b, dout))
    conv.backward(conv.forward(x) * 0 + dout)    # load the compiled kernels first
    im2col.release_workspace()
    tracemalloc.start()
    try:
        out = conv.forward(x)
        dx = conv.backward(dout)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # outputs (out, dx, dW, db) are about the size of the inputs
    assert peak <= 2 * arrays + 2 * cap + 64 * 1024, (peak, arrays, one_row)
    for name, got, want in zip(("out", "dx", "dW"), (out, dx, conv.dW),
                               oracle_conv(x, W, b, 1, 0, dout)):
        assert_close(got, want, name)


@fast_path
def test_idle_threads_hold_no_scratch_memory_of_their_own(path):
    # Four threads each run one convolution, then wait. With a store per
    # thread each would keep its own scratch arrays alive while it waits.
    module = {"im2col": im2col, "direct": direct}[path]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 24, 24))
    W = rng.standard_normal((8, 8, 3, 3))

    def one_call():
        conv = fastconv.Convolution(W, pad=1, backend=path)
        conv.backward(conv.forward(x))

    one_call()                                   # warm up and size the store once
    module.release_workspace()
    tracemalloc.start()
    try:
        one_call()
        one_store = tracemalloc.get_traced_memory()[0]
        assert one_store > 0                      # the store holds scratch after a call
        ran, release = threading.Barrier(5), threading.Event()

        def worker():
            one_call()
            ran.wait()
            release.wait()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        ran.wait()                                # every thread has run, none has ended
        held = tracemalloc.get_traced_memory()[0]
        release.set()
        for t in threads:
            t.join()
    finally:
        tracemalloc.stop()
        module.release_workspace()
    # thread stacks and bookkeeping are small next to one store
    assert held <= one_store * 1.5 + 256 * 1024, (held, one_store)


# ------------------------------------------- lengths past the kernels' integers

@pytest.mark.parametrize("path", ["naive", *GENERAL_PATHS])
@pytest.mark.parametrize("argument, value", [("stride", 2**62), ("stride", (1, 2**63)),
                                             ("stride", 2**64), ("stride", 2**31),
                                             ("pad", 2**62), ("pad", (2**63, 0)),
                                             ("pad", 2**30)])
def test_oversized_stride_or_pad_is_a_value_error_naming_it(path, argument, value):
    # such lengths overflow the kernels' 64-bit index arithmetic (or ask numpy
    # for an impossible array): they must be refused before any kernel runs
    x = np.ones((1, 2, 8, 8))
    W = np.ones((3, 2, 3, 3))
    kwargs = {"stride": 1, "pad": 0, argument: value}
    with pytest.raises(ValueError, match=argument):
        fastconv.conv2d(x, W, backend=path, **kwargs)
    conv = fastconv.Convolution(W, backend=path, **kwargs)
    with pytest.raises(ValueError, match=argument):
        conv.forward(x)
    with pytest.raises(ValueError, match=argument):
        fastconv.pool2d(x, 3, 3, backend=path, **kwargs)


def test_the_largest_lengths_still_work():
    # stride 2**31 - 1: one output per axis, on every path alike
    x = np.arange(2 * 9 * 7, dtype=np.float64).reshape(1, 2, 9, 7)
    W = np.ones((1, 2, 3, 3))
    big = fastconv.geometry.MAX_LENGTH
    results = [fastconv.conv2d(x, W, stride=big, backend=p) for p in ["naive", *GENERAL_PATHS]]
    for r in results:
        np.testing.assert_array_equal(r, results[0])
    assert results[0].shape == (1, 1, 1, 1)
