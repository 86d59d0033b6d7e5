from libc.stdint cimport uint8_t, int32_t

cdef void balance_cells(
    Py_ssize_t n_clusters, Py_ssize_t n_cells, Py_ssize_t n_packs, const double* cell_v, const uint8_t* fresh,
    double v_lo, double v_hi, const double* cl_agg_f, const double* pack_f, const uint8_t* cl_flags,
    double on_mv, double off_mv, double v_min_balance, uint8_t* balance, int32_t* count,
) noexcept nogil

cdef void decide_bypass(
    Py_ssize_t n_clusters, Py_ssize_t n_packs, Py_ssize_t cells_per_pack,
    const double* pack_f, const int32_t* pack_i, const double* pack_pole_t, const double* soc_pct,
    const double* cl_in, const double* bp, uint8_t* bypass, int32_t* denied,
) noexcept nogil
