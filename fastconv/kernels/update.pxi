# ---------------------------------------------------------------- Adam
def adam_update(const floating[::1] w, const floating[::1] dw, floating[::1] m, floating[::1] v,
                floating[::1] out, double one_minus_b1, double one_minus_b2, double b1, double b2,
                double c1, double c2, double lr, double eps, int num_threads):
    """One Adam step in one pass: the operations of fastconv.optim's formulas, one element
    at a time in the same order and precision as numpy runs them on whole arrays (every
    constant rounded to w's dtype first, as numpy does with a Python float), so the same
    bits: m = b1 m + (1 - b1) dw; v = b2 v + (dw dw)(1 - b2);
    out = w - (m / c1) lr / (sqrt(v / c2) + eps).

    w, dw   (P,)  IN
    m, v    (P,)  IN/OUT, the state
    out     (P,)  OUT (may not alias w)
    """
    cdef Py_ssize_t P = w.shape[0], blocks, blk, k, lo, hi
    cdef floating fb1 = <floating>b1, fb2 = <floating>b2, f1 = <floating>one_minus_b1
    cdef floating f2 = <floating>one_minus_b2, fc1 = <floating>c1, fc2 = <floating>c2
    cdef floating flr = <floating>lr, feps = <floating>eps, g, den
    if dw.shape[0] != P or m.shape[0] != P or v.shape[0] != P or out.shape[0] != P:
        raise ValueError("dw, m, v and out must have w's length")
    _check_threads(num_threads)
    blocks = (P + 4095) // 4096
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=num_threads):
            lo = blk * 4096
            hi = min(lo + 4096, P)
            # two loops over the block (in cache): one loop over all five arrays needs
            # more runtime alias checks than GCC vectorizes with
            for k in range(lo, hi):
                g = dw[k]
                m[k] = m[k] * fb1 + f1 * g
                v[k] = v[k] * fb2 + (g * g) * f2
            for k in range(lo, hi):
                if floating is float:
                    den = sqrtf(v[k] / fc2) + feps
                else:
                    den = sqrt(v[k] / fc2) + feps
                out[k] = w[k] - (m[k] / fc1) * flr / den
