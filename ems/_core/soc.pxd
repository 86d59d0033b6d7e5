from libc.stdint cimport uint8_t, int32_t

cdef void estimate_soc(
    Py_ssize_t C, Py_ssize_t N, Py_ssize_t P, const double* cell_v, const double* cell_t, const uint8_t* fresh,
    const double* cl_in, const uint8_t* cl_flags, const int32_t* agg_i, const double* agg_f,
    const double* cap_ah, const double* tp, const double* ep, const double* ocv, const double* hyst, Py_ssize_t m,
    double* cell_soc, double* cell_sig, double* se, double dt_s,
    double* charge_ah, double* soc_pct, double* out, uint8_t* anchored, double* stack_out,
) noexcept nogil
