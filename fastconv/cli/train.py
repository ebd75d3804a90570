"""``fastconv train``: train SimpleConvNet or LeNet from the command line.

Trains SimpleConvNet (Deep Learning from Scratch, ch. 7) or LeNet on MNIST or
Fashion-MNIST and writes to --out: params.npz (final parameters), history.json
(per-epoch numbers and timings), curves.png, filters_before.png,
filters_after.png, feature_maps.png and checkpoint.npz (for --resume).
"""
import argparse
import importlib
import json
import os
import tempfile
import time
import zipfile

import numpy as np

from .options import positive_float, positive_int

# What a fresh run uses for the options --resume can take from the saved run.
FRESH_DEFAULTS = {"net": "simple", "epochs": 2, "batch_size": 100, "optimizer": "Adam",
                  "lr": 0.001, "dtype": "float32"}
OPTIMIZERS = ("SGD", "Momentum", "AdaGrad", "Adam")
TRAIN_EXTRA = 'pip install "fastconv[train]"'


def backend_name(text: str) -> str:
    """'auto' or an available path."""
    from ..backends import available_backends

    available = available_backends()
    if text != "auto" and text not in available:
        raise argparse.ArgumentTypeError(f"backend {text!r} is not available here; choose from "
                                         f"auto, {', '.join(available)}")
    return text


def weight_init(text: str) -> str | float:
    """A finite number > 0, or the name of a rule ('he', 'xavier', ...)."""
    from ..nets import INIT_GAINS

    if text.lower() in INIT_GAINS:
        return text.lower()
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0 or one of {', '.join(sorted(INIT_GAINS))}, "
            f"got {text!r}") from None


def add_train(sub) -> argparse.ArgumentParser:
    d = FRESH_DEFAULTS
    resumed = "or the saved run's with --resume"
    p = sub.add_parser("train", help="train a conv net on MNIST or Fashion-MNIST",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--net", choices=("simple", "lenet"), default=None,
                   help=f"SimpleConvNet or LeNet (default: {d['net']}, {resumed})")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                   help="training and test images (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="directory of the four IDX files (default: the installed sources)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help=f"passes over the training set in all, >= 1 (default: {d['epochs']}, "
                        f"{resumed})")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"images per gradient step, >= 1 (default: {d['batch_size']}, {resumed})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help=f"update rule (default: {d['optimizer']}, {resumed})")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"learning rate, a finite number > 0 (default: {d['lr']}, {resumed})")
    p.add_argument("--backend", type=backend_name, default="auto", metavar="PATH",
                   help="compute path for conv and pool layers: auto or an available path "
                        "(default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help=f"floating-point type of data and parameters (default: {d['dtype']}, "
                        f"{resumed})")
    p.add_argument("--weight-init", type=weight_init, default=None, metavar="STD",
                   help="initial weight std: a number > 0 (SimpleConvNet default 0.01, whose "
                        "first-layer filters visibly turn into edge detectors), 'he' "
                        "(sqrt(2/fan_in): higher accuracy after 1-2 epochs, but the filters stay "
                        "close to their random start) or 'xavier'; LeNet defaults to He for ReLU")
    p.add_argument("--train-size", type=positive_int, default=None, metavar="K",
                   help="use only the first K training images (a quick run)")
    p.add_argument("--test-size", type=positive_int, default=None, metavar="K",
                   help="use only the first K test images")
    p.add_argument("--eval-samples", type=positive_int, default=None, metavar="K",
                   help="images of each set evaluated after every epoch (default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the weights and the batch order (default: %(default)s)")
    p.add_argument("--out", default="runs/train",
                   help="output directory, created if missing (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in OUT/checkpoint.npz; options not given are "
                        "taken from it, options given must match it")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (per-epoch lines are still printed)")
    p.set_defaults(func=run_train, command_parser=p)
    return p


# ------------------------------------------------------------------ checks

def check_train_extra(quiet: bool, parser: argparse.ArgumentParser) -> None:
    """Refuse to start without the optional packages of fastconv[train]."""
    needed = ["matplotlib"] + ([] if quiet else ["tqdm"])
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        parser.error(f"training needs {' and '.join(missing)}, which the plain fastconv install "
                     f"lacks: {TRAIN_EXTRA}")


def check_out(out: str, parser: argparse.ArgumentParser) -> None:
    """Refuse an OUT that is a file or lies where nothing can be written, before any work.

    A missing OUT is not created here (the first file written creates it), so a
    run that stops at a later check leaves no empty folder behind.
    """
    target = os.path.abspath(out)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = ("exists and is not a directory" if existing == target
                else f"cannot be created: {existing} is a file")
        parser.error(f"--out {out} {what}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        parser.error(f"--out {out}: cannot write in {existing} ({err.strerror or err})")


def _net_classes():
    from ..nets import LeNet, SimpleConvNet

    return {"simple": SimpleConvNet, "lenet": LeNet}


def _net_of(param_keys):
    """Which --net has exactly these parameter names (None: neither)."""
    for name, cls in _net_classes().items():
        if set(cls(input_dim=(1, 28, 28)).params) == set(param_keys):
            return name
    return None


def read_checkpoint(path: str, parser: argparse.ArgumentParser) -> dict:
    """The saved run's options and progress: dict with net, epochs, batch_size,
    optimizer, lr, dtype, epoch (finished epochs) and step (steps into the next)."""
    from .. import io

    try:
        data = io.load_arrays(path)
        meta = json.loads(str(data["meta"]))
        params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
        opt = meta["optimizer"]
        saved = {"net": _net_of(params), "epochs": int(meta["epochs"]),
                 "batch_size": int(meta["batch_size"]), "optimizer": opt["type"],
                 "lr": float(opt["lr"]), "dtype": np.dtype(params["W1"].dtype).name,
                 "epoch": int(meta["epoch"]), "step": int(meta["step_in_epoch"])}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        parser.error(f"cannot read the checkpoint {path}: {err}")
    return saved


def resolve_options(args: argparse.Namespace, saved: dict | None,
                    parser: argparse.ArgumentParser) -> None:
    """Fill the options left out: from the saved run with --resume, else the fresh defaults.

    An option given explicitly that differs from the saved run is refused.
    """
    if saved is not None and saved["net"] is None:
        parser.error(f"the checkpoint in {args.out} holds neither a simple nor a lenet network; "
                     f"fastconv train cannot resume it")
    for name, fresh in FRESH_DEFAULTS.items():
        given = getattr(args, name)
        if saved is None:
            setattr(args, name, fresh if given is None else given)
            continue
        was = saved[name]
        if given is None:
            setattr(args, name, was)
        elif name != "epochs" and given != was:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} {given} differs from the saved run's {was} in {args.out}: "
                         f"resume with the same {flag}, or start a new run with another --out")


