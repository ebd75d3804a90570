"""Plots: the filter grid as numbers (min black, max white), PNG files, lazy imports."""
import subprocess

import numpy as np
import pytest

from fastconv import SimpleConvNet
from fastconv.plots import (moving_average, plot_feature_maps, plot_filters, plot_history,
                            tile_images)
from support import PYTHON

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tile_images_scales_each_tile_to_black_and_white():
    maps = np.stack([np.arange(4.0).reshape(2, 2), -5 * np.eye(2), np.full((2, 2), 7.0)])
    grid = tile_images(maps, ncols=2, gap=1)
    assert grid.shape == (2 * 3 - 1, 2 * 3 - 1)
    np.testing.assert_array_equal(grid[0:2, 0:2], [[0, 1 / 3], [2 / 3, 1]])
    np.testing.assert_array_equal(grid[0:2, 3:5], [[0, 1], [1, 0]])   # -5 is the minimum
    np.testing.assert_array_equal(grid[3:5, 0:2], 0.5)                # constant tile
    assert grid[2, 0] == grid[3:5, 3:5].min() == 0.5                  # gap and empty cell


def test_tile_images_with_one_scale_for_all():
    maps = np.stack([np.zeros((2, 2)), np.full((2, 2), 4.0)])
    grid = tile_images(maps, ncols=2, gap=0, scale="all")
    np.testing.assert_array_equal(grid, [[0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="scale"):
        tile_images(maps, scale="some")
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        tile_images(np.zeros((2, 2)))


def read_png(path):
    from matplotlib.image import imread

    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    return imread(path)


def test_filters_png_has_black_and_white_pixels(tmp_path):
    W = np.random.default_rng(0).standard_normal((30, 1, 5, 5)).astype(np.float32)
    image = read_png(plot_filters(W, tmp_path / "f.png"))     # no title: no black text
    grey = image[..., :3].mean(axis=2)
    # the page is white, so look for white inside the box spanned by the black pixels
    rows, cols = np.nonzero(grey < 0.01)
    assert rows.size > 0
    box = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (box > 0.99).any()


def test_feature_maps_and_curves(tmp_path):
    net = SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4}, seed=0)
    x = np.random.default_rng(1).random((1, 12, 12)).astype(np.float32)
    read_png(plot_feature_maps(net, x, tmp_path / "maps.png"))
    read_png(plot_feature_maps(net, x[None], tmp_path / "relu.png", layer="Relu1"))
    with pytest.raises(ValueError, match="no layer 'Conv9'"):
        plot_feature_maps(net, x, tmp_path / "x.png", layer="Conv9")
    with pytest.raises(ValueError, match="not feature maps"):
        plot_feature_maps(net, x, tmp_path / "x.png", layer="Affine1")
    history = {"train_loss": [1.0, 0.5], "test_loss": [1.1, 0.6], "train_acc": [0.7, 0.9],
               "test_acc": [0.68, 0.88]}
    read_png(plot_history(history, tmp_path / "curves.png", "run"))
    with pytest.raises(ValueError, match="no finished epoch"):
        plot_history({k: [] for k in history}, tmp_path / "c.png")


def test_feature_maps_of_one_image_run_where_the_layers_ran_without_timing(tmp_path, monkeypatch):
    # "auto" layers that ran on a batch: the one-image forward of the picture is a
    # new batch size, but it reuses their paths instead of timing candidates
    from fastconv import tuner

    net = SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4}, seed=0)
    x = np.random.default_rng(2).random((5, 1, 12, 12)).astype(np.float32)
    decided = []

    def decide(spec):
        decided.append(spec.x_shape[0])
        return tuner.Decision("naive", "chosen by this test", "static", tuner.spec_key(spec))

    monkeypatch.setattr(tuner, "decide_spec", decide)
    monkeypatch.setattr(tuner, "_by_spec", {})
    scores = net.predict(x)
    assert decided == [5, 5] and net.layers["Conv1"].path == "naive"
    read_png(plot_feature_maps(net, x[0], tmp_path / "maps.png"))
    assert decided == [5, 5]                    # nothing decided for the batch of one
    assert net.layers["Conv1"].backend == "auto"
    np.testing.assert_array_equal(net.predict(x), scores)


def test_moving_average_is_a_trailing_mean():
    np.testing.assert_allclose(moving_average([1.0, 2.0, 3.0, 4.0], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([4.0, 0.0, 2.0], 5), [4.0, 2.0, 2.0])
    np.testing.assert_allclose(moving_average([3.0, 5.0], 1), [3.0, 5.0])
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)


def test_curves_with_batch_losses(tmp_path):
    history = {"train_loss": [1.0, 0.5], "test_loss": [1.1, 0.6], "train_acc": [0.7, 0.9],
               "test_acc": [0.68, 0.88], "batch_loss": [1.2, 0.7]}
    losses = list(np.linspace(2.3, 0.4, 40) + 0.1 * np.sin(np.arange(40)))
    plain = read_png(plot_history(history, tmp_path / "plain.png"))
    drawn = read_png(plot_history(history, tmp_path / "batches.png", "run", batch_losses=losses))
    assert drawn.shape == plain.shape and not np.array_equal(drawn, plain)

    class Trained:                         # what plot_history reads from a Trainer
        pass

    trained = Trained()
    trained.history, trained.batch_losses = history, losses
    from_trainer = read_png(plot_history(trained, tmp_path / "trainer.png", "run"))
    np.testing.assert_array_equal(from_trainer, drawn)


def test_import_fastconv_loads_neither_matplotlib_nor_tqdm():
    code = ("import sys, fastconv; "
            "print(sorted(m for m in ('matplotlib', 'tqdm', 'torch') if m in sys.modules))")
    out = subprocess.run([*PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
