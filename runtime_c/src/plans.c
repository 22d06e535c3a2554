/* plans.c: a run of a file with dynamic shapes (docs/format.md, "Dynamic
 * shapes"): each dim's value read off the inputs (in range, the same on
 * every axis that names it), the plan it picks (the first large enough,
 * exactly the size for an `exact` dim), the outputs checked at their actual
 * shapes, then either the plan's graph called on the caller's tensors (its
 * sizes are the values: no copy, no allocation) or a padded call (pad.c).
 * A failed call zeroes every output at its actual shape, as dpk_model_run
 * promises. */
#include <stdio.h>
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
#define LL(x) ((long long)(x))

void dpk_plans_actual_shape(const dpk_tensor_decl_t *decl, const int64_t *values, int64_t *out_shape) {
  for (int32_t a = 0; a < decl->ndim; a++)
    out_shape[a] = decl->axis_dim[a] >= 0 ? values[decl->axis_dim[a]] : decl->shape[a];
}

static dpk_status_t shape_mismatch(const DLTensor *t, const dpk_tensor_decl_t *decl) {
  char got[256], want[256];
  if (t->ndim >= 0 && (t->shape || t->ndim == 0))
    dpk_shape_str(t->ndim, t->shape, got, sizeof got);
  else
    snprintf(got, sizeof got, "(ndim %d)", (int)t->ndim);
  return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "input '%s' has shape %s but the model expects %s%s", decl->name, got,
                  dpk_dtype_name(decl->dtype), dpk_shape_range_str(decl->ndim, decl->min_shape, decl->shape, want,
                                                                   sizeof want));
}

/* One input's axes into values[] (`giver[k]`: the input that set dim k, or -1). */
static dpk_status_t bind_input(const dpk_model_t *m, size_t i, const DLTensor *t, int64_t *values, int32_t *giver) {
  const dpk_package_t *pkg = m->package;
  const dpk_tensor_decl_t *decl = &pkg->inputs[i];
  if (!t) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "input '%s' has no data", decl->name);
  if (t->ndim != decl->ndim || (decl->ndim && !t->shape)) return shape_mismatch(t, decl);
  for (int32_t a = 0; a < decl->ndim; a++) {
    int64_t v = t->shape[a];
    int32_t k = decl->axis_dim[a];
    if (k < 0) {
      if (v != decl->shape[a]) return shape_mismatch(t, decl);
      continue;
    }
    const dpk_dim_decl_t *d = &pkg->dims[k];
    if (v < d->min || v > d->max)
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "input '%s' dim %d (%s) is %lld, outside the range %lld..%lld of '%s'",
                      decl->name, (int)a, d->name, LL(v), LL(d->min), LL(d->max), PATH(m));
    if (giver[k] < 0) {
      giver[k] = (int32_t)i;
      values[k] = v;
    } else if (values[k] != v) {
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "input '%s' dim %d (%s) is %lld but input '%s' gives %s = %lld",
                      decl->name, (int)a, d->name, LL(v), pkg->inputs[giver[k]].name, d->name, LL(values[k]));
    }
  }
  /* The rest (data, device, dtype, layout) against the input at its actual shape. */
  int64_t shape[32];
  dpk_tensor_decl_t actual = *decl;
  dpk_plans_actual_shape(decl, values, shape);
  actual.shape = shape;
  return dpk_check_tensor(t, "input", &actual);
}

dpk_status_t dpk_plans_bind(const dpk_model_t *model, const DLTensor *const *inputs, int64_t *out_values) {
  const dpk_package_t *pkg = model->package;
  int32_t giver[DPK_DIMS_MAX];
  for (size_t k = 0; k < pkg->num_dims; k++) {
    out_values[k] = 0;
    giver[k] = -1;
  }
  for (size_t i = 0; i < pkg->num_inputs; i++) {
    dpk_status_t status = pkg->num_dims ? bind_input(model, i, inputs[i], out_values, giver)
                                        : dpk_check_tensor(inputs[i], "input", &pkg->inputs[i]);
    if (status) return status;
  }
  return DPK_OK;
}

/* "seq 8, 16, 32": the sizes of dim k among the plans, ascending, each once. */
static const char *plan_sizes(const dpk_package_t *pkg, size_t k, char *buffer, size_t capacity) {
  size_t used = (size_t)snprintf(buffer, capacity, "%s", pkg->dims[k].name);
  int64_t last = 0;
  for (;;) { /* the next size above `last`: plans are few, this runs only on failure */
    int64_t next = 0;
    for (size_t p = 0; p < pkg->num_plans; p++) {
      int64_t s = pkg->plans[p].sizes[k];
      if (s > last && (!next || s < next)) next = s;
    }
    if (!next || used >= capacity) break;
    int w = snprintf(buffer + used, capacity - used, "%s%lld", last ? ", " : " ", LL(next));
    if (w < 0) break;
    used += (size_t)w;
    last = next;
  }
  return buffer;
}

