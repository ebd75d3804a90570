"""fastconv.dask on a real cluster: a LocalCluster of 2 worker processes, 1 thread each.

Expected values come from fastconv's own in-process functions on the same path
(bit-identity where the path's arithmetic does not depend on the chunking,
closeness where it does; see the fastconv.dask docstring), from the in-process
Trainer for training, and from the unchunked arrays for tiling.
"""
import operator
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")
da = pytest.importorskip("dask.array")

import cloudpickle  # noqa: E402  (comes with distributed)
import dask  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402

DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    fd.setup_workers(c)
    yield c
    c.close()
    cluster.close()


def rng_arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# ------------------------------------------------------------ without a cluster

def test_import_fastconv_imports_no_dask():
    code = "import sys, fastconv; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("size, window, stride, pad", [
    (37, 5, 1, 2), (40, 3, 2, 1), (31, 5, 3, 2), (20, 4, 3, 0), (9, 9, 1, 0), (12, 2, 5, 1)])
def test_output_pieces_tile_the_global_grid(size, window, stride, pad):
    n_out = fastconv.conv_output_size(size, window, stride, pad)
    rng = np.random.default_rng(size * window + stride)
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, size), size=rng.integers(0, 5), replace=False))
        chunks = np.diff(np.concatenate([[0], cuts, [size]])).tolist()
        pieces = fd._output_pieces(size, chunks, window, stride, pad, n_out)
        outputs = [i for o0, o1, _, _ in pieces for i in range(o0, o1)]
        assert outputs == list(range(n_out))
        for o0, o1, r0, r1 in pieces:
            # exactly the rows the windows of o0..o1-1 read, in padded coordinates
            assert (r0, r1) == (o0 * stride - pad, (o1 - 1) * stride + window - pad)


def test_combine_gradients_is_the_full_batch_mean():
    net = fastconv.SimpleConvNet((1, 10, 10), {"filter_num": 3, "filter_size": 3}, hidden_size=8,
                                 dtype=np.float64, seed=1, backend="naive")
    x, = rng_arrays(np.float64, (7, 1, 10, 10))
    t = np.arange(7) % 10
    full = {k: v.copy() for k, v in net.gradient(x, t).items()}
    shards = []
    for idx in fd.split_batch(np.arange(7), 3):
        g = {k: v.copy() for k, v in net.gradient(x[idx], t[idx]).items()}
        shards.append((g, float(net.last_layer.loss), len(idx)))
    assert [s[2] for s in shards] == [3, 2, 2]
    grads, _ = fd.combine_gradients(shards)
    for k in full:
        np.testing.assert_allclose(grads[k], full[k], rtol=1e-12, atol=1e-15)


def test_network_blob_drops_layer_caches_and_keeps_parameters():
    net = fastconv.SimpleConvNet((1, 10, 10), {"filter_num": 3, "filter_size": 3}, hidden_size=8,
                                 seed=2, backend="direct")
    x, = rng_arrays(np.float32, (50, 1, 10, 10))
    expected = net.predict(x)                     # leaves caches of 50 images in the layers
    blob = fd.network_blob(net)
    assert len(blob) < sum(p.nbytes for p in net.params.values()) + 20_000
    copy = fd.load_network(blob)
    assert copy.layers["Conv1"].W is copy.params["W1"]
    np.testing.assert_array_equal(copy.predict(x), expected)


def test_bad_input_is_refused_before_any_graph_runs():
    W, = rng_arrays(np.float32, (2, 3, 3, 3))
    x = da.zeros((2, 3, 8, 8), dtype=np.float32, chunks=(1, 3, 4, 4))
    with pytest.raises(TypeError, match="dask array"):
        fd.conv2d(np.zeros((2, 3, 8, 8), np.float32), W)
    with pytest.raises(TypeError, match="dtype float64 but x is float32"):
        fd.conv2d(x, W.astype(np.float64))
    with pytest.raises(ValueError, match="C=3 channels.*C=2"):
        fd.conv2d(x, W[:, :2])
    with pytest.raises(ValueError, match="along the height"):
        fd.conv2d(x[:, :, :2], W)
    with pytest.raises(TypeError, match="float32 or float64"):
        fd.pool2d(x.astype(np.int32), 2, 2, stride=2)
    with pytest.raises(ValueError, match="smaller than the pool window"):
        fd.pool2d(x, 2, 2, stride=2, pad=2)


