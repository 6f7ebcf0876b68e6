"""PNG pictures of a training run (matplotlib, optional).

``fastconv train`` calls these to write, into its output folder:

* ``loss.png``: the training loss per iteration (and its moving average), and the
  learning rate of each iteration;
* ``accuracy.png``: train and validation accuracy per epoch;
* ``confusion.png``: the confusion matrix on the test set;
* ``dataset.png``: 10 training images of each class, the class names as titles
  (``plot_class_grid``, the tutorials' first picture);
* ``filters.png``: the first layer's filters before and after training
  (``filters.gif``, the filters over training, is ``fastconv.apps.animation``'s);
* ``feature_maps.png``: what each layer makes of the first test image
  (``feature_maps`` computes, ``plot_feature_maps`` draws);
* ``examples.png``: test images with their true and predicted labels;
* ``augmented.png`` (with ``--augment``): a few training images and random augmentations
  of each, what the network sees (``plot_augmented``).

matplotlib is imported only inside the plotting functions, through its
object-oriented API (``matplotlib.figure.Figure``: no pyplot, no GUI
backend, no global state); ``have_matplotlib()`` says whether it is
installed. Files are written atomically. ``confusion_matrix`` needs only numpy.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from ..io.files import atomic_write


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


#: At most this many epoch boundaries are drawn on the loss plot (every k-th epoch beyond it).
MAX_EPOCH_LINES = 10


def _integer_ticks(axis, step=None):
    """Integer ticks on ``axis``: every ``step``, or as many as fit (one alone if need be: a
    single point gets the tick 1, not 0.96, 0.98, ... 1.04)."""
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    axis.set_major_locator(MultipleLocator(step) if step else MaxNLocator(integer=True, min_n_ticks=1))


def plot_loss(loss_history, path, iterations_per_epoch=None, title="Training loss", learning_rates=None):
    return _save(loss_figure(loss_history, iterations_per_epoch, title, learning_rates), path)


def loss_figure(loss_history, iterations_per_epoch=None, title="Training loss", learning_rates=None):
    """The loss per iteration (a marker on each when there are few), its moving average, and at
    most MAX_EPOCH_LINES epoch boundaries, with the epochs on a top axis; with ``learning_rates``
    (one per iteration), the learning rate on a right-hand axis."""
    loss = np.asarray(loss_history, dtype=np.float64)
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    it = np.arange(1, loss.size + 1)
    few = loss.size <= 50  # a short run: each iteration a visible point (one alone has no line)
    ax.plot(
        it,
        loss,
        lw=0.6 if not few else 1.0,
        alpha=0.45 if not few else 0.8,
        marker="o" if few else None,
        ms=3,
        label="loss per iteration",
    )
    window = max(1, min(loss.size // 20, 200))
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(it[window - 1 :], smooth, lw=1.6, label=f"moving average ({window} iterations)")
    if iterations_per_epoch and loss.size > iterations_per_epoch:
        epochs = loss.size // iterations_per_epoch
        step = math.ceil(epochs / MAX_EPOCH_LINES)
        for e in range(step, epochs + 1, step):
            ax.axvline(e * iterations_per_epoch, color="0.85", lw=0.8, zorder=0)
        top = ax.secondary_xaxis(
            "top", functions=(lambda i: i / iterations_per_epoch, lambda e: e * iterations_per_epoch)
        )
        top.set_xlabel("epoch")
        _integer_ticks(top.xaxis, step)
    ax.set_xlabel("iteration")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("loss")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if learning_rates is not None and len(learning_rates):
        lr = np.asarray(learning_rates, dtype=np.float64)[: loss.size]
        right = ax.twinx()
        (line,) = right.plot(np.arange(1, lr.size + 1), lr, color="tab:red", lw=1.2, ls="--", label="learning rate")
        right.set_ylabel("learning rate")
        right.set_ylim(bottom=0)
        handles, labels = handles + [line], labels + ["learning rate"]
    ax.legend(handles, labels)
    return fig


def plot_accuracy(train_acc, val_acc, path, title="Accuracy per epoch"):
    return _save(accuracy_figure(train_acc, val_acc, title), path)


def accuracy_figure(train_acc, val_acc, title="Accuracy per epoch"):
    """Train and validation accuracy per epoch, epoch 0 (before training) first, as the
    Solver's histories hold them, on integer epoch ticks."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    epochs = np.arange(len(train_acc))
    ax.plot(epochs, train_acc, "o-", label="train (sample)")
    val = [np.nan if v is None else v for v in val_acc]
    if not np.all(np.isnan(np.asarray(val, dtype=np.float64))):
        ax.plot(epochs, val, "s-", label="validation")
    ax.set_xlabel("epoch")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


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
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(K), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(K), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: accuracy {acc:.4f}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, path)


