"""The first layer's filters over training, as an animated GIF (Pillow, optional).

``FilterFrames`` takes a frame of the filters every ``every`` iterations while a Solver trains
(``Solver(..., callbacks=[frames])``, or ``solver.on_iteration = frames``) and keeps at most
``max_frames`` of them: when one more would not fit, every second frame is dropped and
``every`` doubles, so a run of any length gives an animation of bounded size that spans the
whole run. A frame is stored as the small uint8 grid it
shows (the filters of ``fastconv.apps.plots``' filter picture, each scaled to its own range), not as
weights. ``write_gif`` writes them, each captioned with its iteration, atomically.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine.checks import check_int
from ..io.files import atomic_write
from .plots import filter_tiles

__all__ = ["FilterFrames", "first_weights", "frame_interval"]

#: Pixels a small filter tile is enlarged to at least (a 7x7 filter is drawn 49x49); of tiles of
#: _FULL_SIZE pixels or more (an fc layer's 28x28 images) the first _LARGE_TILES are drawn as they
#: are: their noise-like pixels barely compress, and a GIF of 64 of them would take megabytes.
_TILE_PIXELS = 48
_FULL_SIZE = 16
_LARGE_TILES = 16
_GAP = 3
_CAPTION = 18


def frame_interval(total_iterations, max_frames=100):
    """Iterations between two frames so that a run of ``total_iterations`` gives at most
    ``max_frames`` frames after the first."""
    total_iterations = check_int(total_iterations, "total_iterations", 0)
    max_frames = check_int(max_frames, "max_frames", 1)
    return max(1, math.ceil(total_iterations / max_frames))


def _grid(tiles):
    """The tiles (each (h, w) or (h, w, 3) in [0, 1]) side by side as one uint8 image, small ones
    enlarged by an integer factor to about _TILE_PIXELS, on a white background."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    k = 1 if max(h, w) >= _FULL_SIZE else math.ceil(_TILE_PIXELS / max(h, w))
    rgb = tiles[0].ndim == 3
    out = np.full(
        (rows * (h * k + _GAP) + _GAP, cols * (w * k + _GAP) + _GAP) + ((3,) if rgb else ()), 255, dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = _GAP + r * (h * k + _GAP), _GAP + c * (w * k + _GAP)
        big = np.kron(tile, np.ones((k, k) + ((1,) if rgb else ())))
        out[y : y + h * k, x : x + w * k] = np.rint(big * 255).astype(np.uint8)
    return out


def first_weights(model):
    """The first layer's weights of a fastconv model (``first_layer_weights``), or of a tutorial
    model (its ``params["W1"]``, CS231n's name, or ``params["w1"]``, the numpy tutorials')."""
    if hasattr(model, "first_layer_weights"):
        return model.first_layer_weights()
    for name in ("W1", "w1"):
        if name in model.params:
            return model.params[name]
    raise ValueError("the model has no first_layer_weights() and no params['W1'] or params['w1']")


class FilterFrames:
    """Frames of a model's first-layer filters (see the module docstring).

    ``frames(solver)`` (as ``solver.on_iteration``) records a frame when the solver's iteration
    count is a multiple of ``every``, or is ``last`` (the run's final iteration, so that the
    animation ends on the trained filters); ``record(iteration, weights)`` records one directly.
    ``input_shape`` lets an fc first layer show its weights as images."""

    def __init__(self, every=1, max_frames=100, input_shape=None, iterations_per_epoch=None, last=None):
        self.every = check_int(every, "every", 1)
        self.last = last
        self.max_frames = check_int(max_frames, "max_frames", 2)
        self.input_shape = input_shape
        self.iterations_per_epoch = iterations_per_epoch
        self.frames = []  # (iteration, uint8 grid)

    def __call__(self, solver):
        iteration = len(solver.loss_history)
        if iteration % self.every == 0 or iteration == self.last:
            self.record(iteration, first_weights(solver.model))

    def on_batch_end(self, solver):  # a Solver callback (fastconv.callbacks)
        self(solver)

    def record(self, iteration, weights):
        tiles = filter_tiles(weights, self.input_shape)
        if not tiles:
            return
        if max(tiles[0].shape[:2]) >= _FULL_SIZE:
            tiles = tiles[:_LARGE_TILES]
        if self.frames and self.frames[-1][0] == iteration:
            return
        self.frames.append((int(iteration), _grid(tiles)))
        if len(self.frames) > self.max_frames:  # keep every second frame, at twice the interval
            self.every *= 2
            first, newest = self.frames[0], self.frames[-1]
            self.frames = [f for f in self.frames if f[0] % self.every == 0 or f is first or f is newest]

    def _caption(self, iteration):
        if self.iterations_per_epoch:
            return f"iteration {iteration} (epoch {iteration / self.iterations_per_epoch:.2f})"
        return f"iteration {iteration}"

    def write_gif(self, path, frame_ms=120, last_ms=1500):
        """Write the frames as a looping GIF at ``path`` (atomically); None when there are
        none (a first layer that shows no image), else the path."""
        if not self.frames:
            return None
        from PIL import Image, ImageDraw, ImageFont

        try:
            font = ImageFont.load_default(size=12)
        except TypeError:  # Pillow < 10.1: the fixed bitmap font
            font = ImageFont.load_default()
        images = []
        for iteration, grid in self.frames:
            mode = "RGB" if grid.ndim == 3 else "L"
            canvas = Image.new(mode, (max(grid.shape[1], 150), grid.shape[0] + _CAPTION), "white")
            canvas.paste(Image.fromarray(grid), (0, _CAPTION))
            ImageDraw.Draw(canvas).text((3, 3), self._caption(iteration), fill="black", font=font)
            images.append(canvas)
        durations = [frame_ms] * (len(images) - 1) + [last_ms]
        atomic_write(
            path,
            lambda f: images[0].save(
                f, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
            ),
        )
        return path