# ---------------------------------------------------------------- on the cluster

def test_workers_run_their_share_of_the_cores(client):
    share = fd.cpu_share(len(os.sched_getaffinity(0)), 2)
    counts = client.run(lambda: None)             # every worker is up
    results = [client.submit(fd.thread_counts, workers=[addr], pure=False).result()
               for addr in counts]
    assert results == [(share, share)] * 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad", [(1, 2), (2, 1), (3, 2), (3, 0)])
def test_spatial_conv_is_bit_identical_on_direct(client, dtype, stride, pad):
    x, W, b = rng_arrays(dtype, (3, 2, 37, 29), (4, 2, 5, 5), (4,))
    # uneven chunks, a chunk of 1 row (smaller than the 4-row halo), strides
    # that divide no chunk size
    xd = da.from_array(x, chunks=(2, 2, (7, 1, 20, 9), (10, 16, 3)))
    out = fd.conv2d(xd, W, b, stride, pad, backend="direct")
    expected = fastconv.conv2d(x, W, b, stride, pad, backend="direct")
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.chunks[0] == (2, 1) and out.chunks[1] == (4,)
    result = out.compute()
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunks_smaller_than_the_halo(client, dtype):
    x, W = rng_arrays(dtype, (1, 1, 8, 7), (2, 1, 5, 5))
    # chunks of 1 or 2 pixels, the halo 4: a tile reads up to 5 chunks
    xd = da.from_array(x, chunks=(1, 1, (1,) * 8, (2, 2, 2, 1)))
    for stride, pad in ((1, 0), (3, 2)):
        expected = fastconv.conv2d(x, W, None, stride, pad, backend="direct")
        np.testing.assert_array_equal(
            fd.conv2d(xd, W, None, stride, pad, backend="direct").compute(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_spatial_pool_is_bit_identical(client, dtype, mode):
    x, = rng_arrays(dtype, (2, 3, 23, 19))
    x[0, 1, 5, 7] = np.nan                       # propagates as in the unchunked call
    xd = da.from_array(x, chunks=(1, 3, (5, 1, 17), (8, 11)))
    for window, stride, pad in (((2, 2), 2, 0), ((3, 3), 2, 1), ((3, 2), 3, 1)):
        expected = fastconv.pool2d(x, *window, stride=stride, pad=pad, mode=mode,
                                   backend="direct")
        result = fd.pool2d(xd, *window, stride=stride, pad=pad, mode=mode,
                           backend="direct").compute()
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spatial_conv_on_im2col_is_close(client, dtype):
    # BLAS rounds a product by its shape: tiles are close to, not equal to, one call
    x, W, b = rng_arrays(dtype, (2, 3, 30, 26), (5, 3, 3, 3), (5,))
    xd = da.from_array(x, chunks=(1, 3, (11, 19), (13, 13)))
    expected = fastconv.conv2d(x, W, b, 2, 1, backend="naive")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fd.conv2d(xd, W, b, 2, 1, backend="im2col").compute(), expected,
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["direct", "im2col"])
def test_batch_chunked_conv_is_bit_identical(client, dtype, backend):
    # 24x24 output maps (>= 256 positions): im2col runs one product per image
    x, W, b = rng_arrays(dtype, (7, 1, 28, 28), (6, 1, 5, 5), (6,))
    xd = da.from_array(x, chunks=(3, 1, 28, 28))           # 3, 3, 1: an uneven last chunk
    with fd.threads(1):                                     # the workers' thread counts
        expected = fastconv.conv2d(x, W, b, 1, 0, backend=backend)
    out = fd.conv2d(xd, W, b, backend=backend)
    assert out.chunks == ((3, 3, 1), (6,), (24,), (24,))
    np.testing.assert_array_equal(out.compute(), expected)


def test_flip_and_pool_over_batch_chunks(client):
    x, W = rng_arrays(np.float64, (5, 2, 9, 9), (3, 2, 3, 3))
    xd = da.from_array(x, chunks=(2, 1, 9, 9))              # C is merged into one chunk
    np.testing.assert_array_equal(
        fd.conv2d(xd, W, flip=True, backend="direct").compute(),
        fastconv.conv2d(x, W, flip=True, backend="direct"))
    np.testing.assert_array_equal(
        fd.pool2d(xd, 2, 2, stride=2, backend="direct").compute(),
        fastconv.pool2d(x, 2, 2, stride=2, backend="direct"))


def _copies_in_graph(arr, payload):
    """How many times ``payload`` (bytes) occurs in the pickled graph of ``arr``."""
    return cloudpickle.dumps(dict(arr.__dask_graph__())).count(payload)


def test_weights_enter_the_graph_once():
    x, W = rng_arrays(np.float32, (12, 1, 16, 16), (3, 1, 5, 5))
    W += np.arange(W.size, dtype=np.float32).reshape(W.shape)    # a byte pattern found once
    batch = fd.conv2d(da.from_array(x, chunks=(2, 1, 16, 16)), W, backend="direct")
    tiles = fd.conv2d(da.from_array(x, chunks=(6, 1, 5, 6)), W, backend="direct")
    assert batch.npartitions == 6 and tiles.npartitions > 6
    assert _copies_in_graph(batch, W.tobytes()) == 1
    assert _copies_in_graph(tiles, W.tobytes()) == 1
    net = fastconv.SimpleConvNet((1, 16, 16), {"filter_num": 3, "filter_size": 5},
                                 hidden_size=8, seed=0)
    scores = fd.predict(net, da.from_array(x, chunks=(2, 1, 16, 16)))
    assert _copies_in_graph(scores, net.params["W2"].tobytes()) == 1


def small_net(dtype, backend="direct", size=12):
    return fastconv.SimpleConvNet((1, size, size), {"filter_num": 4, "filter_size": 3},
                                  hidden_size=16, dtype=dtype, seed=3, backend=backend,
                                  weight_init_std="he")


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_features_accuracy(client, dtype):
    net = small_net(dtype)
    x = np.random.default_rng(4).random((50, 1, 12, 12)).astype(dtype)
    t = np.arange(50) % 10
    xd = da.from_array(x, chunks=(16, 1, 12, 12))           # 16, 16, 16, 2
    scores = fd.predict(net, xd)
    assert scores.chunks == ((16, 16, 16, 2), (10,)) and scores.dtype == dtype
    with fd.threads(1):
        per_chunk = np.concatenate([net.predict(x[i:i + 16]) for i in range(0, 50, 16)])
        whole = net.predict(x)
    result = scores.compute()
    np.testing.assert_array_equal(result, per_chunk)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, whole, rtol=tol, atol=tol)
    pooled = fd.features(net, xd, "Pool1")
    assert pooled.chunks == ((16, 16, 16, 2), (4,), (5,), (5,))
    conv = fastconv.conv2d(x, net.params["W1"], net.params["b1"], backend="direct")
    expected = fastconv.pool2d(np.maximum(conv, 0), 2, 2, stride=2, backend="direct")
    np.testing.assert_array_equal(pooled.compute(), expected)
    with fd.threads(1):
        assert fd.accuracy(net, xd, t) == net.accuracy(x, t, batch_size=16)
    # other axes chunked: merged into whole images, same result
    np.testing.assert_array_equal(fd.predict(net, xd.rechunk((16, 1, 6, 4))).compute(), result)


