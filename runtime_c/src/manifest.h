/* manifest.h: the parsed manifest's tensor and module declarations, and the
 * parser that fills a package with them (manifest.c). Not installed.
 *
 * Strings and arrays are borrowed from the package (its YAML document and
 * its allocations: package.h), valid until dpk_package_free. */
#ifndef DPK_MANIFEST_H
#define DPK_MANIFEST_H

#include <stdbool.h>

#include "blob.h"
#include "dpk.h"

typedef struct dpk_tensor_decl {
  const char *name;
  DLDataType dtype;
  int32_t ndim;
  int64_t *shape;
  dpk_payload_t payload; /* params tensors only */
} dpk_tensor_decl_t;

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

#endif /* DPK_MANIFEST_H */
