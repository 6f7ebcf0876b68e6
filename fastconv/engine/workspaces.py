"""Per-thread buffers reused across calls: a fresh large buffer costs page faults on every
call (about 1.6 us per 4 KiB page on the project's VM, docs/workloads.md), so each thread
keeps its workspaces and scratch and grows them when a call needs more.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

#: Upper bound on the im2col workspace of one chunk (bytes), per worker thread. The
#: GEMM output workspace ``y`` (F, n*P) comes on top and is smaller whenever
#: F < C*kh*kw. 2 MiB measured best on the benchmark workloads (docs/performance.md).
WORKSPACE_BYTES = 2 * 2**20

_local = threading.local()


def workspace(name: str, size: int, dtype: npt.DTypeLike) -> np.ndarray[Any, Any]:
    """A flat per-thread buffer of at least ``size`` elements, reused across calls."""
    key = (name, np.dtype(dtype).char)
    buf = getattr(_local, "buffers", None)
    if buf is None:
        buf = _local.buffers = {}
    arr = buf.get(key)
    if arr is None or arr.size < size:
        arr = buf[key] = np.empty(max(size, 1), dtype=dtype)
    return arr[:size]
