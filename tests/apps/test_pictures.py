"""The pictures of a run: the class grid, feature maps, the filters GIF and the loss/accuracy plots."""

import numpy as np
import pytest

from fastconv.apps import animation, plots
from fastconv.models import build_model
from fastconv.solver import Solver

needs_matplotlib = pytest.mark.skipif(not plots.have_matplotlib(), reason="matplotlib is not installed")


def _png_pixels(path):
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def test_class_examples_are_the_first_of_each_class():
    labels = np.array([2, 0, 2, 1, 2, 0, 2])
    picks = plots.class_examples(labels, 4, per_class=2)
    assert [p.tolist() for p in picks] == [[1, 5], [3], [0, 2], []]


@needs_matplotlib
def test_class_grid_and_a_class_without_examples(tmp_path, rng):
    images = rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(30) % 3  # class 3 has no image: its column stays blank
    path = plots.plot_class_grid(images, labels, ["a", "b", "c", "d"], tmp_path / "grid.png", per_class=4)
    assert _png_pixels(path).shape[2] == 3


@needs_matplotlib
def test_one_iteration_loss_is_drawn():
    """A single loss value is a visible marker (a line through one point draws nothing)."""
    fig = plots.loss_figure([2.3], iterations_per_epoch=1)
    line = fig.axes[0].lines[0]
    assert line.get_marker() == "o" and line.get_xdata().tolist() == [1]
    many = plots.loss_figure(np.linspace(2, 1, 500), iterations_per_epoch=10)
    assert many.axes[0].lines[0].get_marker() in ("None", None, "")


@needs_matplotlib
def test_one_point_loss_png_has_its_marker(tmp_path):
    px = _png_pixels(plots.plot_loss([2.3], tmp_path / "loss.png"))
    blue = np.abs(px - np.array([31, 119, 180])).sum(axis=2) < 60  # matplotlib's first colour
    assert blue.sum() > 20  # the marker (the legend's sample adds a few more)


@needs_matplotlib
@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_accuracy_ticks_are_whole_epochs(epochs):
    fig = plots.accuracy_figure([0.5] * epochs, [0.4] * epochs)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown), shown


@needs_matplotlib
@pytest.mark.parametrize("epochs, lines", [(3, 3), (10, 10), (50, 10), (51, 8)])
def test_epoch_lines_are_bounded(epochs, lines):
    fig = plots.loss_figure(np.linspace(2, 1, 4 * epochs), iterations_per_epoch=4)
    vertical = [ln for ln in fig.axes[0].lines if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2]
    assert len(vertical) == lines <= plots.MAX_EPOCH_LINES


def _small_model(rng, input_shape=(1, 12, 12)):
    return build_model("conv4x3-relu-maxpool2-conv6x3-bn-relu-fc8-relu-fc", input_shape, 3, dtype="float64", seed=1)


def test_feature_maps_are_each_layers_output(rng):
    model = _small_model(rng)
    x = rng.standard_normal((1, 12, 12))
    maps = plots.feature_maps(model, x)
    assert [name for name, _ in maps] == ["conv4x3", "relu", "maxpool2", "conv6x3", "bn", "relu"]
    assert [m.shape for _, m in maps] == [(4, 12, 12)] * 2 + [(4, 6, 6)] + [(6, 6, 6)] * 3
    conv, _ = model.layer_module.conv_forward(x[None], model.params["W1"], model.params["b1"], pad=1)
    np.testing.assert_allclose(maps[0][1], conv[0], rtol=1e-12)
    np.testing.assert_array_equal(maps[1][1], np.maximum(conv[0], 0))
    # the layers run unfused: maxpool2's maps are the 2x2 maxima of relu's
    pooled = np.maximum(maps[0][1], 0).reshape(4, 6, 2, 6, 2).max(axis=(2, 4))
    np.testing.assert_allclose(maps[2][1], pooled, rtol=1e-12)


@needs_matplotlib
def test_feature_maps_picture(tmp_path, rng):
    model = _small_model(rng)
    image = rng.integers(0, 256, (1, 12, 12), dtype=np.uint8)
    path = plots.plot_feature_maps(image, plots.feature_maps(model, image / 255.0), tmp_path / "maps.png", limit=3)
    assert _png_pixels(path).ndim == 3
    assert plots.plot_feature_maps(image, [], tmp_path / "none.png") is None  # an fc net has no maps
    assert not (tmp_path / "none.png").exists()


def test_frame_interval_bounds_the_frames():
    assert animation.frame_interval(0) == 1 and animation.frame_interval(100) == 1
    assert animation.frame_interval(101) == 2 and animation.frame_interval(10_000, 50) == 200
    with pytest.raises(ValueError, match="max_frames"):
        animation.frame_interval(10, 0)


class _FakeSolver:
    def __init__(self, model):
        self.model, self.loss_history = model, []


