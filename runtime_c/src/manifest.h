/* manifest.h: the parsed manifest's tensor, module, dim and plan
 * declarations, and the parser that fills a package with them (manifest.c;
 * the dynamic-shape fields `dims`, `plans` and inputs[].dims: manifest_dims.c).
 * Not installed.
 *
 * Strings and arrays are borrowed from the package (its YAML document and
 * its allocations: package.h), valid until dpk_package_free. */
#ifndef DPK_MANIFEST_H
#define DPK_MANIFEST_H

#include <stdbool.h>

#include "blob.h"
#include "dpk.h"
#include "yamltree.h"

/* The most dynamic dims a file may declare (a run keeps one value per dim
 * on the stack). */
#define DPK_DIMS_MAX 32

typedef struct dpk_tensor_decl {
  const char *name;
  DLDataType dtype;
  int32_t ndim;
  int64_t *shape;        /* inputs/outputs: the largest plan's shape */
  dpk_payload_t payload; /* params tensors only */
  /* Inputs and outputs only (NULL elsewhere), ndim entries each: */
  const char **dims;     /* the dim an axis names (manifest inputs[].dims), or NULL for a fixed axis */
  int32_t *axis_dim;     /* the same as an index into package->dims, or -1 */
  int64_t *min_shape;    /* `shape` with each dynamic axis at its dim's min */
} dpk_tensor_decl_t;

/* A dynamic dim of the file (manifest `dims`). */
typedef struct dpk_dim_decl {
  const char *name;
  int64_t min, max;  /* 1 <= min <= max */
  const char *exact; /* why the dim is never padded, or NULL: a size between plans runs padded */
} dpk_dim_decl_t;

/* A plan (manifest `plans`): a graph module, the model specialised to one
 * size of each dim. A static file has one plan, the entry, with no sizes. */
typedef struct dpk_plan_decl {
  size_t graph;   /* index into package->modules, a module of kind graph */
  int64_t *sizes; /* one per dim, in package->dims order */
  int64_t cost;   /* `cost`, the packager's estimate of a run's time (only ratios matter); default: sizes' product */
} dpk_plan_decl_t;

typedef struct dpk_module_decl {
  const char *name;
  const char *kind;
  size_t num_imports;
  size_t *imports;           /* indices into package->modules */
  size_t num_functions;
  const char **functions;    /* NULL-terminated */
  bool has_payload;
  dpk_payload_t payload;
  size_t num_tensors;        /* params */
  dpk_tensor_decl_t *tensors;
} dpk_module_decl_t;

/* Parse and check the manifest of an opened package (its file mapped, its
 * header read) into the package's fields: imports resolved to indices,
 * every payload descriptor bounds-checked. FAILED_PRECONDITION names the
 * module and the field; DATA_LOSS for bad YAML; RESOURCE_EXHAUSTED. */
dpk_status_t dpk_manifest_parse(dpk_package_t *package);

/* manifest_dims.c, called by dpk_manifest_parse in this order: */
/* The top-level `dims` into package->dims (absent: a static file, no dims). */
dpk_status_t dpk_manifest_parse_dims(dpk_package_t *package, yaml_node_t *root);
/* An input's or output's `dims` field (`item` is its mapping; `what` names
 * it, "input 'x'") into decl->dims, axis_dim and min_shape, once its shape
 * is parsed: a dynamic axis names a declared dim and its shape is that
 * dim's max. Absent: every axis fixed. */
dpk_status_t dpk_manifest_parse_axes(dpk_package_t *package, yaml_node_t *item, const char *what,
                                     dpk_tensor_decl_t *decl);
/* The top-level `plans` into package->plans, once modules, entry, dims and
 * the signature are parsed (every dim used by an input; plans complete,
 * in range, distinct, the last at every max with the entry as its graph).
 * A static file gets its one plan, the entry. */
dpk_status_t dpk_manifest_parse_plans(dpk_package_t *package, yaml_node_t *root);

#endif /* DPK_MANIFEST_H */
