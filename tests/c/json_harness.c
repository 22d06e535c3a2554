/* json_harness.c: drives the `json` kind without the rest of the runtime
 * (tests/test_json_kind.py compiles it with json.c, kernels/ and the YAML,
 * dtype and error sources into one shared library and calls it by ctypes).
 *
 * It plays the runtime's part: a fake dpk_kind_services whose import_tensor
 * looks names up in a table of weights the test registered. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "kinds.h"

#define MAX_WEIGHTS 64

static struct {
  char name[128];
  DLTensor tensor;
  int64_t shape[16];
} weights[MAX_WEIGHTS];
static int num_weights;

static int import_tensor(const dpk_kind_ctx *ctx, const char *name, const DLTensor **out_tensor) {
  (void)ctx;
  for (int i = 0; i < num_weights; i++) {
    if (strcmp(weights[i].name, name) == 0) {
      *out_tensor = &weights[i].tensor;
      return 0;
    }
  }
  return dpk_fail(DPK_STATUS_NOT_FOUND, "no tensor '%s' in the imports", name);
}

static int import_function(const dpk_kind_ctx *ctx, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  (void)ctx;
  (void)out_fn;
  (void)out_resource;
  return dpk_fail(DPK_STATUS_NOT_FOUND, "no function '%s' in the imports", name);
}

static const dpk_kind_services services = {DPK_ABI_VERSION, dpk_set_error, import_function, import_tensor};

DPK_EXPORT void th_clear_weights(void) { num_weights = 0; }

/* The data is borrowed: the test keeps the array alive. */
DPK_EXPORT int th_add_weight(const char *name, void *data, int ndim, const int64_t *shape, int code, int bits) {
  if (num_weights == MAX_WEIGHTS || ndim > 16 || strlen(name) >= sizeof weights[0].name) return -1;
  int i = num_weights++;
  snprintf(weights[i].name, sizeof weights[i].name, "%s", name);
  memcpy(weights[i].shape, shape, (size_t)ndim * sizeof *shape);
  DLTensor t = {data, {kDLCPU, 0}, ndim, {(uint8_t)code, (uint8_t)bits, 1}, weights[i].shape, NULL, 0};
  weights[i].tensor = t;
  return 0;
}

DPK_EXPORT int th_load(const char *module_name, const void *payload, size_t size, void **out_state) {
  static const char *const no_functions[] = {NULL};
  dpk_kind_load_args args = {module_name, payload, size, no_functions, NULL, &services};
  return dpk_kind_json.load(&args, out_state);
}

DPK_EXPORT int th_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  return dpk_kind_json.get_function(state, name, out_fn, out_resource);
}

/* Call with `nargs` tensors; `codes` may be NULL (all DPK_TYPE_TENSOR). */
DPK_EXPORT int th_call(dpk_packed_fn fn, void *resource, int nargs, DLTensor *const *tensors, const int *codes) {
  dpk_value args[64];
  int tensor_codes[64];
  if (nargs > 64) return -1;
  for (int i = 0; i < nargs; i++) {
    args[i].v_tensor = tensors[i];
    tensor_codes[i] = codes ? codes[i] : DPK_TYPE_TENSOR;
  }
  dpk_value ret;
  int ret_code = -1;
  int status = fn(args, tensor_codes, nargs, &ret, &ret_code, resource);
  if (status == 0 && ret_code != DPK_TYPE_NULL) return -2;
  return status;
}

DPK_EXPORT void th_free(void *state) { dpk_kind_json.free(state); }

DPK_EXPORT const char *th_last_error(void) { return dpk_last_error(); }

DPK_EXPORT const char *th_kind_name(void) { return dpk_kind_json.name; }
