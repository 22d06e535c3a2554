/* module.h: what a kind sees of the model while it loads a module and
 * afterwards (module.c): the services table and the accessors the built-in
 * kinds use. Not installed. */
#ifndef DPK_MODULE_H
#define DPK_MODULE_H

#include <stdbool.h>

#include "dpk.h"
#include "manifest.h"

/* The services table handed to every kind's load. Static. */
extern const dpk_kind_services dpk_services;

/* Look `name` up in module `index` (if `self`), then its imports
 * depth-first. 0, DPK_STATUS_NOT_FOUND (no message set), or a kind's error. */
int dpk_module_find_function(const dpk_model_t *model, size_t index, bool self, const char *name,
                             dpk_packed_fn *out_fn, void **out_resource);

/* The model file's dlopen handle. */
void *dpk_ctx_dl_handle(const dpk_kind_ctx *ctx);
/* The module's manifest entry (borrowed from the package). */
const dpk_module_decl_t *dpk_ctx_module(const dpk_kind_ctx *ctx);
/* The package the module comes from. */
const dpk_package_t *dpk_ctx_package(const dpk_kind_ctx *ctx);

#endif /* DPK_MODULE_H */
