/* pad.c: a plan called on inputs smaller than its sizes (plans.c decides
 * when): each input copied into a zero-filled, 64-aligned buffer of the
 * plan's shape (the data at the low indices of every axis), the plan run on
 * those buffers and on outputs of the plan's shape, then the actual region
 * of each output copied to the caller's buffer. The padded rows' results are
 * dropped. The buffers live for the call only. */
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "manifest.h"
#include "model.h"
#include "package.h"
#include "plans.h"
#include "shape.h"

#define PATH(m) ((m)->package->path)

/* Copy the region of shape `small` (compact, at `s`) to or from the low
 * indices of every axis of the compact buffer `b` of shape `big`. The
 * trailing axes where the shapes agree are one contiguous chunk. */
static void copy_region(uint8_t *s, uint8_t *b, int32_t ndim, const int64_t *small, const int64_t *big, size_t esize,
                        bool to_big) {
  int32_t k = ndim - 1;
  while (k > 0 && small[k] == big[k]) k--;
  size_t chunk = esize;
  for (int32_t a = k < 0 ? 0 : k; a < ndim; a++) chunk *= (size_t)small[a];
  uint64_t rows = 1;
  int64_t index[32], stride[32]; /* the row being copied; big's strides in bytes */
  for (int32_t a = 0; a < k; a++) {
    rows *= (uint64_t)small[a];
    index[a] = 0;
  }
  for (int32_t a = ndim - 1; a >= 0; a--) stride[a] = a == ndim - 1 ? (int64_t)esize : stride[a + 1] * big[a + 1];
  if (!chunk) return;
  for (uint64_t r = 0; r < rows; r++, s += chunk) {
    int64_t at = 0;
    for (int32_t a = 0; a < k; a++) at += index[a] * stride[a];
    if (to_big)
      memcpy(b + at, s, chunk);
    else
      memcpy(s, b + at, chunk);
    for (int32_t a = k - 1; a >= 0 && ++index[a] == small[a]; a--) index[a] = 0;
  }
}

int dpk_pad_call(const dpk_model_t *m, size_t plan, const int64_t *values, const DLTensor *const *inputs,
                 DLTensor *const *outputs, bool *out_called) {
  const dpk_package_t *pkg = m->package;
  size_t ni = pkg->num_inputs, n = ni + pkg->num_outputs, axes = 0;
  *out_called = false;
  for (size_t i = 0; i < n; i++) axes += (size_t)(i < ni ? pkg->inputs[i] : pkg->outputs[i - ni]).ndim;
  DLTensor *tensors = calloc(n + 1, sizeof *tensors);
  DLTensor **args = calloc(n + 1, sizeof *args);
  int64_t *shapes = calloc(axes + 1, sizeof *shapes);
  int rc = tensors && args && shapes ? 0 : DPK_STATUS_RESOURCE_EXHAUSTED;
  int64_t *shape = shapes, actual[32];
  for (size_t i = 0; i < n && !rc; i++) {
    const dpk_tensor_decl_t *decl = i < ni ? &pkg->inputs[i] : &pkg->outputs[i - ni];
    dpk_package_plan_shape(pkg, plan, decl, shape);
    uint64_t numel;
    dpk_shape_numel(decl->ndim, shape, &numel); /* at most the manifest's shape, checked when it was read */
    size_t bytes = (size_t)numel * dpk_dtype_size(decl->dtype);
    DLTensor *t = &tensors[i];
    t->device.device_type = kDLCPU;
    t->ndim = decl->ndim;
    t->dtype = decl->dtype;
    t->shape = shape;
    args[i] = t;
    shape += decl->ndim;
    if (posix_memalign(&t->data, 64, bytes ? (bytes + 63) / 64 * 64 : 64)) {
      t->data = NULL;
      rc = DPK_STATUS_RESOURCE_EXHAUSTED;
    } else if (i < ni) {
      memset(t->data, 0, bytes);
      dpk_plans_actual_shape(decl, values, actual);
      copy_region((uint8_t *)inputs[i]->data + inputs[i]->byte_offset, t->data, decl->ndim, actual, t->shape,
                  dpk_dtype_size(decl->dtype), true);
    }
  }
  if (rc) {
    rc = dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory for the padded run of '%s'", PATH(m));
  } else {
    rc = dpk_model_call_plan(m, plan, (const DLTensor *const *)args, args + ni, out_called);
    for (size_t o = 0; !rc && o < pkg->num_outputs; o++) {
      const dpk_tensor_decl_t *decl = &pkg->outputs[o];
      dpk_plans_actual_shape(decl, values, actual);
      copy_region((uint8_t *)outputs[o]->data + outputs[o]->byte_offset, tensors[ni + o].data, decl->ndim, actual,
                  tensors[ni + o].shape, dpk_dtype_size(decl->dtype), false);
    }
  }
  for (size_t i = 0; tensors && i < n; i++) free(tensors[i].data);
  free(tensors);
  free(args);
  free(shapes);
  return rc;
}

