"""What ``fastconv predict`` and ``fastconv serve`` run: a saved model for raw images, and its class
probabilities. Apart from the trainer (``train_cli``), so that serving a model does not load it."""
from __future__ import annotations

import numpy as np

from .models import load_model


def load_prediction_model(path, impl="fast"):
    """The model saved in ``path``, for raw images (it must have its preprocessing), and its
    class names (the class numbers as strings when it has none): what `fastconv predict` and
    `fastconv serve` run."""
    model = load_model(path, impl=impl)
    if model.preprocess is None:
        raise ValueError(f"{path}: the model has no saved preprocessing, so it cannot take raw images")
    return model, model.class_names or tuple(str(i) for i in range(model.num_classes))


def class_probabilities(model, batch):
    """float64 class probabilities (N, classes) of the raw images ``batch`` (N, C, H, W) for a
    softmax model; an SVM's scores as they are (they are not probabilities)."""
    scores = model.scores(batch, batch_size=500, prepare=True).astype(np.float64)
    if model.loss_type != "softmax":
        return scores
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs
