/* model_dims.c: the public accessors of dynamic shapes (dpk.h, "Dynamic
 * shapes"): dims, each input's and output's dims, plans, the plan a run
 * would use and the shape of an output. They only read the model (plans.c
 * does the checks), so they are safe to call from many threads at once. */
#include <string.h>

#include "error.h"
#include "manifest.h"
#include "model.h"
#include "package.h"
#include "plans.h"

/* NULL handles give 0 here (dpk.h, "NULL"). */
size_t dpk_model_num_dims(const dpk_model_t *model) { return model ? model->package->num_dims : 0; }
size_t dpk_model_num_plans(const dpk_model_t *model) { return model ? model->package->num_plans : 0; }

dpk_status_t dpk_model_dim_info(const dpk_model_t *model, size_t index, const char **out_name, int64_t *out_min,
                                int64_t *out_max, const char **out_exact) {
  if (out_name) *out_name = NULL;
  if (out_min) *out_min = 0;
  if (out_max) *out_max = 0;
  if (out_exact) *out_exact = NULL;
  if (!model || !out_name || !out_min || !out_max || !out_exact)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_dim_info: %s is NULL",
                    !model ? "model" : !out_name ? "out_name" : !out_min ? "out_min" : !out_max ? "out_max" : "out_exact");
  const dpk_package_t *pkg = model->package;
  if (index >= pkg->num_dims)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "dim index %zu is out of range: '%s' has %zu dims", index, pkg->path,
                    pkg->num_dims);
  *out_name = pkg->dims[index].name;
  *out_min = pkg->dims[index].min;
  *out_max = pkg->dims[index].max;
  *out_exact = pkg->dims[index].exact;
  return DPK_OK;
}

static dpk_status_t tensor_dims(const dpk_model_t *model, bool input, size_t index, const char *const **out_dims) {
  const char *role = input ? "input" : "output";
  if (out_dims) *out_dims = NULL;
  if (!model || !out_dims)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_%s_dims: %s is NULL", role, !model ? "model" : "out_dims");
  const dpk_package_t *pkg = model->package;
  size_t n = input ? pkg->num_inputs : pkg->num_outputs;
  if (index >= n)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "%s index %zu is out of range: the model has %zu", role, index, n);
  *out_dims = (input ? pkg->inputs : pkg->outputs)[index].dims;
  return DPK_OK;
}

dpk_status_t dpk_model_input_dims(const dpk_model_t *model, size_t index, const char *const **out_dims) {
  return tensor_dims(model, true, index, out_dims);
}

dpk_status_t dpk_model_output_dims(const dpk_model_t *model, size_t index, const char *const **out_dims) {
  return tensor_dims(model, false, index, out_dims);
}

dpk_status_t dpk_model_plan_info(const dpk_model_t *model, size_t index, const char **out_graph,
                                 const int64_t **out_sizes) {
  if (out_graph) *out_graph = NULL;
  if (out_sizes) *out_sizes = NULL;
  if (!model || !out_graph || !out_sizes)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_plan_info: %s is NULL",
                    !model ? "model" : !out_graph ? "out_graph" : "out_sizes");
  const dpk_package_t *pkg = model->package;
  if (index >= pkg->num_plans)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "plan index %zu is out of range: '%s' has %zu plans", index, pkg->path,
                    pkg->num_plans);
  *out_graph = pkg->modules[pkg->plans[index].graph].name;
  *out_sizes = pkg->plans[index].sizes;
  return DPK_OK;
}

/* The checks of select_plan and output_shape: the inputs bound to dim values, and the plan. */
static dpk_status_t bind_and_pick(const dpk_model_t *model, const char *api, const DLTensor *const *inputs,
                                  size_t num_inputs, int64_t *values, size_t *plan) {
  if (!model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s: model is NULL", api);
  if (!inputs && num_inputs)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s: inputs is NULL but num_inputs is %zu", api, num_inputs);
  const dpk_package_t *pkg = model->package;
  dpk_status_t status = dpk_model_check_count(pkg->inputs, pkg->num_inputs, num_inputs, "input");
  if (!status) status = dpk_plans_bind(model, inputs, values);
  if (!status) status = dpk_plans_pick(model, values, plan);
  return status;
}

dpk_status_t dpk_model_select_plan(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                                   size_t *out_plan) {
  if (!out_plan) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_select_plan: out_plan is NULL");
  *out_plan = 0;
  int64_t values[DPK_DIMS_MAX];
  size_t plan;
  dpk_status_t status = bind_and_pick(model, "dpk_model_select_plan", inputs, num_inputs, values, &plan);
  if (status) return status;
  int64_t rows;
  dpk_chunks_first(model->package, dpk_chunks_dim(model->package, plan, values), values, &plan, &rows);
  *out_plan = plan;
  return DPK_OK;
}

dpk_status_t dpk_model_output_shape(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                                    size_t index, int64_t *out_shape) {
  if (!model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_output_shape: model is NULL");
  const dpk_package_t *pkg = model->package;
  if (index >= pkg->num_outputs)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "output index %zu is out of range: the model has %zu", index,
                    pkg->num_outputs);
  if (!out_shape) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_output_shape: out_shape is NULL");
  const dpk_tensor_decl_t *decl = &pkg->outputs[index];
  memset(out_shape, 0, (size_t)decl->ndim * sizeof *out_shape);
  int64_t values[DPK_DIMS_MAX];
  size_t plan;
  dpk_status_t status = bind_and_pick(model, "dpk_model_output_shape", inputs, num_inputs, values, &plan);
  if (status) return status;
  dpk_plans_actual_shape(decl, values, out_shape);
  return DPK_OK;
}
