"""The compiled kernels: loops only, no policy.

* ``_im2col.pyx``: the extension's source, compiled once per build (``isa.py`` names the
  builds and the CPU features of each: baseline SSE2, AVX2, AVX-512); the kernel
  families are included from one file each: ``common.pxi``, ``im2col.pxi``,
  ``pooling.pxi``, ``batchnorm.pxi``, ``update.pxi`` (the update rules), ``winograd.pxi``;
  ``cpu.h`` asks the CPU what it can run.
* ``picker.py``: which build this process runs (the widest the CPU can run, or the one
  ``FASTCONV_KERNELS`` names), loaded on first import of ``fastconv.kernels.picker``.

The engine (``fastconv/engine/``) calls them; nothing else should.
"""
