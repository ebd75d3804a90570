"""Trainer: mini-batch training with progress bars, per-epoch history and checkpoints.

Each epoch visits every training image once, in an order drawn from
``np.random.default_rng(seed)`` (a new permutation per epoch; the last batch
may be smaller). After each epoch the network is evaluated on the first
``evaluate_sample_num_per_epoch`` training and test images (all when None)
and one row is appended to ``history``.

Reproducible: with the same seed, network initialisation, data and compute
path, ``history`` and the final parameters are bit-identical run to run.
Stop and resume: ``train(max_iterations=k)`` stops after k steps in all (or
Ctrl-C stops after the current step); with ``checkpoint_path`` set, the trainer
then saves everything it needs (parameters, optimizer state, the epoch's order
and position, the random generator, history) and ``Trainer.load_checkpoint``
on a fresh trainer continues exactly where it stopped: the finished run equals
an uninterrupted one bit for bit.

Progress (with ``verbose`` and ``progress``): one tqdm bar per epoch, so its
ETA is that epoch's; its images/s figure counts training steps only. The
evaluation after each epoch has its own short bar (evaluation batches),
which disappears when the epoch's summary line is printed. Before the first
step, the kernels the network needs are compiled (or loaded from Numba's
cache) and ``backend="auto"`` layers choose their path for the training batch
size (``fastconv.warmup``), so that neither cost lands in the first epoch's
bar or timings.
"""
import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter

import numpy as np

from . import io
from .kernels._jit import compile_seconds
from .optim import make_optimizer

HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "batch_loss")


