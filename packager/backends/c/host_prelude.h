/* ---- dsopack host backend: helpers its kernels call --------------------
 * Pasted once into every model file with host kernels (after cgen_prelude.h). */
#ifndef DPK_HOST_PRELUDE_H
#define DPK_HOST_PRELUDE_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* First o >= 0 with o * s >= a, and first o with o * s >= b (clamped to [lo, n]):
 * the outputs of a sliding window whose taps land inside the input. */
static inline int64_t dpk_host_first(int64_t a, int64_t s) {
  return a <= 0 ? 0 : (a + s - 1) / s;
}
static inline int64_t dpk_host_end(int64_t b, int64_t s, int64_t n) {
  int64_t e = b <= 0 ? 0 : (b + s - 1) / s;
  return e < n ? e : n;
}

/* Pad: the input position (0..n-1) that output position i (counted from the input's start, so the
 * padding before it is negative) reads, or -1 for the pad value. mode: 0 constant, 1 reflect (mirror
 * without repeating the edge), 2 edge, 3 wrap (host.PAD_MODE_CODES). n >= 1 unless mode is 0. */
static inline int64_t dpk_host_pad_source(int64_t i, int64_t n, int mode) {
  if (i >= 0 && i < n) return i;
  if (mode == 0) return -1;
  if (mode == 2) return i < 0 ? 0 : n - 1;
  if (mode == 3) return (i % n + n) % n;
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1), r = (i % period + period) % period;
  return r < n ? r : period - r;
}

/* y[m, n] = sum_k x[m, k] * w[n, k] + (b ? b[n] : 0): x [M, K], w [N, K] (dense).
 * A lane array keeps DPK_HOST_LANES partial sums (an explicit reassociation, so
 * the compiler vectorizes the dot product without -ffast-math). Blocking several
 * rows of w per x load measured 3x slower with gcc 12: it defeats the vectorizer. */
#define DPK_HOST_LANES 8
static inline void dpk_host_dense(const float *restrict x, const float *restrict w,
                                  const float *restrict b, float *restrict y,
                                  int64_t M, int64_t N, int64_t K) {
  const int64_t K8 = K / DPK_HOST_LANES * DPK_HOST_LANES;
  for (int64_t m = 0; m < M; ++m) {
    const float *restrict xr = x + m * K;
    float *restrict yr = y + m * N;
    for (int64_t n = 0; n < N; ++n) {
      const float *restrict wr = w + n * K;
      float a[DPK_HOST_LANES] = {0};
      for (int64_t k = 0; k < K8; k += DPK_HOST_LANES)
        for (int j = 0; j < DPK_HOST_LANES; ++j) a[j] += xr[k + j] * wr[k + j];
      float s = 0.0f;
      for (int j = 0; j < DPK_HOST_LANES; ++j) s += a[j];
      for (int64_t k = K8; k < K; ++k) s += xr[k] * wr[k];
      yr[n] = b ? s + b[n] : s;
    }
  }
}
/* float16 tensors hold IEEE binary16 bits (uint16_t); elementwise kernels compute them as float
 * (exact) and round once on store, to nearest even, as NumPy computes float16. */
static inline float dpk_host_half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 1023u;
  if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
    const float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  const uint32_t bits = e == 31 ? sign | 0x7F800000u | (m << 13) : sign | ((e + 112u) << 23) | (m << 13);
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}
static inline uint16_t dpk_host_double_to_half(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  const uint16_t sign = (uint16_t)((b >> 48) & 0x8000u);
  const uint64_t abs = b & 0x7FFFFFFFFFFFFFFFull;
  if (abs >= 0x7FF0000000000000ull) /* infinity, or NaN (quiet) */
    return (uint16_t)(sign | 0x7C00u | (abs > 0x7FF0000000000000ull ? 0x200u : 0u));
  const int e = (int)(abs >> 52) - 1023;
  if (e >= 16) return (uint16_t)(sign | 0x7C00u); /* 2^16 and above: infinity */
  if (e < -25) return sign;                       /* below 2^-25: rounds to zero */
  const uint64_t m = (abs & 0xFFFFFFFFFFFFFull) | 0x10000000000000ull; /* 53 bits, the leading 1 explicit */
  const int shift = e >= -14 ? 42 : 28 - e; /* bits dropped: down to 11 (normal) or fewer (subnormal) */
  uint64_t q = m >> shift;
  const uint64_t rest = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
  if (rest > half || (rest == half && (q & 1))) ++q; /* to nearest, ties to even */
  /* normal: q holds the leading 1 (0x400), so adding (e + 14) << 10 gives the exponent field e + 15, and a
   * carry to 0x800 bumps it (to infinity past the largest). Subnormal: q is the encoding itself. */
  return (uint16_t)(sign | (e >= -14 ? (uint64_t)(e + 14) * 1024u + q : q));
}
static inline uint16_t dpk_host_float_to_half(float f) { return dpk_host_double_to_half((double)f); }