def _step_reference(dtype, x, t, steps, batch):
    net = small_net(dtype)
    trainer = fastconv.Trainer(net, x, t, x[:4], t[:4], mini_batch_size=batch, optimizer="Adam",
                               seed=5, verbose=False)
    with fd.threads(1):
        trainer.train(max_iterations=steps)
    return net


def _max_relative_difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
def test_data_parallel_steps_match_the_trainer(client, dtype, tol):
    x = np.random.default_rng(6).random((90, 1, 12, 12)).astype(dtype)
    t = np.arange(90) % 10
    net = small_net(dtype)
    trainer = fd.DataParallelTrainer(client, net, x, t, mini_batch_size=32, seed=5)
    losses = trainer.train(6)                      # crosses an epoch (32, 32, 26, 32, ...)
    assert trainer.epoch == 2 and len(losses) == 6 and all(np.isfinite(losses))
    reference = _step_reference(dtype, x, t, 6, 32)
    assert _max_relative_difference(net.params, reference.params) < tol
    for key, p in net.params.items():
        assert p.dtype == dtype


def test_shard_placement_does_not_change_the_gradient(client):
    x = np.random.default_rng(7).random((40, 1, 12, 12))
    t = np.arange(40) % 10
    trainer = fd.DataParallelTrainer(client, small_net(np.float64), x, t, mini_batch_size=40,
                                     n_shards=3)
    a, b = sorted(fd.workers_of(client))
    idx = np.arange(40)[::-1]
    g1, loss1, _ = trainer.gradient(idx, workers=[a, b])
    g2, loss2, _ = trainer.gradient(idx, workers=[b, a])
    assert loss1 == loss2
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key])


