/* ---- dsopack host backend: helpers its kernels call --------------------
 * Pasted once into every model file with host kernels (after cgen_prelude.h). */
#ifndef DPK_HOST_PRELUDE_H
#define DPK_HOST_PRELUDE_H
#include <stdint.h>

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
#endif
