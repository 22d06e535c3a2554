/* manifest.c: parse the embedded YAML manifest and check its structure.
 *
 * Produces the package's module table (dpk_module_decl_t) with imports
 * resolved to indices and every payload descriptor bounds-checked, so the
 * loader and the kinds never look at the YAML again (the dynamic-shape
 * fields: manifest_dims.c). A field of the wrong
 * type fails with FAILED_PRECONDITION naming the module and the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "dtype.h"
#include "error.h"
#include "manifest.h"
#include "package.h"
#include "shape.h"
#include "yamltree.h"

#define OOM() dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory reading the manifest")

static dpk_status_t parse_shape(dpk_package_t *pkg, yaml_node_t *node, const char *what, dpk_tensor_decl_t *decl) {
  if (!dpk_yaml_is_seq(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a sequence of dims", what);
  size_t n = dpk_yaml_len(node);
  if (n > 32) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s has %zu dims (at most 32)", what, n);
  decl->ndim = (int32_t)n;
  decl->shape = dpk_package_alloc(pkg, n ? n : 1, sizeof(int64_t));
  if (!decl->shape) return OOM();
  for (size_t i = 0; i < n; i++) {
    uint64_t d;
    dpk_status_t status = dpk_yaml_uint(dpk_yaml_item(&pkg->yaml, node, i), what, &d);
    if (status) return status;
    if (d > INT64_MAX) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: dim %zu is too large", what, i);
    decl->shape[i] = (int64_t)d;
  }
  uint64_t numel;
  if (!dpk_shape_numel(decl->ndim, decl->shape, &numel))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: the element count overflows", what);
  return DPK_OK;
}

/* dtype and shape of `node`, a mapping; `what` is the prefix ("input 'x'"). */
static dpk_status_t parse_typed(dpk_package_t *pkg, yaml_node_t *node, const char *what, dpk_tensor_decl_t *decl) {
  char field[256];
  const char *dtype;
  snprintf(field, sizeof field, "%s field 'dtype'", what);
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(&pkg->yaml, node, "dtype"), field, &dtype);
  if (status) return status;
  if (dpk_dtype_parse(dtype, field, &decl->dtype)) return DPK_STATUS_FAILED_PRECONDITION;
  snprintf(field, sizeof field, "%s field 'shape'", what);
  return parse_shape(pkg, dpk_yaml_get(&pkg->yaml, node, "shape"), field, decl);
}

static dpk_status_t parse_signature(dpk_package_t *pkg, yaml_node_t *root, const char *key, const char *role,
                                    size_t *out_n, dpk_tensor_decl_t **out_decls) {
  yaml_node_t *seq = dpk_yaml_get(&pkg->yaml, root, key);
  if (!dpk_yaml_is_seq(seq))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field '%s' must be a sequence of {name, dtype, shape}", key);
  size_t n = dpk_yaml_len(seq);
  dpk_tensor_decl_t *decls = dpk_package_alloc(pkg, n ? n : 1, sizeof *decls);
  if (!decls) return OOM();
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = dpk_yaml_item(&pkg->yaml, seq, i);
    char what[256];
    snprintf(what, sizeof what, "%s[%zu] field 'name'", key, i);
    dpk_status_t status = dpk_yaml_str(dpk_yaml_get(&pkg->yaml, item, "name"), what, &decls[i].name);
    if (status) return status;
    snprintf(what, sizeof what, "%s '%s'", role, decls[i].name);
    if ((status = parse_typed(pkg, item, what, &decls[i]))) return status;
    if ((status = dpk_manifest_parse_axes(pkg, item, what, &decls[i]))) return status;
    for (size_t j = 0; j < i; j++)
      if (strcmp(decls[j].name, decls[i].name) == 0)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s '%s' is declared twice", role, decls[i].name);
  }
  *out_n = n;
  *out_decls = decls;
  return DPK_OK;
}

