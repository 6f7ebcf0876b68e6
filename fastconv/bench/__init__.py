"""fastconv's benchmark suite; run it with ``fastconv bench`` (or ``python -m fastconv bench``).

* ``common``: the canonical workloads (docs/workloads.md), seeded data, the result checks.
* ``contenders``: fast, naive (scaled from a sub-batch), gemm (the GEMM limit: the fast
  path's GEMMs alone, ``conv_gemm_limit``, run by the engine's own chunk loop) and torch,
  each checked before it is timed.
* ``torch_ops`` / ``peer``: the PyTorch contender, run in a process of its own with the
  user's environment (``--torch-in-process`` to run it here instead).
* ``timing``: interleaved medians after a warm-up, thread settings (threadpoolctl + torch).
* ``suite``, ``sweep``, ``memory``: the three modes; ``report``: table, JSON, chart;
  ``machine``: CPU, versions, BLAS kernels; ``cli``: the ``fastconv bench`` command.
"""
