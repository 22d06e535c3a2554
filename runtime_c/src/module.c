/* module.c: what a kind sees of the model while it loads a module and
 * afterwards: the services table (functions and tensors found through the
 * module's imports, depth-first, as TVM does) and the internal accessors
 * the built-in kinds use. */
#include <string.h>

#include "abi.h"
#include "error.h"
#include "manifest.h"
#include "model.h"
#include "module.h"
#include "package.h"

int dpk_module_find_function(const dpk_model_t *model, size_t index, bool self, const char *name,
                             dpk_packed_fn *out_fn, void **out_resource) {
  const dpk_module_rt_t *m = &model->modules[index];
  if (self) {
    if (!m->loaded) return DPK_STATUS_NOT_FOUND;
    int rc = m->kind->get_function(m->state, name, out_fn, out_resource);
    if (rc != DPK_STATUS_NOT_FOUND) return rc;
  }
  const dpk_module_decl_t *decl = &model->package->modules[index];
  for (size_t i = 0; i < decl->num_imports; i++) {
    int rc = dpk_module_find_function(model, decl->imports[i], true, name, out_fn, out_resource);
    if (rc != DPK_STATUS_NOT_FOUND) return rc;
  }
  return DPK_STATUS_NOT_FOUND;
}

static int import_function(const dpk_kind_ctx *ctx, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  *out_fn = NULL;
  *out_resource = NULL;
  int rc = dpk_module_find_function(ctx->model, ctx->module, false, name, out_fn, out_resource);
  if (rc == DPK_STATUS_NOT_FOUND)
    dpk_set_error("module '%s' needs function '%s', which none of its imports provides",
                  dpk_ctx_module(ctx)->name, name);
  return rc;
}

/* Each import of module `index` in order: its kind's get_tensor (if the
 * kind has one), then that import's own imports. 0, DPK_STATUS_NOT_FOUND (no
 * message set), or a kind's error. */
static int find_tensor(const dpk_model_t *model, size_t index, const char *name, const DLTensor **out_tensor) {
  const dpk_module_decl_t *decl = &model->package->modules[index];
  for (size_t i = 0; i < decl->num_imports; i++) {
    const dpk_module_rt_t *m = &model->modules[decl->imports[i]];
    dpk_get_tensor_fn get_tensor = m->loaded ? dpk_abi_kind_get_tensor(m->kind) : NULL;
    int rc = get_tensor ? get_tensor(m->state, name, out_tensor) : DPK_STATUS_NOT_FOUND;
    if (rc != DPK_STATUS_NOT_FOUND) return rc;
    rc = find_tensor(model, decl->imports[i], name, out_tensor);
    if (rc != DPK_STATUS_NOT_FOUND) return rc;
  }
  return DPK_STATUS_NOT_FOUND;
}

static int import_tensor(const dpk_kind_ctx *ctx, const char *name, const DLTensor **out_tensor) {
  *out_tensor = NULL;
  int rc = find_tensor(ctx->model, ctx->module, name, out_tensor);
  if (rc == DPK_STATUS_NOT_FOUND)
    dpk_set_error("module '%s' needs tensor '%s', which none of its imports holds", dpk_ctx_module(ctx)->name, name);
  if (rc == 0 && !*out_tensor) { /* a kind's get_tensor said found but gave nothing */
    dpk_set_error("module '%s' needs tensor '%s': an import's kind found it but returned no tensor",
                  dpk_ctx_module(ctx)->name, name);
    return DPK_STATUS_INTERNAL;
  }
  return rc;
}

const dpk_kind_services dpk_services = {DPK_ABI_VERSION, dpk_set_error, import_function, import_tensor};

void *dpk_ctx_dl_handle(const dpk_kind_ctx *ctx) { return ctx->model->dl; }
const dpk_module_decl_t *dpk_ctx_module(const dpk_kind_ctx *ctx) { return &ctx->model->package->modules[ctx->module]; }
const dpk_package_t *dpk_ctx_package(const dpk_kind_ctx *ctx) { return ctx->model->package; }
