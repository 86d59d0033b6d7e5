from libc.stdint cimport uint8_t

cdef void count_soc(
    Py_ssize_t n_clusters, Py_ssize_t n_packs, const double* cl_in, const uint8_t* cl_flags,
    const double* pack_f, const double* cap_ah, double* q_ah, double dt_s, double eta_charge,
    double v_full, double v_empty, double idle_a, double cluster_nominal_v,
    double* soc_pct, double* out, uint8_t* anchored, double* stack_out,
) noexcept nogil
