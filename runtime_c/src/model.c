/* model.c: load a model (package + dlopen + modules rebuilt in import
 * order), run its entry function, free it.
 *
 * Load order: open and validate the package (a signed load checks the
 * signature first and keeps the descriptor: signature.c); check the ELF machine; order
 * the modules by their imports (a cycle fails); check that every module's
 * kind is registered or declared carried (no code of the file has run
 * yet); optionally verify every checksum; dlopen each library the manifest
 * `requires` (so a missing one is named); dlopen (RTLD_NOW | RTLD_LOCAL; a
 * signed load through /proc/self/fd/N of the checked descriptor);
 * check the ABI version the code was built for (__dpk_abi_version, if
 * exported), then fill __dpk_api and __dpk_parallel; check that __dpk_blob is the section that was mapped;
 * check the file's __dpk_kinds and bind every module to its kind
 * (model_kinds.c); load each module (its payload checksum checked, then
 * decoded) and resolve every function its manifest
 * entry lists, then the entry's `main` and each plan's. The accessors and dpk_model_run are in model_run.c. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "abi.h"
#include "blob.h"
#include "error.h"
#include "file.h"
#include "kinds.h"
#include "manifest.h"
#include "model.h"
#include "module.h"
#include "options.h"
#include "package.h"
#include "pool.h"
#include "signature.h"
#include "threads.h"

static const dpk_backend_api backend_api = {DPK_ABI_VERSION, dpk_set_error};

#define PATH(m) ((m)->package->path)

static dpk_status_t check_machine(const dpk_model_t *m) {
  uint16_t host = dpk_host_machine(), file = m->package->file.machine;
  char a[32], b[32];
  if (host && file != host)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is built for %s but this machine is %s", PATH(m),
                    dpk_machine_name(file, a, sizeof a), dpk_machine_name(host, b, sizeof b));
  return DPK_OK;
}

/* Depth-first post-order over imports; `mark`: 0 new, 1 on the stack, 2 done. */
static dpk_status_t visit(dpk_model_t *m, size_t i, unsigned char *mark, size_t *stack, size_t depth, size_t *n) {
  const dpk_package_t *pkg = m->package;
  stack[depth] = i;
  if (mark[i] == 2) return DPK_OK;
  if (mark[i] == 1) {
    char cycle[512] = "";
    size_t start = 0, used = 0;
    while (stack[start] != i) start++;
    for (size_t k = start; k <= depth && used < sizeof cycle; k++) {
      int w = snprintf(cycle + used, sizeof cycle - used, "%s%s", k > start ? " -> " : "", pkg->modules[stack[k]].name);
      if (w < 0) break;
      used += (size_t)w;
    }
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "manifest of '%s': the imports form a cycle: %s", PATH(m), cycle);
  }
  mark[i] = 1;
  for (size_t k = 0; k < pkg->modules[i].num_imports; k++) {
    dpk_status_t status = visit(m, pkg->modules[i].imports[k], mark, stack, depth + 1, n);
    if (status) return status;
  }
  mark[i] = 2;
  m->order[(*n)++] = i;
  return DPK_OK;
}

static dpk_status_t import_order(dpk_model_t *m) {
  size_t count = m->package->num_modules;
  unsigned char *mark = calloc(count, 1);
  size_t *stack = calloc(count + 1, sizeof *stack);
  m->order = calloc(count, sizeof *m->order);
  dpk_status_t status = DPK_OK;
  if (!mark || !stack || !m->order) status = dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", PATH(m));
  size_t n = 0;
  for (size_t i = 0; i < count && !status; i++) status = visit(m, i, mark, stack, 0, &n);
  free(mark);
  free(stack);
  return status;
}

/* dlopen every `requires` entry first: a missing one is then named with the
 * manifest field, instead of surfacing as the file's own dlopen failure. The
 * handles are kept until the model is freed (the file's DT_NEEDED holds them too). */
static dpk_status_t open_requires(dpk_model_t *m) {
  const dpk_package_t *pkg = m->package;
  if (pkg->num_requires == 0) return DPK_OK;
  m->required = calloc(pkg->num_requires, sizeof *m->required);
  if (!m->required) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", PATH(m));
  for (size_t i = 0; i < pkg->num_requires; i++) {
    dlerror();
    m->required[i] = dlopen(pkg->requires[i], RTLD_NOW | RTLD_LOCAL);
    if (!m->required[i]) {
      const char *why = dlerror();
      return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s' needs %s (manifest 'requires'), which this machine cannot load: %s",
                      PATH(m), pkg->requires[i], why ? why : "dlopen failed");
    }
  }
  return DPK_OK;
}

