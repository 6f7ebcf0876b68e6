"""Time per training epoch: fastconv against PyTorch CPU, same network, same everything.

For each model (ConvNet1 and a Sequential layer string by default) the
script builds the fastconv model and the equivalent ``torch.nn.Sequential``
with the *same initial weights*, checks that both give the same scores on a
batch (so the two really compute the same network), then trains each for an
epoch over the same images in the same order with Adam (lr 1e-3), same batch
size, float32, and the same number of threads for BLAS, OpenMP and PyTorch.
The contenders alternate (fastconv, torch, fastconv, torch, ...) with a short
sleep between them (idle thread pools spin for a while); the median of the
repeats is reported, scaled to the 60,000 images of a Fashion-MNIST epoch.

A fastconv "epoch" here is the Solver's own training step (``model.prepare``,
``model.loss`` and the update of every parameter); PyTorch's is
``zero_grad``, forward, cross-entropy, ``backward`` and ``Adam.step`` on
tensors made once from the same preprocessed float32 data.

The torch twin is built from the model's layer list (``model.layer_specs``,
the normalized layers of the ``--model`` syntax, as model.json stores them)
and its parameters (named ``W1, b1, ...`` and ``gamma1, beta1, ...`` in
layer order), not from the model's execution plan: a conv - relu - maxpool
(or conv - maxpool - relu) run that fastconv fuses into one step is three
torch modules in the order the model names them.

``--naive`` also times one training step of the model with
``impl="naive"`` (the reference loop layers) on ``--naive-images`` images
and scales it to an epoch.

A developer tool, not part of the package: it imports the installed
fastconv (``pip install ".[all]" torch``) and is tested on a few images by
tests/bench/test_torch_training.py.

Run:  python benchmarks/torch_training.py [--threads 2] [--images 6400] [--naive] [--data DIR]
Exits cleanly (status 0, a message) when torch is not installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import fastconv  # first: its OpenBLAS thread settings must precede numpy loading OpenBLAS)

# isort: split
import numpy as np

DEFAULT_MODELS = ("convnet1", "conv32x3-bn-maxpool2-relu-conv64x3-bn-maxpool2-relu-fc256-relu-dropout0.3-fc")
EPOCH_IMAGES = 60000


def add_arguments(parser):
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated: convnet1, fc or layer strings (default: %(default)s)",
    )
    parser.add_argument(
        "--images", type=int, default=6400, help="training images timed per repeat, scaled to 60,000 (default 6400)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="BLAS, OpenMP and torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians are reported")
    parser.add_argument("--naive", action="store_true", help="also time a naive training step")
    parser.add_argument("--naive-images", type=int, default=8)
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="a folder holding fashion-mnist/ (or the four IDX files); it must be there. "
        "Default: the usual places ($FASTCONV_DATA, ~/.cache/fastconv, "
        "/usr/share/datasets), else seeded random images",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory in this process (fastconv.keep_freed_memory(), as "
        "`fastconv train` does), for both contenders: no page faults for fresh arrays",
    )


def _data(n, root=None, seed=0):
    """Fashion-MNIST training images from ``root`` or, without it, where installed
    (else seeded random ones, said so)."""
    from fastconv.datasets import DatasetNotFoundError, Preprocessing, load_fashion_mnist

    try:
        ds = load_fashion_mnist(root=root, download=False)
        images, labels, source = ds.X_train[:n], ds.y_train[:n], f"Fashion-MNIST ({ds.source})"
    except (DatasetNotFoundError, ValueError):
        if root is not None:
            raise
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        source = "random 28x28 images (Fashion-MNIST not found)"
    prep = Preprocessing.fit(images)
    return prep(images, np.float32), labels.astype(np.int64), source


def torch_model(model, torch):
    """The torch.nn.Sequential computing the same network as fastconv ``model``, same weights.

    One torch module per layer of ``model.layer_specs``, in its order; conv and fc
    weights are W1, W2, ... in that order, batchnorm parameters gamma1, beta1, ...
    """
    nn = torch.nn
    layers = []
    image = len(model.input_shape) == 3  # (C, H, W) until the first fc layer flattens it
    n_w = n_bn = 0
    for spec in model.layer_specs:
        t = spec["type"]
        if t in ("conv", "fc"):
            n_w += 1
            W, b = model.params[f"W{n_w}"], model.params[f"b{n_w}"]
        if t == "conv":
            k = spec["kernel"]
            pad = (k - 1) // 2 if spec["pad"] == "same" else spec["pad"]  # the --model syntax's "same"
            layer = nn.Conv2d(W.shape[1], W.shape[0], k, stride=spec["stride"], padding=pad)
            layer.weight.data = torch.from_numpy(W.copy())
            layer.bias.data = torch.from_numpy(b.copy())
        elif t == "fc":
            if image:
                layers.append(nn.Flatten())
                image = False
            layer = nn.Linear(*W.shape)
            layer.weight.data = torch.from_numpy(W.T.copy())
            layer.bias.data = torch.from_numpy(b.copy())
        elif t == "batchnorm":
            n_bn += 1
            cls = nn.BatchNorm2d if image else nn.BatchNorm1d
            # fastconv: running = m * running + (1 - m) * batch; torch: running = (1 - m') * running + m' * batch
            layer = cls(len(model.params[f"gamma{n_bn}"]), eps=spec["eps"], momentum=1 - spec["momentum"])
            layer.weight.data = torch.from_numpy(model.params[f"gamma{n_bn}"].copy())
            layer.bias.data = torch.from_numpy(model.params[f"beta{n_bn}"].copy())
        elif t in ("maxpool", "avgpool"):
            k = spec["kernel"]
            stride = k if spec["stride"] is None else spec["stride"]
            layer = (nn.MaxPool2d if t == "maxpool" else nn.AvgPool2d)(k, stride)
        elif t == "relu":
            layer = nn.ReLU()
        elif t == "sigmoid":
            layer = nn.Sigmoid()
        elif t == "dropout":
            layer = nn.Dropout(spec["p"])
        else:
            raise ValueError(f"no torch twin for a {t!r} layer")
        layers.append(layer)
    net = nn.Sequential(*layers)
    n_torch = sum(p.numel() for p in net.parameters())
    n_fastconv = sum(p.size for p in model.params.values())
    if n_torch != n_fastconv:
        raise ValueError(f"the torch twin has {n_torch:,} parameters, the model {n_fastconv:,}")
    return net


def _fastconv_epoch(model, X, y, batch_size, configs, update):
    t0 = time.perf_counter()
    for i in range(0, len(X), batch_size):
        xb = model.prepare(X[i : i + batch_size])
        _, grads = model.loss(xb, y[i : i + batch_size])
        for name, w in model.params.items():
            model.params[name], configs[name] = update(w, grads[name], configs[name])
    return time.perf_counter() - t0


def _torch_epoch(net, opt, X, y, batch_size, torch):
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    t0 = time.perf_counter()
    for i in range(0, len(X), batch_size):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(X[i : i + batch_size]), y[i : i + batch_size])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _naive_step_seconds(spec_name, X, y, n):
    from fastconv.models import build_model

    model = build_model(spec_name, (1, 28, 28), 10, seed=0, impl="naive")
    t0 = time.perf_counter()
    model.loss(X[:n], y[:n])
    return time.perf_counter() - t0


def _compare(name, args, X, y, scale, torch):
    """Check that model ``name`` and its torch twin compute the same scores, then time
    their epochs in turn; prints and returns the result row."""
    from fastconv import optim
    from fastconv.models import build_model

    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    model = build_model(name, (1, 28, 28), 10, seed=0)
    net = torch_model(model, torch)
    # the same network? scores on one batch in test mode, before any training
    net.eval()
    with torch.no_grad():
        ref = net(X_t[: args.batch_size]).numpy()
    got = model.loss(X[: args.batch_size])
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    if not err < 1e-4:
        raise RuntimeError(f"{name}: fastconv and torch scores differ (relative error {err:.2e})")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    configs = {k: {"learning_rate": 1e-3} for k in model.params}
    update = optim.get_update_rule("adam")
    # warm-up (allocations, thread pools), on one batch each
    _fastconv_epoch(model, X[: args.batch_size], y[: args.batch_size], args.batch_size, configs, update)
    _torch_epoch(net, opt, X_t[: args.batch_size], y_t[: args.batch_size], args.batch_size, torch)
    fc_times, torch_times = [], []
    for _ in range(args.repeats):
        time.sleep(0.3)
        fc_times.append(_fastconv_epoch(model, X, y, args.batch_size, configs, update) * scale)
        time.sleep(0.3)
        torch_times.append(_torch_epoch(net, opt, X_t, y_t, args.batch_size, torch) * scale)
    row = {
        "model": model.describe(),
        "fastconv_s_per_epoch": statistics.median(fc_times),
        "torch_s_per_epoch": statistics.median(torch_times),
        "fastconv_all": fc_times,
        "torch_all": torch_times,
        "scores_rel_error": err,
    }
    row["ratio_fastconv_over_torch"] = row["fastconv_s_per_epoch"] / row["torch_s_per_epoch"]
    line = (
        f"{row['model']}\n  fastconv {row['fastconv_s_per_epoch']:7.1f} s/epoch   "
        f"torch {row['torch_s_per_epoch']:7.1f} s/epoch   fastconv/torch "
        f"{row['ratio_fastconv_over_torch']:.2f}   (scores match: rel. error {err:.1e})"
    )
    if args.naive:
        time.sleep(0.3)
        step = _naive_step_seconds(name, X, y, args.naive_images)
        row["naive_s_per_epoch"] = step * EPOCH_IMAGES / args.naive_images
        row["naive_images_timed"] = args.naive_images
        line += f"\n  naive    {row['naive_s_per_epoch']:9.0f} s/epoch (one step on {args.naive_images} images, scaled)"
    print(line, flush=True)
    return row


def run(args):
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the PyTorch training comparison (pip install torch)")
        return 0
    from threadpoolctl import threadpool_limits

    if args.images < args.batch_size or args.batch_size < 1 or args.repeats < 1 or args.threads < 1:
        raise ValueError("need --images >= --batch-size >= 1, --repeats >= 1 and --threads >= 1")
    torch.set_num_threads(args.threads)
    kept = fastconv.keep_freed_memory() if args.keep_freed_memory else False
    X, y, source = _data(args.images, args.data)
    scale = EPOCH_IMAGES / len(X)
    try:
        from fastconv.bench.machine import cpu_info, thread_settings

        cpu, threads_info = cpu_info(), thread_settings(torch)
    except Exception as exc:  # noqa: BLE001  (the machine description is a nicety, not a requirement)
        cpu, threads_info = {"error": str(exc)}, {}
    print(f"data: {len(X)} images from {source}; epoch times scaled x{scale:g} to {EPOCH_IMAGES} images")
    print(
        f"batch {args.batch_size}, float32, Adam lr 1e-3, {args.threads} threads (BLAS, OpenMP, torch); "
        f"OpenBLAS kernels: {threads_info.get('openblas_kernels')}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; torch {torch.__version__}; "
        f"CPU: {cpu.get('model')}; freed memory kept: {kept}"
    )
    with threadpool_limits(limits=args.threads):
        results = [_compare(name, args, X, y, scale, torch) for name in args.models.split(",") if name]
    if args.json:
        from fastconv.bench.report import write_json

        write_json(
            args.json,
            {
                "source": source,
                "images": len(X),
                "batch_size": args.batch_size,
                "threads": args.threads,
                "cpu": cpu,
                "keep_freed_memory": kept,
                "threads_info": {k: v for k, v in threads_info.items() if k != "threadpools"},
                "results": results,
            },
        )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"torch_training: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
