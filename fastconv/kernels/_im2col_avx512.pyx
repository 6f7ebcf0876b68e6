"""The kernels of fastconv/kernels/_im2col.pyx, compiled a third time for CPUs with AVX-512.

setup.py builds this module with ``-mavx512f -mavx512bw -mavx512vl -mavx512dq
-mavx512cd`` (the features fastconv/kernels/isa.py lists), ``-mprefer-vector-width=256`` and
``-ffp-contract=off``: AVX-512F has FMA instructions, and without that flag GCC would
fuse a * b + c; with it, the same arithmetic in the same order, so results are bitwise
those of fastconv.kernels._im2col (tests/kernels/test_kernels_build.py checks it). fastconv/kernels/picker.py
loads it in place of the other builds when the CPU and OS have every one of those
features: the loops run on 256-bit vectors with AVX-512's masks and 32 registers
(docs/performance.md, "AVX-512 build", says why not 512-bit ones). Importing it on a CPU without AVX-512 could
crash, so only the picker imports it, after asking the CPU.
"""
include "_im2col.pyx"