static dpk_status_t open_library(dpk_model_t *m) {
  const char *path = PATH(m);
  char *local = NULL, by_fd[64];
  if (m->fd >= 0) { /* signed: the very file whose signature was checked, not the path again */
    snprintf(by_fd, sizeof by_fd, "/proc/self/fd/%d", m->fd);
    if (access(by_fd, R_OK) != 0)
      return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot load '%s': a signed load dlopens %s, which is not readable "
                      "(is /proc mounted?)", path, by_fd);
  } else if (!strchr(path, '/')) { /* dlopen would search the library path */
    local = malloc(strlen(path) + 3);
    if (!local) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", path);
    strcpy(local, "./");
    strcat(local, path);
  }
  dlerror();
  m->dl = dlopen(m->fd >= 0 ? by_fd : local ? local : path, RTLD_NOW | RTLD_LOCAL);
  free(local);
  if (!m->dl) {
    const char *why = dlerror();
    return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot load '%s': %s", path, why ? why : "dlopen failed");
  }
  const uint32_t *abi = dlsym(m->dl, "__dpk_abi_version"); /* absent: built for 1.0 */
  if (abi) {
    char what[1024]; /* a message holds at most 1024 bytes (error.c) */
    snprintf(what, sizeof what, "'%s': its code (__dpk_abi_version)", path);
    dpk_status_t refused = dpk_abi_check(*abi, what);
    if (refused) return refused; /* before the file is handed any runtime table */
  }
  /* A file with ISA variants (a default x86-64 build) picked one for this CPU as it loaded, or DPK_ISA's. */
  const char *(*isa)(const char **refused);
  *(void **)&isa = dlsym(m->dl, "__dpk_isa"); /* object to function pointer, as POSIX dlsym allows */
  if (isa) {
    const char *refused = NULL;
    m->isa = isa(&refused);
    if (refused) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "cannot load '%s': %s", path, refused);
  }
  void *api = dlsym(m->dl, "__dpk_api");
  if (api) *(const dpk_backend_api **)api = &backend_api;
  void *parallel = dlsym(m->dl, "__dpk_parallel");
  if (parallel) *(const dpk_parallel_api **)parallel = &dpk_parallel;
  const uint8_t *blob = dlsym(m->dl, "__dpk_blob");
  if (!blob) return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s' does not export __dpk_blob", path);
  if (memcmp(blob, m->package->file.section, DPK_BLOB_HEADER_SIZE) != 0)
    return dpk_fail(DPK_STATUS_DATA_LOSS,
                    "'%s': the loaded __dpk_blob differs from the file's .dpk section (was the file replaced, or "
                    "another library with the same name loaded?)",
                    path);
  return DPK_OK;
}

static dpk_status_t load_module(dpk_model_t *m, size_t i) {
  dpk_module_rt_t *rt = &m->modules[i];
  const dpk_module_decl_t *decl = &m->package->modules[i];
  const uint8_t *payload = NULL;
  char what[256];
  snprintf(what, sizeof what, "'%s': module '%s' payload", PATH(m), decl->name);
  if (decl->has_payload) {
    /* A module payload is a plan (graph, json, a kind's state): small, read
     * whole anyway, and a changed byte could still parse into a different
     * plan, so its checksum is checked at every load (weights only by verify). */
    dpk_status_t status = dpk_payload_verify(&decl->payload, what);
    if (!status) status = dpk_payload_decode(&decl->payload, what, &payload, &rt->decoded);
    if (status) return status;
  }
  dpk_kind_load_args args = {decl->name,        payload, decl->has_payload ? (size_t)decl->payload.raw_size : 0,
                             decl->functions,   &rt->ctx, &dpk_services};
  dpk_clear_error();
  int rc = rt->kind->load(&args, &rt->state);
  if (rc)
    return dpk_fail_context(dpk_status_from_rc(rc), "'%s': cannot load module '%s' (kind %s)", PATH(m), decl->name, decl->kind);
  rt->loaded = true;
  for (size_t f = 0; f < decl->num_functions; f++) {
    dpk_packed_fn fn;
    void *resource;
    rc = rt->kind->get_function(rt->state, decl->functions[f], &fn, &resource);
    if (rc == DPK_STATUS_NOT_FOUND && rt->kind == &dpk_kind_dso)
      return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': module '%s' lists function '%s' but the file does not define it",
                      PATH(m), decl->name, decl->functions[f]);
    if (rc == DPK_STATUS_NOT_FOUND)
      return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': module '%s' lists function '%s' but its kind %s does not provide it",
                      PATH(m), decl->name, decl->functions[f], decl->kind);
    if (rc) return dpk_fail_context(dpk_status_from_rc(rc), "'%s': module '%s' function '%s'", PATH(m), decl->name, decl->functions[f]);
  }
  return DPK_OK;
}

/* Pre-fault the raw weights: one sequential read of their pages. */
static void populate(const dpk_model_t *m) {
  const dpk_package_t *pkg = m->package;
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < pkg->num_modules; i++) {
    for (size_t t = 0; t < pkg->modules[i].num_tensors; t++) {
      const dpk_payload_t *p = &pkg->modules[i].tensors[t].payload;
      if (p->codec != DPK_CODEC_RAW || p->size == 0) continue;
      uintptr_t start = (uintptr_t)p->data & ~(uintptr_t)4095, end = (uintptr_t)p->data + p->size;
      madvise((void *)start, end - start, MADV_WILLNEED);
      for (uintptr_t a = (uintptr_t)p->data; a < end; a += 4096) sink ^= *(const volatile uint8_t *)a;
    }
  }
  (void)sink;
}

