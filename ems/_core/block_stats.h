/* Plain min / max / sum of a block of doubles, and an "all flags set" test: the inner loops of cell
 * aggregation's fast path.
 *
 * Why C: the compiler does not vectorise min/max reductions without -ffast-math, and -ffast-math would
 * break the NaN tests the kernels rely on. So the vector code is written out with SSE2 intrinsics
 * (baseline on every x86-64, no -march needed); everywhere else (aarch64 until its NEON path is written
 * and tested under emulation) a 4-lane scalar version runs. Both give the exact min and max; the sum
 * differs from a sequential one only in rounding order.
 *
 * Values are not checked here: the caller accepts a block only when every flag is set, min/max lie in
 * the sensor range and the sum is not NaN (a NaN anywhere makes the sum NaN); otherwise it takes the
 * per-cell path.
 */
#ifndef EMS_BLOCK_STATS_H
#define EMS_BLOCK_STATS_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && !defined(EMS_NO_SIMD)
#include <emmintrin.h>
#define EMS_SIMD_NAME "sse2"
#else
#define EMS_SIMD_NAME "scalar"
#endif

static inline void ems_block_stats_scalar(const double *x, Py_ssize_t n, double *out) {
    double a0 = INFINITY, a1 = INFINITY, a2 = INFINITY, a3 = INFINITY;
    double b0 = -INFINITY, b1 = -INFINITY, b2 = -INFINITY, b3 = -INFINITY;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    Py_ssize_t k = 0;
    for (; k + 4 <= n; k += 4) {   /* four independent chains keep the FP units busy */
        double p = x[k], q = x[k + 1], r = x[k + 2], s = x[k + 3];
        a0 = p < a0 ? p : a0; a1 = q < a1 ? q : a1; a2 = r < a2 ? r : a2; a3 = s < a3 ? s : a3;
        b0 = p > b0 ? p : b0; b1 = q > b1 ? q : b1; b2 = r > b2 ? r : b2; b3 = s > b3 ? s : b3;
        s0 += p; s1 += q; s2 += r; s3 += s;
    }
    for (; k < n; k++) { double p = x[k]; a0 = p < a0 ? p : a0; b0 = p > b0 ? p : b0; s0 += p; }
    a0 = a0 < a1 ? a0 : a1; a2 = a2 < a3 ? a2 : a3;
    b0 = b0 > b1 ? b0 : b1; b2 = b2 > b3 ? b2 : b3;
    out[0] = a0 < a2 ? a0 : a2;
    out[1] = b0 > b2 ? b0 : b2;
    out[2] = (s0 + s1) + (s2 + s3);
}

static inline void ems_block_stats(const double *x, Py_ssize_t n, double *out) {
#if defined(__SSE2__) && !defined(EMS_NO_SIMD)
    __m128d mn0 = _mm_set1_pd(INFINITY), mn1 = mn0, mx0 = _mm_set1_pd(-INFINITY), mx1 = mx0;
    __m128d s0 = _mm_setzero_pd(), s1 = s0;
    double m[2], M[2], S[2], lo, hi, s;
    Py_ssize_t k = 0;
    for (; k + 4 <= n; k += 4) {
        __m128d a = _mm_loadu_pd(x + k), b = _mm_loadu_pd(x + k + 2);
        mn0 = _mm_min_pd(a, mn0); mn1 = _mm_min_pd(b, mn1);
        mx0 = _mm_max_pd(a, mx0); mx1 = _mm_max_pd(b, mx1);
        s0 = _mm_add_pd(s0, a); s1 = _mm_add_pd(s1, b);
    }
    _mm_storeu_pd(m, _mm_min_pd(mn0, mn1));
    _mm_storeu_pd(M, _mm_max_pd(mx0, mx1));
    _mm_storeu_pd(S, _mm_add_pd(s0, s1));
    lo = m[0] < m[1] ? m[0] : m[1];
    hi = M[0] > M[1] ? M[0] : M[1];
    s = S[0] + S[1];
    for (; k < n; k++) { double p = x[k]; lo = p < lo ? p : lo; hi = p > hi ? p : hi; s += p; }
    out[0] = lo; out[1] = hi; out[2] = s;
#else
    ems_block_stats_scalar(x, n, out);
#endif
}

/* 1 when every byte of flags[0..n) is exactly 1 (all cells fresh), compared 8 bytes at a time. */
static inline int ems_all_ones(const uint8_t *flags, Py_ssize_t n) {
    const uint64_t ones = 0x0101010101010101ULL;
    uint64_t w;
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        memcpy(&w, flags + k, 8);
        if (w != ones) return 0;
    }
    for (; k < n; k++) if (flags[k] != 1) return 0;
    return 1;
}