# -------------------------------------------------------------------- run

def run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    check_train_extra(args.quiet, parser)
    checkpoint = os.path.join(args.out, "checkpoint.npz")
    saved = None
    if args.resume:
        if not os.path.isfile(checkpoint):
            parser.error(f"--resume given but {checkpoint} does not exist")
        saved = read_checkpoint(checkpoint, parser)
    resolve_options(args, saved, parser)
    check_out(args.out, parser)
    if saved is not None and saved["epoch"] >= args.epochs:
        print(f"the run in {args.out} is already complete: {saved['epoch']} epoch(s) trained, "
              f"--epochs {args.epochs}. Nothing was changed; pass a larger --epochs to train on.")
        return 0
    return _train(args, parser, checkpoint, saved)


def _train(args, parser, checkpoint, saved):
    from .. import io
    from ..datasets import DATASETS, DatasetNotFoundError
    from ..plots import plot_feature_maps, plot_filters, plot_history
    from ..trainer import Trainer

    # a first line at once: reading 70,000 images and the first compiles take seconds
    print(f"fastconv train: reading {args.dataset} ...", flush=True)
    try:
        (x_train, t_train), (x_test, t_test) = DATASETS[args.dataset](data_dir=args.data_dir)
    except (DatasetNotFoundError, ValueError) as err:
        parser.error(str(err))
    x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
    x_test, t_test = x_test[:args.test_size], t_test[:args.test_size]
    dtype = np.dtype(args.dtype)
    x_train, x_test = x_train.astype(dtype, copy=False), x_test.astype(dtype, copy=False)

    net_class = _net_classes()[args.net]
    init_arg = {} if args.weight_init is None else {"weight_init_std": args.weight_init}
    try:
        network = net_class(input_dim=x_train.shape[1:], backend=args.backend, dtype=dtype,
                            seed=args.seed, **init_arg)
    except ValueError as err:     # e.g. images too small for the net's filters
        parser.error(f"--net {args.net} on {args.dataset}: {err}")
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer=args.optimizer,
                      optimizer_param={"lr": args.lr},
                      evaluate_sample_num_per_epoch=args.eval_samples, seed=args.seed,
                      verbose=True, progress=not args.quiet, checkpoint_path=checkpoint)
    if saved is not None:
        try:
            trainer.load_checkpoint()
        except ValueError as err:
            parser.error(f"cannot resume: {err}")
        print(f"resumed at epoch {trainer.epoch}, step {trainer.step_in_epoch}")
    else:
        plot_filters(network.params["W1"], out("filters_before.png"), "W1 before training")

    print(f"{args.net} on {args.dataset}: {len(x_train)} training / {len(x_test)} test images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
          f"backend {args.backend}, {args.dtype}, weight init {args.weight_init or 'default'}")
    before = _file_state(checkpoint)
    start = time.perf_counter()
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        print("\n" + interrupt_message(trainer, checkpoint, before, resumed=saved is not None))
        return 130
    wall = time.perf_counter() - start

    network.save_params(out("params.npz"))
    plot_history(history, out("curves.png"), f"{args.net} on {args.dataset}",
                 batch_losses=trainer.batch_losses)
    plot_filters(network.params["W1"], out("filters_after.png"), "W1 after training")
    plot_feature_maps(network, x_test[0], out("feature_maps.png"))
    report = {"net": args.net, "dataset": args.dataset, "backend": args.backend,
              "paths": {phase: {name: dict(c) for name, c in layers.items()}
                        for phase, layers in trainer.paths_run.items()},
              "epochs": args.epochs, "batch_size": args.batch_size,
              "train_size": len(x_train), "test_size": len(x_test), "history": history,
              "epoch_seconds": trainer.epoch_seconds,
              "images_per_second": trainer.images_per_second,
              "prepare_seconds": trainer.prepare_seconds,
              "setup_seconds": trainer.setup_seconds, "setup_share": trainer.setup_share(),
              "wall_seconds": wall}
    io.atomic_write_text(out("history.json"), json.dumps(report, indent=1))
    paths = trainer.paths_summary()
    speed = (f"mean {np.mean(trainer.images_per_second):.0f} images/s while training"
             if trainer.images_per_second else "no timed epoch")
    print(f"paths used: {paths}; {speed}")
    print(f"compiling kernels and choosing paths took {trainer.setup_seconds:.1f} s, "
          f"{trainer.setup_share():.0%} of the {trainer.train_seconds:.1f} s of training "
          f"(once per machine: later runs load both from their caches)")
    print(f"wrote params.npz, history.json, curves.png, filters_before.png, filters_after.png, "
          f"feature_maps.png, checkpoint.npz in {args.out}")
    return 0


