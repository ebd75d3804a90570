"""Convolution benchmarks: every path x every layer of layers.json x forward/backward.

See bench/conftest.py for how to run them and what is timed.
"""
from dataclasses import replace

import book_numpy
import numpy as np
import pytest
from harness import assert_close, blas_threads, numba_threads, run_benchmark, torch_or_skip, why_not

import fastconv.functional as F

# im2col GEMM of the book's layout: W_rows (K, C*FH*FW) @ col.T (C*FH*FW, N*OH*OW).
# Backward is its two products: dW = dout_rows @ col and dcol = W_rows.T @ dout_rows.
# A grouped layer is one such product per group, on K/groups rows and C/groups*FH*FW
# columns; dilation spreads the filter taps but leaves the product's shape alone.


def _fastconv(case, x, w, b, dout):
    pair = (case.stride, case.stride), (case.pad, case.pad)

    options = case.conv_options()

    def forward():
        # conv2d keeps nothing for a backward, as torch's forward under no_grad
        return F.conv2d(x, w, b, *pair, backend=case.path, **options),

    if case.direction == "forward":
        return forward, numba_threads()
    _, saved = F.conv_forward(x, w, b, *pair, backend=case.path, **options)
    return (lambda: F.conv_backward(dout, saved)), numba_threads()


def _book(case, x, w, b, dout):
    pair = (case.stride, case.stride), (case.pad, case.pad)
    out_hw = case.out_hw
    if case.direction == "forward":
        return (lambda: (book_numpy.conv_forward(x, w, b, *pair, out_hw)[0],)), blas_threads()
    _, cache = book_numpy.conv_forward(x, w, b, *pair, out_hw)
    return (lambda: book_numpy.conv_backward(dout, cache)), blas_threads()


def _gemm(case, x, w, b, dout):
    # Random operands of the right shapes: only the rate of the product matters.
    rng = np.random.default_rng(1)
    OH, OW = case.out_hw
    g = case.groups
    rows, cols = case.K // g, case.C // g * case.FH * case.FW
    positions = case.N * OH * OW
    # (groups, ...) stacks: np.matmul runs one sgemm per group
    w_rows = rng.standard_normal((g, rows, cols)).astype(np.float32)
    col_t = rng.standard_normal((g, cols, positions)).astype(np.float32)
    if case.direction == "forward":
        out = np.empty((g, rows, positions), np.float32)
        return (lambda: np.matmul(w_rows, col_t, out=out)), blas_threads()
    d_rows = rng.standard_normal((g, rows, positions)).astype(np.float32)
    dw = np.empty((g, rows, cols), np.float32)
    dcol = np.empty((g, cols, positions), np.float32)

    def backward():
        np.matmul(d_rows, col_t.swapaxes(1, 2), out=dw)
        np.matmul(w_rows.swapaxes(1, 2), d_rows, out=dcol)

    return backward, blas_threads()


def _torch(case, x, w, b, dout):
    torch = torch_or_skip()
    tx, tw, tb, tdout = (torch.from_numpy(a) for a in (x, w, b, dout))
    options = dict(stride=case.stride, padding=case.pad, dilation=case.dilation,
                   groups=case.groups)
    conv = torch.nn.functional.conv2d
    if case.direction == "forward":
        def forward():
            with torch.no_grad():
                return conv(tx, tw, tb, **options).numpy(),
        return forward, torch.get_num_threads()
    inputs = [t.detach().clone().requires_grad_(True) for t in (tx, tw, tb)]
    out = conv(*inputs, **options)

    def backward():
        grads = torch.autograd.grad(out, inputs, tdout, retain_graph=True)
        return tuple(g.numpy() for g in grads)

    return backward, torch.get_num_threads()


RUNNERS = {"book_numpy": _book, "gemm": _gemm, "torch": _torch}


def _reference(case, x, w, b, dout):
    pair = (case.stride, case.stride), (case.pad, case.pad)
    out, saved = F.conv_forward(x, w, b, *pair, backend="naive", **case.conv_options())
    return (out,) if case.direction == "forward" else F.conv_backward(dout, saved)


def test_conv(benchmark, conv_case, bench_small):
    case = conv_case
    if case.skip:
        pytest.skip(case.skip)
    x, w, b, dout = case.arrays()
    fn, threads = RUNNERS.get(case.path, _fastconv)(case, x, w, b, dout)
    result = run_benchmark(benchmark, case, fn, threads)
    # The smoke run also proves every timed path computes the right thing (a baseline
    # running a layer that fastconv cannot run yet has no naive result to agree with).
    if bench_small and case.path not in ("naive", "gemm") and not why_not(replace(case, path="naive")):
        assert_close(result, _reference(case, x, w, b, dout), case.id)


def test_gemm_peak(benchmark, bench_small):
    """numpy sgemm on square matrices: the machine's float32 ceiling in this run."""
    n = 128 if bench_small else 2048
    rng = np.random.default_rng(2)
    a, c = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    benchmark.group = "gemm_peak"
    benchmark.extra_info.update(
        kind="gemm_peak", layer=f"sgemm {n}^3", path="gemm", direction="forward",
        library="baseline", dtype="float32", threads=blas_threads(), N=n, ref_N=n,
        flops=2 * n ** 3, small=bench_small)
    fn = lambda: np.matmul(a, c, out=out)  # noqa: E731
    fn()
    benchmark(fn)