/* A sequence of strings into a NULL-terminated array. */
static dpk_status_t parse_names(dpk_package_t *pkg, yaml_node_t *node, const char *what, size_t *out_n,
                                const char ***out_names) {
  if (node && !dpk_yaml_is_seq(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a sequence of names", what);
  size_t n = dpk_yaml_len(node);
  const char **names = dpk_package_alloc(pkg, n + 1, sizeof *names);
  if (!names) return OOM();
  for (size_t i = 0; i < n; i++) {
    dpk_status_t status = dpk_yaml_str(dpk_yaml_item(&pkg->yaml, node, i), what, &names[i]);
    if (status) return status;
  }
  *out_n = n;
  *out_names = names;
  return DPK_OK;
}

static dpk_status_t parse_tensors(dpk_package_t *pkg, yaml_node_t *node, dpk_module_decl_t *m, const uint8_t *area) {
  if (!dpk_yaml_is_map(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                    "module '%s' field 'tensors' must be a mapping of name -> {dtype, shape, offset, size, checksum}",
                    m->name);
  size_t n = dpk_yaml_map_len(node);
  m->tensors = dpk_package_alloc(pkg, n ? n : 1, sizeof *m->tensors);
  if (!m->tensors) return OOM();
  m->num_tensors = n;
  for (size_t i = 0; i < n; i++) {
    dpk_tensor_decl_t *t = &m->tensors[i];
    t->name = dpk_yaml_map_key(&pkg->yaml, node, i);
    if (!t->name)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "module '%s' field 'tensors': key %zu is not a string", m->name,
                      i);
    yaml_node_t *value = dpk_yaml_map_value(&pkg->yaml, node, i);
    char what[256];
    snprintf(what, sizeof what, "module '%s' tensor '%s'", m->name, t->name);
    dpk_status_t status = parse_typed(pkg, value, what, t);
    if (!status) status = dpk_payload_parse(&pkg->yaml, value, what, NULL, area, pkg->header.payload_size, &t->payload);
    if (status) return status;
    uint64_t numel;
    dpk_shape_numel(t->ndim, t->shape, &numel);
    uint64_t esize = dpk_dtype_size(t->dtype);
    char shape[256];
    if (numel > UINT64_MAX / esize || numel * esize != t->payload.raw_size)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is %s%s (%llu elements of %llu bytes) but holds %llu bytes",
                      what, dpk_dtype_name(t->dtype), dpk_shape_str(t->ndim, t->shape, shape, sizeof shape),
                      (unsigned long long)numel, (unsigned long long)esize,
                      (unsigned long long)t->payload.raw_size);
  }
  return DPK_OK;
}

static dpk_status_t parse_module(dpk_package_t *pkg, yaml_node_t *node, size_t index, const uint8_t *area) {
  dpk_module_decl_t *m = &pkg->modules[index];
  dpk_yaml_t *y = &pkg->yaml;
  char what[256];
  snprintf(what, sizeof what, "modules[%zu] field 'name'", index);
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, node, "name"), what, &m->name);
  if (status) return status;
  snprintf(what, sizeof what, "module '%s' field 'kind'", m->name);
  if ((status = dpk_yaml_str(dpk_yaml_get(y, node, "kind"), what, &m->kind))) return status;
  snprintf(what, sizeof what, "module '%s' field 'functions'", m->name);
  if ((status = parse_names(pkg, dpk_yaml_get(y, node, "functions"), what, &m->num_functions, &m->functions)))
    return status;
  yaml_node_t *payload = dpk_yaml_get(y, node, "payload");
  yaml_node_t *tensors = dpk_yaml_get(y, node, "tensors");
  bool params = strcmp(m->kind, "params") == 0;
  if (params && payload)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "module '%s' of kind params has a 'payload'; use 'tensors'",
                    m->name);
  if (payload) {
    snprintf(what, sizeof what, "module '%s'", m->name);
    if ((status = dpk_payload_parse(y, payload, what, "payload", area, pkg->header.payload_size, &m->payload)))
      return status;
    m->has_payload = true;
  }
  if (params || tensors) {
    if ((status = parse_tensors(pkg, tensors, m, area))) return status;
  }
  return DPK_OK;
}

/* Resolve imports to indices once every name is known. */
static dpk_status_t resolve_imports(dpk_package_t *pkg, yaml_node_t *modules) {
  for (size_t i = 0; i < pkg->num_modules; i++) {
    dpk_module_decl_t *m = &pkg->modules[i];
    yaml_node_t *node = dpk_yaml_get(&pkg->yaml, dpk_yaml_item(&pkg->yaml, modules, i), "imports");
    const char **names;
    char what[256];
    snprintf(what, sizeof what, "module '%s' field 'imports'", m->name);
    dpk_status_t status = parse_names(pkg, node, what, &m->num_imports, &names);
    if (status) return status;
    m->imports = dpk_package_alloc(pkg, m->num_imports + 1, sizeof *m->imports);
    if (!m->imports) return OOM();
    for (size_t j = 0; j < m->num_imports; j++) {
      size_t k = dpk_package_find_module(pkg, names[j]);
      if (k == (size_t)-1)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "module '%s' imports '%s', which is not a module", m->name,
                        names[j]);
      if (k == i) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "module '%s' imports itself", m->name);
      m->imports[j] = k;
    }
  }
  return DPK_OK;
}

