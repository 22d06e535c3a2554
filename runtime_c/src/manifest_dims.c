/* manifest_dims.c: the manifest's dynamic-shape fields (docs/format.md,
 * "Dynamic shapes"): the file's `dims`, each input's and output's `dims`
 * (one dim name or null per axis) and the `plans`, each a graph module
 * specialised to one size of every dim. A manifest without them is a static
 * file: no dims, and one plan, the entry, with no sizes.
 *
 * Every field is checked here, so a run never meets a malformed plan: a
 * dynamic axis names a declared dim and its shape is that dim's max; each
 * dim is used by an input; each plan names a graph module, gives every dim
 * once and within its range; no two plans have the same sizes; the last
 * has every dim at its max and the entry as its graph. FAILED_PRECONDITION
 * names the field and the numbers. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "manifest.h"
#include "package.h"
#include "shape.h"
#include "yamltree.h"

#define OOM() dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory reading the manifest")
#define LL(x) ((long long)(x))

static size_t find_dim(const dpk_package_t *pkg, const char *name) {
  for (size_t k = 0; k < pkg->num_dims; k++)
    if (strcmp(pkg->dims[k].name, name) == 0) return k;
  return (size_t)-1;
}

/* "batch, seq", or "none" for a static file. */
static const char *dim_names(const dpk_package_t *pkg, char *buffer, size_t capacity) {
  size_t used = 0;
  snprintf(buffer, capacity, "%s", pkg->num_dims ? "" : "none");
  for (size_t k = 0; k < pkg->num_dims && used < capacity; k++) {
    int w = snprintf(buffer + used, capacity - used, "%s%s", k ? ", " : "", pkg->dims[k].name);
    if (w < 0) break;
    used += (size_t)w;
  }
  return buffer;
}

/* "batch = 8, seq = 16" */
static const char *sizes_str(const dpk_package_t *pkg, const int64_t *sizes, char *buffer, size_t capacity) {
  size_t used = 0;
  buffer[0] = '\0';
  for (size_t k = 0; k < pkg->num_dims && used < capacity; k++) {
    int w = snprintf(buffer + used, capacity - used, "%s%s = %lld", k ? ", " : "", pkg->dims[k].name, LL(sizes[k]));
    if (w < 0) break;
    used += (size_t)w;
  }
  return buffer;
}

static dpk_status_t parse_dim(dpk_package_t *pkg, yaml_node_t *item, size_t i) {
  dpk_yaml_t *y = &pkg->yaml;
  dpk_dim_decl_t *d = &pkg->dims[i];
  char what[256];
  if (!dpk_yaml_is_map(item))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "dims[%zu] must be a mapping {name, min, max}", i);
  snprintf(what, sizeof what, "dims[%zu] field 'name'", i);
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, item, "name"), what, &d->name);
  if (status) return status;
  if (!d->name[0]) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is empty", what);
  for (size_t j = 0; j < i; j++)
    if (strcmp(pkg->dims[j].name, d->name) == 0)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "dim '%s' is declared twice (dims[%zu] and dims[%zu])", d->name,
                      j, i);
  snprintf(what, sizeof what, "dim '%s' field 'min'", d->name);
  if ((status = dpk_yaml_int(dpk_yaml_get(y, item, "min"), what, &d->min))) return status;
  snprintf(what, sizeof what, "dim '%s' field 'max'", d->name);
  if ((status = dpk_yaml_int(dpk_yaml_get(y, item, "max"), what, &d->max))) return status;
  if (d->min < 1 || d->max < d->min)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "dim '%s' has min %lld and max %lld (need 1 <= min <= max)",
                    d->name, LL(d->min), LL(d->max));
  yaml_node_t *exact = dpk_yaml_get(y, item, "exact");
  if (exact && !dpk_yaml_is_null(exact)) {
    snprintf(what, sizeof what, "dim '%s' field 'exact'", d->name);
    if ((status = dpk_yaml_str(exact, what, &d->exact))) return status;
    if (!d->exact[0])
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is empty (it says why the dim is never padded)", what);
  }
  return DPK_OK;
}

