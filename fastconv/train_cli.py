"""``fastconv train``: the seeds' experiment from the command line.

Trains SimpleConvNet or LeNet on MNIST or Fashion-MNIST and writes to --out:
params.npz (final parameters), history.json (per-epoch numbers and timings),
curves.png, filters_before.png, filters_after.png, feature_maps.png and
checkpoint.npz (for --resume).
"""
import json
import os
import time

import numpy as np


def add_parser(sub):
    p = sub.add_parser("train", help="train a conv net on MNIST or Fashion-MNIST",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--net", choices=("simple", "lenet"), default="simple")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    p.add_argument("--data-dir", default=None,
                   help="directory of the four IDX files (default: installed sources)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--optimizer", choices=("SGD", "Momentum", "AdaGrad", "Adam"), default="Adam")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--backend", default="auto",
                   help="compute path for conv and pool layers (default: auto)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--weight-init", default=None,
                   help="initial weight std: a number (SimpleConvNet default 0.01, the seeds' "
                        "recipe, whose first-layer filters visibly turn into edge detectors), "
                        "'he' (sqrt(2/fan_in): higher accuracy after 1-2 epochs, but the "
                        "filters stay close to their random start) or 'xavier'; LeNet "
                        "defaults to He for ReLU")
    p.add_argument("--train-size", type=int, default=None,
                   help="use only the first K training images (a quick run)")
    p.add_argument("--test-size", type=int, default=None,
                   help="use only the first K test images")
    p.add_argument("--eval-samples", type=int, default=None,
                   help="images of each set evaluated after every epoch (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order")
    p.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz written by an earlier run")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (per-epoch lines are still printed)")
    p.set_defaults(func=run)
    return p


def _positive(name, value):
    if value is not None and value < 1:
        raise SystemExit(f"fastconv train: {name} must be >= 1, got {value}")


def run(args):
    from . import available_backends
    from .datasets import DATASETS, DatasetNotFoundError
    from .nets import LeNet, SimpleConvNet, init_std
    from .plots import plot_feature_maps, plot_filters, plot_history
    from .trainer import Trainer

    for name in ("epochs", "batch_size", "train_size", "test_size", "eval_samples"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.backend != "auto" and args.backend not in available_backends():
        raise SystemExit(f"fastconv train: backend {args.backend!r} is not available here; "
                         f"choose from auto, {', '.join(available_backends())}")
    init = args.weight_init
    if init is not None:
        try:
            init = float(init)
        except ValueError:
            pass
        try:
            init_std(init, 1)
        except ValueError as err:
            raise SystemExit(f"fastconv train: {err}")
    checkpoint = os.path.join(args.out, "checkpoint.npz")
    if args.resume and not os.path.exists(checkpoint):
        raise SystemExit(f"fastconv train: --resume given but {checkpoint} does not exist")

    try:
        (x_train, t_train), (x_test, t_test) = DATASETS[args.dataset](data_dir=args.data_dir)
    except DatasetNotFoundError as err:
        raise SystemExit(f"fastconv train: {err}")
    x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
    x_test, t_test = x_test[:args.test_size], t_test[:args.test_size]
    dtype = np.dtype(args.dtype)
    x_train, x_test = x_train.astype(dtype, copy=False), x_test.astype(dtype, copy=False)

    net_class = SimpleConvNet if args.net == "simple" else LeNet
    init_arg = {} if init is None else {"weight_init_std": init}
    network = net_class(input_dim=x_train.shape[1:], backend=args.backend, dtype=dtype,
                        seed=args.seed, **init_arg)
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer=args.optimizer,
                      optimizer_param={"lr": args.lr},
                      evaluate_sample_num_per_epoch=args.eval_samples, seed=args.seed,
                      verbose=True, progress=not args.quiet, checkpoint_path=checkpoint)
    if args.resume:
        trainer.load_checkpoint()
        print(f"resumed at epoch {trainer.epoch}, step {trainer.step_in_epoch}")
    else:
        plot_filters(network.params["W1"], out("filters_before.png"), "W1 before training")

    print(f"{args.net} on {args.dataset}: {len(x_train)} training / {len(x_test)} test images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
          f"backend {args.backend}, {args.dtype}, weight init {args.weight_init or 'default'}")
    start = time.perf_counter()
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        print(f"\ninterrupted after {trainer.iterations_done} steps; checkpoint saved: "
              f"rerun with --resume to continue")
        return 130
    wall = time.perf_counter() - start

    network.save_params(out("params.npz"))
    plot_history(history, out("curves.png"), f"{args.net} on {args.dataset}")
    plot_filters(network.params["W1"], out("filters_after.png"), "W1 after training")
    plot_feature_maps(network, x_test[0], out("feature_maps.png"))
    report = {"net": args.net, "dataset": args.dataset, "backend": args.backend,
              "paths": {phase: {name: dict(c) for name, c in layers.items()} for phase, layers in trainer.paths_run.items()}, "epochs": args.epochs, "batch_size": args.batch_size,
              "train_size": len(x_train), "test_size": len(x_test), "history": history,
              "epoch_seconds": trainer.epoch_seconds,
              "images_per_second": trainer.images_per_second, "wall_seconds": wall}
    with open(out("history.json"), "w") as f:
        json.dump(report, f, indent=1)
    paths = trainer.paths_summary()
    print(f"paths used: {paths}; mean {np.mean(trainer.images_per_second):.0f} images/s "
          f"while training")
    print(f"wrote params.npz, history.json, curves.png, filters_before.png, filters_after.png, "
          f"feature_maps.png, checkpoint.npz in {args.out}")
    return 0