# ------------------------------------------------------------ losing a worker

def _kill_a_busy_worker(client, busy_in=lambda keys: bool(keys), timeout=60):
    """SIGKILL the first worker seen processing a matching task; returns its address."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if busy_in(keys) and addr in pids:
                os.kill(pids[addr], signal.SIGKILL)
                return addr
        time.sleep(0.005)
    raise AssertionError("no worker was seen busy")


def test_predict_survives_a_killed_worker(client):
    client.wait_for_workers(2, timeout=60)
    net = small_net(np.float32)
    x = np.random.default_rng(8).random((60, 1, 12, 12)).astype(np.float32)
    # each chunk waits 1 s on its worker before fastconv sees it, so that a
    # worker is surely busy when it is killed
    pieces = [da.from_delayed(
        dask.delayed(operator.getitem)((x[i:i + 10], dask.delayed(time.sleep, pure=False)(1.0)), 0),
        shape=(10, 1, 12, 12), dtype=np.float32) for i in range(0, 60, 10)]
    future = client.compute(fd.predict(net, da.concatenate(pieces)))
    _kill_a_busy_worker(client)
    assert not future.done()
    with fd.threads(1):
        expected = np.concatenate([net.predict(x[i:i + 10]) for i in range(0, 60, 10)])
    np.testing.assert_array_equal(future.result(timeout=120), expected)


def test_training_step_survives_a_killed_worker(client):
    client.wait_for_workers(2, timeout=60)
    dtype = np.float64
    x = np.random.default_rng(9).random((2400, 1, 12, 12)).astype(dtype)
    t = np.arange(2400) % 10
    net = small_net(dtype)
    # big steps (1200 images a shard) so that the shards are still running when a worker dies
    trainer = fd.DataParallelTrainer(client, net, x, t, mini_batch_size=2400, seed=5)
    trainer.train(1)
    errors = []
    stepping = threading.Thread(target=lambda: errors.extend(_try(trainer.step)))
    stepping.start()
    _kill_a_busy_worker(client, lambda keys: any("_shard_gradient" in str(k) for k in keys))
    assert stepping.is_alive()                     # killed mid-step
    stepping.join(timeout=180)
    assert not stepping.is_alive() and errors == []
    reference = _step_reference(dtype, x, t, 2, 2400)
    assert _max_relative_difference(net.params, reference.params) < 1e-14
    assert len(trainer.timings) == 2


def test_a_step_whose_tasks_were_cancelled_sends_the_data_again_and_repeats(client):
    """A worker that dies while the scheduler still counts its copy of the scattered
    data gets the tasks that need it cancelled: the step sends the data again and
    gives the result an undisturbed step gives."""
    from concurrent.futures import CancelledError

    client.wait_for_workers(2, timeout=60)
    x = np.random.default_rng(9).random((40, 1, 12, 12))
    t = np.arange(40) % 10
    trainer = fd.DataParallelTrainer(client, small_net(np.float64), x, t, mini_batch_size=40,
                                     seed=5)
    first_x = trainer._x
    calls = []
    real = trainer._shard_gradients

    def cancelled_once(*args):
        calls.append(len(calls))
        if len(calls) == 1:
            raise CancelledError("lost with a worker")
        return real(*args)

    trainer._shard_gradients = cancelled_once
    trainer.train(1)
    assert calls == [0, 1] and trainer._x is not first_x
    reference = _step_reference(np.float64, x, t, 1, 40)
    assert _max_relative_difference(trainer.network.params, reference.params) < 1e-14


def _try(fn):
    try:
        fn()
    except Exception as err:        # reported by the test, not lost in the thread
        return [err]
    return []


def test_pooling_steps_by_its_window_by_default_as_fastconv_does():
    x = np.random.default_rng(11).standard_normal((3, 2, 10, 10))
    xd = da.from_array(x, chunks=(1, 2, 5, 5))
    result = fd.pool2d(xd, 2, 2, backend="direct").compute(scheduler="sync")
    np.testing.assert_array_equal(result, fastconv.pool2d(x, 2, 2, backend="direct"))
    assert result.shape == (3, 2, 5, 5)