dpk_status_t dpk_manifest_parse_dims(dpk_package_t *pkg, yaml_node_t *root) {
  yaml_node_t *node = dpk_yaml_get(&pkg->yaml, root, "dims");
  if (!node || dpk_yaml_is_null(node)) return DPK_OK;
  size_t n = dpk_yaml_len(node);
  if (!dpk_yaml_is_seq(node) || n == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'dims' must be a non-empty sequence of {name, min, max}");
  if (n > DPK_DIMS_MAX)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'dims' declares %zu dims (at most %d)", n, DPK_DIMS_MAX);
  pkg->dims = dpk_package_alloc(pkg, n, sizeof *pkg->dims);
  if (!pkg->dims) return OOM();
  pkg->num_dims = n;
  for (size_t i = 0; i < n; i++) {
    dpk_status_t status = parse_dim(pkg, dpk_yaml_item(&pkg->yaml, node, i), i);
    if (status) return status;
  }
  return DPK_OK;
}

dpk_status_t dpk_manifest_parse_axes(dpk_package_t *pkg, yaml_node_t *item, const char *what,
                                     dpk_tensor_decl_t *decl) {
  size_t n = (size_t)decl->ndim;
  decl->dims = dpk_package_alloc(pkg, n + 1, sizeof *decl->dims);
  decl->axis_dim = dpk_package_alloc(pkg, n + 1, sizeof *decl->axis_dim);
  decl->min_shape = dpk_package_alloc(pkg, n + 1, sizeof *decl->min_shape);
  if (!decl->dims || !decl->axis_dim || !decl->min_shape) return OOM();
  for (size_t a = 0; a < n; a++) {
    decl->axis_dim[a] = -1;
    decl->min_shape[a] = decl->shape[a];
  }
  yaml_node_t *node = dpk_yaml_get(&pkg->yaml, item, "dims");
  if (!node || dpk_yaml_is_null(node)) return DPK_OK;
  if (!dpk_yaml_is_seq(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                    "%s field 'dims' must be a sequence of dim names or nulls, one per axis", what);
  if (dpk_yaml_len(node) != n)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s field 'dims' has %zu entries but its shape has %zu dims",
                    what, dpk_yaml_len(node), n);
  char field[256], names[512], shape[256];
  snprintf(field, sizeof field, "%s field 'dims'", what);
  for (size_t a = 0; a < n; a++) {
    yaml_node_t *entry = dpk_yaml_item(&pkg->yaml, node, a);
    if (dpk_yaml_is_null(entry)) continue;
    const char *name;
    dpk_status_t status = dpk_yaml_str(entry, field, &name);
    if (status) return status;
    size_t k = find_dim(pkg, name);
    if (k == (size_t)-1)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "%s field 'dims' names '%s' at axis %zu, which field 'dims' does not declare (declared: %s)", what,
                      name, a, dim_names(pkg, names, sizeof names));
    const dpk_dim_decl_t *d = &pkg->dims[k];
    if (decl->shape[a] != d->max)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "%s has shape %s but axis %zu is dim '%s', whose max is %lld (the shape is the largest plan's)",
                      what, dpk_shape_str(decl->ndim, decl->shape, shape, sizeof shape), a, d->name, LL(d->max));
    decl->dims[a] = d->name;
    decl->axis_dim[a] = (int32_t)k;
    decl->min_shape[a] = d->min;
  }
  return DPK_OK;
}

/* Every dim is used by an input axis: a run learns its value from the inputs. */
static dpk_status_t check_dims_used(const dpk_package_t *pkg) {
  for (size_t k = 0; k < pkg->num_dims; k++) {
    bool used = false;
    for (size_t i = 0; i < pkg->num_inputs && !used; i++)
      for (int32_t a = 0; a < pkg->inputs[i].ndim && !used; a++) used = pkg->inputs[i].axis_dim[a] == (int32_t)k;
    if (!used)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "dim '%s' is used by no input axis (a run learns each dim's value from the inputs)",
                      pkg->dims[k].name);
  }
  return DPK_OK;
}

/* plans[i]'s `dims` mapping into plan->sizes. `what` is "plans[1] (graph 'main_b8')". */
static dpk_status_t parse_sizes(dpk_package_t *pkg, yaml_node_t *node, const char *what, dpk_plan_decl_t *plan) {
  dpk_yaml_t *y = &pkg->yaml;
  if (!dpk_yaml_is_map(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s field 'dims' must be a mapping of dim name -> size", what);
  plan->sizes = dpk_package_alloc(pkg, pkg->num_dims, sizeof *plan->sizes);
  if (!plan->sizes) return OOM();
  char field[320], names[512];
  for (size_t j = 0; j < dpk_yaml_map_len(node); j++) {
    const char *name = dpk_yaml_map_key(y, node, j);
    if (!name) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s field 'dims': key %zu is not a string", what, j);
    size_t k = find_dim(pkg, name);
    if (k == (size_t)-1)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "%s gives a size for '%s', which field 'dims' does not declare (declared: %s)", what, name,
                      dim_names(pkg, names, sizeof names));
    if (plan->sizes[k]) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s gives dim '%s' twice", what, name);
    snprintf(field, sizeof field, "%s field 'dims.%s'", what, name);
    int64_t size;
    dpk_status_t status = dpk_yaml_int(dpk_yaml_map_value(y, node, j), field, &size);
    if (status) return status;
    const dpk_dim_decl_t *d = &pkg->dims[k];
    if (size < d->min || size > d->max)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s gives %s = %lld, outside its range %lld..%lld", what, name,
                      LL(size), LL(d->min), LL(d->max));
    plan->sizes[k] = size;
  }
  for (size_t k = 0; k < pkg->num_dims; k++)
    if (!plan->sizes[k])
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s gives no size for dim '%s'", what, pkg->dims[k].name);
  return DPK_OK;
}

