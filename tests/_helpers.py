"""Helpers of the fastconv test suite that are not for users (``from _helpers import ...``;
fixtures live in conftest.py).

The tolerance tables, ``rel_error``, ``assert_close``, numerical gradients, the
configuration grids and the checks are public: they live in ``fastconv.testing``, and the
tests import them from there.

* ``out_size``: PyTorch's output-size formula, written here on purpose independently
  of ``fastconv.engine.geometry``, so that the tests do not take the library's word for it.
* ``pair_id`` / ``dtype_id``: the pieces of hand-written test ids.
* ``ROOT``, ``checkout_pythonpath`` and ``child_environ``: the checkout, and the
  environment of a ``fastconv`` child process in the tests.
* ``popen_taking_ctrl_c``: a child process that Ctrl-C (SIGINT) stops, however pytest
  itself was started.
"""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import numpy as np

#: The checkout (or unpacked sdist) these tests belong to.
ROOT = Path(__file__).resolve().parents[1]


def child_environ(data, home):
    """os.environ for a child process that runs fastconv: data sets from ``data`` only
    ($FASTCONV_DATA), a private ``home``, glibc untuned, one OpenMP and BLAS thread, and this
    checkout first on PYTHONPATH."""
    return dict(
        os.environ,
        FASTCONV_DATA=str(data),
        HOME=str(home),
        FASTCONV_MALLOC_TUNING="0",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=checkout_pythonpath(),
    )


def checkout_pythonpath():
    """PYTHONPATH for a child process: this checkout first, then the caller's."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def popen_taking_ctrl_c(args, **kwargs):
    """``subprocess.Popen(args, **kwargs)`` whose child starts with SIGINT at its default, as
    at a terminal. A background job of a non-interactive shell (``cmd &`` in a script, as CI
    may run pytest) starts with SIGINT ignored, every child inherits that through exec, and
    Python then never turns Ctrl-C into KeyboardInterrupt; a handled signal is reset to the
    default on exec, so this process handles it for the moment of the fork."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    with contextlib.ExitStack() as restore:
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            restore.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)
        return subprocess.Popen(args, **kwargs)


def pair_id(value):
    """'3' for (3, 3), '3x5' for (3, 5): the compact form used in test ids."""
    h, w = (value, value) if np.isscalar(value) else value
    return f"{h}" if h == w else f"{h}x{w}"


def dtype_id(dtype):
    return np.dtype(dtype).name


def out_size(size, kernel, stride=1, pad=0, dilation=1):
    """Output length of a convolution or pooling along one axis: PyTorch's formula."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
