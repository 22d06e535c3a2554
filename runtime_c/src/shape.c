/* shape.c: shapes and the check of a caller's tensor against a declared
 * one (dpk_model_run, the graph kind's `main`). */
#include <stdio.h>

#include "dtype.h"
#include "error.h"
#include "manifest.h"
#include "shape.h"

bool dpk_shape_numel(int32_t ndim, const int64_t *shape, uint64_t *out_numel) {
  uint64_t n = 1;
  for (int32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0) return false;
    uint64_t d = (uint64_t)shape[i];
    if (d && n > UINT64_MAX / d) return false;
    n *= d;
  }
  *out_numel = n;
  return true;
}

const char *dpk_shape_str(int32_t ndim, const int64_t *shape, char *buffer, size_t capacity) {
  return dpk_shape_range_str(ndim, shape, shape, buffer, capacity);
}

const char *dpk_shape_range_str(int32_t ndim, const int64_t *lo, const int64_t *hi, char *buffer, size_t capacity) {
  size_t used = 0;
  if (!capacity) return "";
  buffer[0] = '\0';
  for (int32_t i = -1; i <= ndim && used < capacity; i++) {
    int n = i < 0 ? snprintf(buffer + used, capacity - used, "[")
            : i == ndim ? snprintf(buffer + used, capacity - used, "]")
            : lo[i] == hi[i] ? snprintf(buffer + used, capacity - used, "%s%lld", i ? ", " : "", (long long)hi[i])
                             : snprintf(buffer + used, capacity - used, "%s%lld..%lld", i ? ", " : "", (long long)lo[i],
                                        (long long)hi[i]);
    if (n < 0) break;
    used += (size_t)n;
  }
  return buffer;
}

dpk_status_t dpk_check_tensor(const DLTensor *tensor, const char *role, const dpk_tensor_decl_t *decl) {
  char want[256], got[256];
  if (!tensor || (!tensor->data && !tensor->byte_offset)) {
    uint64_t numel;
    if (!tensor || (dpk_shape_numel(decl->ndim, decl->shape, &numel) && numel))
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' has no data", role, decl->name);
  }
  if (tensor->device.device_type != kDLCPU)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' is on device type %d; only CPU (1) tensors are accepted", role,
                    decl->name, (int)tensor->device.device_type);
  /* The shape strings are only formatted on failure: this runs on every call. */
  bool same = tensor->ndim == decl->ndim && (decl->ndim == 0 || tensor->shape);
  for (int32_t i = 0; same && i < decl->ndim; i++) same = tensor->shape[i] == decl->shape[i];
  if (!same) {
    if (tensor->ndim >= 0 && (tensor->shape || tensor->ndim == 0))
      dpk_shape_str(tensor->ndim, tensor->shape, got, sizeof got);
    else
      snprintf(got, sizeof got, "(ndim %d)", (int)tensor->ndim);
    dpk_shape_str(decl->ndim, decl->shape, want, sizeof want);
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' has shape %s but the model expects %s%s", role, decl->name,
                    got, dpk_dtype_name(decl->dtype), want);
  }
  DLDataType d = tensor->dtype;
  if (d.code != decl->dtype.code || d.bits != decl->dtype.bits || d.lanes != 1) {
    dpk_shape_str(decl->ndim, decl->shape, want, sizeof want);
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' has dtype %s but the model expects %s%s", role, decl->name,
                    dpk_dtype_name(d), dpk_dtype_name(decl->dtype), want);
  }
  if (tensor->strides) {
    int64_t expect = 1;
    for (int32_t i = decl->ndim - 1; i >= 0; i--) {
      if (decl->shape[i] != 1 && tensor->strides[i] != expect)
        return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' is not compact row-major (stride %lld of dim %d; want %lld)",
                        role, decl->name, (long long)tensor->strides[i], (int)i, (long long)expect);
      expect *= decl->shape[i];
    }
  }
  return DPK_OK;
}
