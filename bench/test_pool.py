"""Pooling benchmarks: every path x every pooling layer of layers.json x forward/backward.

See bench/conftest.py for how to run them and what is timed.
"""
import book_numpy
from harness import assert_close, blas_threads, numba_threads, run_benchmark, torch_or_skip

import fastconv.functional as F


def _geometry(case):
    pair = lambda v: (v, v)  # noqa: E731
    return (case.FH, case.FW), pair(case.stride), pair(case.pad)


def _fastconv(case, x, dout):
    (ph, pw), stride, pad = _geometry(case)

    def forward():
        return F.pool_forward(x, ph, pw, stride, pad, case.mode, backend=case.path)[0],

    if case.direction == "forward":
        return forward, numba_threads()
    _, saved = F.pool_forward(x, ph, pw, stride, pad, case.mode, backend=case.path)
    return (lambda: (F.pool_backward(dout, saved),)), numba_threads()


def _book(case, x, dout):
    pool_hw, stride, pad = _geometry(case)
    args = (x, pool_hw, stride, pad, case.out_hw, case.mode)
    if case.direction == "forward":
        return (lambda: (book_numpy.pool_forward(*args)[0],)), blas_threads()
    _, cache = book_numpy.pool_forward(*args)
    return (lambda: (book_numpy.pool_backward(dout, cache),)), blas_threads()


def _torch(case, x, dout):
    torch = torch_or_skip()
    fn = torch.nn.functional.max_pool2d if case.mode == "max" else torch.nn.functional.avg_pool2d
    geometry = dict(kernel_size=(case.FH, case.FW), stride=case.stride, padding=case.pad)
    tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)
    if case.direction == "forward":
        def forward():
            with torch.no_grad():
                return fn(tx, **geometry).numpy(),
        return forward, torch.get_num_threads()
    tx = tx.detach().clone().requires_grad_(True)
    out = fn(tx, **geometry)

    def backward():
        return torch.autograd.grad(out, tx, tdout, retain_graph=True)[0].numpy(),

    return backward, torch.get_num_threads()


RUNNERS = {"book_numpy": _book, "torch": _torch}


def _reference(case, x, dout):
    (ph, pw), stride, pad = _geometry(case)
    out, saved = F.pool_forward(x, ph, pw, stride, pad, case.mode, backend="naive")
    return (out,) if case.direction == "forward" else (F.pool_backward(dout, saved),)


def test_pool(benchmark, pool_case, bench_small):
    case = pool_case
    x, _, _, dout = case.arrays()
    fn, threads = RUNNERS.get(case.path, _fastconv)(case, x, dout)
    result = run_benchmark(benchmark, case, fn, threads)
    if bench_small and case.path != "naive":
        assert_close(result, _reference(case, x, dout), case.id)
