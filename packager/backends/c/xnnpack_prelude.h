/* ---- dsopack xnnpack backend: XNNPACK operators inside a region ---------
 * Pasted once into every translation unit with xnnpack regions (after cgen_prelude.h).
 *
 * XNNPACK packs a conv's or dense's weights into its own layout when the operator
 * is created (the layout depends on the CPU's microkernels, so it happens at
 * load, not at build), and binds an operator to its tensors' addresses at setup.
 * A region's operators are therefore an *instance*: created on first use from
 * the weights the call passes, and used by one call at a time. Each region keeps
 * a pool of instances behind a mutex: a call takes one (creating it when all are
 * in use by concurrent runs) and gives it back. Each extra instance costs one
 * more copy of the region's packed weights. The instances are freed when the
 * file is unloaded. Operators run without a pthreadpool (on the calling thread):
 * the region's tasks split the work over dsopack's own threads, one operator per
 * block fixed at build time, so the outputs do not depend on the thread count. */
#ifndef DPK_XNNPACK_PRELUDE_H
#define DPK_XNNPACK_PRELUDE_H
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <xnnpack.h>

typedef struct dpk_xnn_instance {
  struct dpk_xnn_instance *next; /* in its pool's free list */
  size_t count;
  int kept; /* listed in its pool's `all` (else freed at release) */
  xnn_operator_t ops[];
} dpk_xnn_instance;

/* creates the region's operators (count of them) into ops from the call's arguments, 0 or -1 after set_error */
typedef int (*dpk_xnn_create_fn)(const dpk_value *args, xnn_operator_t *ops);

typedef struct dpk_xnn_pool {
  pthread_mutex_t lock;
  dpk_xnn_instance *free; /* instances not in use */
  dpk_xnn_instance *all[64]; /* every instance made, for the unload (more are made, never kept, past 64) */
  size_t made;
  size_t count; /* operators per instance */
  struct dpk_xnn_pool *next_pool; /* the translation unit's pools, for the unload */
} dpk_xnn_pool;

#define DPK_XNN_POOL(count) {PTHREAD_MUTEX_INITIALIZER, NULL, {NULL}, 0, (count), NULL}

static dpk_xnn_pool *dpk_xnn_pools; /* this translation unit's pools that made an instance */
static pthread_mutex_t dpk_xnn_pools_lock = PTHREAD_MUTEX_INITIALIZER;

static void dpk_xnn_delete(dpk_xnn_instance *inst) {
  for (size_t i = 0; i < inst->count; ++i)
    if (inst->ops[i]) xnn_delete_operator(inst->ops[i]);
  free(inst);
}

/* An instance of the region's operators for this call; NULL after set_error. */
static dpk_xnn_instance *dpk_xnn_acquire(dpk_xnn_pool *pool, const dpk_value *args, dpk_xnn_create_fn create,
                                         const char *fn) {
  pthread_mutex_lock(&pool->lock);
  dpk_xnn_instance *inst = pool->free;
  if (inst) pool->free = inst->next;
  pthread_mutex_unlock(&pool->lock);
  if (inst) return inst;
  enum xnn_status status = xnn_initialize(NULL);
  if (status != xnn_status_success) {
    DPK_HOST_ERROR("kernel %s: xnn_initialize failed (status %d; XNNPACK needs SSE4.1 on x86-64)", fn, (int)status);
    return NULL;
  }
  inst = calloc(1, sizeof *inst + pool->count * sizeof(xnn_operator_t));
  if (!inst) {
    DPK_HOST_ERROR("kernel %s: out of memory for %zu XNNPACK operators", fn, pool->count);
    return NULL;
  }
  inst->count = pool->count;
  if (create(args, inst->ops) != 0) {
    dpk_xnn_delete(inst);
    return NULL;
  }
  pthread_mutex_lock(&pool->lock);
  if (pool->made == 0) {
    pthread_mutex_lock(&dpk_xnn_pools_lock);
    pool->next_pool = dpk_xnn_pools;
    dpk_xnn_pools = pool;
    pthread_mutex_unlock(&dpk_xnn_pools_lock);
  }
  if (pool->made < sizeof pool->all / sizeof pool->all[0]) {
    pool->all[pool->made++] = inst;
    inst->kept = 1;
  }
  pthread_mutex_unlock(&pool->lock);
  return inst;
}

static void dpk_xnn_release(dpk_xnn_pool *pool, dpk_xnn_instance *inst) {
  if (!inst->kept) {
    dpk_xnn_delete(inst);
    return;
  }
  pthread_mutex_lock(&pool->lock);
  inst->next = pool->free;
  pool->free = inst;
  pthread_mutex_unlock(&pool->lock);
}

__attribute__((destructor)) static void dpk_xnn_unload(void) {
  for (dpk_xnn_pool *pool = dpk_xnn_pools; pool; pool = pool->next_pool)
    for (size_t i = 0; i < pool->made; ++i) dpk_xnn_delete(pool->all[i]);
  dpk_xnn_pools = NULL;
}

/* A failed create: the node, what, and XNNPACK's status. */
#define DPK_XNN_CHECK(fn, node, call)                                                                   \
  do {                                                                                                \
    enum xnn_status dpk_status_ = (call);                                                             \
    if (dpk_status_ != xnn_status_success) {                                                          \
      DPK_HOST_ERROR("kernel %s: XNNPACK refused node %s (status %d)", fn, node, (int)dpk_status_);     \
      return -1;                                                                                      \
    }                                                                                                 \
  } while (0)

/* dst[n][p][c] = src[n][c][p] (NCHW -> NHWC) for the images n of units [begin, end) of `tiles` position tiles
 * each; nhwc = 0 goes the other way. */
static void dpk_xnn_transpose(const float *restrict src, float *restrict dst, int64_t C, int64_t P, int64_t tile,
                              int64_t begin, int64_t end, int to_nhwc) {
  const int64_t tiles = (P + tile - 1) / tile;
  for (int64_t u = begin; u < end; ++u) {
    const int64_t n = u / tiles, p0 = u % tiles * tile, p1 = p0 + tile < P ? p0 + tile : P;
    const float *restrict s = src + n * C * P;
    float *restrict d = dst + n * C * P;
    if (to_nhwc) {
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = 0; c < C; ++c) d[p * C + c] = s[c * P + p];
    } else {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = p0; p < p1; ++p) d[c * P + p] = s[p * C + c];
    }
  }
}

/* y = y * sigmoid(y) (a SiLU) in place over `pixels` rows of `width` channels, `stride` apart: `op` is a sigmoid
 * created for width and stride, writing `chunk` rows at a time into scratch (chunk * width floats), so the
 * product reads rows the sigmoid has just read, from cache. */
static inline void dpk_xnn_swish(xnn_operator_t op, float *restrict y, float *restrict scratch, int64_t pixels,
                                 int64_t width, int64_t stride, int64_t chunk) {
  for (int64_t p0 = 0; p0 < pixels; p0 += chunk) {
    const int64_t n = pixels - p0 < chunk ? pixels - p0 : chunk;
    float *restrict rows = y + p0 * stride;
    /* created for these strides, and every chunk fits the scratch: setup and run cannot fail */
    (void)xnn_setup_sigmoid_nc_f32(op, (size_t)n, rows, scratch, NULL);
    (void)xnn_run_operator(op, NULL);
    for (int64_t p = 0; p < n; ++p)
      for (int64_t c = 0; c < width; ++c) rows[p * stride + c] *= scratch[p * width + c];
  }
}
#endif
