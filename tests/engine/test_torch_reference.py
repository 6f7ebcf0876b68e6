"""fastconv.fast against PyTorch (torch.nn.functional), forward and autograd gradients.

Skipped cleanly when torch is not installed. Runs on the same seeded grid as
test_equivalence.py (a deterministic subset of it, every few cases), with
the same tolerance table.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
F = torch.nn.functional

import fastconv.fast as fast  # noqa: E402
from fastconv.testing import DTYPES, assert_close  # noqa: E402

from _helpers import dtype_id  # noqa: E402
from test_equivalence import CONV_CASES, POOL_CASES  # noqa: E402

# Every 4th case of the equivalence grid: a spread over all its geometries, both dtypes
# (the grid lists each geometry twice, float32 then float64, so take pairs).
TORCH_CONV_CASES = [c for i, c in enumerate(CONV_CASES) if (i // 2) % 4 == 0]
TORCH_POOL_CASES = [c for i, c in enumerate(POOL_CASES) if (i // 2) % 4 == 0]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny shapes: one thread is fastest and leaves the shared cores alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_forward_backward(fn, arrays, dout):
    """Run ``fn`` on tensors made from ``arrays`` (None passes through); return out and
    the gradient of ``sum(out * dout)`` with respect to each array (helper_test_op style)."""
    tensors = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(dout))
    grads = [None if t is None else t.grad.numpy() for t in tensors]
    return out.detach().numpy(), grads


def test_the_torch_grid_is_about_fifty_cases():
    assert 40 <= len(TORCH_CONV_CASES) + len(TORCH_POOL_CASES) <= 150
    assert {c.dtype for c in TORCH_CONV_CASES} == {c.dtype for c in TORCH_POOL_CASES} == set(DTYPES)
    assert {c.groups for c in TORCH_CONV_CASES} == {1, 2}
    assert {d for c in TORCH_CONV_CASES for d in c.dilation} == {1, 2}
    assert {c.kind_name for c in TORCH_POOL_CASES} == {"max", "avg"}


@pytest.mark.parametrize("case", TORCH_CONV_CASES, ids=str)
def test_conv_matches_torch(case):
    x, w, b, dout = case.arrays()
    out, cache = fast.conv_forward(x, w, b, **case.kwargs)
    dx, dw, db = fast.conv_backward(dout, cache)

    def conv(x, w, b):
        return F.conv2d(x, w, b, stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.groups)

    t_out, (t_dx, t_dw, t_db) = torch_forward_backward(conv, [x, w, b], dout)
    assert_close(out, t_out, case.dtype, "out")
    assert_close(dx, t_dx, case.dtype, "dx")
    assert_close(dw, t_dw, case.dtype, "dw")
    if case.bias:
        assert_close(db, t_db, case.dtype, "db")
    else:
        assert db is None


def _torch_pool(case):
    stride = case.effective_stride
    if case.kind_name == "max":
        return lambda x: F.max_pool2d(x, case.kernel, stride, case.pad)
    return lambda x: F.avg_pool2d(x, case.kernel, stride, case.pad, count_include_pad=True)


@pytest.mark.parametrize("case", TORCH_POOL_CASES, ids=str)
def test_pool_matches_torch(case):
    x, dout = case.arrays()
    forward = getattr(fast, f"{case.kind_name}_pool_forward")
    backward = getattr(fast, f"{case.kind_name}_pool_backward")
    out, cache = forward(x, **case.kwargs)
    dx = backward(dout, cache)
    t_out, (t_dx,) = torch_forward_backward(_torch_pool(case), [x], dout)
    assert_close(out, t_out, case.dtype, "out")
    assert_close(dx, t_dx, case.dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "kernel, stride, pad",
    [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 0))],
    ids=["k2-s2-p0", "k3-s1-p1", "k3-s2-p1", "k2x3-s1x2-p1x0"],
)
def test_max_pool_ties_match_torch(rng, kernel, stride, pad, dtype):
    """Tied maxima (small integers): the gradient goes where PyTorch's CPU kernel sends it."""
    x = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(dtype)
    out, cache = fast.max_pool_forward(x, kernel, stride, pad)
    dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)  # distinct, so a misroute shows
    t_out, (t_dx,) = torch_forward_backward(lambda t: F.max_pool2d(t, kernel, stride, pad), [x], dout)
    np.testing.assert_array_equal(out, t_out)
    np.testing.assert_array_equal(fast.max_pool_backward(dout, cache), t_dx)
