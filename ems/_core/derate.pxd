from libc.stdint cimport uint8_t, int32_t

cdef void derate_clusters(
    Py_ssize_t n_rows, Py_ssize_t n_clusters, const double* tab_f, const int32_t* tab_i,
    const double* src, const double* cl_in, const uint8_t* cl_flags, const uint8_t* cl_prot,
    double stack_max_chg_a, double stack_max_dchg_a, double* out, double* stack_out,
) noexcept nogil
