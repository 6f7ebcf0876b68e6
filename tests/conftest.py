"""pytest fixtures of the fastconv test suite; shared helper functions live in _helpers.py."""
import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A Generator seeded from the test's node id, so every test's data is fixed."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
