/*
 * kernels.h: the runtime's own float32 compute kernels (used by the `json`
 * module kind; nothing here depends on the rest of libdpk).
 *
 * Conventions for every kernel:
 * - Buffers are compact row-major float32. An output never overlaps an input
 *   (the pointers are `restrict`); callers guarantee it.
 * - Sizes are element counts (>= 0). Kernels never allocate, keep no state,
 *   and are safe to call from many threads at once.
 * - Shapes are checked by the caller (at load); kernels trust them.
 */
#ifndef DPK_KERNELS_H
#define DPK_KERNELS_H

#include <stdint.h>

#define DPK_K_MAX_DIMS 8 /* rank limit of broadcasting operands */

/* Loops over n elements are written as blocks of DPK_K_LANES with a fixed
 * trip count, then a scalar tail: gcc vectorises the blocks even at -O2
 * (whose cost model refuses loops that need an epilogue), clang at any -O.
 * DPK_K_FOR_LANES(i, n, BODY) runs BODY for i = 0 .. n-1 that way; BODY
 * uses `i`. */
#define DPK_K_LANES 8
#define DPK_K_FOR_LANES(i, n, BODY)                                  \
  do {                                                               \
    int64_t i##_base = 0;                                            \
    for (; i##_base + DPK_K_LANES <= (n); i##_base += DPK_K_LANES)   \
      for (int i##_lane = 0; i##_lane < DPK_K_LANES; i##_lane++) {   \
        const int64_t i = i##_base + i##_lane;                       \
        BODY;                                                        \
      }                                                              \
    for (int64_t i = i##_base; i < (n); i++) {                       \
      BODY;                                                          \
    }                                                                \
  } while (0)

/* y[m, n] = x[m, k] @ w[n, k]^T (+ b[n] if b is not NULL). */
void dpk_k_dense(const float *restrict x, const float *restrict w, const float *restrict b, float *restrict y,
                 int64_t m, int64_t k, int64_t n);

/* c[m, n] = a[m, k] @ b[k, n]. */
void dpk_k_matmul(const float *restrict a, const float *restrict b, float *restrict c, int64_t m, int64_t k,
                  int64_t n);

/* A broadcast iteration space, NumPy rules, with unit dimensions dropped and
 * mergeable dimensions merged (so a same-shape add is one flat loop).
 * Strides are in elements of each operand; 0 where it is broadcast. */
typedef struct dpk_k_bcast {
  int ndim;                        /* >= 1 after dpk_k_bcast_init */
  int64_t shape[DPK_K_MAX_DIMS];
  int64_t a_stride[DPK_K_MAX_DIMS];
  int64_t b_stride[DPK_K_MAX_DIMS];
} dpk_k_bcast;

/* Broadcast shape a (a_ndim dims) against shape b. Writes the full result
 * shape to out_shape (max(a_ndim, b_ndim) dims, *out_ndim) and the collapsed
 * iteration space to *out_bcast. Returns 0, or -1 if a dimension pair is
 * neither equal nor 1, or a rank exceeds DPK_K_MAX_DIMS. */
int dpk_k_bcast_init(int a_ndim, const int64_t *a_shape, int b_ndim, const int64_t *b_shape,
                     int64_t *out_shape, int *out_ndim, dpk_k_bcast *out_bcast);

/* Number of elements the iteration space covers. */
int64_t dpk_k_bcast_count(const dpk_k_bcast *bcast);

typedef enum { DPK_K_ADD, DPK_K_SUB, DPK_K_MUL, DPK_K_DIV } dpk_k_binop;

/* y = a <op> b elementwise over `bcast` (y is compact in the result shape). */
void dpk_k_binary(dpk_k_binop op, const dpk_k_bcast *bcast, const float *a, const float *b, float *restrict y);

/* Batched matmul: for every index of the batch space `batch` (a broadcast of
 * the two operands' leading dimensions, strides in whole matrices),
 * c[i] = a[ia] @ b[ib] with a matrices [m, k], b [k, n], c [m, n]. */
void dpk_k_matmul_batched(const float *a, const float *b, float *restrict c, int64_t m, int64_t k, int64_t n,
                          const dpk_k_bcast *batch);

/* Unary elementwise over n elements. */
void dpk_k_relu(const float *restrict x, float *restrict y, int64_t n);
void dpk_k_sigmoid(const float *restrict x, float *restrict y, int64_t n);
void dpk_k_tanh(const float *restrict x, float *restrict y, int64_t n);

/* Softmax along the middle axis of x viewed as [outer, len, inner]
 * (numerically stable: the maximum is subtracted before exp). */
void dpk_k_softmax(const float *restrict x, float *restrict y, int64_t outer, int64_t len, int64_t inner);

#endif /* DPK_KERNELS_H */
