/* elementwise.c: broadcasting binary ops (add, sub, mul, div) and unary
 * activations (relu, sigmoid, tanh), float32.
 *
 * A broadcast is flattened once, at load, into an iteration space whose
 * innermost dimension is contiguous in the output and has stride 1 or 0 in
 * each operand; the run is an odometer over the outer dimensions calling one
 * of three simple inner loops (vector-vector, scalar-vector, vector-scalar). */
#include <math.h>

#include "kernels.h"

int dpk_k_bcast_init(int a_ndim, const int64_t *a_shape, int b_ndim, const int64_t *b_shape,
                     int64_t *out_shape, int *out_ndim, dpk_k_bcast *out_bcast) {
  if (a_ndim < 0 || b_ndim < 0 || a_ndim > DPK_K_MAX_DIMS || b_ndim > DPK_K_MAX_DIMS) return -1;
  const int nd = a_ndim > b_ndim ? a_ndim : b_ndim;
  int64_t shape[DPK_K_MAX_DIMS], a_stride[DPK_K_MAX_DIMS], b_stride[DPK_K_MAX_DIMS];
  int64_t a_run = 1, b_run = 1; /* contiguous strides of a and b in their own shapes */
  for (int d = nd - 1; d >= 0; d--) {
    const int ad = d - (nd - a_ndim), bd = d - (nd - b_ndim);
    const int64_t an = ad >= 0 ? a_shape[ad] : 1, bn = bd >= 0 ? b_shape[bd] : 1;
    if (an != bn && an != 1 && bn != 1) return -1;
    shape[d] = an == 1 ? bn : an;
    a_stride[d] = an == 1 ? 0 : a_run;
    b_stride[d] = bn == 1 ? 0 : b_run;
    a_run *= an;
    b_run *= bn;
  }
  for (int d = 0; d < nd; d++) out_shape[d] = shape[d];
  *out_ndim = nd;

  /* Collapse, innermost first: drop unit dimensions, merge a dimension into
   * the one inside it when both operands step through them contiguously. */
  int64_t c_shape[DPK_K_MAX_DIMS], c_a[DPK_K_MAX_DIMS], c_b[DPK_K_MAX_DIMS];
  int k = 0;
  for (int d = nd - 1; d >= 0; d--) {
    if (shape[d] == 1) continue;
    if (k > 0 && a_stride[d] == c_a[k - 1] * c_shape[k - 1] && b_stride[d] == c_b[k - 1] * c_shape[k - 1]) {
      c_shape[k - 1] *= shape[d];
      continue;
    }
    c_shape[k] = shape[d];
    c_a[k] = a_stride[d];
    c_b[k] = b_stride[d];
    k++;
  }
  if (k == 0) { /* a single element */
    c_shape[0] = 1;
    c_a[0] = c_b[0] = 1;
    k = 1;
  }
  out_bcast->ndim = k;
  for (int d = 0; d < k; d++) { /* reverse back to outermost-first */
    out_bcast->shape[d] = c_shape[k - 1 - d];
    out_bcast->a_stride[d] = c_a[k - 1 - d];
    out_bcast->b_stride[d] = c_b[k - 1 - d];
  }
  return 0;
}

int64_t dpk_k_bcast_count(const dpk_k_bcast *bcast) {
  int64_t count = 1;
  for (int d = 0; d < bcast->ndim; d++) count *= bcast->shape[d];
  return count;
}

typedef void (*inner_fn)(const float *restrict a, const float *restrict b, float *restrict y, int64_t n);

/* The three inner loops of one operator; EXPR combines floats `u` and `v`. */
#define BINARY_LOOPS(NAME, EXPR)                                                                         \
  static void NAME##_vv(const float *restrict a, const float *restrict b, float *restrict y, int64_t n) { \
    DPK_K_FOR_LANES(i, n, const float u = a[i]; const float v = b[i]; y[i] = (EXPR));                   \
  }                                                                                                      \
  static void NAME##_sv(const float *restrict a, const float *restrict b, float *restrict y, int64_t n) { \
    const float u = a[0];                                                                                \
    DPK_K_FOR_LANES(i, n, const float v = b[i]; y[i] = (EXPR));                                         \
  }                                                                                                      \
  static void NAME##_vs(const float *restrict a, const float *restrict b, float *restrict y, int64_t n) { \
    const float v = b[0];                                                                                \
    DPK_K_FOR_LANES(i, n, const float u = a[i]; y[i] = (EXPR));                                         \
  }

BINARY_LOOPS(add, u + v)
BINARY_LOOPS(sub, u - v)
BINARY_LOOPS(mul, u * v)
BINARY_LOOPS(div, u / v)

/* [op][pattern]: pattern 0 = vv, 1 = sv (a broadcast), 2 = vs (b broadcast). */
static const inner_fn loops[4][3] = {
    [DPK_K_ADD] = {add_vv, add_sv, add_vs},
    [DPK_K_SUB] = {sub_vv, sub_sv, sub_vs},
    [DPK_K_MUL] = {mul_vv, mul_sv, mul_vs},
    [DPK_K_DIV] = {div_vv, div_sv, div_vs},
};

void dpk_k_binary(dpk_k_binop op, const dpk_k_bcast *bcast, const float *a, const float *b, float *restrict y) {
  const int nd = bcast->ndim;
  const int64_t n = bcast->shape[nd - 1];
  const int pattern = bcast->a_stride[nd - 1] == 0 ? 1 : bcast->b_stride[nd - 1] == 0 ? 2 : 0;
  const inner_fn loop = loops[op][pattern];
  int64_t outer = 1;
  for (int d = 0; d < nd - 1; d++) outer *= bcast->shape[d];

  int64_t index[DPK_K_MAX_DIMS] = {0};
  int64_t ai = 0, bi = 0;
  for (int64_t o = 0; o < outer; o++) {
    loop(a + ai, b + bi, y + o * n, n);
    for (int d = nd - 2; d >= 0; d--) { /* odometer over the outer dimensions */
      ai += bcast->a_stride[d];
      bi += bcast->b_stride[d];
      if (++index[d] < bcast->shape[d]) break;
      ai -= bcast->a_stride[d] * bcast->shape[d];
      bi -= bcast->b_stride[d] * bcast->shape[d];
      index[d] = 0;
    }
  }
}

void dpk_k_relu(const float *restrict x, float *restrict y, int64_t n) {
  DPK_K_FOR_LANES(i, n, y[i] = x[i] > 0.0f ? x[i] : 0.0f);
}

/* sigmoid and tanh call libm per element (vectorised only with libmvec and
 * -ffast-math); plain loops. */
void dpk_k_sigmoid(const float *restrict x, float *restrict y, int64_t n) {
  /* exp(-x) overflows to inf for x < -88, giving exactly 0: no special case. */
  for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void dpk_k_tanh(const float *restrict x, float *restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}