# ---------------------------------------------------------------- Ctrl-C

def _file_state(path):
    """Enough of a file's identity to tell whether it was rewritten (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _position(path):
    """(finished epochs, steps into the next) of the checkpoint at path, None if unreadable."""
    from .. import io

    try:
        meta = json.loads(str(io.load_arrays(path)["meta"]))
        return int(meta["epoch"]), int(meta["step_in_epoch"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def interrupt_message(trainer, checkpoint: str, before: tuple | None, resumed: bool) -> str:
    """What a Ctrl-C left behind, stated from the checkpoint file itself.

    One Ctrl-C lets the trainer finish its step and save; a second one stops at
    once, so the newest checkpoint may be from the end of an earlier epoch, from
    the run that was resumed, or (a fresh run in a used folder) from another run.
    """
    done = trainer.iterations_done
    position = _position(checkpoint)
    rewritten = _file_state(checkpoint) != before
    if position is None or not (rewritten or resumed):
        stale = "" if position is None else f" ({checkpoint} is from an earlier run)"
        return (f"interrupted after {done} steps, before this run saved a checkpoint{stale}: "
                f"nothing to resume; rerun without --resume to start again")
    epoch, step = position
    steps = epoch * trainer.iter_per_epoch + step
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    if steps == done:
        return (f"interrupted after {done} steps; checkpoint saved at {where} in {checkpoint}: "
                f"rerun with --resume to continue")
    return (f"interrupted at once after {done} steps; the last checkpoint, {checkpoint}, is from "
            f"{where} ({steps} steps): rerun with --resume to continue from there")
