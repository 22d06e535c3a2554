/* model.h: a loaded model (model.c: load and free; model_run.c: accessors
 * and runs; model_kinds.c: which kind loads each module). Not installed. */
#ifndef DPK_MODEL_H
#define DPK_MODEL_H

#include <stdbool.h>

#include "dpk.h"

struct dpk_tensor_decl; /* manifest.h */

/* The module a kind is loading (dpk_abi.h keeps it opaque). */
struct dpk_kind_ctx {
  struct dpk_model *model;
  size_t module; /* index into the package's modules */
};

/* One module of a loaded model (parallel to package->modules). */
typedef struct dpk_module_rt {
  const dpk_kind *kind;
  dpk_kind_ctx ctx;
  void *state;   /* what kind->load built */
  bool loaded;   /* kind->free is owed */
  void *decoded; /* the zstd-decoded payload, owned */
} dpk_module_rt_t;

/* A plan's graph `main`, resolved at load (model.c) so a run does no lookup. */
typedef struct dpk_plan_rt {
  dpk_packed_fn fn;
  void *resource;
} dpk_plan_rt_t;

struct dpk_model {
  dpk_package_t *package;
  void *dl;                       /* dlopen handle of the file */
  int fd;                         /* signed load: the checked file, dlopened as /proc/self/fd/N; else -1 */
  void **required;                /* dlopen handles of package->requires, closed after `dl` */
  dpk_module_rt_t *modules;
  size_t *order;                  /* import order, imports first */
  const dpk_kind_table *carried;  /* kinds the file carries (__dpk_kinds), or NULL */
  dpk_packed_fn entry_fn;         /* the entry module's `main` */
  void *entry_resource;
  dpk_plan_rt_t *plans;           /* parallel to package->plans; a static file's one plan is the entry */
  int num_threads;                /* resolved at load: dpk_model_num_threads */
  const char *isa;                /* the ISA variant the file runs (dpk_model_isa), or NULL: it carries one */
  bool pool_held;                 /* dpk_pool_retain succeeded: release at free */
};

/* Before dlopen (model_kinds.c): every module's kind is registered or
 * declared carried by the manifest, else NOT_FOUND listing the registered
 * kinds; no code of the file runs. */
dpk_status_t dpk_model_check_kinds(dpk_model_t *model);
/* After dlopen (model_kinds.c): validate the file's __dpk_kinds against the
 * manifest's kinds.carried (as dpk_abi.h describes) and bind every module to
 * its kind. */
dpk_status_t dpk_model_bind_kinds(dpk_model_t *model);

/* INVALID_ARGUMENT unless got == want: "the model takes 2 inputs (x, mask)
 * but 1 were given" (`role`: "input" or "output"; model_run.c). */
dpk_status_t dpk_model_check_count(const struct dpk_tensor_decl *decls, size_t want, size_t got, const char *role);
/* Call plan `plan`'s graph `main` on tensors the caller has checked (they
 * have the plan's shapes) with the model's thread count (model_run.c). The
 * function's status (0: OK); no output is cleared on failure. *out_called:
 * whether the function was called (false: RESOURCE_EXHAUSTED before it, so
 * no output byte was written). */
int dpk_model_call_plan(const dpk_model_t *model, size_t plan, const DLTensor *const *inputs,
                        DLTensor *const *outputs, bool *out_called);
/* dpk_model_run for a file with dims (plans.c): the checks, the plan, an
 * exact or padded call; outputs zeroed at their actual shapes if it fails. */
dpk_status_t dpk_model_run_dynamic(const dpk_model_t *model, const DLTensor *const *inputs,
                                   DLTensor *const *outputs);

#endif /* DPK_MODEL_H */
