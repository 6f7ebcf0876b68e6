"""The avx512 build of the kernels: the same functions as the baseline build (``_im2col.pyi``)."""

from ._im2col import *  # noqa: F403  (a stub's star import re-exports every public name)

__test__: dict[str, str]
