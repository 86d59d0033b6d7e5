# Shape checks for the Python-facing wrappers: run once per call, before the nogil kernel touches memory.
cdef inline int require_c_contiguous(str name, Py_ssize_t rows, Py_ssize_t cols,
                                     Py_ssize_t want_rows, Py_ssize_t want_cols) except -1:
    if rows != want_rows or cols != want_cols:
        raise ValueError(f"{name} must have shape ({want_rows}, {want_cols}), got ({rows}, {cols})")
    return 0

cdef inline int require_len(str name, Py_ssize_t n, Py_ssize_t want) except -1:
    if n != want:
        raise ValueError(f"{name} must have {want} elements, got {n}")
    return 0