/* ---- float math without libm calls, so that gcc vectorizes the loops that call it (a call to
 * glibc's expf/tanhf per element stays scalar). Plain C99 and branch-free: gcc 12 (without
 * -fno-trapping-math) does not if-convert a float compare, nor a select between two computed floats,
 * so the selects are bit masks over the floats' bits (dpk_bits, dpk_pick).
 * Error bounds, measured against double over every float32 with |x| <= 104 (and tested against NumPy,
 * tests/test_host_speedups.py), in units of EPS32 = 2^-23 relative to the exact result:
 *   dpk_expf     <= 0.7 EPS32 for results >= FLT_MIN; below that (x < -87.3) a subnormal or 0 within
 *                2^-149 absolute; +inf above 88.72; NaN -> NaN.
 *   dpk_sigmoidf <= 1.25 EPS32 (1 / (1 + dpk_expf(-x))); results below FLT_MIN (x < -87.3) give 0.
 *   dpk_tanhf    <= 1.25 EPS32 (odd polynomial below |x| = 0.625, above it 1 - 2 / (e^2|x| + 1)).
 *   dpk_erff     <= 1.7 EPS32 (odd polynomial below |x| = 1, above it 1 - e^-x^2 H(1/|x|)).
 * The same input gives the same bits whatever the thread count (one function per element). */
static inline uint32_t dpk_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static inline float dpk_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
/* a where the condition c (0 or 1) holds, else b */
static inline float dpk_pick(uint32_t c, float a, float b) {
  const uint32_t m = 0u - c;
  return dpk_float((dpk_bits(a) & m) | (dpk_bits(b) & ~m));
}
static inline float dpk_expf(float x) {
  /* x = k ln2 + r, |r| <= ln2 / 2 (ln2 in two parts, Cody-Waite); e^r by Cephes' expf polynomial;
   * 2^k as two exact powers (each in the normal range) so that subnormal and infinite results come
   * out of the last multiplication. x is clamped to [-104, 89] (on its bits: -104 is 0xC2D00000,
   * 89 is 0x42B20000) only to keep k in [-150, 129]; a NaN is put back at the end. */
  const uint32_t u = dpk_bits(x);
  const float lo = dpk_pick(u > 0xC2D00000u, -104.0f, x);
  const float xc = dpk_pick((int32_t)u > 0x42B20000, 89.0f, lo);
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  const float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
  const float p = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                      + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r) + 1.0f;
  const int32_t k = (int32_t)kf, h = k / 2;
  const float y = p * dpk_float((uint32_t)(h + 127) << 23) * dpk_float((uint32_t)(k - h + 127) << 23);
  return dpk_pick((u & 0x7FFFFFFFu) > 0x7F800000u, x, y);
}
static inline float dpk_sigmoidf(float x) { return 1.0f / (1.0f + dpk_expf(-x)); }
static inline float dpk_tanhf(float x) {
  const float a = fabsf(x), z = x * x;
  /* |x| < 0.625 (0x3F200000): |x| + |x|^3 P(x^2), P fitted to tanh's relative error on [0, 0.625] */
  const float small = a + a * z * (((((2.17807013541e-3f * z - 8.21501947939e-3f) * z + 2.17155702412e-2f) * z
                                     - 5.39494007826e-2f) * z + 1.33332267403e-1f) * z - 3.33333313465e-1f);
  const float big = 1.0f - 2.0f / (dpk_expf(2.0f * a) + 1.0f); /* e^2|x| = inf gives 1; NaN stays NaN */
  return copysignf(dpk_pick(dpk_bits(a) < 0x3F200000u, small, big), x); /* odd, -0 stays -0 */
}

static inline float dpk_erff(float x) {
  /* |x| < 1 (0x3F800000): |x| P(x^2); 1 <= |x| < 4: 1 - e^-x^2 H(1/|x|) (H fitted to e^x^2 erfc(x) within
   * 4.5e-7 relative, where erfc <= 0.16); from 4 on (0x40800000) erf rounds to 1. Fitted polynomials
   * (least squares on relative error, tests/test_host_speedups.py holds them to the bound). */
  const float a = fabsf(x), z = x * x;
  const float small = a * ((((((8.00701891421e-5f * z - 8.05378891528e-4f) * z + 5.19296154380e-3f) * z
                               - 2.68560703844e-2f) * z + 1.12836346030e-1f) * z - 3.76126289368e-1f) * z
                           + 1.12837922573f);
  const float ac = dpk_pick(dpk_bits(a) > 0x40800000u, 4.0f, a), t = 1.0f / ac;
  const float h = ((((((-1.66907496750e-2f * t + 1.16051703691e-1f) * t - 3.46540987492e-1f) * t + 5.68936526775e-1f) * t
                     - 5.02356648445e-1f) * t + 4.99312505126e-2f) * t + 5.57914376259e-1f) * t + 3.38216981618e-4f;
  const float big = 1.0f - dpk_expf(-(ac * ac)) * h;
  const float y = copysignf(dpk_pick(dpk_bits(a) < 0x3F800000u, small, big), x);
  return dpk_pick((dpk_bits(x) & 0x7FFFFFFFu) > 0x7F800000u, x, y);
}

/* pow(a, b) with the commonest exponents as products (GPT-2's GELU cubes x; glibc's pow costs ~50x a
 * multiplication): a * a is exact in double for a float or an int32 a, a * a * a rounds once more than
 * pow, so the float32 result is the same up to a double rounding (below 1 ulp of float32). */
static inline double dpk_pow(double a, double b) {
  return b == 2.0 ? a * a : (b == 3.0 ? a * a * a : (b == 1.0 ? a : pow(a, b)));
}
#endif