static dpk_status_t parse_header_fields(dpk_package_t *pkg, yaml_node_t *root) {
  dpk_yaml_t *y = &pkg->yaml;
  const char *format, *entry;
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, root, "format"), "field 'format'", &format);
  if (status) return status;
  char expected[32];
  snprintf(expected, sizeof expected, "dsopack/%u", (unsigned)pkg->header.major);
  if (strcmp(format, expected) != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'format' is '%s' but the header says '%s'", format,
                    expected);
  yaml_node_t *checksum = dpk_yaml_get(y, root, "checksum");
  if (checksum) {
    const char *algo;
    if ((status = dpk_yaml_str(checksum, "field 'checksum'", &algo))) return status;
    if (strcmp(algo, "xxh3-64") != 0)
      return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "checksum algorithm '%s' is not supported (known: xxh3-64)", algo);
  }
  if ((status = dpk_yaml_str(dpk_yaml_get(y, root, "name"), "field 'name'", &pkg->name))) return status;
  yaml_node_t *target = dpk_yaml_get(y, root, "target");
  if (target && !dpk_yaml_is_map(target))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'target' must be a mapping {triple, machine}");
  const char *triple;
  if (dpk_yaml_get(y, target, "triple") &&
      (status = dpk_yaml_str(dpk_yaml_get(y, target, "triple"), "field 'target.triple'", &triple)))
    return status;
  if (dpk_yaml_get(y, target, "machine") &&
      (status = dpk_yaml_str(dpk_yaml_get(y, target, "machine"), "field 'target.machine'", &pkg->machine)))
    return status;
  if ((status = parse_names(pkg, dpk_yaml_get(y, root, "requires"), "field 'requires'", &pkg->num_requires,
                            &pkg->requires)))
    return status;
  for (size_t i = 0; i < pkg->num_requires; i++)
    if (!pkg->requires[i][0]) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'requires' has an empty name");
  if ((status = dpk_yaml_str(dpk_yaml_get(y, root, "entry"), "field 'entry'", &entry))) return status;
  pkg->entry = dpk_package_find_module(pkg, entry);
  if (pkg->entry == (size_t)-1)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'entry' names '%s', which is not a module", entry);
  return DPK_OK;
}

/* kinds: {carried: [name, ...]}: the kinds the file's own code provides
 * (optional; unknown keys are ignored). */
static dpk_status_t parse_kinds(dpk_package_t *pkg, yaml_node_t *root) {
  yaml_node_t *kinds = dpk_yaml_get(&pkg->yaml, root, "kinds");
  if (kinds && !dpk_yaml_is_map(kinds))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'kinds' must be a mapping {carried: [names]}");
  dpk_status_t status = parse_names(pkg, dpk_yaml_get(&pkg->yaml, kinds, "carried"), "field 'kinds.carried'",
                                    &pkg->num_carried, &pkg->carried);
  if (status) return status;
  if (pkg->num_carried > DPK_KIND_TABLE_MAX)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'kinds.carried' names %zu kinds (at most %d)",
                    pkg->num_carried, DPK_KIND_TABLE_MAX);
  for (size_t i = 0; i < pkg->num_carried; i++) {
    if (!pkg->carried[i][0]) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'kinds.carried' has an empty name");
    for (size_t j = 0; j < i; j++)
      if (strcmp(pkg->carried[i], pkg->carried[j]) == 0)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'kinds.carried' names '%s' twice", pkg->carried[i]);
  }
  return DPK_OK;
}

static dpk_status_t parse(dpk_package_t *pkg) {
  const dpk_blob_header_t *h = &pkg->header;
  const uint8_t *section = pkg->file.section;
  const uint8_t *area = section + h->payload_offset;
  dpk_status_t status =
      dpk_yaml_parse(section + h->manifest_offset, (size_t)h->manifest_size, "the manifest", &pkg->yaml);
  if (status) return status;
  yaml_node_t *root = dpk_yaml_root(&pkg->yaml);
  if (!dpk_yaml_is_map(root)) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "the manifest is not a mapping");
  yaml_node_t *modules = dpk_yaml_get(&pkg->yaml, root, "modules");
  if (!dpk_yaml_is_seq(modules) || dpk_yaml_len(modules) == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'modules' must be a non-empty sequence");
  pkg->num_modules = dpk_yaml_len(modules);
  pkg->modules = dpk_package_alloc(pkg, pkg->num_modules, sizeof *pkg->modules);
  if (!pkg->modules) return OOM();
  for (size_t i = 0; i < pkg->num_modules; i++) {
    yaml_node_t *node = dpk_yaml_item(&pkg->yaml, modules, i);
    if (!dpk_yaml_is_map(node))
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "modules[%zu] must be a mapping", i);
    if ((status = parse_module(pkg, node, i, area))) return status;
    for (size_t j = 0; j < i; j++)
      if (strcmp(pkg->modules[j].name, pkg->modules[i].name) == 0)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "module '%s' is declared twice", pkg->modules[i].name);
  }
  if ((status = resolve_imports(pkg, modules))) return status;
  if ((status = parse_header_fields(pkg, root))) return status;
  if ((status = parse_kinds(pkg, root))) return status;
  if ((status = dpk_manifest_parse_dims(pkg, root))) return status;
  if ((status = parse_signature(pkg, root, "inputs", "input", &pkg->num_inputs, &pkg->inputs))) return status;
  if ((status = parse_signature(pkg, root, "outputs", "output", &pkg->num_outputs, &pkg->outputs))) return status;
  return dpk_manifest_parse_plans(pkg, root);
}

dpk_status_t dpk_manifest_parse(dpk_package_t *package) {
  dpk_status_t status = parse(package);
  if (status) return dpk_fail_context(status, "manifest of '%s'", package->path);
  return DPK_OK;
}