static dpk_status_t no_plan(const dpk_model_t *m, const int64_t *values) {
  const dpk_package_t *pkg = m->package;
  char sizes[512];
  /* An exact dim whose value no plan has on its own: name it. */
  for (size_t k = 0; k < pkg->num_dims; k++) {
    if (!pkg->dims[k].exact) continue;
    bool any = false;
    for (size_t p = 0; p < pkg->num_plans && !any; p++) any = pkg->plans[p].sizes[k] == values[k];
    if (!any)
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "'%s' has no plan for %s = %lld (plans: %s) and does not pad %s: %s",
                      PATH(m), pkg->dims[k].name, LL(values[k]), plan_sizes(pkg, k, sizes, sizeof sizes),
                      pkg->dims[k].name, pkg->dims[k].exact);
  }
  /* Each exact value has a plan, but none of those is large enough in the other dims. */
  char want[512], have[1024];
  size_t used = 0, held = 0;
  want[0] = have[0] = '\0';
  for (size_t k = 0; k < pkg->num_dims && used < sizeof want; k++) {
    int w = snprintf(want + used, sizeof want - used, "%s%s = %lld", k ? ", " : "", pkg->dims[k].name, LL(values[k]));
    if (w > 0) used += (size_t)w;
  }
  for (size_t p = 0; p < pkg->num_plans && held < sizeof have; p++)
    for (size_t k = 0; k < pkg->num_dims && held < sizeof have; k++) {
      int w = snprintf(have + held, sizeof have - held, "%s%s=%lld", k ? " " : p ? "; " : "", pkg->dims[k].name,
                       LL(pkg->plans[p].sizes[k]));
      if (w > 0) held += (size_t)w;
    }
  return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "'%s' has no plan for %s (plans: %s); its exact dims are never padded",
                  PATH(m), want, have);
}

long dpk_plans_find(const dpk_package_t *pkg, const int64_t *values) {
  for (size_t p = 0; p < pkg->num_plans; p++) {
    const int64_t *sizes = pkg->plans[p].sizes;
    size_t k = 0;
    while (k < pkg->num_dims && sizes[k] >= values[k] && (!pkg->dims[k].exact || sizes[k] == values[k])) k++;
    if (k == pkg->num_dims) return (long)p;
  }
  return -1;
}

dpk_status_t dpk_plans_pick(const dpk_model_t *model, const int64_t *values, size_t *out_plan) {
  long p = dpk_plans_find(model->package, values);
  *out_plan = p < 0 ? 0 : (size_t)p;
  return p < 0 ? no_plan(model, values) : DPK_OK;
}

int dpk_plans_call(const dpk_model_t *model, size_t plan, const int64_t *values, const DLTensor *const *inputs,
                   DLTensor *const *outputs, bool *out_called) {
  bool exact = true;
  for (size_t k = 0; k < model->package->num_dims; k++) exact &= model->package->plans[plan].sizes[k] == values[k];
  return exact ? dpk_model_call_plan(model, plan, inputs, outputs, out_called)
               : dpk_pad_call(model, plan, values, inputs, outputs, out_called);
}

dpk_status_t dpk_model_run_dynamic(const dpk_model_t *model, const DLTensor *const *inputs,
                                   DLTensor *const *outputs) {
  const dpk_package_t *pkg = model->package;
  int64_t values[DPK_DIMS_MAX], shape[32];
  size_t plan;
  dpk_status_t status = dpk_plans_bind(model, inputs, values);
  if (!status) status = dpk_plans_pick(model, values, &plan);
  for (size_t o = 0; o < pkg->num_outputs && !status; o++) {
    dpk_tensor_decl_t actual = pkg->outputs[o];
    dpk_plans_actual_shape(&actual, values, shape);
    actual.shape = shape;
    status = dpk_check_tensor(outputs[o], "output", &actual);
  }
  if (status) return status;
  bool called;
  int split = dpk_chunks_dim(pkg, plan, values);
  int64_t rows = 0;
  size_t first;
  dpk_chunks_first(pkg, split, values, &first, &rows);
  int rc = split >= 0 && rows < values[split] ? dpk_chunks_run(model, split, values, inputs, outputs, &called)
                                              : dpk_plans_call(model, plan, values, inputs, outputs, &called);
  if (!rc) return DPK_OK;
  if (!called) return dpk_status_from_rc(rc);
  /* dpk.h: a failed run leaves every output zero at its actual shape. */
  for (size_t o = 0; o < pkg->num_outputs; o++) {
    uint64_t numel;
    dpk_plans_actual_shape(&pkg->outputs[o], values, shape);
    dpk_shape_numel(pkg->outputs[o].ndim, shape, &numel);
    size_t bytes = (size_t)numel * dpk_dtype_size(pkg->outputs[o].dtype);
    if (bytes) memset((uint8_t *)outputs[o]->data + outputs[o]->byte_offset, 0, bytes);
  }
  return dpk_status_from_rc(rc);
}
