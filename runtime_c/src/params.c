/* params.c: kind `params`, named weight tensors.
 *
 * One DLTensor per manifest tensor. Raw tensors point INTO the file's
 * mapping (zero copy: loading costs the same for 1 MB or 1 GB, and
 * processes share the page cache); zstd tensors are decoded once here.
 * The tensors are read-only and valid while the model is loaded. Exposes
 * no functions; other modules reach the tensors through import_tensor, which
 * asks this kind's get_tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "kinds.h"
#include "manifest.h"
#include "module.h"
#include "package.h"

typedef struct {
  size_t count;
  const dpk_tensor_decl_t *decls;
  DLTensor *tensors;
  void **decoded; /* owned buffers of zstd tensors, NULL for raw */
} params_state;

static void params_free(void *state) {
  params_state *s = state;
  if (!s) return;
  for (size_t i = 0; s->decoded && i < s->count; i++) free(s->decoded[i]);
  free(s->decoded);
  free(s->tensors);
  free(s);
}

static int params_load(const dpk_kind_load_args *args, void **out_state) {
  *out_state = NULL;
  const dpk_module_decl_t *decl = dpk_ctx_module(args->ctx);
  const char *path = dpk_ctx_package(args->ctx)->path;
  params_state *s = calloc(1, sizeof *s);
  size_t n = decl->num_tensors;
  if (s) {
    s->count = n;
    s->decls = decl->tensors;
    s->tensors = calloc(n ? n : 1, sizeof *s->tensors);
    s->decoded = calloc(n ? n : 1, sizeof *s->decoded);
  }
  if (!s || !s->tensors || !s->decoded) {
    params_free(s);
    args->services->set_error("module '%s': out of memory", args->module_name);
    return DPK_STATUS_RESOURCE_EXHAUSTED;
  }
  for (size_t i = 0; i < n; i++) {
    const dpk_tensor_decl_t *t = &decl->tensors[i];
    const uint8_t *data;
    char what[512];
    snprintf(what, sizeof what, "'%s': module '%s' tensor '%s'", path, decl->name, t->name);
    dpk_status_t status = dpk_payload_decode(&t->payload, what, &data, &s->decoded[i]);
    if (status) {
      params_free(s);
      return status;
    }
    DLTensor *d = &s->tensors[i];
    d->data = (void *)data; /* read-only: kernels never write weights */
    d->device.device_type = kDLCPU;
    d->ndim = t->ndim;
    d->dtype = t->dtype;
    d->shape = t->shape;
  }
  *out_state = s;
  return 0;
}

static int params_get_tensor(void *state, const char *name, const DLTensor **out_tensor) {
  const params_state *s = state;
  for (size_t i = 0; i < s->count; i++) {
    if (strcmp(s->decls[i].name, name) == 0) {
      *out_tensor = &s->tensors[i];
      return 0;
    }
  }
  return DPK_STATUS_NOT_FOUND;
}

static int params_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  (void)state;
  (void)name;
  *out_fn = NULL;
  *out_resource = NULL;
  return DPK_STATUS_NOT_FOUND;
}

const dpk_kind dpk_kind_params = {"params", DPK_ABI_VERSION, params_load, params_get_function, params_free,
                                  params_get_tensor};