@pytest.mark.parametrize("every", [1, 3, 7])
def test_filter_frames_stay_bounded_and_span_the_run(rng, every):
    model = build_model("conv5x3-fc", (1, 6, 6), 3, seed=0)
    solver = _FakeSolver(model)
    frames = animation.FilterFrames(every=every, max_frames=10, last=1001)
    frames.record(0, model.first_layer_weights())
    for _ in range(1, 1002):
        solver.loss_history.append(0.0)
        frames(solver)
        assert len(frames.frames) <= 10
    its = [i for i, _ in frames.frames]
    assert its[0] == 0 and its[-1] == 1001 and its == sorted(its)  # from the start to the last iteration
    assert all(i % frames.every == 0 for i in its[:-1]) and len(its) >= 5
    grid = frames.frames[0][1]
    assert grid.dtype == np.uint8 and grid.ndim == 2  # one channel: a grey grid
    assert grid.shape == (2 * (48 + 3) + 3, 3 * (48 + 3) + 3)  # 5 filters of 3x3, each 16 times larger
    with pytest.raises(ValueError, match="every"):
        animation.FilterFrames(every=0)


def test_filter_frames_of_rgb_and_fc_first_layers(rng):
    rgb = animation.FilterFrames()
    rgb.record(0, rng.standard_normal((4, 3, 5, 5)))
    assert rgb.frames[0][1].ndim == 3
    fc = animation.FilterFrames(input_shape=(1, 4, 4))
    fc.record(0, rng.standard_normal((16, 7)))  # an fc layer: each column an image
    assert fc.frames[0][1].ndim == 2
    mnist = animation.FilterFrames(input_shape=(1, 28, 28))
    mnist.record(0, rng.standard_normal((784, 100)))  # the first 16 images of 28x28, not enlarged
    assert mnist.frames[0][1].shape == (4 * (28 + 3) + 3,) * 2
    odd = animation.FilterFrames()
    odd.record(0, rng.standard_normal((15, 7)))  # columns that are no image of the input: no frame
    assert odd.frames == [] and odd.write_gif("never.gif") is None


def test_solver_calls_on_iteration_after_each_update(rng):
    model = build_model("fc", (1, 4, 4), 3, dtype="float64", seed=0)
    X = rng.standard_normal((20, 1, 4, 4))
    y = rng.integers(0, 3, 20)
    solver = Solver(model, {"X_train": X, "y_train": y}, batch_size=5, num_epochs=2, verbose=False)
    seen = []
    solver.on_iteration = lambda s: seen.append((len(s.loss_history), s.model.params["W1"].copy()))
    solver.train()
    assert [i for i, _ in seen] == list(range(1, 9))
    assert not np.array_equal(seen[0][1], seen[1][1])  # taken after each update


def test_filters_gif(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    frames = animation.FilterFrames(every=2, max_frames=8, iterations_per_epoch=10)
    for it in range(0, 40, 2):
        frames.record(it, rng.standard_normal((6, 1, 7, 7)))
    path = frames.write_gif(tmp_path / "filters.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(frames.frames) <= 8
        assert gif.info.get("loop") == 0
        # 6 filters of 7x7 enlarged 7 times, 3 x 2 with 3-pixel gaps, under an 18-pixel caption
        assert gif.size == (max(3 * (49 + 3) + 3, 150), 2 * (49 + 3) + 3 + 18)


class _TutorialNet:
    """A CS231n-style model: params and loss(X, y=None) only; its first conv weights are W1."""

    def __init__(self, rng):
        self.params = {"W1": rng.standard_normal((3, 1, 3, 3)) * 0.1, "W2": rng.standard_normal((3 * 16, 2)) * 0.1}

    def loss(self, X, y=None):
        from fastconv import fast

        h, cache = fast.conv_forward(X, self.params["W1"], None, pad=1)
        scores = h.reshape(len(X), -1) @ self.params["W2"]
        if y is None:
            return scores
        loss, dscores = fast.softmax_loss(scores, y)
        dh = (dscores @ self.params["W2"].T).reshape(h.shape)
        return loss, {"W1": fast.conv_backward(dh, cache)[1], "W2": h.reshape(len(X), -1).T @ dscores}


def test_filter_frames_of_a_tutorial_model_trained_by_the_solver(rng):
    model = _TutorialNet(rng)
    X, y = rng.standard_normal((12, 1, 4, 4)), rng.integers(0, 2, 12)
    solver = Solver(model, {"X_train": X, "y_train": y}, batch_size=4, num_epochs=2, verbose=False)
    frames = animation.FilterFrames(every=2, last=6)
    solver.on_iteration = frames
    solver.train()
    assert [i for i, _ in frames.frames] == [2, 4, 6]
    with pytest.raises(ValueError, match="no first_layer_weights"):
        animation.first_weights(type("M", (), {"params": {"w": np.zeros(1)}})())
