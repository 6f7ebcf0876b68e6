"""Preprocessing: raw uint8 images (N, C, H, W) -> the float input of a model.

Its statistics (per-channel mean and std, or the mean image) are computed on
the training split (``Preprocessing.fit``), saved with the model
(``to_dict``/``from_dict``, in its JSON file) and applied again at prediction.
"""
from __future__ import annotations

import json

import numpy as np

__all__ = ["Preprocessing"]


class Preprocessing:
    """Raw uint8 images (N, C, H, W) -> the float input of a model.

    Modes (statistics from the training split, via ``fit``):

    * ``"channel"`` (default): ``(x / 255 - mean[c]) / std[c]`` per channel;
    * ``"mean_image"``: ``x / 255 - mean_image`` (CS231n's mean image);
    * ``"scale"``: ``x / 255``.

    The statistics go into the model's JSON file (``to_dict``/``from_dict``),
    so prediction applies exactly what training did.
    """

    MODES = ("channel", "mean_image", "scale")

    def __init__(self, mode="channel", input_shape=None, mean=None, std=None, mean_image=None):
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, dtype=np.float64)
        self._validate()

    def _validate(self):
        shape = self.input_shape
        if shape is None or len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"preprocessing input_shape must be (C, H, W), got {shape}")
        C = shape[0]
        if self.mode == "channel":
            for name, a in (("mean", self.mean), ("std", self.std)):
                if a is None or a.shape != (C,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"preprocessing {name} must be {C} finite numbers")
            if np.any(self.std <= 0):
                raise ValueError("preprocessing std must be positive")
        if self.mode == "mean_image":
            a = self.mean_image
            if a is None or a.shape != shape or not np.all(np.isfinite(a)):
                raise ValueError(f"preprocessing mean_image must be a finite array of shape {shape}")

    @classmethod
    def fit(cls, images, mode="channel", eps=1e-8, chunk=4096):
        """Statistics of uint8 training images (N, C, H, W), in float64, chunk by chunk."""
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be an array (N, C, H, W) with N >= 1, got {getattr(images, 'shape', images)}")
        N, C = images.shape[:2]
        if mode == "scale":
            return cls("scale", images.shape[1:])
        total = np.zeros(images.shape[1:], dtype=np.float64)
        for i in range(0, N, chunk):
            total += images[i:i + chunk].sum(axis=0, dtype=np.float64)
        mean_image = total / (255.0 * N)
        if mode == "mean_image":
            return cls("mean_image", images.shape[1:], mean_image=mean_image)
        mean = mean_image.mean(axis=(1, 2))
        sq = np.zeros(C, dtype=np.float64)
        for i in range(0, N, chunk):
            x = images[i:i + chunk].astype(np.float64) / 255.0 - mean.reshape(1, C, 1, 1)
            sq += np.einsum("nchw,nchw->c", x, x)
        std = np.sqrt(sq / (N * images.shape[2] * images.shape[3])) + eps
        return cls("channel", images.shape[1:], mean=mean, std=std)

    def __call__(self, images, dtype=np.float32):
        """Apply to images (N, C, H, W) of any real dtype; returns ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if not isinstance(images, np.ndarray) or images.shape[1:] != self.input_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        if images.dtype.kind not in "uif":
            raise TypeError(f"images must be a real array, got {images.dtype}")
        x = images.astype(dtype)
        if self.mode == "channel":
            C = self.input_shape[0]
            scale = (1.0 / (255.0 * self.std)).astype(dtype).reshape(1, C, 1, 1)
            shift = (-self.mean / self.std).astype(dtype).reshape(1, C, 1, 1)
            x *= scale
            x += shift
        elif self.mode == "mean_image":
            x *= dtype.type(1 / 255.0)
            x -= self.mean_image.astype(dtype)
        else:
            x *= dtype.type(1 / 255.0)
        return x

    def to_dict(self):
        d = {"mode": self.mode, "input_shape": list(self.input_shape)}
        if self.mode == "channel":
            d["mean"], d["std"] = self.mean.tolist(), self.std.tolist()
        elif self.mode == "mean_image":
            d["mean_image"] = self.mean_image.tolist()
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"mode", "input_shape", "mean", "std", "mean_image"}
        if unknown:
            raise ValueError(f"preprocessing has unknown keys {sorted(unknown)}")
        try:
            return cls(d.get("mode"), d.get("input_shape"), d.get("mean"), d.get("std"), d.get("mean_image"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid preprocessing: {exc}") from None

    def __repr__(self):
        return f"Preprocessing({json.dumps({k: v for k, v in self.to_dict().items() if k != 'mean_image'})})"
