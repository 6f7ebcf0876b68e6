# Checks and index helpers shared by the kernel families (included in _im2col.pyx).
cdef int _check_threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return num_threads


cdef int _check_channels(Py_ssize_t c_lo, Py_ssize_t c_hi, Py_ssize_t C) except -1:
    if not 0 <= c_lo <= c_hi <= C:
        raise ValueError(f"need 0 <= c_lo <= c_hi <= {C}, got c_lo={c_lo}, c_hi={c_hi}")
    return 0


cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t step,
                                     Py_ssize_t length) noexcept nogil:
    """First o in [0, length] with ``start + o*step >= 0``."""
    cdef Py_ssize_t a = 0
    if start < 0:
        a = (-start + step - 1) // step
    return min(a, length)


cdef inline Py_ssize_t _end_valid(Py_ssize_t start, Py_ssize_t step, Py_ssize_t length,
                                  Py_ssize_t size) noexcept nogil:
    """One past the last o < length with ``start + o*step < size``."""
    cdef Py_ssize_t b = 0
    if start <= size - 1:
        b = (size - 1 - start) // step + 1
    return min(b, length)