/* 1 when every byte of flags[0..n) is 0. */
static inline int ems_all_zero(const uint8_t *flags, Py_ssize_t n) {
    uint64_t w;
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        memcpy(&w, flags + k, 8);
        if (w != 0) return 0;
    }
    for (; k < n; k++) if (flags[k] != 0) return 0;
    return 1;
}

/* Passive balancing flags for a block of cells (see balance.pyx for the rule):
 *   new = fresh && lo <= x <= hi && x > (state ? off_at : on_at)
 * written into state; returns how many cells bleed. The SSE2 path turns the comparison masks of 16
 * cells into 16 bytes and combines them with the state and fresh bytes in one go. */
static inline int32_t ems_balance_block_scalar(const double *x, const uint8_t *fresh, uint8_t *state,
                                               Py_ssize_t n, double lo, double hi, double on_at, double off_at) {
    int32_t count = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        double a = x[k];
        double thr = state[k] ? off_at : on_at;
        uint8_t b = (uint8_t)((fresh[k] != 0) & (a >= lo) & (a <= hi) & (a > thr));
        state[k] = b;
        count += b;
    }
    return count;
}

#if defined(__SSE2__) && !defined(EMS_NO_SIMD)
/* 16 doubles compared against one threshold → 16 mask bytes (0xFF / 0x00) */
static inline __m128i ems_mask16_gt(const double *x, __m128d t) {
    __m128 q[4];
    for (int j = 0; j < 4; j++) {
        __m128d m0 = _mm_cmpgt_pd(_mm_loadu_pd(x + 4 * j), t);
        __m128d m1 = _mm_cmpgt_pd(_mm_loadu_pd(x + 4 * j + 2), t);
        q[j] = _mm_shuffle_ps(_mm_castpd_ps(m0), _mm_castpd_ps(m1), _MM_SHUFFLE(2, 0, 2, 0));
    }
    __m128i w0 = _mm_packs_epi32(_mm_castps_si128(q[0]), _mm_castps_si128(q[1]));
    __m128i w1 = _mm_packs_epi32(_mm_castps_si128(q[2]), _mm_castps_si128(q[3]));
    return _mm_packs_epi16(w0, w1);
}
static inline __m128i ems_mask16_in(const double *x, __m128d lo, __m128d hi) {
    __m128 q[4];
    for (int j = 0; j < 4; j++) {
        __m128d a = _mm_loadu_pd(x + 4 * j), b = _mm_loadu_pd(x + 4 * j + 2);
        __m128d m0 = _mm_and_pd(_mm_cmpge_pd(a, lo), _mm_cmple_pd(a, hi));
        __m128d m1 = _mm_and_pd(_mm_cmpge_pd(b, lo), _mm_cmple_pd(b, hi));
        q[j] = _mm_shuffle_ps(_mm_castpd_ps(m0), _mm_castpd_ps(m1), _MM_SHUFFLE(2, 0, 2, 0));
    }
    __m128i w0 = _mm_packs_epi32(_mm_castps_si128(q[0]), _mm_castps_si128(q[1]));
    __m128i w1 = _mm_packs_epi32(_mm_castps_si128(q[2]), _mm_castps_si128(q[3]));
    return _mm_packs_epi16(w0, w1);
}
#endif

static inline int32_t ems_balance_block(const double *x, const uint8_t *fresh, uint8_t *state, Py_ssize_t n,
                                        double lo, double hi, double on_at, double off_at) {
#if defined(__SSE2__) && !defined(EMS_NO_SIMD)
    const __m128d vlo = _mm_set1_pd(lo), vhi = _mm_set1_pd(hi), von = _mm_set1_pd(on_at), voff = _mm_set1_pd(off_at);
    const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi8(1);
    __m128i total = _mm_setzero_si128();
    Py_ssize_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m128i st = _mm_loadu_si128((const __m128i *)(state + k));
        __m128i fr = _mm_loadu_si128((const __m128i *)(fresh + k));
        __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(fr, zero), ems_mask16_in(x + k, vlo, vhi));
        __m128i on = ems_mask16_gt(x + k, von);
        __m128i off = ems_mask16_gt(x + k, voff);
        __m128i was = _mm_cmpeq_epi8(st, zero);               /* 0xFF where the cell was not bleeding */
        __m128i above = _mm_or_si128(_mm_and_si128(was, on), _mm_andnot_si128(was, off));
        __m128i b = _mm_and_si128(_mm_and_si128(ok, above), one);
        _mm_storeu_si128((__m128i *)(state + k), b);
        total = _mm_add_epi64(total, _mm_sad_epu8(b, zero));
    }
    int64_t t[2];
    _mm_storeu_si128((__m128i *)t, total);
    return (int32_t)(t[0] + t[1]) + ems_balance_block_scalar(x + k, fresh + k, state + k, n - k, lo, hi, on_at, off_at);
#else
    return ems_balance_block_scalar(x, fresh, state, n, lo, hi, on_at, off_at);
#endif
}
#endif
