"""pytest fixtures of the fastconv test suite; shared helper functions live in _helpers.py."""

import zlib

import numpy as np
import pytest

from fastconv.testing import DTYPES

from _helpers import dtype_id


@pytest.fixture(params=DTYPES, ids=dtype_id)
def dtype(request):
    """Each float dtype the layers take, float32 then float64 (test ids end in "-float32",
    "-float64"). A test that parametrizes ``dtype`` itself (other dtypes, bad ones) overrides it."""
    return request.param


@pytest.fixture
def rng(request):
    """A Generator seeded from the test's node id, so every test's data is fixed."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