static dpk_status_t parse_plan(dpk_package_t *pkg, yaml_node_t *item, size_t i) {
  dpk_yaml_t *y = &pkg->yaml;
  dpk_plan_decl_t *plan = &pkg->plans[i];
  char what[256], a[512];
  if (!dpk_yaml_is_map(item))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] must be a mapping {graph, dims}", i);
  const char *graph;
  snprintf(what, sizeof what, "plans[%zu] field 'graph'", i);
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, item, "graph"), what, &graph);
  if (status) return status;
  plan->graph = dpk_package_find_module(pkg, graph);
  if (plan->graph == (size_t)-1)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] names graph '%s', which is not a module", i, graph);
  const char *kind = pkg->modules[plan->graph].kind;
  if (strcmp(kind, "graph") != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] names module '%s' of kind %s (a plan is a graph module)",
                    i, graph, kind);
  snprintf(what, sizeof what, "plans[%zu] (graph '%s')", i, graph);
  if ((status = parse_sizes(pkg, dpk_yaml_get(y, item, "dims"), what, plan))) return status;
  plan->cost = 1;
  for (size_t k = 0; k < pkg->num_dims; k++) plan->cost *= plan->sizes[k];
  yaml_node_t *cost = dpk_yaml_get(y, item, "cost");
  if (cost) {
    snprintf(what, sizeof what, "plans[%zu] field 'cost'", i);
    if ((status = dpk_yaml_int(cost, what, &plan->cost))) return status;
    if (plan->cost < 1 || plan->cost > ((int64_t)1 << 52))
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] field 'cost' is %lld but must be from 1 to 2^52", i,
                      (long long)plan->cost);
  }
  for (size_t j = 0; j < i; j++) {
    if (pkg->plans[j].graph == plan->graph)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] and plans[%zu] both name graph '%s'", j, i, graph);
    if (memcmp(pkg->plans[j].sizes, plan->sizes, pkg->num_dims * sizeof *plan->sizes) == 0)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "plans[%zu] and plans[%zu] have the same sizes (%s)", j, i,
                      sizes_str(pkg, plan->sizes, a, sizeof a));
  }
  return DPK_OK;
}

/* The last plan runs the largest shapes, which an older runtime sees as the file. */
static dpk_status_t check_last(const dpk_package_t *pkg) {
  const dpk_plan_decl_t *last = &pkg->plans[pkg->num_plans - 1];
  const char *graph = pkg->modules[last->graph].name;
  for (size_t k = 0; k < pkg->num_dims; k++)
    if (last->sizes[k] != pkg->dims[k].max)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "the last plan (graph '%s') gives %s = %lld but must have every dim at its max (%lld)", graph,
                      pkg->dims[k].name, LL(last->sizes[k]), LL(pkg->dims[k].max));
  if (last->graph != pkg->entry)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "the last plan's graph is '%s' but field 'entry' names '%s'", graph,
                    pkg->modules[pkg->entry].name);
  return DPK_OK;
}

dpk_status_t dpk_manifest_parse_plans(dpk_package_t *pkg, yaml_node_t *root) {
  yaml_node_t *node = dpk_yaml_get(&pkg->yaml, root, "plans");
  if (node && dpk_yaml_is_null(node)) node = NULL;
  if (pkg->num_dims == 0) { /* a static file: one plan, the entry */
    if (node)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "field 'plans' is given but field 'dims' is not (a static file has one plan, the entry)");
    pkg->plans = dpk_package_alloc(pkg, 1, sizeof *pkg->plans);
    if (!pkg->plans) return OOM();
    pkg->plans[0].sizes = dpk_package_alloc(pkg, 1, sizeof *pkg->plans[0].sizes); /* no sizes, but not NULL */
    if (!pkg->plans[0].sizes) return OOM();
    pkg->num_plans = 1;
    pkg->plans[0].graph = pkg->entry;
    return DPK_OK;
  }
  dpk_status_t status = check_dims_used(pkg);
  if (status) return status;
  if (!node) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'dims' is given but field 'plans' is missing");
  size_t n = dpk_yaml_len(node);
  if (!dpk_yaml_is_seq(node) || n == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'plans' must be a non-empty sequence of {graph, dims}");
  pkg->plans = dpk_package_alloc(pkg, n, sizeof *pkg->plans);
  if (!pkg->plans) return OOM();
  pkg->num_plans = n;
  for (size_t i = 0; i < n; i++)
    if ((status = parse_plan(pkg, dpk_yaml_item(&pkg->yaml, node, i), i))) return status;
  return check_last(pkg);
}
