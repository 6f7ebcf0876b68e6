"""Keep freed memory in the process (glibc): no page faults for the next batch's arrays.

A training step allocates its activations and gradients afresh, tens of MiB per
step. glibc serves such blocks with mmap, or from its heap and then trims the
heap, so freed memory goes back to the system, and touching it again costs a
page fault per 4 KiB (the kernel zeroes every page): a noticeable part of a
convolution's, a training step's and an evaluation's time (docs/performance.md,
"Freed memory kept in the process").

``keep_freed_memory()`` raises glibc's mmap threshold to 1 GiB and turns heap
trimming off, for the whole process: the memory a process has used stays
mapped for its lifetime (its peak resident size does not shrink). The
``fastconv train/evaluate/predict`` commands call it (they own their process);
``fastconv bench --keep-freed-memory`` calls it, and gives PyTorch's peer
process the same setting through ``KEEP_FREED_MEMORY_ENV``. A library never
calls it on its own: that is the application's choice.
"""

import ctypes
import os
import sys

_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = (1 << 31) - 1

#: The same setting for a child process, read by glibc when the process starts.
KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD)}


def keep_freed_memory():
    """Ask glibc to serve large arrays from its heap and never to trim it.

    Returns True if glibc took the setting; False elsewhere (not Linux/glibc) or
    when the environment has ``FASTCONV_MALLOC_TUNING=0``."""
    if not sys.platform.startswith("linux") or os.environ.get("FASTCONV_MALLOC_TUNING") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return bool(ok)
