"""The model behind ``fastconv serve``: request bodies -> the answers of ``POST /predict`` and ``GET /model``.

``ModelService(run_dir)`` loads the model once, as ``fastconv predict`` does
(``model_state.load_prediction_model``), and answers from it:

* ``predict(body)``: the bytes of a PNG or JPEG image of exactly the model's input size ->
  ``{"predictions": [...], "feature_maps": ...}``; the image is decoded by ``io.inputs.read_image``
  and classified by ``apps.predict.class_probabilities``, the functions of ``fastconv predict``, so
  the answer is ``fastconv predict``'s on the same file, to the last bit.
* ``describe()``: the architecture, the input shape, the class names, the test accuracy recorded in
  the run's ``history.json`` (None when it recorded none).

A bad image is a ``BadImage`` (a ValueError whose message the client may read). Nothing here keeps
state between calls: the test-mode forward pass reads the model and writes nothing into it, so one
service answers any number of threads at once.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from ..io.files import read_json
from ..io.inputs import check_image_size, read_image
from ..training.model_layers import Conv, format_layers
from ..training.model_state import load_prediction_model
from .predict import class_probabilities

#: Formats accepted from a client: the two a browser makes; Pillow's other decoders stay unreachable.
FORMATS = ("PNG", "JPEG")
#: Most classes listed in an answer, most likely first.
TOP_CLASSES = 10
#: Most first-layer feature maps in an answer (a layer may have hundreds).
MAX_FEATURE_MAPS = 64


class BadImage(ValueError):
    """The request's image cannot be classified; the message says why, for the client."""


def body_limit(input_shape):
    """Most bytes a request body may have: 64 KiB (a PNG or JPEG's headers and metadata) plus four
    bytes per input value, more than any PNG or JPEG of the model's input size needs."""
    C, H, W = input_shape
    return (64 << 10) + 4 * C * H * W


class _Upload(io.BytesIO):
    """A request body as a file for Pillow, named in the messages of ``read_image``."""

    NAME = "the uploaded image"

    def __str__(self):
        return self.NAME


def _check_header(body, shape):
    """Refuse anything but a PNG or JPEG whose header declares the model's input size, before any
    pixel is decoded (a decompression bomb declares a huge size in a small file); the size limit of
    ``fastconv predict`` (``io.inputs.image_pixel_limit``) first, then the exact size."""
    from PIL import Image

    C, H, W = shape
    try:
        with Image.open(_Upload(body), formats=FORMATS) as img:
            size = img.size
    except Image.DecompressionBombError as exc:
        raise BadImage(f"refused: a decompression bomb ({exc})") from None
    except Exception:  # noqa: BLE001  (any decoder failure is the client's file: a 400)
        raise BadImage(f"not a PNG or JPEG image ({len(body)} bytes)") from None
    try:
        check_image_size(size, shape, _Upload.NAME)
    except ValueError as exc:
        raise BadImage(str(exc)) from None
    if size != (W, H):
        raise BadImage(
            f"the image is {size[0]}x{size[1]} pixels; the model takes {W}x{H} ({'grey' if C == 1 else 'colour'})"
        )


def decode(body, shape):
    """The PNG or JPEG ``body`` as a batch (1, C, H, W) of uint8, as ``fastconv predict`` reads a file."""
    _check_header(body, shape)
    try:
        batch, _ = read_image(_Upload(body), shape)
    except ValueError as exc:
        raise BadImage(str(exc)) from None
    return batch


# Anchors of the maps' palette, dark to light (an inferno-like ramp: dark is low, yellow is high).
_PALETTE_ANCHORS = np.array(
    [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ],
    dtype=np.float64,
)


def _palette():
    """The 256 colours of the feature maps, interpolated between ``_PALETTE_ANCHORS``, flat for Pillow."""
    at = np.linspace(0, len(_PALETTE_ANCHORS) - 1, 256)
    rgb = [np.interp(at, np.arange(len(_PALETTE_ANCHORS)), _PALETTE_ANCHORS[:, c]) for c in range(3)]
    return np.round(np.stack(rgb, axis=1)).astype(np.uint8).ravel().tolist()


_PALETTE = _palette()


def _png_data_url(levels):
    """A 2-D uint8 array as a palette PNG data URL."""
    from PIL import Image

    img = Image.frombytes("P", (levels.shape[1], levels.shape[0]), np.ascontiguousarray(levels).tobytes())
    img.putpalette(_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def feature_map_pictures(maps):
    """(F, H, W) float maps -> PNG data URLs, each map scaled from its own min (dark) to max (light);
    a constant map is all dark."""
    maps = maps.astype(np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    levels = np.where(span > 0, (maps - low) * (255.0 / np.where(span > 0, span, 1.0)), 0.0)
    return [_png_data_url(np.round(m).astype(np.uint8)) for m in levels]


class ModelService:
    """A trained model, loaded once from ``run_dir``, answering ``predict`` and ``describe``."""

    def __init__(self, run_dir, impl="fast"):
        self.run_dir = Path(run_dir)
        self.model, self.class_names = load_prediction_model(self.run_dir, impl=impl)
        self.max_body_bytes = body_limit(self.model.input_shape)
        self.history = self._history()

    def _history(self):
        """The run's history.json as a dict, or {} when the folder has none or it is unreadable
        (a model copied without its history still serves)."""
        path = self.run_dir / "history.json"
        if not path.is_file():
            return {}
        try:
            history = read_json(path, "training history")
        except (OSError, ValueError):
            return {}
        return history if isinstance(history, dict) else {}

    def describe(self):
        """The answer of ``GET /model``."""
        model = self.model
        accuracy = self.history.get("test_accuracy")
        return {
            "architecture": model.describe(),
            "layers": format_layers(model.layer_specs),
            "input_shape": list(model.input_shape),
            "class_names": list(self.class_names),
            "outputs": "probabilities" if model.loss_type == "softmax" else "scores",
            "test_accuracy": accuracy if isinstance(accuracy, (int, float)) else None,
            "dataset": self.history.get("dataset") if isinstance(self.history.get("dataset"), str) else None,
            "first_layer": format_layers(model.layer_specs[:1]),
            "max_body_bytes": self.max_body_bytes,
        }

    def predict(self, body):
        """The answer of ``POST /predict`` for the image bytes ``body`` (BadImage if they are not one)."""
        batch = decode(body, self.model.input_shape)
        probs = class_probabilities(self.model, batch)[0]
        key = "probability" if self.model.loss_type == "softmax" else "score"
        order = np.argsort(-probs, kind="stable")[:TOP_CLASSES]  # the order `fastconv predict` lists
        return {
            "predictions": [{"class": self.class_names[k], "index": int(k), key: float(probs[k])} for k in order],
            "feature_maps": self.feature_maps(batch),
        }

    def feature_maps(self, batch):
        """The first layer's output for one raw image (1, C, H, W) as pictures, or None when the first
        layer is not a convolution (a fully connected net has no maps to show)."""
        model = self.model
        first = model.layers[0]
        if not isinstance(first, Conv):
            return None
        out, _ = first.forward(model, model.prepare(batch), False)
        shown = out[0, :MAX_FEATURE_MAPS]
        return {
            "layer": format_layers(model.layer_specs[:1]),
            "shape": list(out.shape[1:]),
            "shown": len(shown),
            "scaling": "each map from its own minimum (dark) to its maximum (light)",
            "images": feature_map_pictures(shown),
        }
