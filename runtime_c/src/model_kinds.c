/* model_kinds.c: which kind loads each module of a model.
 *
 * A module's kind is either carried by the file (named in the manifest's
 * `kinds.carried` and provided by the file's exported __dpk_kinds table) or
 * registered in the process (built-in or dpk_register_kind). Both are known
 * from the manifest alone, so an unknown kind fails BEFORE dlopen and no
 * code of the file runs. After dlopen the table is checked field by field
 * (it is the file's memory, so it is untrusted) and every module is bound to
 * its kind. A declared carried kind wins over a registered kind of the same
 * name, for this model's modules only. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "abi.h"
#include "error.h"
#include "manifest.h"
#include "model.h"
#include "package.h"
#include "registry.h"

#define PATH(m) ((m)->package->path)

static bool is_carried(const dpk_package_t *pkg, const char *name) {
  for (size_t i = 0; i < pkg->num_carried; i++)
    if (strcmp(pkg->carried[i], name) == 0) return true;
  return false;
}

/* "dso, graph, json, params" then "; carried by the file: lut" if any. */
static void known_kinds(const dpk_package_t *pkg, char *buffer, size_t capacity) {
  dpk_registry_names(buffer, capacity);
  for (size_t i = 0; i < pkg->num_carried; i++) {
    size_t used = strlen(buffer);
    snprintf(buffer + used, capacity - used, "%s%s", i ? ", " : "; carried by the file: ", pkg->carried[i]);
  }
}

dpk_status_t dpk_model_check_kinds(dpk_model_t *m) {
  const dpk_package_t *pkg = m->package;
  for (size_t i = 0; i < pkg->num_modules; i++) {
    const dpk_module_decl_t *decl = &pkg->modules[i];
    if (is_carried(pkg, decl->kind) || dpk_registry_find(decl->kind)) continue;
    char names[768];
    known_kinds(pkg, names, sizeof names);
    return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': module '%s' has kind '%s', which is not registered (registered: %s)",
                    PATH(m), decl->name, decl->kind, names);
  }
  return DPK_OK;
}

/* Every check dpk_abi.h promises for an exported table. */
static dpk_status_t check_table(const dpk_model_t *m, const dpk_kind_table *table) {
  const char *path = PATH(m);
  char what[1024]; /* a message holds at most 1024 bytes (error.c) */
  snprintf(what, sizeof what, "'%s': __dpk_kinds", path);
  dpk_status_t refused = dpk_abi_check(table->abi_version, what);
  if (refused) return refused;
  if (table->count > DPK_KIND_TABLE_MAX)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds has %u entries (at most %d)", path,
                    (unsigned)table->count, DPK_KIND_TABLE_MAX);
  if (table->count && !table->kinds)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds has %u entries but no array", path,
                    (unsigned)table->count);
  for (uint32_t i = 0; i < table->count; i++) {
    const dpk_kind *k = table->kinds[i];
    if (!k) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds entry %u is NULL", path, (unsigned)i);
    if (!k->name || !k->name[0])
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds entry %u has no name", path, (unsigned)i);
    const char *missing = !k->load ? "load" : !k->get_function ? "get_function" : !k->free ? "free" : NULL;
    if (missing)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds entry %u (kind '%s') has no %s function",
                      path, (unsigned)i, k->name, missing);
    snprintf(what, sizeof what, "'%s': kind '%s'", path, k->name);
    refused = dpk_abi_check(k->abi_version, what);
    if (refused) return refused;
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(table->kinds[j]->name, k->name) == 0)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "'%s': __dpk_kinds lists kind '%s' twice (entries %u and %u)",
                        path, k->name, (unsigned)j, (unsigned)i);
  }
  return DPK_OK;
}

static const dpk_kind *table_find(const dpk_kind_table *table, const char *name) {
  for (uint32_t i = 0; table && i < table->count; i++)
    if (strcmp(table->kinds[i]->name, name) == 0) return table->kinds[i];
  return NULL;
}

/* The file's table, checked, if the manifest declares carried kinds. */
static dpk_status_t take_table(dpk_model_t *m) {
  const dpk_package_t *pkg = m->package;
  if (pkg->num_carried == 0) return DPK_OK; /* a table nobody declared is never read */
  const dpk_kind_table *table = dlsym(m->dl, "__dpk_kinds");
  if (!table)
    return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': the manifest declares carried kind '%s' but the file does not export __dpk_kinds",
                    PATH(m), pkg->carried[0]);
  dpk_status_t status = check_table(m, table);
  if (status) return status;
  for (size_t i = 0; i < pkg->num_carried; i++) {
    if (table_find(table, pkg->carried[i])) continue;
    char provided[512] = "";
    for (uint32_t k = 0; k < table->count; k++) {
      size_t used = strlen(provided);
      snprintf(provided + used, sizeof provided - used, "%s%s", k ? ", " : "", table->kinds[k]->name);
    }
    return dpk_fail(DPK_STATUS_NOT_FOUND, "'%s': the manifest declares carried kind '%s' but __dpk_kinds does not provide it (it provides: %s)",
                    PATH(m), pkg->carried[i], table->count ? provided : "nothing");
  }
  m->carried = table;
  return DPK_OK;
}

dpk_status_t dpk_model_bind_kinds(dpk_model_t *m) {
  dpk_status_t status = take_table(m);
  if (status) return status;
  const dpk_package_t *pkg = m->package;
  for (size_t i = 0; i < pkg->num_modules; i++) {
    const char *kind = pkg->modules[i].kind;
    dpk_module_rt_t *rt = &m->modules[i];
    rt->kind = is_carried(pkg, kind) ? table_find(m->carried, kind) : dpk_registry_find(kind);
    rt->ctx.model = m;
    rt->ctx.module = i;
    if (!rt->kind) /* checked before dlopen; registered kinds are never removed */
      return dpk_fail(DPK_STATUS_INTERNAL, "'%s': module '%s' lost its kind '%s'", PATH(m), pkg->modules[i].name, kind);
  }
  return DPK_OK;
}
