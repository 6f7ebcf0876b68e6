"""PNG pictures of a training run (matplotlib, optional).

``fastconv train`` calls these to write, into its output folder:

* ``loss.png``: the training loss per iteration (and its moving average);
* ``accuracy.png``: train and validation accuracy per epoch;
* ``confusion.png``: the confusion matrix on the test set;
* ``filters.png``: the first layer's filters before and after training;
* ``examples.png``: test images with their true and predicted labels.

matplotlib is imported only inside the plotting functions, through its
object-oriented API (``matplotlib.figure.Figure``: no pyplot, no GUI
backend, no global state); ``have_matplotlib()`` says whether it is
installed. Files are written atomically. ``confusion_matrix`` needs only numpy.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from ._files import atomic_write


def have_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path, dpi=110):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    return path


def confusion_matrix(y_true, y_pred, num_classes):
    """counts[i, j] = number of examples of class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def plot_loss(loss_history, path, iterations_per_epoch=None, title="Training loss"):
    loss = np.asarray(loss_history, dtype=np.float64)
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    it = np.arange(1, loss.size + 1)
    ax.plot(it, loss, lw=0.6, alpha=0.45, label="loss per iteration")
    window = max(1, min(loss.size // 20, 200))
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(it[window - 1:], smooth, lw=1.6, label=f"moving average ({window} iterations)")
    if iterations_per_epoch:
        for e in range(iterations_per_epoch, loss.size + 1, iterations_per_epoch):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_accuracy(train_acc, val_acc, path, title="Accuracy per epoch"):
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    epochs = np.arange(1, len(train_acc) + 1)
    ax.plot(epochs, train_acc, "o-", label="train (sample)")
    val = [np.nan if v is None else v for v in val_acc]
    if not np.all(np.isnan(np.asarray(val, dtype=np.float64))):
        ax.plot(epochs, val, "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion(cm, class_names, path, title="Confusion matrix (test set)"):
    cm = np.asarray(cm)
    K = cm.shape[0]
    fig = _figure(1.5 + 0.62 * K, 1.2 + 0.55 * K)
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    frac = cm / np.maximum(rows, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(K), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(K), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: accuracy {acc:.4f}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, path)


def _filter_tiles(weights, input_shape=None, limit=64):
    """First-layer weights -> a list of (h, w) or (h, w, 3) images in [0, 1]."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:  # an fc layer: each column is an image of the input's shape
        if input_shape is None or int(np.prod(input_shape)) != w.shape[0]:
            return []
        w = w.T.reshape(-1, *input_shape)
    w = w[:limit]
    tiles = []
    for f in w:
        img = f.transpose(1, 2, 0) if f.shape[0] == 3 else f.mean(axis=0)
        lo, hi = img.min(), img.max()
        tiles.append((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
    return tiles


def plot_filters(before, after, path, input_shape=None, title="First-layer filters"):
    """Filters before (left) and after (right) training, each scaled to its own range."""
    panels = [("before training", _filter_tiles(before, input_shape)),
              ("after training", _filter_tiles(after, input_shape))]
    n = max(len(t) for _, t in panels)
    if n == 0:
        return None
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = _figure(2 * 0.6 * cols + 0.5, 0.6 * rows + 0.7)
    fig.suptitle(title)
    for sub, (label, tiles) in zip(fig.subfigures(1, 2), panels):
        sub.suptitle(label, fontsize=9)
        axes = sub.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < len(tiles):
                ax.imshow(tiles[k], cmap=None if tiles[k].ndim == 3 else "gray", interpolation="nearest")
    return _save(fig, path)


def plot_examples(images, y_true, y_pred, class_names, path, limit=32, title="Test images: true / predicted"):
    """A grid of images (N, C, H, W) uint8, titled true / predicted (red when wrong)."""
    n = min(limit, len(images))
    cols = min(8, max(n, 1))
    rows = int(np.ceil(n / cols))
    fig = _figure(1.45 * cols, 1.55 * rows + 0.4)
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        img = images[k]
        if img.shape[0] == 3:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(img[0], cmap="gray", interpolation="nearest")
        ok = y_true[k] == y_pred[k]
        ax.set_title(f"{class_names[y_true[k]]}\n{class_names[y_pred[k]]}", fontsize=7,
                     color="darkgreen" if ok else "red")
    return _save(fig, path)
