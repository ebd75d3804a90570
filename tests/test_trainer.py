"""Trainer on a few hundred real MNIST images: history, reproducibility, progress output,
and stop/resume from a checkpoint giving the uninterrupted run's bits."""
import os
import signal

import numpy as np
import pytest

from fastconv import SimpleConvNet, Trainer
from mnist_subset import mnist_subset

N_TRAIN, N_TEST, BATCH = 100, 50, 25           # 4 steps per epoch


def small_net(seed=0):
    return SimpleConvNet(conv_param={"filter_num": 4}, hidden_size=20, weight_init_std=0.05,
                         seed=seed)


def make_trainer(seed=0, net_seed=0, **kwargs):
    x_train, t_train, x_test, t_test = mnist_subset(N_TRAIN, N_TEST)
    options = dict(epochs=2, mini_batch_size=BATCH, optimizer="Adam",
                   optimizer_param={"lr": 0.005}, seed=seed, verbose=False)
    options.update(kwargs)
    return Trainer(small_net(net_seed), x_train, t_train, x_test, t_test, **options)


def assert_same_run(a, b):
    assert a.history == b.history                      # floats compared exactly
    assert a.batch_losses == b.batch_losses
    for key in a.network.params:
        assert np.array_equal(a.network.params[key], b.network.params[key]), key


@pytest.fixture(scope="module")
def reference():
    trainer = make_trainer()
    trainer.train()
    return trainer


def test_history_has_one_row_per_epoch(reference):
    h = reference.history
    assert set(h) == {"train_loss", "train_acc", "test_loss", "test_acc", "batch_loss"}
    assert all(len(v) == 2 for v in h.values())
    assert len(reference.batch_losses) == 2 * 4
    assert len(reference.epoch_seconds) == len(reference.images_per_second) == 2
    assert all(0 <= a <= 1 for a in h["train_acc"] + h["test_acc"])
    assert h["batch_loss"][0] == pytest.approx(np.mean(reference.batch_losses[:4]))
    # the last row is the finished network evaluated on the full sets
    loss, acc = reference.network.evaluate(reference.x_test, reference.t_test)
    assert (h["test_loss"][-1], h["test_acc"][-1]) == pytest.approx((loss, acc), rel=1e-12)
    assert h["train_loss"][-1] < h["train_loss"][0]


def test_same_seed_gives_the_same_bits(reference):
    again = make_trainer()
    again.train()
    assert_same_run(reference, again)


def test_another_seed_gives_another_batch_order(reference):
    other = make_trainer(seed=1)
    other.train()
    assert other.batch_losses != reference.batch_losses


@pytest.mark.parametrize("stop_after", [3, 4, 6])     # mid-epoch, on a boundary, epoch 2
def test_resume_equals_an_uninterrupted_run(reference, tmp_path, stop_after):
    ckpt = tmp_path / "ckpt.npz"
    first = make_trainer(checkpoint_path=ckpt)
    first.train(max_iterations=stop_after)
    assert first.iterations_done == stop_after and os.path.exists(ckpt)
    # a new process would build a fresh network (other initial weights) and trainer
    second = make_trainer(net_seed=99, checkpoint_path=ckpt)
    second.load_checkpoint()
    assert second.iterations_done == stop_after
    second.train()
    assert_same_run(reference, second)


def test_ctrl_c_stops_after_the_step_and_resumes_exactly(reference, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(checkpoint_path=ckpt)
    step = trainer.train_step
    calls = []

    def step_then_ctrl_c(x, t):
        loss = step(x, t)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)        # arrives while the trainer runs
        return loss

    trainer.train_step = step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt, match="stopped after 2 steps"):
        trainer.train()
    resumed = make_trainer(net_seed=7, checkpoint_path=ckpt).load_checkpoint()
    assert resumed.iterations_done == 2
    resumed.train()
    assert_same_run(reference, resumed)


def test_evaluate_sample_num_limits_the_evaluation():
    trainer = make_trainer(epochs=1, evaluate_sample_num_per_epoch=30)
    trainer.train()
    loss, acc = trainer.network.evaluate(trainer.x_train[:30], trainer.t_train[:30])
    assert trainer.history["train_acc"] == [acc]
    assert trainer.history["train_loss"][0] == pytest.approx(loss, rel=1e-12)


def test_progress_bar_and_epoch_lines(capsys):
    trainer = make_trainer(epochs=1, verbose=True)
    trainer.train()
    out, err = capsys.readouterr()
    assert "img_s=" in err and "loss=" in err          # tqdm draws on stderr
    assert "epoch 1: train acc" in out + err
    assert "final test accuracy" in out


def test_one_bar_per_epoch_and_an_evaluation_bar(capsys):
    trainer = make_trainer(epochs=2, verbose=True)
    trainer.train()
    _, err = capsys.readouterr()
    # each epoch's bar counts that epoch's 4 steps (its own ETA), not 8 steps in all
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "4/4" in err and "/8" not in err
    assert "evaluating" in err                          # 1 + 1 evaluation batches of 100
    assert trainer.prepare_seconds is not None


def test_history_does_not_depend_on_progress(reference):
    shown = make_trainer(verbose=True, progress=True)
    shown.train()
    assert_same_run(reference, shown)


def test_prepare_can_be_left_out():
    trainer = make_trainer(epochs=1, prepare=False)
    trainer.train()
    assert trainer.prepare_seconds is None and len(trainer.history["test_acc"]) == 1


def test_checkpoint_must_fit_the_trainer(tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    make_trainer(epochs=1, checkpoint_path=ckpt).train()
    with pytest.raises(ValueError, match="batches of"):
        make_trainer(mini_batch_size=20, checkpoint_path=ckpt).load_checkpoint()


def test_bad_data_is_refused_with_names():
    x_train, t_train, x_test, t_test = mnist_subset(20, 10)
    with pytest.raises(TypeError, match="x_train has dtype float64"):
        Trainer(small_net(), x_train.astype(np.float64), t_train, x_test, t_test)
    with pytest.raises(ValueError, match="t_test"):
        Trainer(small_net(), x_train, t_train, x_test, t_test[:5])
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(small_net(), x_train, t_train, x_test, t_test, optimizer="Nesterov")


def test_setup_share_is_setup_over_total():
    from fastconv.trainer import setup_share

    assert setup_share(3.0, 120.0) == pytest.approx(0.025)
    assert setup_share(27.0, 100.0) == pytest.approx(0.27)
    assert setup_share(0.0, 50.0) == 0.0
    assert setup_share(1.0, 0.0) == 0.0                 # a run that took no time
    assert setup_share(5.0, 4.0) == 1.0                 # clock granularity never gives > 100%


def test_train_reports_its_setup_time(reference, monkeypatch):
    from fastconv import trainer as trainer_module

    # setup = preparation + kernels compiled after it: 1 ms of compiling during the
    # epochs (a kernel first used after the preparation) is counted
    clock = iter([0.0, 0.0, 0.001])
    monkeypatch.setattr(trainer_module, "compile_seconds", lambda: next(clock))
    t = make_trainer(epochs=1)
    t.train()
    assert t.prepare_seconds is not None
    assert t.setup_seconds == pytest.approx(t.prepare_seconds + 0.001)
    assert t.train_seconds > t.prepare_seconds
    assert t.setup_share() == pytest.approx(t.setup_seconds / t.train_seconds)
    assert reference.setup_share() is not None and 0 <= reference.setup_share() <= 1
    assert make_trainer().setup_share() is None         # before train()
