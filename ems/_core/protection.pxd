from libc.stdint cimport uint8_t, int8_t, int32_t

cdef void fill_sources(
    Py_ssize_t n_clusters, const double* cl_agg_f, const int32_t* cl_agg_i, const double* cl_in,
    const double* soc_out, double* src,
) noexcept nogil

cdef Py_ssize_t evaluate_table(
    Py_ssize_t n_rows, Py_ssize_t n_clusters, const double* tab_f, const int32_t* tab_i,
    const double* src, const double* cl_in, double idle_a, double dt_ms, double trip_delay_ms,
    bint reset_request, uint8_t* bits, double* timers, int8_t* level, uint8_t* changed,
    uint8_t* cl_prot, double* trip_timer_ms, double trip_open_a, double trip_max_wait_ms,
) noexcept nogil
