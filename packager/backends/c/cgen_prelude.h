/* ---- dsopack generated code: what cgen's helpers call ------------------
 * Pasted once into every model file with C kernels (packager/backends/cgen.py
 * reads it; the build puts it after the file's header, which includes
 * dpk_abi.h and defines __dpk_api and __dpk_parallel). */
#ifndef DPK_CGEN_PRELUDE_H
#define DPK_CGEN_PRELUDE_H
#include <stdint.h>
#include <stdio.h> /* snprintf, for argument errors */
#include "dpk_abi.h"
extern const dpk_backend_api *__dpk_api;
extern const dpk_parallel_api *__dpk_parallel;

#define DPK_HOST_ERROR(...) \
  do { if (__dpk_api && __dpk_api->set_error) __dpk_api->set_error(__VA_ARGS__); } while (0)

/* Argument count and type codes of a packed call. */
static int dpk_host_check_args(const char *fn, const int *type_codes, int nargs, int expected) {
  if (nargs != expected) {
    DPK_HOST_ERROR("kernel %s expects %d arguments, got %d", fn, expected, nargs);
    return -1;
  }
  for (int i = 0; i < nargs; ++i) {
    if (type_codes[i] != DPK_TYPE_TENSOR) {
      DPK_HOST_ERROR("kernel %s: argument %d must be a tensor (type code %d), got type code %d",
                     fn, i, (int)DPK_TYPE_TENSOR, type_codes[i]);
      return -1;
    }
  }
  return 0;
}

/* One tensor argument: dtype, shape, compact layout. `want` spells the expected type. */
static int dpk_host_check_tensor(const char *fn, const dpk_value *args, int i, const char *name,
                                 int code, int bits, int ndim, const int64_t *dims,
                                 const char *want) {
  const DLTensor *t = args[i].v_tensor;
  if (!t || !t->data) {
    DPK_HOST_ERROR("kernel %s: argument %d (%s) has no data", fn, i, name);
    return -1;
  }
  int ok = t->ndim == ndim && t->dtype.code == code && t->dtype.bits == bits && t->dtype.lanes == 1;
  for (int d = 0; ok && d < ndim; ++d) ok = t->shape[d] == dims[d];
  int64_t stride = 1;
  for (int d = ndim - 1; ok && t->strides && d >= 0; --d) {
    ok = dims[d] == 1 || t->strides[d] == stride;
    stride *= dims[d];
  }
  if (!ok) {
    char got[160];
    int n = snprintf(got, sizeof got, "code %d bits %d [", (int)t->dtype.code, (int)t->dtype.bits);
    for (int d = 0; d < t->ndim && n > 0 && n < (int)sizeof got - 24; ++d)
      n += snprintf(got + n, sizeof got - n, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (n > 0 && n < (int)sizeof got - 2) snprintf(got + n, sizeof got - n, "]%s", t->strides ? " strided" : "");
    DPK_HOST_ERROR("kernel %s: argument %d (%s) must be compact %s, got %s", fn, i, name, want, got);
    return -1;
  }
  return 0;
}

static inline void *dpk_host_data(const dpk_value *v) {
  return (char *)v->v_tensor->data + v->v_tensor->byte_offset;
}

/* Parallel loops (dpk_abi.h, "Parallel loops for code inside a model file").
 * A loop body is a static task over units [begin, end) that reads its tensors
 * from a dpk_host_task (the in0.. / out0 of its block) and its scratch (the
 * region's workspace on the calling thread, the runtime's buffer on others).
 * dpk_host_parallel hands the units to the runtime's threads when it offers
 * them, else (an older runtime, or scratch it could not allocate) runs them
 * all here: the serial path is always there and always correct. */
typedef struct dpk_host_task {
  const void *in[4]; /* cgen.TASK_MAX_INPUTS */
  void *out;
} dpk_host_task;

static inline void dpk_host_parallel(int64_t n, dpk_task_fn fn, dpk_host_task *ctx, size_t scratch_bytes,
                                     void *scratch) {
  if (__dpk_parallel && __dpk_parallel->parallel_for &&
      __dpk_parallel->parallel_for(n, fn, ctx, scratch_bytes, scratch) == 0)
    return;
  fn(ctx, 0, n, scratch);
}
#endif
