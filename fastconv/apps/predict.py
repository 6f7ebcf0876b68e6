"""What ``fastconv predict`` and ``fastconv serve`` share beside the model loader
(``model_state.load_prediction_model``): class probabilities. Apart from the trainer
(``train_cli``), so that serving a model does not load it."""

from __future__ import annotations

import numpy as np


def class_probabilities(model, batch):
    """float64 class probabilities (N, classes) of the raw images ``batch`` (N, C, H, W) for a
    softmax model; an SVM's scores as they are (they are not probabilities)."""
    scores = model.scores(batch, batch_size=500, prepare=True).astype(np.float64)
    if model.loss_type != "softmax":
        return scores
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs
