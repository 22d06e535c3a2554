/* linear.c: dense (x @ W^T + b) and matmul, float32.
 *
 * Both are written for the auto-vectoriser rather than by hand: the dot
 * product keeps 8 independent partial sums (so it vectorises without
 * -ffast-math reassociation), and matmul runs its innermost loop along a
 * contiguous output row (an axpy), in DPK_K_FOR_LANES blocks. */
#include <string.h>

#include "kernels.h"

#define DOT_LANES 8

static float dot(const float *restrict a, const float *restrict b, int64_t n) {
  float acc[DOT_LANES] = {0};
  int64_t i = 0;
  for (; i + DOT_LANES <= n; i += DOT_LANES)
    for (int l = 0; l < DOT_LANES; l++) acc[l] += a[i + l] * b[i + l];
  float tail = 0.0f;
  for (; i < n; i++) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

void dpk_k_dense(const float *restrict x, const float *restrict w, const float *restrict b, float *restrict y,
                 int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; i++) {
    const float *xi = x + i * k;
    float *yi = y + i * n;
    for (int64_t j = 0; j < n; j++) yi[j] = dot(xi, w + j * k, k);
    if (b) DPK_K_FOR_LANES(j, n, yi[j] += b[j]);
  }
}

void dpk_k_matmul(const float *restrict a, const float *restrict b, float *restrict c, int64_t m, int64_t k,
                  int64_t n) {
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * n;
    memset(ci, 0, (size_t)n * sizeof *ci);
    for (int64_t p = 0; p < k; p++) {
      const float aip = a[i * k + p];
      const float *bp = b + p * n;
      DPK_K_FOR_LANES(j, n, ci[j] += aip * bp[j]);
    }
  }
}

void dpk_k_matmul_batched(const float *a, const float *b, float *restrict c, int64_t m, int64_t k, int64_t n,
                          const dpk_k_bcast *batch) {
  const int nd = batch->ndim;
  const int64_t count = dpk_k_bcast_count(batch);
  const int64_t a_size = m * k, b_size = k * n, c_size = m * n;
  int64_t index[DPK_K_MAX_DIMS] = {0};
  int64_t ai = 0, bi = 0; /* current matrix index in a and b */
  for (int64_t i = 0; i < count; i++) {
    dpk_k_matmul(a + ai * a_size, b + bi * b_size, c + i * c_size, m, k, n);
    for (int d = nd - 1; d >= 0; d--) { /* odometer over the batch space */
      ai += batch->a_stride[d];
      bi += batch->b_stride[d];
      if (++index[d] < batch->shape[d]) break;
      ai -= batch->a_stride[d] * batch->shape[d];
      bi -= batch->b_stride[d] * batch->shape[d];
      index[d] = 0;
    }
  }
}
