/* package.h: a model file mapped and checked, no code run (package.c;
 * the public calls are dpk_package_* in dpk.h). Not installed. */
#ifndef DPK_PACKAGE_H
#define DPK_PACKAGE_H

#include "blob.h"
#include "dpk.h"
#include "file.h"
#include "manifest.h"
#include "yamltree.h"

/* Strings are borrowed from the package's YAML document; arrays are the
 * package's allocations (dpk_package_alloc). */
struct dpk_package {
  char *path;
  struct dpk_alloc *allocs;  /* every allocation below, freed together */
  dpk_file_t file;
  dpk_blob_header_t header;
  dpk_yaml_t yaml;
  const char *name;
  const char *machine;       /* target.machine, or NULL */
  size_t entry;              /* index into modules */
  size_t num_inputs, num_outputs;
  dpk_tensor_decl_t *inputs, *outputs;
  size_t num_modules;
  dpk_module_decl_t *modules;
  size_t num_carried;        /* kinds.carried: kinds the file's own code provides */
  const char **carried;      /* NULL-terminated */
  size_t num_requires;       /* requires: shared libraries the file needs (sonames) */
  const char **requires;     /* NULL-terminated */
  size_t num_dims;           /* dims: the dynamic dims (0: a static file) */
  dpk_dim_decl_t *dims;
  size_t num_plans;          /* plans, smallest first; at least 1 (a static file: the entry) */
  dpk_plan_decl_t *plans;
};

/* dpk_package_open over `size` bytes of a whole model file in memory, which
 * the caller keeps alive until dpk_package_free; `source` stands for the
 * path in messages. Nothing is mapped or dlopened (the fuzzer's entry). */
dpk_status_t dpk_package_open_memory(const char *source, const void *bytes, size_t size,
                                     dpk_package_t **out_package);
/* Zeroed memory for `count` items of `size` bytes, owned by the package and
 * freed with it; NULL if out of memory or the size overflows. */
void *dpk_package_alloc(dpk_package_t *package, size_t count, size_t size);
/* Index of the module called `name`, or (size_t)-1. */
size_t dpk_package_find_module(const dpk_package_t *package, const char *name);
/* Index of the plan whose graph is module `module`, or (size_t)-1. */
size_t dpk_package_plan_of(const dpk_package_t *package, size_t module);
/* `decl`'s shape (an input or output) in plan `plan`: each dynamic axis at
 * the plan's size of its dim; decl->ndim entries into out_shape. */
void dpk_package_plan_shape(const dpk_package_t *package, size_t plan, const dpk_tensor_decl_t *decl,
                            int64_t *out_shape);

#endif /* DPK_PACKAGE_H */
