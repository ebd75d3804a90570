"""One SimpleConvNet training step (loss, backprop gradient, Adam update) on a batch
of 100 MNIST-shaped images: every fastconv path, and the same network in PyTorch CPU.

This is the unit of ``fastconv train``'s throughput; images/s = batch / time.
Group ``train_step``; ``extra_info`` carries the batch size for the images/s figure.
"""
import numpy as np
import pytest
from harness import numba_threads, small_mode, torch_or_skip

import fastconv
from fastconv.backends import get_path

BATCH_FULL, BATCH_SMALL = 100, 4


def _batch(config):
    return BATCH_SMALL if small_mode(config.getoption("--bench-small")) else BATCH_FULL


def _data(n):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _paths():
    # a network runs all its layers on one path: only paths that run both of its
    # problems (the 5x5 conv and the 2x2 max pooling) can train it
    layers = (fastconv.conv_spec((1, 1, 28, 28), (30, 1, 5, 5)),
              fastconv.pool_spec((1, 30, 24, 24), 2, 2, 2))
    return [p for p in fastconv.available_backends() if p != "cuda"
            and all(get_path(p).supports(spec) for spec in layers)] + ["torch"]


def _fastconv_step(path, x, t):
    net = fastconv.SimpleConvNet(backend=path, seed=0)
    opt = fastconv.Adam(lr=0.001)

    def step():
        opt.update(net.params, net.gradient(x, t))

    return step, numba_threads()


def _torch_step(x, t):
    torch = torch_or_skip()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
        torch.nn.Linear(30 * 12 * 12, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tx), tt)
        loss.backward()
        opt.step()

    return step, torch.get_num_threads()


@pytest.mark.parametrize("path", _paths())
def test_train_step(benchmark, path, request):
    n = _batch(request.config)
    if path == "naive" and n == BATCH_FULL:
        pytest.skip("naive: a Python loop per output position, too slow for a batch of 100")
    x, t = _data(n)
    step, threads = _torch_step(x, t) if path == "torch" else _fastconv_step(path, x, t)
    benchmark.group = "train_step"
    benchmark.extra_info.update(kind="train", layer="simple_convnet", path=path,
                                direction="train_step", dtype="float32", N=n, threads=threads)
    step()  # JIT compilation / cache load stays out of the timing
    benchmark(step)
