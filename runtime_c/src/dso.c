/* dso.c: kind `dso`, the model file's own compiled kernels.
 *
 * No payload; a function is the symbol of that name in the file (dlsym on
 * the model's handle). A symbol that dlsym finds in one of the file's
 * dependencies instead (libc's `free`, say) is not the file's and is not
 * returned: only code the file defines is callable. */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <stdlib.h>

#include "kinds.h"
#include "module.h"

typedef struct {
  void *dl;
  void *base; /* load address of the model file, from __dpk_blob */
} dso_state;

static int dso_load(const dpk_kind_load_args *args, void **out_state) {
  *out_state = NULL;
  dso_state *s = calloc(1, sizeof *s);
  if (!s) {
    args->services->set_error("module '%s': out of memory", args->module_name);
    return DPK_STATUS_RESOURCE_EXHAUSTED;
  }
  s->dl = dpk_ctx_dl_handle(args->ctx);
  Dl_info info;
  void *blob = dlsym(s->dl, "__dpk_blob");
  if (blob && dladdr(blob, &info)) s->base = info.dli_fbase;
  *out_state = s;
  return 0;
}

static int dso_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  dso_state *s = state;
  *out_fn = NULL;
  *out_resource = NULL;
  void *sym = dlsym(s->dl, name);
  if (!sym) return DPK_STATUS_NOT_FOUND;
  Dl_info info;
  if (s->base && (!dladdr(sym, &info) || info.dli_fbase != s->base)) return DPK_STATUS_NOT_FOUND;
  /* POSIX: a dlsym result converts to a function pointer. */
  *(void **)out_fn = sym;
  return 0;
}

static void dso_free(void *state) { free(state); }

const dpk_kind dpk_kind_dso = {"dso", DPK_ABI_VERSION, dso_load, dso_get_function, dso_free, NULL};
