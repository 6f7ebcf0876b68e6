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
    """A Generator seeded from the test's node id, so every test's data is fixed. The id is
    taken as ``tests/<file name>::<test>`` whatever folder of tests/ the file is in: moving a
    test file between folders keeps its data (a new seed could put a numerical gradient on a
    ReLU kink, as any new data can)."""
    path, _, test = request.node.nodeid.partition("::")
    return np.random.default_rng(zlib.crc32(f"tests/{path.rpartition('/')[2]}::{test}".encode()))
