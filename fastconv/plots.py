"""Pictures of a network as PNG files: first-layer filters, feature maps, training curves
(per-batch loss with its moving average, per-epoch loss and accuracy).

Needs matplotlib, imported only when a picture is drawn (``import fastconv``
does not load it). Figures are drawn on matplotlib's Agg canvas directly,
without pyplot, so nothing global (backend, open windows) is touched.

``tile_images`` builds the grid as a plain array (each tile scaled so its
minimum is black, 0, and its maximum white, 1), which is what gets drawn.
"""
import os

import numpy as np

from .functional import no_grad
from .layers import Dropout


def tile_images(maps, ncols=None, gap=1, scale="each"):
    """maps: (K, H, W) -> one grey image (rows*(H+gap)-gap, ncols*(W+gap)-gap) in [0, 1].

    scale "each": every tile on its own min..max; "all": one min..max for all.
    A constant tile becomes 0.5; gaps and unused cells are 0.5 (mid grey) too, so
    that both black and white pixels of a tile stand out against them.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (K, H, W), got shape {maps.shape}")
    if scale not in ("each", "all"):
        raise ValueError(f"scale must be 'each' or 'all', got {scale!r}")
    K, H, W = maps.shape
    ncols = ncols or int(np.ceil(np.sqrt(K)))
    nrows = -(-K // ncols)
    if scale == "each":
        lo = maps.min(axis=(1, 2), keepdims=True)
        hi = maps.max(axis=(1, 2), keepdims=True)
    else:
        lo, hi = maps.min(), maps.max()
    span = np.where(hi > lo, hi - lo, 1.0)
    tiles = np.where(hi > lo, (maps - lo) / span, 0.5)
    grid = np.full((nrows * (H + gap) - gap, ncols * (W + gap) - gap), 0.5)
    for k in range(K):
        r, c = divmod(k, ncols)
        grid[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = tiles[k]
    return grid


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _draw_grid(grid, title, path, inches_per_pixel=0.12):
    h, w = grid.shape
    fig = _figure(max(2.0, w * inches_per_pixel), max(2.0, h * inches_per_pixel) + 0.4)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.88))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_filters(W, path, title=None, ncols=None, channel=0):
    """Draw first-layer filters W: (FN, C, FH, FW) (channel ``channel``) as a grid,
    each filter's minimum black and maximum white. Returns the PNG path."""
    W = np.asarray(W)
    if W.ndim != 4:
        raise ValueError(f"W must be (FN, C, FH, FW), got shape {W.shape}")
    return _draw_grid(tile_images(W[:, channel], ncols), title, path, inches_per_pixel=0.15)


def plot_feature_maps(network, x, path, layer="Conv1", title=None, ncols=None):
    """Draw the output maps of ``layer`` for one image x: (C, H, W) or (1, C, H, W)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image (C, H, W) or (1, C, H, W), got {x.shape}")
    if layer not in network.layers:
        raise ValueError(f"network has no layer {layer!r}; layers: {list(network.layers)}")
    out = x
    # a picture of one image: keep nothing for a backward, and time no paths
    with no_grad():
        for name, lay in network.layers.items():
            out = _forward_on_last_path(lay, out)
            if name == layer:
                break
    if out.ndim != 4:
        raise ValueError(f"layer {layer!r} outputs shape {out.shape}, not feature maps")
    return _draw_grid(tile_images(out[0], ncols, gap=2), title or f"{layer} feature maps", path,
                      inches_per_pixel=0.05)


def _forward_on_last_path(layer, x):
    """layer.forward(x), on the path the layer ran last when its backend is "auto".

    One image is a new batch size, for which "auto" would time (and perhaps
    compile) every candidate path first: seconds, for a picture.
    """
    if isinstance(layer, Dropout):
        return layer.forward(x, False)
    backend = getattr(layer, "backend", None)
    if backend != "auto" or getattr(layer, "path", None) is None:
        return layer.forward(x)
    layer.backend = layer.path
    try:
        return layer.forward(x)
    finally:
        layer.backend = backend


def moving_average(values, window):
    """Trailing mean of the last ``window`` values at each point: (n,) -> (n,).

    The first window-1 points average what there is so far, so the curve starts
    at the first value instead of being cut.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    csum = np.concatenate(([0.0], np.cumsum(values)))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_history(history, path, title=None, batch_losses=None, window=None):
    """Draw training curves from Trainer.history (or a Trainer) as a PNG -> its path.

    Left: the loss. With ``batch_losses`` (every mini-batch loss, as
    ``Trainer.batch_losses``; taken from the trainer when one is passed) the
    per-batch losses are drawn faintly with their moving average over
    ``window`` batches (default: a tenth of an epoch, at least 1) on an epoch
    axis, and the per-epoch train/test losses as points at the end of each
    epoch. Right: train and test accuracy after each epoch.
    """
    if hasattr(history, "history") and hasattr(history, "batch_losses"):
        if batch_losses is None:
            batch_losses = history.batch_losses
        history = history.history
    epochs = np.arange(1, len(history["test_acc"]) + 1)
    if len(epochs) == 0:
        raise ValueError("history has no finished epoch to plot")
    fig = _figure(9, 3.5)
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if batch_losses is not None and len(batch_losses) > 0:
        losses = np.asarray(batch_losses, dtype=np.float64)
        # batch losses may run past the last finished epoch (a stopped run)
        per_epoch = max(1, len(losses) // len(epochs))
        if window is None:
            window = max(1, per_epoch // 10)
        x = np.arange(1, len(losses) + 1) / per_epoch
        ax_loss.plot(x, losses, lw=0.5, alpha=0.3, color="C0", label="batch")
        ax_loss.plot(x, moving_average(losses, window), lw=1.5, color="C0",
                     label=f"batch, mean of {window}")
        ax_loss.plot(epochs, history["train_loss"], "o", color="C2", label="train (epoch)")
        ax_loss.plot(epochs, history["test_loss"], "s", color="C1", label="test (epoch)")
    else:
        ax_loss.plot(epochs, history["train_loss"], "o-", label="train")
        ax_loss.plot(epochs, history["test_loss"], "s--", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_acc.plot(epochs, history["train_acc"], "o-", label="train")
    ax_acc.plot(epochs, history["test_acc"], "s--", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy after the epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
