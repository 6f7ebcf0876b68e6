"""First-order update rules, CS231n style.

Each rule is ``update(w, dw, config=None) -> (next_w, config)``:

* ``w``, ``dw``: the parameter and its gradient (same shape and dtype);
* ``config``: a dict of hyperparameters (defaults filled in on the first
  call) plus the rule's state (a velocity, moving averages, a step count).
  Keep one config per parameter and pass it back on the next call.

``next_w`` is a new array in ``w``'s dtype; ``w`` and ``dw`` are not modified.
State arrays live in ``config`` with ``w``'s shape and dtype, so a Solver
checkpoint can save them as ``.npz`` arrays and the scalars as JSON. They are
updated in place (a read-only or non-contiguous one is copied first): the same
values, in the same order of operations, as building new ones, without a dozen
temporaries of w's size per step; Adam's step is one pass of a Cython kernel
(``adam_update``), bit for bit the formula below.

Rules (``UPDATE_RULES`` maps the names used by the Solver and the CLI):

* ``sgd``:      w -= lr * dw
* ``momentum``: v = mu * v - lr * dw;  w += v
* ``rmsprop``:  c = rho * c + (1 - rho) * dw**2;  w -= lr * dw / (sqrt(c) + eps)
* ``adam``:     t += 1;  m = b1 * m + (1 - b1) * dw;  v = b2 * v + (1 - b2) * dw**2;
                w -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
* ``adamw``:    w *= 1 - lr * weight_decay;  then adam's step (decoupled weight decay)
"""

import numpy as np

from .engine.checks import check_float_array, check_int, check_number
from .engine.update import adam_step


def _check(w, dw, config, defaults):
    check_float_array(w, "w")
    check_float_array(dw, "dw")
    if dw.shape != w.shape or dw.dtype != w.dtype:
        raise ValueError(f"dw must have w's shape {w.shape} and dtype {w.dtype}, got {dw.shape} {dw.dtype}")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    for key, value in defaults.items():
        config.setdefault(key, value)
        # a Python float keeps float32 arithmetic in float32
        config[key] = check_number(config[key], f"config[{key!r}]", lambda v: v >= 0, "a finite number >= 0")
    return config


def _state(config, key, w):
    """The state array ``config[key]`` (zeros on the first call), checked against w."""
    a = config.get(key)
    if a is None:
        a = config[key] = np.zeros(w.shape, w.dtype)
    elif not isinstance(a, np.ndarray) or a.shape != w.shape or a.dtype != w.dtype:
        raise ValueError(f"config[{key!r}] must be an array of w's shape {w.shape} and dtype {w.dtype}")
    elif not a.flags.writeable or not a.flags.c_contiguous:
        a = config[key] = np.array(a, order="C")  # updated in place: an array of its own
    return a


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent. config: learning_rate (1e-2)."""
    config = _check(w, dw, config, {"learning_rate": 1e-2})
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum. config: learning_rate (1e-2), momentum (0.9); state: velocity."""
    config = _check(w, dw, config, {"learning_rate": 1e-2, "momentum": 0.9})
    v = _state(config, "velocity", w)
    v *= config["momentum"]
    v -= config["learning_rate"] * dw  # v = mu * v - lr * dw, in place
    return w + v, config


def rmsprop(w, dw, config=None):
    """RMSProp. config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8); state: cache."""
    config = _check(w, dw, config, {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8})
    rho = config["decay_rate"]
    cache = _state(config, "cache", w)
    cache *= rho
    cache += (1 - rho) * (dw * dw)  # cache = rho * cache + (1 - rho) * dw**2, in place
    step = np.sqrt(cache)
    step += config["epsilon"]
    np.divide(config["learning_rate"] * dw, step, out=step)
    return w - step, config


def adam(w, dw, config=None):
    """Adam with bias correction. config: learning_rate (1e-3), beta1 (0.9),
    beta2 (0.999), epsilon (1e-8); state: m, v, t (the step count)."""
    config = _check(w, dw, config, {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8})
    t = check_int(config.setdefault("t", 0), "config['t']", 0) + 1
    b1, b2 = config["beta1"], config["beta2"]
    m, v = _state(config, "m", w), _state(config, "v", w)
    config["t"] = t
    return adam_step(w, dw, m, v, t, config["learning_rate"], b1, b2, config["epsilon"]), config


def adamw(w, dw, config=None):
    """Adam with decoupled weight decay (AdamW, Loshchilov & Hutter 2019): the weights shrink by
    lr * weight_decay * w, apart from the gradient, then take Adam's step on dw alone (L2 in the
    loss would pass through Adam's per-weight scaling instead). config: adam's, and
    weight_decay (1e-2), applied to every parameter it is given; state: m, v, t."""
    config = _check(
        w, dw, config, {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 1e-2}
    )
    decay = config["learning_rate"] * config["weight_decay"]
    decayed = w * w.dtype.type(1 - decay) if decay else w
    return adam(decayed, dw, config)


UPDATE_RULES = {
    "sgd": sgd,
    "momentum": sgd_momentum,
    "sgd_momentum": sgd_momentum,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}


def get_update_rule(name):
    """The update function for ``name`` (one of ``UPDATE_RULES``)."""
    try:
        return UPDATE_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"update_rule must be one of {', '.join(UPDATE_RULES)}, got {name!r}") from None