/* Each plan's graph `main` (a static file's one plan is the entry). */
static dpk_status_t resolve_plans(dpk_model_t *m) {
  const dpk_package_t *pkg = m->package;
  m->plans = calloc(pkg->num_plans, sizeof *m->plans);
  if (!m->plans) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", PATH(m));
  for (size_t p = 0; p < pkg->num_plans; p++) {
    const dpk_module_rt_t *rt = &m->modules[pkg->plans[p].graph];
    int rc = rt->kind->get_function(rt->state, "main", &m->plans[p].fn, &m->plans[p].resource);
    if (rc == DPK_STATUS_NOT_FOUND)
      return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': the graph '%s' of plans[%zu] has no function 'main'", PATH(m),
                      pkg->modules[pkg->plans[p].graph].name, p);
    if (rc) return dpk_status_from_rc(rc);
  }
  return DPK_OK;
}

static dpk_status_t load(dpk_model_t *m, const dpk_load_options_t *options) {
  dpk_status_t status = dpk_threads_resolve(options->num_threads, &m->num_threads);
  if (!status) status = check_machine(m);
  if (!status) status = import_order(m);
  if (!status) status = dpk_model_check_kinds(m); /* before any code of the file runs */
  if (!status && options->verify_checksums) status = dpk_package_verify(m->package);
  if (!status) status = open_requires(m);
  if (!status) dpk_threads_tame_openblas(m->required, m->package->num_requires);
  if (!status) status = open_library(m);
  if (!status) status = dpk_model_bind_kinds(m);
  for (size_t k = 0; k < m->package->num_modules && !status; k++) status = load_module(m, m->order[k]);
  if (status) return status;
  const dpk_module_rt_t *entry = &m->modules[m->package->entry];
  int rc = entry->kind->get_function(entry->state, "main", &m->entry_fn, &m->entry_resource);
  if (rc == DPK_STATUS_NOT_FOUND)
    return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': the entry module '%s' (kind %s) has no function 'main'", PATH(m),
                    m->package->modules[m->package->entry].name, m->package->modules[m->package->entry].kind);
  if (rc) return dpk_status_from_rc(rc);
  if ((status = resolve_plans(m))) return status;
  if (options->populate) populate(m);
  status = dpk_pool_retain(m->num_threads);
  m->pool_held = !status;
  return status;
}

/* `api` names the public call in messages about its arguments. */
static dpk_status_t model_load(const char *api, const char *path, const dpk_public_key_t *key,
                               const dpk_load_options_t *caller, dpk_model_t **out_model) {
  if (!out_model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s: out_model is NULL", api);
  *out_model = NULL;
  if (!path) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s: path is NULL", api);
  dpk_load_options_t options;
  dpk_status_t read = dpk_load_options_read(api, caller, &options);
  if (read) return read;
  dpk_model_t *m = calloc(1, sizeof *m);
  if (!m) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", path);
  m->fd = -1;
  dpk_status_t status = key ? dpk_signed_open(path, key, &m->package, &m->fd) : dpk_package_open(path, &m->package);
  if (!status) {
    m->modules = calloc(m->package->num_modules, sizeof *m->modules);
    status = m->modules ? load(m, &options) : dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory loading '%s'", path);
  }
  if (status) {
    dpk_model_free(m);
    return status;
  }
  /* A signed load keeps its descriptor until dpk_model_free: the library was dlopened as /proc/self/fd/N, and
   * glibc hands back the library already loaded under a name, so N must not name another file while this one
   * is loaded (a second signed load would otherwise get this file's code and be refused). */
  *out_model = m;
  return DPK_OK;
}

dpk_status_t dpk_model_load(const char *path, const dpk_load_options_t *options, dpk_model_t **out_model) {
  return model_load("dpk_model_load", path, NULL, options, out_model);
}

dpk_status_t dpk_model_load_signed(const char *path, const dpk_public_key_t *key, const dpk_load_options_t *options,
                                   dpk_model_t **out_model) {
  if (!out_model) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_load_signed: out_model is NULL");
  if (!key) {
    *out_model = NULL;
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_model_load_signed: key is NULL (use dpk_model_load for unsigned files)");
  }
  return model_load("dpk_model_load_signed", path, key, options, out_model);
}

void dpk_model_free(dpk_model_t *model) {
  if (!model) return;
  if (model->modules && model->order) {
    for (size_t k = model->package->num_modules; k-- > 0;) {
      dpk_module_rt_t *rt = &model->modules[model->order[k]];
      if (rt->loaded) rt->kind->free(rt->state);
    }
  }
  if (model->modules)
    for (size_t i = 0; i < model->package->num_modules; i++) free(model->modules[i].decoded);
  if (model->dl) dlclose(model->dl);
  if (model->fd >= 0) close(model->fd);
  for (size_t i = 0; model->required && i < model->package->num_requires; i++)
    if (model->required[i]) dlclose(model->required[i]);
  free(model->required);
  free(model->plans);
  free(model->modules);
  free(model->order);
  dpk_package_free(model->package);
  if (model->pool_held) dpk_pool_release(); /* the last model joins the workers */
  free(model);
}
