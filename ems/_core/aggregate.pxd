from libc.stdint cimport uint8_t, int32_t

cdef void aggregate_cells(
    Py_ssize_t n_clusters, Py_ssize_t n_cells, Py_ssize_t n_packs,
    const double* cell_v, const double* cell_t, const uint8_t* fresh,
    double v_lo, double v_hi, double t_lo, double t_hi,
    double* cl_f, int32_t* cl_i, double* pack_f, int32_t* pack_i,
    double* stk_f, int32_t* stk_i,
) noexcept nogil
