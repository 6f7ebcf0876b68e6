"""Float32 error of each convolution algorithm against float64 naive (docs/performance.md,
"Winograd accuracy").

For every canonical 3x3 stride-1 workload (fastconv/bench/common.py, ``WORKLOADS``) and for
the Winograd test grid (tests/engine/test_winograd.py, ``CASES``), the layer runs forward and
backward in float32 with ``algorithm`` "im2col", "winograd2" and "winograd4", and the
reference is fastconv.naive in float64 on the same (float32-rounded) inputs, so that the
error is the algorithm's, not the rounding of its inputs. Errors are relative to the
output's scale, as the tests' tolerance table is: max |got - ref| / max |ref|, for out,
dx, dw and db. The data: standard normal x and dout, He-scaled w (std sqrt(2 / (C 9))),
standard normal b, seeded. The float64 line gives the largest error of the same runs in
float64.

A developer tool, not part of the package: run from the source tree,
``python benchmarks/winograd_accuracy.py [--images N] [--no-grid]``. The naive reference
takes about a minute per 64 images of W2conv3x3 (``--images`` cuts the batch).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.bench.common import WORKLOADS, ConvSpec

ALGORITHMS = ("im2col", "winograd2", "winograd4")
NAMES = ("out", "dx", "dw", "db")


def _rel(a, r):
    scale = np.abs(r).max()
    return float(np.abs(a.astype(np.float64) - r).max() / scale) if scale > 0 else float(np.abs(a).max())


def _fwdbwd(module, x, w, b, dout, kwargs, **extra):
    out, cache = module.conv_forward(x, w, b, **kwargs, **extra)
    return (out,) + module.conv_backward(dout.astype(out.dtype), cache)


def _data(rng, N, C, H, W, F, groups):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((F, C // groups, 3, 3)) * np.sqrt(2.0 / (C // groups * 9))).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    return x, w, b


def errors(x, w, b, kwargs, seed=0):
    """{algorithm: {name: float32 error}} and {algorithm: largest float64 error} of one layer."""
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    out_shape = fast.conv_forward(x[:1], w, b, **kwargs, algorithm="im2col")[0].shape[1:]
    dout = np.random.default_rng(seed + 1).standard_normal((x.shape[0],) + out_shape)
    ref = _fwdbwd(naive, *f64, dout, kwargs)
    err32, err64 = {}, {}
    for algorithm in ALGORITHMS:
        err32[algorithm] = {
            n: _rel(a, r) for n, a, r in zip(NAMES, _fwdbwd(fast, x, w, b, dout, kwargs, algorithm=algorithm), ref)
        }
        err64[algorithm] = max(_rel(a, r) for a, r in zip(_fwdbwd(fast, *f64, dout, kwargs, algorithm=algorithm), ref))
    return err32, err64


def _rows(label, err32, err64):
    for algorithm in ALGORITHMS:
        cells = " | ".join(f"{err32[algorithm][n]:.1e}" for n in NAMES)
        print(f"| {label} | {algorithm} | {cells} | {err64[algorithm]:.1e} |", flush=True)


def _test_grid():
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    path = os.path.join(tests, "engine", "test_winograd.py")
    spec = importlib.util.spec_from_file_location("_winograd_tests", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, tests)  # its ``from _helpers import ...``
    spec.loader.exec_module(module)
    return module.CASES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="images per workload (default: its batch)")
    parser.add_argument("--no-grid", action="store_true", help="the canonical workloads only")
    args = parser.parse_args(argv)
    print("| case | algorithm | " + " | ".join(NAMES) + " | float64, largest |")
    print("| --- | --- | " + " | ".join("---" for _ in NAMES) + " | --- |")
    for name, spec in WORKLOADS.items():
        if not isinstance(spec, ConvSpec) or spec.k != 3 or spec.stride != 1:
            continue
        N = spec.N if args.images is None else min(spec.N, args.images)
        x, w, b = _data(np.random.default_rng(0), N, spec.C, spec.H, spec.W, spec.F, 1)
        _rows(f"{name} (N={N})", *errors(x, w, b, dict(pad=spec.pad)))
    if args.no_grid:
        return
    worst32 = {a: dict.fromkeys(NAMES, 0.0) for a in ALGORITHMS}
    worst64 = dict.fromkeys(ALGORITHMS, 0.0)
    cases = _test_grid()
    for i, (N, C, H, W, F, pad, groups, _) in enumerate(cases):
        x, w, b = _data(np.random.default_rng(100 + i), N, C, H, W, F, groups)
        err32, err64 = errors(x, w, b, dict(pad=pad, groups=groups), seed=100 + i)
        for a in ALGORITHMS:
            worst64[a] = max(worst64[a], err64[a])
            for n in NAMES:
                worst32[a][n] = max(worst32[a][n], err32[a][n])
    _rows(f"test grid ({len(cases)} cases), largest", worst32, worst64)


if __name__ == "__main__":
    main()
