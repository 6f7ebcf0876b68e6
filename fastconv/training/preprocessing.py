"""Preprocessing: raw images (N, C, H, W), or channels-last (N, H, W, C), -> the float input of a model.

Its statistics (per-channel mean and std, the mean image, or the mean and std image) are computed
on the training split (``Preprocessing.fit``), saved with the model (``to_dict``/``from_dict``, in
its JSON file) and applied again at prediction.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["LAYOUTS", "Preprocessing", "to_nchw"]


#: Smallest std accepted, float32's smallest normal number: a smaller one is subnormal in float32,
#: and soon after 1 / (255 * std) overflows it (1e-320 gives inf inputs).
_STD_MIN = float(np.finfo(np.float32).tiny)

#: The floor of a pixel's std in mode "pixel": one grey level. A pixel that never changes (MNIST's
#: borders) then comes out 0, and one that changes in a single image is not blown up by 1 / std.
PIXEL_STD_FLOOR = 1.0 / 255.0

#: The memory layouts images may come in: the models' (N, C, H, W), or channels-last (N, H, W, C),
#: as the tutorials hold CIFAR-10 before they transpose it. Never guessed: the caller says which.
LAYOUTS = ("NCHW", "NHWC")


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def to_nchw(images, layout="NCHW"):
    """``images`` (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"`` (then a transposed view,
    no copy), as (N, C, H, W)."""
    _check_layout(layout)
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(
            f"images must be an array ({', '.join(layout)}), got {getattr(images, 'shape', type(images).__name__)}"
        )
    return images.transpose(0, 3, 1, 2) if layout == "NHWC" else images


def _finite_in_float32(a):
    """True if every value of the float64 array ``a`` is finite, also once cast to float32."""
    with np.errstate(over="ignore"):
        return bool(np.all(np.isfinite(a)) and np.all(np.isfinite(a.astype(np.float32))))


class Preprocessing:
    """Raw images (N, C, H, W) of pixel values 0-255 -> the float input of a model.

    Modes (statistics from the training split, via ``fit``):

    * ``"channel"`` (default): ``(x / 255 - mean[c]) / std[c]`` per channel;
    * ``"pixel"``: ``(x / 255 - mean_image) / std_image`` per pixel (the numpy tutorials'
      preprocessing: subtract the mean image, divide by the per-pixel std; the std of a pixel
      is at least ``PIXEL_STD_FLOOR``, one grey level, so a constant pixel gives 0);
    * ``"mean_image"``: ``x / 255 - mean_image`` (CS231n's mean image);
    * ``"scale"``: ``x / 255``.

    ``fit`` and calls take ``layout="NHWC"`` for channels-last arrays (N, H, W, C); the output
    is always (N, C, H, W), what the models take. The statistics go into the model's JSON file
    (``to_dict``/``from_dict``), so prediction applies exactly what training did.
    """

    MODES = ("channel", "pixel", "mean_image", "scale")

    def __init__(self, mode="channel", input_shape=None, mean=None, std=None, mean_image=None, std_image=None):
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, dtype=np.float64)
        self.std_image = None if std_image is None else np.asarray(std_image, dtype=np.float64)
        self._validate()

    def _validate(self):
        """Shapes, and statistics that give finite inputs in float32 (the smaller model dtype):
        a std of 0, a subnormal one (1e-320: 1 / std overflows) or a NaN is refused."""
        shape = self.input_shape
        if shape is None or len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"preprocessing input_shape must be (C, H, W), got {shape}")
        if self.mode == "channel":
            self._check_mean_std("mean", "std", (shape[0],), f"{shape[0]} finite numbers")
        elif self.mode == "pixel":
            self._check_mean_std("mean_image", "std_image", shape, f"a finite array of shape {shape}")
        elif self.mode == "mean_image":
            a = self.mean_image
            if a is None or a.shape != shape or not _finite_in_float32(a):
                raise ValueError(f"preprocessing mean_image must be a finite array of shape {shape}")

    def _check_mean_std(self, mean_name, std_name, shape, what):
        mean, std = getattr(self, mean_name), getattr(self, std_name)
        for name, a in ((mean_name, mean), (std_name, std)):
            if a is None or a.shape != shape or not _finite_in_float32(a):
                shown = a if a is None or a.size <= 8 else f"an array of shape {a.shape}"
                raise ValueError(f"preprocessing {name} must be {what}, got {shown}")
        if not np.all(std >= _STD_MIN):
            raise ValueError(
                f"preprocessing {std_name} must be at least {_STD_MIN:.3g} (float32's smallest "
                f"normal number), got {std.min()}"
            )
        with np.errstate(over="ignore"):
            shift = mean / std
        if not _finite_in_float32(shift):
            raise ValueError(f"preprocessing {mean_name} / {std_name} must be finite in float32")

    @classmethod
    def fit(cls, images, mode="channel", eps=1e-8, chunk=4096, layout="NCHW"):
        """Statistics of uint8 training images (N, C, H, W), or (N, H, W, C) with
        ``layout="NHWC"``, in float64, chunk by chunk."""
        if mode not in cls.MODES:
            raise ValueError(f"preprocessing mode must be one of {', '.join(cls.MODES)}, got {mode!r}")
        images = to_nchw(images, layout)
        if images.shape[0] < 1:
            raise ValueError(f"images must hold at least one image, got shape {images.shape}")
        N, C = images.shape[:2]
        if mode == "scale":
            return cls("scale", images.shape[1:])
        total = np.zeros(images.shape[1:], dtype=np.float64)
        for i in range(0, N, chunk):
            total += images[i : i + chunk].sum(axis=0, dtype=np.float64)
        mean_image = total / (255.0 * N)
        if mode == "mean_image":
            return cls("mean_image", images.shape[1:], mean_image=mean_image)
        if mode == "pixel":
            sq = np.zeros(images.shape[1:], dtype=np.float64)
            for i in range(0, N, chunk):
                x = images[i : i + chunk].astype(np.float64) / 255.0 - mean_image
                sq += np.einsum("nchw,nchw->chw", x, x)
            std_image = np.maximum(np.sqrt(sq / N), PIXEL_STD_FLOOR)
            return cls("pixel", images.shape[1:], mean_image=mean_image, std_image=std_image)
        mean = mean_image.mean(axis=(1, 2))
        sq = np.zeros(C, dtype=np.float64)
        for i in range(0, N, chunk):
            x = images[i : i + chunk].astype(np.float64) / 255.0 - mean.reshape(1, C, 1, 1)
            sq += np.einsum("nchw,nchw->c", x, x)
        std = np.sqrt(sq / (N * images.shape[2] * images.shape[3])) + eps
        return cls("channel", images.shape[1:], mean=mean, std=std)

    def __call__(self, images, dtype=np.float32, layout="NCHW"):
        """Apply to images (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``, of any real
        dtype; returns (N, C, H, W) of ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        _check_layout(layout)
        if (
            not isinstance(images, np.ndarray)
            or images.ndim != 4
            or to_nchw(images, layout).shape[1:] != self.input_shape
        ):
            C, H, W = self.input_shape
            expected = (H, W, C) if layout == "NHWC" else (C, H, W)
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, expected))})"
                f"{' (layout NHWC)' if layout == 'NHWC' else ''}, "
                f"got {getattr(images, 'shape', type(images).__name__)}"
            )
        if images.dtype.kind not in "uif":
            raise TypeError(f"images must be a real array, got {images.dtype}")
        x = to_nchw(images, layout).astype(dtype, order="C")
        if self.mode in ("channel", "pixel"):
            mean, std = (self.mean, self.std) if self.mode == "channel" else (self.mean_image, self.std_image)
            if self.mode == "channel":
                mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
            x *= (1.0 / (255.0 * std)).astype(dtype)
            x += (-mean / std).astype(dtype)
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
        elif self.mode in ("pixel", "mean_image"):
            d["mean_image"] = self.mean_image.tolist()
        if self.mode == "pixel":
            d["std_image"] = self.std_image.tolist()
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"mode", "input_shape", "mean", "std", "mean_image", "std_image"}
        if unknown:
            raise ValueError(f"preprocessing has unknown keys {sorted(unknown)}")
        try:
            return cls(
                d.get("mode"),
                d.get("input_shape"),
                d.get("mean"),
                d.get("std"),
                d.get("mean_image"),
                d.get("std_image"),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid preprocessing: {exc}") from None

    def __repr__(self):
        brief = {k: v for k, v in self.to_dict().items() if k not in ("mean_image", "std_image")}
        return f"Preprocessing({json.dumps(brief)})"