def filter_tiles(weights, input_shape=None, limit=64):
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
    panels = [
        ("before training", filter_tiles(before, input_shape)),
        ("after training", filter_tiles(after, input_shape)),
    ]
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


def _show(ax, img, cmap_gray="gray"):
    """Draw one image (C, H, W): RGB for 3 channels, else its first channel in ``cmap_gray``."""
    ax.set_axis_off()
    if img.shape[0] == 3:
        ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(img[0], cmap=cmap_gray, interpolation="nearest")


def class_examples(labels, num_classes, per_class=10):
    """Indices of the first ``per_class`` examples of each class: a list of ``num_classes``
    int arrays (shorter for a class with fewer examples)."""
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == k)[:per_class] for k in range(num_classes)]


def plot_class_grid(images, labels, class_names, path, per_class=10, title="Training images by class"):
    """``per_class`` images (N, C, H, W) of each class in a column, the class name above it
    (the first picture of the numpy tutorials): the first examples of each class in ``images``."""
    K = len(class_names)
    picks = class_examples(labels, K, per_class)
    fig = _figure(0.95 * K + 0.2, 0.95 * per_class + 0.7)
    fig.suptitle(title)
    axes = fig.subplots(per_class, K, squeeze=False)
    for k, idx in enumerate(picks):
        axes[0, k].set_title(class_names[k], fontsize=8)
        for r in range(per_class):
            axes[r, k].set_axis_off()
            if r < len(idx):
                _show(axes[r, k], images[idx[r]])
    return _save(fig, path)


def plot_augmented(
    images,
    augment,
    path,
    count=8,
    variants=7,
    seed=0,
    title="What the network sees: training images (left) and random augmentations",
):
    """A row per image for the first ``count`` of ``images`` (N, C, H, W): the image, then
    ``variants`` draws of ``augment`` (a ``fastconv.training.augment.Augment``) from a generator seeded
    with ``seed`` (not the Solver's: drawing a picture does not change the run)."""
    rng = np.random.default_rng(seed)
    picks = np.asarray(images[:count])
    fig = _figure(0.95 * (variants + 1) + 0.2, 0.95 * len(picks) + 0.7)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(len(picks), variants + 1, squeeze=False)
    shown = [picks] + [augment(picks, rng) for _ in range(variants)]
    for r in range(len(picks)):
        for c, batch in enumerate(shown):
            axes[r, c].set_axis_off()
            _show(axes[r, c], batch[r])
    axes[0, 0].set_title("original", fontsize=8)
    return _save(fig, path)


def feature_maps(model, image):
    """What each layer of ``model`` (a ``fastconv.models.Sequential``) makes of one input
    ``image`` (C, H, W), already prepared (float, the model's dtype), in test mode: a list of
    (layer token, output (C, H, W)) for the layers whose output is still an image; the layers
    run one by one, unfused."""
    from ..training.model_layers import format_layers

    out = np.asarray(image)[None]
    maps = []
    for spec, layer in zip(model.layer_specs, model.layers):
        out, _ = layer.forward(model, out, False)
        if out.ndim != 4:
            break
        maps.append((format_layers([spec]), out[0]))
    return maps


def plot_feature_maps(image, maps, path, limit=16, title="Feature maps of one test image"):
    """The input ``image`` (C, H, W) and, a row per layer, the first ``limit`` maps of each
    ``(name, output (C, H, W))`` in ``maps``, each map scaled to its own range. None without maps."""
    if not maps:
        return None
    cols = min(limit, max(m.shape[0] for _, m in maps))
    fig = _figure(max(0.75 * cols, 0.1 * len(title), 4.0) + 0.2, 0.95 * (len(maps) + 1) + 0.5)
    fig.suptitle(title)
    rows = fig.subfigures(len(maps) + 1, 1)
    head = rows[0]
    head.suptitle(f"input {image.shape[1]}x{image.shape[2]} (below: each map in its own colour range)", fontsize=8)
    _show(head.subplots(1, 1), image)
    for sub, (name, m) in zip(rows[1:], maps):
        shown = min(limit, m.shape[0])
        note = f"first {shown} of {m.shape[0]}" if shown < m.shape[0] else f"{m.shape[0]}"
        sub.suptitle(f"after {name}: {note} maps of {m.shape[1]}x{m.shape[2]}", fontsize=8)
        axes = sub.subplots(1, cols, squeeze=False)[0]
        for c, ax in enumerate(axes):
            ax.set_axis_off()
            if c < shown:
                ax.imshow(m[c], cmap="viridis", interpolation="nearest")
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
        _show(ax, images[k])
        ok = y_true[k] == y_pred[k]
        ax.set_title(
            f"{class_names[y_true[k]]}\n{class_names[y_pred[k]]}", fontsize=7, color="darkgreen" if ok else "red"
        )
    return _save(fig, path)