def check_data(network, name: str, x, t) -> None:
    """Raise unless x is (N, C, H, W) in the network's dtype with one label of t per image.

    name: "train" or "test", for the messages (x_train, t_train, ...).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"x_{name} must be a numpy array (N, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if x.dtype != network.dtype:
        raise TypeError(f"x_{name} has dtype {x.dtype} but the network computes in "
                        f"{network.dtype}: convert it with .astype(np.{network.dtype})")
    if len(t) != len(x):
        raise ValueError(f"x_{name} has {len(x)} images but t_{name} has {len(t)} labels")


def setup_share(setup_seconds: float, total_seconds: float) -> float:
    """setup_seconds / total_seconds, the share of a run spent compiling and tuning
    (0.0 for a run that took no time)."""
    if total_seconds <= 0:
        return 0.0
    return min(1.0, max(0.0, setup_seconds / total_seconds))


class Trainer:
    """Train ``network`` (a fastconv Network) on (x_train, t_train), reporting on
    (x_test, t_test). x: (N, C, H, W) in the network's dtype; t: (N,) labels
    or (N, K) one-hot.

    history: dict of per-epoch lists -- train_loss, train_acc, test_loss,
    test_acc (evaluated after the epoch) and batch_loss (mean of the epoch's
    mini-batch losses). batch_losses: every mini-batch loss. epoch_seconds and
    images_per_second: per-epoch timings (training steps only, not evaluation).
    verbose prints one line per epoch and the final test accuracy; progress
    (with verbose) draws a tqdm bar per epoch showing the loss and images/s
    (training steps only), and one for each evaluation. prepare: compile the
    kernels and tune ``backend="auto"`` layers for the batch size before the
    first step (see ``fastconv.warmup``); ``prepare_seconds`` then holds what
    that took. setup_seconds, train_seconds: of the last ``train()`` call, the
    seconds spent preparing plus compiling kernels later on (first use of a
    kernel after the preparation), and the call's whole wall time;
    ``setup_share()`` is their ratio.
    checkpoint_path: where save_checkpoint writes (after every epoch and when
    training stops) and load_checkpoint reads. eval_batch_size: images per
    evaluation batch (default: mini_batch_size, at least 100). paths_run: for "train" and
    "eval" batches separately, layer name -> Counter {path: forward calls}, so
    the report says which paths really ran (``paths_summary()`` as one line).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="Adam", optimizer_param=None,
                 evaluate_sample_num_per_epoch=None, seed=0, verbose=True,
                 progress=True, checkpoint_path=None, eval_batch_size=None, prepare=True):
        if network.dtype == np.float16:
            raise TypeError("training in float16 is not supported: train in float32 and convert "
                            "the trained network with network.astype(np.float16) for inference")
        for name, x, t in (("train", x_train, t_train), ("test", x_test, t_test)):
            check_data(network, name, x, t)
        if epochs < 1 or mini_batch_size < 1:
            raise ValueError(f"epochs and mini_batch_size must be >= 1, got {epochs}, "
                             f"{mini_batch_size}")
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        self.optimizer = make_optimizer(optimizer, **(optimizer_param or {"lr": 0.001}))
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        # evaluating in training-sized batches reuses the kernels and the "auto" choices
        # made for training (another size is one more shape to time on first use);
        # at least 100, the batch Network.evaluate uses by default
        self.eval_batch_size = int(eval_batch_size or max(mini_batch_size, 100))
        self.seed = seed
        self.verbose = verbose
        self.progress = progress and verbose
        self.checkpoint_path = checkpoint_path
        self.prepare = prepare
        self.prepare_seconds = None
        self.setup_seconds = None
        self.train_seconds = None
        self.iter_per_epoch = -(-len(x_train) // self.batch_size)

        self.rng = np.random.default_rng(seed)
        self.history = {key: [] for key in HISTORY_KEYS}
        self.batch_losses = []
        self.epoch_seconds, self.images_per_second = [], []
        self.epoch = 0               # epochs finished
        self.step_in_epoch = 0       # steps finished in the current epoch
        self._order = None           # this epoch's permutation of the training set
        self._epoch_loss_sum = 0.0
        self._partial_time = None    # (seconds, images) of an epoch cut by a stop
        # phase ("train" batches, "eval" batches) -> layer name -> Counter {path: calls}
        self.paths_run = {"train": {}, "eval": {}}

    # -- one step and one evaluation
    def train_step(self, x_batch, t_batch):
        """One gradient step; returns the mini-batch loss (before the step)."""
        before = self.network.path_counts()
        grads = self.network.gradient(x_batch, t_batch)
        self._count_paths("train", before)
        loss = float(self.network.last_layer.loss)
        self.optimizer.update(self.network.params, grads)
        return loss

    def evaluate(self):
        """(train_loss, train_acc, test_loss, test_acc) on the evaluation samples."""
        n = self.evaluate_sample_num_per_epoch
        xtr, ttr, xte, tte = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            xtr, ttr, xte, tte = xtr[:n], ttr[:n], xte[:n], tte[:n]
        before = self.network.path_counts()
        bar = self._bar(self._eval_batches(len(xtr)) + self._eval_batches(len(xte)),
                        "  evaluating", leave=False)
        try:
            train_loss, train_acc = self._evaluate_set(xtr, ttr, bar)
            test_loss, test_acc = self._evaluate_set(xte, tte, bar)
        finally:
            if bar is not None:
                bar.close()
        self._count_paths("eval", before)
        return train_loss, train_acc, test_loss, test_acc

    def _eval_batches(self, n):
        return -(-n // self.eval_batch_size)

    def _evaluate_set(self, x, t, bar):
        """(mean loss, accuracy) of x: network.evaluate one batch at a time, so a bar can follow.

        The same batches, summed in the same order, with or without a bar: the
        history does not depend on whether progress is shown.
        """
        if len(x) == 0:
            return self.network.evaluate(x, t, self.eval_batch_size)
        total_loss, correct = 0.0, 0
        for i in range(0, len(x), self.eval_batch_size):
            xb, tb = x[i:i + self.eval_batch_size], t[i:i + self.eval_batch_size]
            loss, acc = self.network.evaluate(xb, tb, self.eval_batch_size)
            total_loss += loss * len(xb)
            correct += round(acc * len(xb))
            if bar is not None:
                bar.update(1)
        return total_loss / len(x), correct / len(x)

    def _count_paths(self, phase, before):
        """Add the forward calls each layer ran since ``before`` to ``paths_run[phase]``."""
        for name, counts in self.network.path_counts().items():
            self.paths_run[phase].setdefault(name, Counter()).update(
                counts - before.get(name, Counter()))

    def paths_summary(self):
        """One line per phase: which paths each conv/pool layer ran, with call counts."""
        lines = []
        for phase, layers in self.paths_run.items():
            parts = [f"{name} " + "+".join(f"{p} x{n}" for p, n in sorted(c.items()))
                     for name, c in layers.items() if c]
            lines.append(f"{phase}: {', '.join(parts) if parts else 'no calls'}")
        return "; ".join(lines)

    # -- the loop
    def train(self, max_iterations=None):
        """Run the remaining epochs. Returns history.

        max_iterations: stop once this many steps have been taken in all
        (counting steps before a resume) and save a checkpoint if
        checkpoint_path is set; call train() again (or load the checkpoint into
        a new trainer) to go on. Ctrl-C does the same after the current step,
        then raises KeyboardInterrupt (a second Ctrl-C interrupts at once).
        """
        self._interrupted = False
        start, compiled = time.perf_counter(), compile_seconds()
        prepared = 0.0
        if self.prepare and self.prepare_seconds is None and self.epoch < self.epochs:
            self._prepare()
            prepared = self.prepare_seconds
            compiled = compile_seconds()          # what preparing compiled is in prepared
        try:
            with _deferred_interrupt(self):
                while self.epoch < self.epochs:
                    self._run_epoch(max_iterations)
                    if self._should_stop(max_iterations):
                        break
        finally:
            self.train_seconds = time.perf_counter() - start
            self.setup_seconds = prepared + compile_seconds() - compiled
        self.save_checkpoint()
        if self._interrupted:
            raise KeyboardInterrupt(f"training stopped after {self.iterations_done} steps"
                                    + (f"; checkpoint in {self.checkpoint_path}"
                                       if self.checkpoint_path else ""))
        if self.verbose and self.epoch == self.epochs:
            print(f"final test accuracy: {self.history['test_acc'][-1]:.4f}")
        return self.history

    def setup_share(self):
        """Share of the last ``train()`` call's wall time spent compiling kernels and
        choosing paths (see :func:`setup_share`); None before a call."""
        if self.train_seconds is None:
            return None
        return setup_share(self.setup_seconds, self.train_seconds)

    def _should_stop(self, max_iterations):
        return self._interrupted or (max_iterations is not None
                                     and self.iterations_done >= max_iterations)

    @property
    def iterations_done(self):
        return self.epoch * self.iter_per_epoch + self.step_in_epoch

    def _prepare(self):
        """Compile (or load) the kernels and tune "auto" layers before the first step.

        What is prepared: the network's conv and pool layers at the training batch
        size and at the evaluation batch sizes, on tiny random inputs; parameters,
        layer state and path counts are untouched.
        """
        from .warmup import warmup

        start = time.perf_counter()
        sizes = {self.batch_size, len(self.x_train) % self.batch_size}
        for n in self._eval_set_sizes():
            sizes |= {min(n, self.eval_batch_size), n % self.eval_batch_size}
        warmup(self.network, dtype=self.network.dtype, input_shape=self.x_train.shape[1:],
               batch_sizes=sorted(s for s in sizes if s > 0))
        self.prepare_seconds = time.perf_counter() - start

    def _eval_set_sizes(self):
        n = self.evaluate_sample_num_per_epoch
        return [len(x) if n is None else min(n, len(x)) for x in (self.x_train, self.x_test)]

    def _bar(self, total, desc, initial=0, leave=True):
        if not self.progress:
            return None
        from tqdm.auto import tqdm  # only needed when a bar is drawn

        return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=leave,
                    dynamic_ncols=True)

    def _run_epoch(self, max_iterations):
        if self._order is None:
            self._order = self.rng.permutation(len(self.x_train))
            self.step_in_epoch, self._epoch_loss_sum = 0, 0.0
        # one bar per epoch: its ETA and rate are this epoch's
        bar = self._bar(self.iter_per_epoch, f"epoch {self.epoch + 1}/{self.epochs}",
                        initial=self.step_in_epoch)
        seconds, images = 0.0, 0
        try:
            while self.step_in_epoch < self.iter_per_epoch:
                if self._should_stop(max_iterations):
                    self._add_time(seconds, images, partial=True)
                    return
                i = self.step_in_epoch * self.batch_size
                idx = self._order[i:i + self.batch_size]
                start = time.perf_counter()
                loss = self.train_step(self.x_train[idx], self.t_train[idx])
                seconds += time.perf_counter() - start
                images += len(idx)
                self.batch_losses.append(loss)
                self._epoch_loss_sum += loss
                self.step_in_epoch += 1
                if bar is not None:
                    # images/s of the training steps alone (not the bar, not evaluation)
                    bar.set_postfix(loss=f"{loss:.4f}",
                                    img_s=f"{images / max(seconds, 1e-9):.0f}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        self._add_time(seconds, images, partial=False)
        train_loss, train_acc, test_loss, test_acc = self.evaluate()
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, test_loss, test_acc,
                                             self._epoch_loss_sum / self.iter_per_epoch)):
            self.history[key].append(value)
        self.epoch += 1
        self.step_in_epoch, self._order, self._epoch_loss_sum = 0, None, 0.0
        line = (f"epoch {self.epoch}: train acc {train_acc:.4f}, test acc {test_acc:.4f}, "
                f"test loss {test_loss:.4f}, {self.images_per_second[-1]:.0f} images/s")
        if self.verbose:
            print(line, flush=True)
        if self.checkpoint_path is not None:
            self.save_checkpoint()

    def _add_time(self, seconds, images, partial):
        # a resumed epoch's time is the sum of its pieces
        if self._partial_time is not None:
            seconds += self._partial_time[0]
            images += self._partial_time[1]
        if partial:
            self._partial_time = (seconds, images)
            return
        self._partial_time = None
        self.epoch_seconds.append(seconds)
        self.images_per_second.append(images / max(seconds, 1e-9))

    # -- checkpoints
    def save_checkpoint(self, path=None):
        """Write the full training state to ``path`` (default checkpoint_path) as .npz."""
        path = path or self.checkpoint_path
        if path is None:
            return None
        opt_scalars, opt_arrays = self.optimizer.state_dict()
        meta = {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "epochs": self.epochs,
            "batch_size": self.batch_size, "n_train": len(self.x_train),
            "epoch_loss_sum": self._epoch_loss_sum, "history": self.history,
            "epoch_seconds": self.epoch_seconds, "images_per_second": self.images_per_second,
            "partial_time": self._partial_time, "optimizer": opt_scalars,
            "rng": self.rng.bit_generator.state,
        }
        arrays = {"meta": np.array(json.dumps(meta)),
                  "batch_losses": np.array(self.batch_losses, dtype=np.float64)}
        if self._order is not None:
            arrays["order"] = self._order
        arrays.update({f"param/{k}": v for k, v in self.network.params.items()})
        arrays.update({f"opt/{k}": v for k, v in opt_arrays.items()})
        io.save_arrays(path, arrays)
        return os.fspath(path)

    def load_checkpoint(self, path=None):
        """Restore a checkpoint written by save_checkpoint into this trainer and its
        network (same architecture, data size, batch size and optimizer type)."""
        path = path or self.checkpoint_path
        data = io.load_arrays(path)
        meta = json.loads(str(data["meta"]))
        if (meta["n_train"], meta["batch_size"]) != (len(self.x_train), self.batch_size):
            raise ValueError(f"checkpoint {path} was taken with {meta['n_train']} training images "
                             f"in batches of {meta['batch_size']}; this trainer has "
                             f"{len(self.x_train)} in batches of {self.batch_size}")
        params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
        io.check_params(params, self.network.params, source=os.fspath(path))
        for key, value in params.items():
            self.network.params[key] = value
        self.optimizer.load_state_dict(
            meta["optimizer"], {k[len("opt/"):]: v for k, v in data.items() if k.startswith("opt/")})
        self.rng.bit_generator.state = meta["rng"]
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self._epoch_loss_sum = meta["epoch_loss_sum"]
        self.history = {key: list(meta["history"][key]) for key in HISTORY_KEYS}
        self.epoch_seconds = list(meta["epoch_seconds"])
        self.images_per_second = list(meta["images_per_second"])
        self._partial_time = tuple(meta["partial_time"]) if meta["partial_time"] else None
        self.batch_losses = [float(v) for v in data["batch_losses"]]
        self._order = data["order"] if "order" in data else None
        return self


@contextlib.contextmanager
def _deferred_interrupt(trainer):
    """While training, the first Ctrl-C only asks the trainer to stop after the current
    step (so a checkpoint never holds a half-applied update); the second one raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._interrupted:
            raise KeyboardInterrupt
        trainer._interrupted = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
