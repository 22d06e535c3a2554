/* softmax.c: numerically stable softmax along any axis, float32.
 *
 * x is viewed as [outer, len, inner] with the softmax axis in the middle.
 * Last axis (inner == 1): three passes over each contiguous row (max, exp
 * and sum, scale). Other axes: the inner dimension is processed in chunks
 * whose running max and sum live on the stack, so every pass is a
 * contiguous loop and nothing is allocated. */
#include <math.h>

#include "kernels.h"

#define CHUNK 256

static void softmax_row(const float *restrict x, float *restrict y, int64_t len) {
  float max = x[0];
  for (int64_t j = 1; j < len; j++) max = x[j] > max ? x[j] : max;
  float sum = 0.0f;
  for (int64_t j = 0; j < len; j++) {
    y[j] = expf(x[j] - max);
    sum += y[j];
  }
  const float scale = 1.0f / sum;
  DPK_K_FOR_LANES(j, len, y[j] *= scale);
}

/* Softmax over `len` rows of stride `inner`, for `width` <= CHUNK columns. */
static void softmax_columns(const float *restrict x, float *restrict y, int64_t len, int64_t inner, int64_t width) {
  float max[CHUNK], sum[CHUNK];
  for (int64_t i = 0; i < width; i++) {
    max[i] = x[i];
    sum[i] = 0.0f;
  }
  for (int64_t j = 1; j < len; j++) {
    const float *xj = x + j * inner;
    DPK_K_FOR_LANES(i, width, max[i] = xj[i] > max[i] ? xj[i] : max[i]);
  }
  for (int64_t j = 0; j < len; j++) {
    const float *xj = x + j * inner;
    float *yj = y + j * inner;
    for (int64_t i = 0; i < width; i++) {
      yj[i] = expf(xj[i] - max[i]);
      sum[i] += yj[i];
    }
  }
  for (int64_t i = 0; i < width; i++) sum[i] = 1.0f / sum[i];
  for (int64_t j = 0; j < len; j++) {
    float *yj = y + j * inner;
    DPK_K_FOR_LANES(i, width, yj[i] *= sum[i]);
  }
}

void dpk_k_softmax(const float *restrict x, float *restrict y, int64_t outer, int64_t len, int64_t inner) {
  if (len <= 0) return;
  for (int64_t o = 0; o < outer; o++) {
    const float *xo = x + o * len * inner;
    float *yo = y + o * len * inner;
    if (inner == 1) {
      softmax_row(xo, yo, len);
      continue;
    }
    for (int64_t c = 0; c < inner; c += CHUNK) {
      const int64_t width = inner - c < CHUNK ? inner - c : CHUNK;
      softmax_columns(xo + c, yo + c, len, inner, width);
    }
  }
}
