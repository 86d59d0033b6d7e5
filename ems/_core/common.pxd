# Small inline helpers shared by the kernels; no Python objects, safe without the GIL.
from libc.math cimport isnan, INFINITY, NAN

cdef inline double dmin(double a, double b) noexcept nogil:
    return a if a < b else b

cdef inline double dmax(double a, double b) noexcept nogil:
    return a if a > b else b

cdef inline double clamp(double x, double lo, double hi) noexcept nogil:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x
