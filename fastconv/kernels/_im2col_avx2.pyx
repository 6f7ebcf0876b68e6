"""The kernels of fastconv/kernels/_im2col.pyx, compiled a second time for CPUs with AVX2.

setup.py builds this module with ``-mavx2 -mfma`` (no fast-math, -ffp-contract=off: the same
arithmetic in the same order, FMA only where the source asks for it in every build (the
direct convolution), so results are bitwise those of fastconv.kernels._im2col;
tests/kernels/test_kernels_build.py checks it). fastconv/kernels/picker.py loads it in place of
fastconv.kernels._im2col when the CPU has AVX2: pooling, batchnorm and the col2im adds run
on 256-bit vectors instead of SSE2's 128 (docs/performance.md, "AVX2 build").
Importing it on a CPU without AVX2 could crash, so only the picker imports it,
after asking the CPU.
"""
include "_im2col.pyx"
