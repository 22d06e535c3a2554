/* chunks.c: a size far below the plan that holds it, run as chunks of plan
 * sizes (plans.h). Padding batch 33 to the batch-64 plan computes 31 rows
 * for nothing; 32 + 1 computes none. Only a padded dim qualifies (the
 * packager proved its rows independent, so rows may as well run apart) and
 * only when it is axis 0 of every input and output that names it: a chunk
 * is then the caller's buffer at an offset with a smaller axis 0. Each
 * chunk runs exactly in its plan but the last, which may pad. Whether to
 * cut is the plans' `cost`s (the packager's estimate of each plan's time):
 * two smaller runs must cost less than the padded one; a memory-bound MLP
 * whose weights dominate pads, a convnet cuts. The chunks depend on the
 * sizes alone, so a given input gives the same bits on every run. */
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "manifest.h"
#include "model.h"
#include "package.h"
#include "plans.h"

#define PATH(m) ((m)->package->path)

static bool leads_everywhere(const dpk_package_t *pkg, int k) {
  for (size_t i = 0; i < pkg->num_inputs + pkg->num_outputs; i++) {
    const dpk_tensor_decl_t *d = i < pkg->num_inputs ? &pkg->inputs[i] : &pkg->outputs[i - pkg->num_inputs];
    for (int32_t a = 1; a < d->ndim; a++)
      if (d->axis_dim[a] == k) return false;
  }
  return true;
}

int dpk_chunks_dim(const dpk_package_t *pkg, size_t plan, const int64_t *values) {
  for (size_t k = 0; k < pkg->num_dims; k++)
    if (!pkg->dims[k].exact && pkg->plans[plan].sizes[k] != values[k] && leads_everywhere(pkg, (int)k))
      return (int)k;
  return -1;
}

void dpk_chunks_first(const dpk_package_t *pkg, int k, const int64_t *values, size_t *out_plan, int64_t *out_rows) {
  long plan = dpk_plans_find(pkg, values); /* found: the caller picked a plan for the whole */
  *out_plan = (size_t)(plan < 0 ? 0 : plan);
  *out_rows = k < 0 ? 0 : values[k];
  if (k < 0 || plan < 0) return;
  int64_t v[DPK_DIMS_MAX], best = 0;
  long first = -1;
  memcpy(v, values, pkg->num_dims * sizeof *v);
  for (size_t p = 0; p < pkg->num_plans; p++) { /* the largest size of dim k below the value with its own plan */
    int64_t s = pkg->plans[p].sizes[k];
    if (s >= values[k] || s <= best) continue;
    v[k] = s;
    long q = dpk_plans_find(pkg, v);
    if (q >= 0 && pkg->plans[q].sizes[k] == s) {
      best = s;
      first = q;
    }
  }
  if (first < 0) return;
  v[k] = values[k] - best;
  long rest = dpk_plans_find(pkg, v); /* found: fewer rows than the whole */
  if (rest < 0 || pkg->plans[first].cost + pkg->plans[rest].cost >= pkg->plans[plan].cost) return;
  *out_plan = (size_t)first;
  *out_rows = best;
}

/* `t` cut to rows [first, first + rows) of its axis 0. */
static void slice(const DLTensor *t, int64_t first, int64_t rows, DLTensor *out, int64_t *shape) {
  *out = *t;
  memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
  size_t row = dpk_dtype_size(t->dtype);
  for (int32_t a = 1; a < t->ndim; a++) row *= (size_t)t->shape[a];
  shape[0] = rows;
  out->shape = shape;
  out->byte_offset += (uint64_t)first * row;
}

int dpk_chunks_run(const dpk_model_t *model, int k, const int64_t *values, const DLTensor *const *inputs,
                   DLTensor *const *outputs, bool *out_called) {
  const dpk_package_t *pkg = model->package;
  size_t ni = pkg->num_inputs, n = ni + pkg->num_outputs, axes = 0;
  *out_called = false;
  for (size_t i = 0; i < n; i++) axes += (size_t)(i < ni ? inputs[i] : outputs[i - ni])->ndim;
  DLTensor *tensors = malloc((n + 1) * sizeof *tensors), **args = malloc((n + 1) * sizeof *args);
  int64_t *shapes = malloc((axes + 1) * sizeof *shapes);
  if (!tensors || !args || !shapes) {
    free(tensors);
    free(args);
    free(shapes);
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory for the chunked run of '%s'", PATH(model));
  }
  int64_t v[DPK_DIMS_MAX];
  memcpy(v, values, pkg->num_dims * sizeof *v);
  int rc = 0;
  for (int64_t done = 0; done < values[k] && !rc;) {
    size_t plan;
    int64_t rows;
    v[k] = values[k] - done;
    dpk_chunks_first(pkg, k, v, &plan, &rows);
    v[k] = rows;
    int64_t *shape = shapes;
    for (size_t i = 0; i < n; i++) {
      const dpk_tensor_decl_t *d = i < ni ? &pkg->inputs[i] : &pkg->outputs[i - ni];
      const DLTensor *t = i < ni ? inputs[i] : outputs[i - ni];
      if (d->ndim && d->axis_dim[0] == k)
        slice(t, done, rows, &tensors[i], shape);
      else
        tensors[i] = *t; /* not along the dim: every chunk reads it whole, or writes the same values */
      args[i] = &tensors[i];
      shape += t->ndim;
    }
    bool called = false;
    rc = dpk_plans_call(model, plan, v, (const DLTensor *const *)args, args + ni, &called);
    *out_called |= called;
    done += rows;
  }
  free(tensors);
  free(args);
  free(shapes);
  return rc;
}
