"""Data augmentation on a training batch, in numpy: random crops of a padded image and
horizontal flips.

The spec language (``fastconv train --augment SPEC``, ``Solver(augment=SPEC)``): items
joined by ``,``

    crop<P>   pad each image with P zero pixels on every side (1 <= P <= 64), then take a
              window of the image's size at a random place: a shift by up to P pixels
    flip      mirror left-right, each image with probability 1/2

e.g. ``crop4,flip``. The transform runs on the raw images (before the model's
preprocessing), so padding is black, as torchvision's ``RandomCrop(padding=P)`` pads.

The random numbers come from the generator given (the Solver's), drawn for the whole global
batch at once: ``draw(rng, n)`` then ``apply(images, draws)``. Under MPI every rank draws the
same numbers for the whole batch and applies its rows' (``Draws.rows``), so K ranks see
the augmented images one process sees (as the dropout masks in ``fastconv.training.distributed``).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["Augment", "parse_augment", "MAX_CROP"]

MAX_CROP = 64


class Augment:
    """Random crop (``crop`` pixels of padding, 0 for none) and horizontal flip."""

    def __init__(self, crop=0, flip=False):
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or not 0 <= crop <= MAX_CROP:
            raise ValueError(f"crop must be an int in [0, {MAX_CROP}], got {crop!r}")
        if not isinstance(flip, bool):
            raise TypeError(f"flip must be a bool, got {flip!r}")
        if not crop and not flip:
            raise ValueError("an augmentation needs crop > 0 or flip")
        self.crop, self.flip = int(crop), flip

    def spec(self):
        return ",".join(([f"crop{self.crop}"] if self.crop else []) + (["flip"] if self.flip else []))

    def __repr__(self):
        return f"Augment({self.spec()!r})"

    def draw(self, rng, n):
        """The random choices for ``n`` images: {"shift": (n, 2) ints in [0, 2 * crop],
        "flip": (n,) bools} (the keys of the transforms in use)."""
        draws = {}
        if self.crop:
            draws["shift"] = rng.integers(0, 2 * self.crop + 1, size=(n, 2))
        if self.flip:
            draws["flip"] = rng.random(n) < 0.5
        return draws

    @staticmethod
    def rows(draws, rows):
        """The draws of the rows ``rows`` (a slice) of the batch."""
        return {k: v[rows] for k, v in draws.items()}

    def apply(self, images, draws):
        """A new array: ``images`` (n, C, H, W) cropped and flipped as ``draws`` says."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"augmentation takes images (N, C, H, W), got shape {images.shape}")
        n, _, H, W = images.shape
        out = images
        if self.crop:
            p = self.crop
            padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (H, W), axis=(2, 3))
            dy, dx = draws["shift"][:, 0], draws["shift"][:, 1]
            out = windows[np.arange(n), :, dy, dx]  # (n, C, H, W): each image's own window
        else:
            out = images.copy()
        if self.flip:
            flip = draws["flip"]
            out[flip] = out[flip][..., ::-1]
        return out

    def __call__(self, images, rng):
        return self.apply(images, self.draw(rng, len(images)))


_ITEM = re.compile(r"crop(\d{1,3})|flip")


def parse_augment(spec):
    """An Augment from its spec (see the module docstring), ``spec`` itself when it is one, or
    None for None; ValueError naming what is wrong otherwise."""
    if spec is None or isinstance(spec, Augment):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"augment must be a spec string (e.g. 'crop4,flip') or an Augment, got {spec!r}")
    crop, flip, seen = 0, False, set()
    for item in spec.split(","):
        item = item.strip()
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ValueError(
                f"augmentation {spec!r}: unknown item {item!r} (crop<P> or flip, joined by ',', e.g. crop4,flip)"
            )
        kind = "flip" if item == "flip" else "crop"
        if kind in seen:
            raise ValueError(f"augmentation {spec!r}: {kind} given twice")
        seen.add(kind)
        if kind == "flip":
            flip = True
        else:
            crop = int(m[1])
            if not 1 <= crop <= MAX_CROP:
                raise ValueError(f"augmentation {spec!r}: crop<P> needs 1 <= P <= {MAX_CROP}, got {crop}")
    return Augment(crop, flip)
