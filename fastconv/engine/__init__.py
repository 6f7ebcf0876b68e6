"""The fast engine: everything between a layer call and the compiled kernels.

One concern per module:

* ``checks``: argument checks (TypeError/ValueError naming the argument), shared by
  every layer, model, optimizer and loader;
* ``geometry``: output sizes and the geometry records of convolution and pooling;
* ``algorithms``: which convolution algorithm runs (the rule of "auto", in one place);
* ``runtimes`` and ``threads``: all thread policy (the OpenMP/OpenBLAS settings made at
  import, kernel thread counts, fastconv's worker threads and their BLAS limits);
* ``workspaces``: per-thread buffers reused across calls;
* ``conv`` (im2col + GEMM, and the fused conv-ReLU-pool), ``winograd``, ``pooling``,
  ``batchnorm``, ``activations`` (ReLU): the layers' Python halves (validation, allocation, chunking, dispatch),
  which call ``fastconv.kernels``.

``fastconv.fast`` is the public face of this package; ``fastconv.naive`` shares its
checks and geometry.
"""
