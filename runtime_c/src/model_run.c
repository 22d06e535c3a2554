/* model_run.c: a loaded model's accessors, function lookup and
 * dpk_model_run (see model.c for the load). All of these only read the
 * model, so they are safe to call from many threads at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "manifest.h"
#include "model.h"
#include "module.h"
#include "package.h"
#include "pool.h"
#include "shape.h"

#define PATH(m) ((m)->package->path)

/* NULL handles give 0 / NULL here (dpk.h, "NULL"). */
const dpk_package_t *dpk_model_package(const dpk_model_t *model) { return model ? model->package : NULL; }
size_t dpk_model_num_inputs(const dpk_model_t *model) { return model ? model->package->num_inputs : 0; }
size_t dpk_model_num_outputs(const dpk_model_t *model) { return model ? model->package->num_outputs : 0; }
size_t dpk_model_num_modules(const dpk_model_t *model) { return model ? model->package->num_modules : 0; }
int dpk_model_num_threads(const dpk_model_t *model) { return model ? model->num_threads : 0; }
const char *dpk_model_isa(const dpk_model_t *model) { return model ? model->isa : NULL; }

static dpk_status_t info(const dpk_model_t *model, bool input, size_t index, dpk_tensor_info_t *out_info) {
  const char *role = input ? "input" : "output";
  if (!out_info) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_%s_info: out_info is NULL", role);
  memset(out_info, 0, sizeof *out_info);
  if (!model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_%s_info: model is NULL", role);
  const dpk_tensor_decl_t *decls = input ? model->package->inputs : model->package->outputs;
  size_t n = input ? model->package->num_inputs : model->package->num_outputs;
  if (index >= n)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "%s index %zu is out of range: the model has %zu", role, index, n);
  const dpk_tensor_decl_t *d = &decls[index];
  out_info->name = d->name;
  out_info->dtype = d->dtype;
  out_info->ndim = d->ndim;
  out_info->shape = d->shape;
  return DPK_OK;
}

dpk_status_t dpk_model_input_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info) {
  return info(model, true, index, out_info);
}

dpk_status_t dpk_model_output_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info) {
  return info(model, false, index, out_info);
}

dpk_status_t dpk_model_module_info(const dpk_model_t *model, size_t index, const char **out_name,
                                   const char **out_kind) {
  if (out_name) *out_name = NULL;
  if (out_kind) *out_kind = NULL;
  if (!model || !out_name || !out_kind)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_module_info: %s is NULL",
                    !model ? "model" : !out_name ? "out_name" : "out_kind");
  if (index >= model->package->num_modules)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "module index %zu is out of range: the model has %zu", index,
                    model->package->num_modules);
  *out_name = model->package->modules[index].name;
  *out_kind = model->package->modules[index].kind;
  return DPK_OK;
}

dpk_status_t dpk_model_get_function(const dpk_model_t *model, const char *name, dpk_packed_fn *out_fn,
                                    void **out_resource) {
  if (out_fn) *out_fn = NULL;
  if (out_resource) *out_resource = NULL;
  if (!model || !name || !out_fn || !out_resource)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_get_function: %s is NULL",
                    !model ? "model" : !name ? "name" : !out_fn ? "out_fn" : "out_resource");
  dpk_packed_fn fn;
  void *resource;
  int rc = dpk_module_find_function(model, model->package->entry, true, name, &fn, &resource);
  if (rc == DPK_STATUS_NOT_FOUND)
    return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': no function '%s' in module '%s' or its imports", PATH(model), name,
                    model->package->modules[model->package->entry].name);
  if (rc) return dpk_status_from_rc(rc);
  *out_fn = fn;
  *out_resource = resource;
  return DPK_OK;
}

/* ---- run ------------------------------------------------------------------ */

dpk_status_t dpk_model_check_count(const dpk_tensor_decl_t *decls, size_t want, size_t got, const char *role) {
  if (want == got) return DPK_OK;
  char names[256] = "";
  for (size_t i = 0, used = 0; i < want && used < sizeof names; i++) {
    int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", decls[i].name);
    if (w < 0) break;
    used += (size_t)w;
  }
  return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "the model takes %zu %ss (%s) but %zu were given", want, role, names,
                  got);
}

#define RUN_STACK_ARGS 64

int dpk_model_call_plan(const dpk_model_t *model, size_t plan, const DLTensor *const *inputs,
                        DLTensor *const *outputs, bool *out_called) {
  *out_called = false;
  const dpk_package_t *pkg = model->package;
  size_t num_inputs = pkg->num_inputs, n = num_inputs + pkg->num_outputs;
  dpk_value stack_values[RUN_STACK_ARGS];
  int stack_codes[RUN_STACK_ARGS];
  dpk_value *values = n <= RUN_STACK_ARGS ? stack_values : malloc(n * sizeof *values);
  int *codes = n <= RUN_STACK_ARGS ? stack_codes : malloc(n * sizeof *codes);
  if (!values || !codes) {
    if (values != stack_values) free(values);
    if (codes != stack_codes) free(codes);
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory running '%s'", PATH(model));
  }
  for (size_t i = 0; i < n; i++) {
    values[i].v_tensor = i < num_inputs ? (DLTensor *)inputs[i] : outputs[i - num_inputs];
    codes[i] = DPK_TYPE_TENSOR;
  }
  dpk_value ret;
  int ret_code = DPK_TYPE_NULL;
  int outer = dpk_pool_set_thread_count(model->num_threads); /* parallel_for reads it */
  *out_called = true;
  int rc = model->plans[plan].fn(values, codes, (int)n, &ret, &ret_code, model->plans[plan].resource);
  dpk_pool_set_thread_count(outer);
  if (values != stack_values) free(values);
  if (codes != stack_codes) free(codes);
  return rc;
}

dpk_status_t dpk_model_run(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                           DLTensor *const *outputs, size_t num_outputs) {
  if (!model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_run: model is NULL");
  if (!inputs && num_inputs)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_run: inputs is NULL but num_inputs is %zu", num_inputs);
  if (!outputs && num_outputs)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_run: outputs is NULL but num_outputs is %zu", num_outputs);
  const dpk_package_t *pkg = model->package;
  dpk_status_t status = dpk_model_check_count(pkg->inputs, pkg->num_inputs, num_inputs, "input");
  if (!status) status = dpk_model_check_count(pkg->outputs, pkg->num_outputs, num_outputs, "output");
  if (status) return status;
  if (pkg->num_dims) return dpk_model_run_dynamic(model, inputs, outputs);
  for (size_t i = 0; i < num_inputs && !status; i++) status = dpk_check_tensor(inputs[i], "input", &pkg->inputs[i]);
  for (size_t i = 0; i < num_outputs && !status; i++) status = dpk_check_tensor(outputs[i], "output", &pkg->outputs[i]);
  if (status) return status;
  bool called;
  int rc = dpk_model_call_plan(model, 0, inputs, outputs, &called);
  if (!rc) return DPK_OK;
  if (!called) return dpk_status_from_rc(rc);
  /* dpk.h: a failed run leaves every output zero, never a partial result.
   * The tensors were checked above: compact, CPU, the declared shape. */
  for (size_t i = 0; i < num_outputs; i++) {
    uint64_t numel = 0;
    dpk_shape_numel(pkg->outputs[i].ndim, pkg->outputs[i].shape, &numel); /* checked when the manifest was read */
    size_t bytes = (size_t)numel * dpk_dtype_size(pkg->outputs[i].dtype);
    if (bytes) memset((uint8_t *)outputs[i]->data + outputs[i]->byte_offset, 0, bytes);
  }
  return dpk_status_from_rc(rc);
}
