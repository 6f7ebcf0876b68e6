# ---------------------------------------------------------------- ReLU
# One pass over flat arrays per call, on OpenMP threads: the results of fastconv.layers'
# numpy formulas, bit for bit (fastconv/engine/activations.py owns the policy). Blocks of
# 4096 elements: each thread's share is contiguous, and the loop vectorizes (a select).

def relu_forward_kernel(const floating[::1] x, floating[::1] out, int num_threads):
    """out = np.maximum(x, 0): x where x > 0 or x is NaN (as it is), else +0.0 (-0.0 too).

    x    (P,)  IN
    out  (P,)  OUT (may not alias x)
    """
    cdef Py_ssize_t P = x.shape[0], blocks, blk, k, lo, hi
    cdef floating v
    if out.shape[0] != P:
        raise ValueError(f"out must have x's length {P}, got {out.shape[0]}")
    _check_threads(num_threads)
    blocks = (P + 4095) // 4096
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=num_threads):
            lo = blk * 4096
            hi = min(lo + 4096, P)
            for k in range(lo, hi):
                v = x[k]
                out[k] = v if (v > 0) | (v != v) else 0


def relu_backward_kernel(const floating[::1] dout, const floating[::1] x, floating[::1] dx, int num_threads):
    """dx = dout where x > 0, else +0.0 (a NaN or infinity in dout where x <= 0 or is NaN
    gives +0.0, as in fastconv.layers.relu_backward).

    dout (P,)  IN
    x    (P,)  IN, the forward pass's input
    dx   (P,)  OUT (may not alias dout or x)
    """
    cdef Py_ssize_t P = x.shape[0], blocks, blk, k, lo, hi
    if dout.shape[0] != P or dx.shape[0] != P:
        raise ValueError(f"dout and dx must have x's length {P}, got {dout.shape[0]} and {dx.shape[0]}")
    _check_threads(num_threads)
    blocks = (P + 4095) // 4096
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=num_threads):
            lo = blk * 4096
            hi = min(lo + 4096, P)
            for k in range(lo, hi):
                dx[k] = dout[k] if x[k] > 0 else 0
