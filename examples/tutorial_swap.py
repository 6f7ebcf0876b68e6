"""Swap one import: CS231n-style tutorial code, unchanged, on fastconv's fast path.

``TUTORIAL`` below is model code written the way the CS231n assignment writes
it (a three-layer ConvNet: conv - relu - 2x2 max pool - affine - relu - affine
- softmax, with the sandwich layers of ``layer_utils.py``). It is run twice;
the only difference is its import line:

    from my_cs231n_layers import *          # loop layers, as a student writes them
    from fastconv.compat.cs231n import *    # the fast path, same names and dicts

``my_cs231n_layers`` stands for a student's own ``layers.py``: here it puts
CS231n's names on ``fastconv.naive``, the reference loops. The script checks
that both runs give the same loss and gradients on the same two images, times
one training step of each (the loops on 2 images, the fast path on 2 and on a
batch of 64), then trains a few SGD steps on the fast path.

    python examples/tutorial_swap.py            # about 5 s on 2 cores
"""

import argparse
import sys
import time
import types

import numpy as np

from fastconv import naive

TUTORIAL = """
import numpy as np
from LAYERS import *        # <- the one line that differs between the two runs


def init_three_layer_convnet(input_dim=(3, 32, 32), num_filters=32, filter_size=7,
                             hidden_dim=100, num_classes=10, weight_scale=1e-2,
                             dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    C, H, W = input_dim
    params = {
        "W1": weight_scale * rng.standard_normal((num_filters, C, filter_size, filter_size)),
        "b1": np.zeros(num_filters),
        "W2": weight_scale * rng.standard_normal((num_filters * (H // 2) * (W // 2), hidden_dim)),
        "b2": np.zeros(hidden_dim),
        "W3": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
        "b3": np.zeros(num_classes),
    }
    return {k: v.astype(dtype) for k, v in params.items()}


def loss(params, X, y, reg=0.0):
    W1, b1 = params["W1"], params["b1"]
    W2, b2 = params["W2"], params["b2"]
    W3, b3 = params["W3"], params["b3"]
    filter_size = W1.shape[2]
    conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

    out1, cache1 = conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)
    out2, cache2 = affine_relu_forward(out1, W2, b2)
    scores, cache3 = affine_forward(out2, W3, b3)

    data_loss, dscores = softmax_loss(scores, y)
    loss = data_loss + 0.5 * reg * sum(np.sum(W * W) for W in (W1, W2, W3))

    grads = {}
    dout2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)
    dout1, grads["W2"], grads["b2"] = affine_relu_backward(dout2, cache2)
    _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dout1, cache1)
    for name in ("W1", "W2", "W3"):
        grads[name] += reg * params[name]
    return loss, grads
"""


def make_student_layers():
    """A stand-in for a student's loop-based ``layers.py`` + ``layer_utils.py``: CS231n names on fastconv.naive."""
    m = types.ModuleType("my_cs231n_layers")

    def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
        a, conv_cache = naive.conv_forward(x, w, b, conv_param["stride"], conv_param["pad"])
        s, relu_cache = naive.relu_forward(a)
        kernel = (pool_param["pool_height"], pool_param["pool_width"])
        out, pool_cache = naive.max_pool_forward(s, kernel, pool_param["stride"])
        return out, (conv_cache, relu_cache, pool_cache)

    def conv_relu_pool_backward(dout, cache):
        conv_cache, relu_cache, pool_cache = cache
        ds = naive.max_pool_backward(dout, pool_cache)
        return naive.conv_backward(naive.relu_backward(ds, relu_cache), conv_cache)

    def affine_relu_forward(x, w, b):
        a, fc_cache = naive.affine_forward(x, w, b)
        out, relu_cache = naive.relu_forward(a)
        return out, (fc_cache, relu_cache)

    def affine_relu_backward(dout, cache):
        fc_cache, relu_cache = cache
        return naive.affine_backward(naive.relu_backward(dout, relu_cache), fc_cache)

    m.conv_relu_pool_forward, m.conv_relu_pool_backward = conv_relu_pool_forward, conv_relu_pool_backward
    m.affine_relu_forward, m.affine_relu_backward = affine_relu_forward, affine_relu_backward
    m.affine_forward, m.affine_backward = naive.affine_forward, naive.affine_backward
    m.softmax_loss = naive.softmax_loss
    return m


def load_tutorial(layers_module):
    """Run TUTORIAL's source with ``from <layers_module> import *`` as its import line."""
    module = types.ModuleType(f"tutorial[{layers_module}]")
    source = TUTORIAL.replace("from LAYERS import *", f"from {layers_module} import *")
    exec(compile(source, module.__name__, "exec"), module.__dict__)
    return module


def timed(fn, repeats):
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def max_rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="fast-path batch size (default 64)")
    parser.add_argument("--naive-images", type=int, default=2, help="images for the loop layers (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="SGD steps on the fast path (default 10)")
    args = parser.parse_args(argv)

    sys.modules["my_cs231n_layers"] = make_student_layers()
    slow = load_tutorial("my_cs231n_layers")
    fast = load_tutorial("fastconv.compat.cs231n")

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=args.batch)
    params = fast.init_three_layer_convnet()
    n = args.naive_images

    # Same code, same images: the same loss and gradients (float32, so agreement to ~1e-5).
    t0 = time.perf_counter()
    loss_slow, grads_slow = slow.loss(params, X[:n], y[:n])
    t_slow = time.perf_counter() - t0
    t_fast_n, (loss_fast, grads_fast) = timed(lambda: fast.loss(params, X[:n], y[:n]), 7)
    print(f"loss on {n} images: loops {loss_slow:.6f}, fast {loss_fast:.6f}")
    worst = max(max_rel_error(grads_fast[k], grads_slow[k]) for k in grads_slow)
    print(f"largest relative gradient difference: {worst:.1e}")
    if abs(loss_fast - loss_slow) > 1e-4 * abs(loss_slow) or worst > 1e-3:
        raise SystemExit("the two runs disagree")

    t_fast_batch, _ = timed(lambda: fast.loss(params, X, y), 7)
    print("one training step (forward + backward), float32:")
    print(f"  loops, {n} images:        {t_slow * 1e3:9.1f} ms  ({t_slow / n * 1e3:8.2f} ms/image)")
    print(f"  fast,  {n} images:        {t_fast_n * 1e3:9.1f} ms  ({t_fast_n / n * 1e3:8.2f} ms/image)")
    print(
        f"  fast,  {args.batch} images:       {t_fast_batch * 1e3:9.1f} ms  "
        f"({t_fast_batch / args.batch * 1e3:8.2f} ms/image)"
    )
    print(
        f"  speed-up per image: {t_slow / n / (t_fast_batch / args.batch):.0f}x "
        f"(batch {args.batch}), {t_slow / t_fast_n:.0f}x (same {n} images)"
    )

    # The training loop of the tutorial, unchanged, on the fast path (SGD on one random batch).
    learning_rate = 0.1
    losses = []
    for _ in range(args.steps):
        loss_value, grads = fast.loss(params, X, y)
        losses.append(loss_value)
        for name in params:
            params[name] -= learning_rate * grads[name]
    if losses:
        print(f"{args.steps} SGD steps on {args.batch} random images: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
