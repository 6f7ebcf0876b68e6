"""Files and inputs, shared by every concern: ``files`` (atomic writes, bounded JSON,
SHA-256, ``.npz`` checked against its manifest), ``inputs`` (image files and ``.npy``
arrays read within their limits) and ``child`` (command lines of Python child processes).

``fastconv.io`` does not shadow the standard library's ``io``: imports are absolute, and
``import io`` anywhere (in this package too) is the standard library's.
"""
