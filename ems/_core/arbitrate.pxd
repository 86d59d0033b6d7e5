from libc.stdint cimport uint8_t, int8_t

cdef double narrow_requests(
    Py_ssize_t n_requests, const int8_t* kind, const double* value_w, const uint8_t* active,
    double lo_w, double hi_w, uint8_t* status, double* interval,
) noexcept nogil

cdef double next_setpoint(
    double target_w, double prev_w, double lo_w, double hi_w, double ramp_w_per_s, double dt_s,
    double deadband_w,
) noexcept nogil

cdef double distribute_power(
    Py_ssize_t n_units, double total_w, const double* chg_max_w, const double* dchg_max_w,
    const double* e_chg_wh, const double* e_dchg_wh, const uint8_t* online, double* out_w,
    uint8_t* work,
) noexcept nogil
