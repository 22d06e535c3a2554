/* package.c: a model file mapped and checked, no code run (dpk_package_*),
 * and the allocations its parsed manifest lives in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "error.h"
#include "file.h"
#include "manifest.h"
#include "package.h"
#include "yamltree.h"

#define U(x) ((unsigned long long)(x))

/* ---- the package's allocations (manifest.c fills them) ---------------- */

/* One header per allocation, a list freed with the package; `align` keeps
 * the memory after it aligned for any scalar. */
struct dpk_alloc {
  struct dpk_alloc *next;
  double align;
};

void *dpk_package_alloc(dpk_package_t *package, size_t count, size_t size) {
  if (size && count > (SIZE_MAX - sizeof(struct dpk_alloc)) / size) return NULL;
  struct dpk_alloc *a = calloc(1, sizeof *a + count * size);
  if (!a) return NULL;
  a->next = package->allocs;
  package->allocs = a;
  return a + 1;
}

static void free_allocs(dpk_package_t *package) {
  while (package->allocs) {
    struct dpk_alloc *next = package->allocs->next;
    free(package->allocs);
    package->allocs = next;
  }
}

/* target.machine, when the manifest has it, must name the ELF e_machine: a
 * file whose manifest and code disagree is corrupt (DATA_LOSS), whatever the
 * host. */
static dpk_status_t check_target(const dpk_package_t *pkg) {
  char buffer[32];
  const char *elf = dpk_machine_name(pkg->file.machine, buffer, sizeof buffer);
  if (!pkg->machine || strcmp(pkg->machine, elf) == 0) return DPK_OK;
  return dpk_fail(DPK_STATUS_DATA_LOSS,
                  "'%s': the manifest says target.machine %s but the ELF header says %s: the file is corrupt",
                  pkg->path, pkg->machine, elf);
}

/* A package for `path`, read from `bytes` if not NULL, else mapped from the file. */
static dpk_status_t package_new(const char *path, const uint8_t *bytes, size_t size, dpk_package_t **out_package) {
  if (!out_package) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_open: out_package is NULL");
  *out_package = NULL;
  if (!path) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_open: path is NULL");
  dpk_package_t *pkg = calloc(1, sizeof *pkg);
  char *copy = strdup(path);
  if (!pkg || !copy) {
    free(pkg);
    free(copy);
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory opening '%s'", path);
  }
  pkg->path = copy;
  dpk_status_t status =
      bytes ? dpk_file_from_memory(path, bytes, size, &pkg->file) : dpk_file_open(path, &pkg->file);
  if (!status) status = dpk_blob_read_header(pkg->file.section, pkg->file.section_size, path, &pkg->header);
  if (!status) status = dpk_manifest_parse(pkg);
  if (!status) status = check_target(pkg);
  if (status) {
    dpk_package_free(pkg);
    return status;
  }
  *out_package = pkg;
  return DPK_OK;
}

dpk_status_t dpk_package_open(const char *path, dpk_package_t **out_package) {
  return package_new(path, NULL, 0, out_package);
}

dpk_status_t dpk_package_open_memory(const char *source, const void *bytes, size_t size,
                                     dpk_package_t **out_package) {
  if (!bytes) {
    *out_package = NULL;
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_open_memory: bytes is NULL");
  }
  return package_new(source, bytes, size, out_package);
}

void dpk_package_free(dpk_package_t *package) {
  if (!package) return;
  dpk_yaml_free(&package->yaml);
  free_allocs(package);
  dpk_file_close(&package->file);
  free(package->path);
  free(package);
}

const char *dpk_package_manifest(const dpk_package_t *package, size_t *out_size) {
  if (out_size) *out_size = package ? (size_t)package->header.manifest_size : 0;
  if (!package) return NULL;
  return (const char *)package->file.section + package->header.manifest_offset;
}

void dpk_package_format(const dpk_package_t *package, uint16_t *out_major, uint16_t *out_minor,
                        uint64_t *out_section_size) {
  if (out_major) *out_major = package ? package->header.major : 0;
  if (out_minor) *out_minor = package ? package->header.minor : 0;
  if (out_section_size) *out_section_size = package ? package->file.section_size : 0;
}

size_t dpk_package_find_module(const dpk_package_t *package, const char *name) {
  for (size_t i = 0; i < package->num_modules; i++)
    if (package->modules[i].name && strcmp(package->modules[i].name, name) == 0) return i;
  return (size_t)-1;
}

size_t dpk_package_plan_of(const dpk_package_t *package, size_t module) {
  for (size_t i = 0; i < package->num_plans; i++)
    if (package->plans[i].graph == module) return i;
  return (size_t)-1;
}

void dpk_package_plan_shape(const dpk_package_t *package, size_t plan, const dpk_tensor_decl_t *decl,
                            int64_t *out_shape) {
  const int64_t *sizes = package->plans[plan].sizes;
  for (int32_t a = 0; a < decl->ndim; a++)
    out_shape[a] = decl->axis_dim[a] >= 0 ? sizes[decl->axis_dim[a]] : decl->shape[a];
}

/* ---- verify ------------------------------------------------------------- */

typedef struct {
  const dpk_payload_t *payload;
  const char *module, *tensor; /* tensor NULL for a module payload */
} span_t;

static int span_cmp(const void *a, const void *b) {
  uint64_t x = ((const span_t *)a)->payload->offset, y = ((const span_t *)b)->payload->offset;
  return x < y ? -1 : x > y;
}

/* Offset of the first non-zero byte in [from, to) of `bytes`, or `to`. */
static uint64_t first_nonzero(const uint8_t *bytes, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; i++)
    if (bytes[i]) return i;
  return to;
}

static dpk_status_t verify_spans(const dpk_package_t *pkg, span_t *spans, size_t n) {
  const uint8_t *area = pkg->file.section + pkg->header.payload_offset;
  char what[512];
  for (size_t i = 0; i < n; i++) {
    if (spans[i].tensor)
      snprintf(what, sizeof what, "'%s': module '%s' tensor '%s'", pkg->path, spans[i].module, spans[i].tensor);
    else
      snprintf(what, sizeof what, "'%s': module '%s' payload", pkg->path, spans[i].module);
    dpk_status_t status = dpk_payload_verify(spans[i].payload, what);
    if (status) return status;
  }
  qsort(spans, n, sizeof *spans, span_cmp);
  uint64_t covered = 0;
  for (size_t i = 0; i <= n; i++) {
    uint64_t next = i < n ? spans[i].payload->offset : pkg->header.payload_size;
    if (next > covered) {
      uint64_t bad = first_nonzero(area, covered, next);
      if (bad < next)
        return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': byte %llu of the payload area is outside every payload but not zero",
                        pkg->path, U(bad));
    }
    if (i < n && spans[i].payload->offset + spans[i].payload->size > covered)
      covered = spans[i].payload->offset + spans[i].payload->size;
  }
  return DPK_OK;
}

dpk_status_t dpk_package_verify(const dpk_package_t *package) {
  if (!package) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_verify: package is NULL");
  const dpk_package_t *pkg = package;
  const dpk_blob_header_t *h = &pkg->header;
  const uint8_t *s = pkg->file.section;
  dpk_blob_header_t again;
  dpk_status_t status = dpk_blob_read_header(s, pkg->file.section_size, pkg->path, &again);
  if (status) return status;
  uint64_t manifest_end = h->manifest_offset + h->manifest_size, area_end = h->payload_offset + h->payload_size;
  uint64_t bad = first_nonzero(s, manifest_end, h->payload_offset);
  if (bad == h->payload_offset) bad = first_nonzero(s, area_end, pkg->file.section_size);
  if (bad < h->payload_offset || (bad >= area_end && bad < pkg->file.section_size))
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': byte %llu of the .dpk section is padding but not zero", pkg->path,
                    U(bad));
  size_t n = 0;
  for (size_t i = 0; i < pkg->num_modules; i++) n += pkg->modules[i].has_payload + pkg->modules[i].num_tensors;
  span_t *spans = calloc(n ? n : 1, sizeof *spans);
  if (!spans) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory verifying '%s'", pkg->path);
  n = 0;
  for (size_t i = 0; i < pkg->num_modules; i++) {
    const dpk_module_decl_t *m = &pkg->modules[i];
    if (m->has_payload) spans[n++] = (span_t){&m->payload, m->name, NULL};
    for (size_t t = 0; t < m->num_tensors; t++) spans[n++] = (span_t){&m->tensors[t].payload, m->name, m->tensors[t].name};
  }
  status = verify_spans(pkg, spans, n);
  free(spans);
  return status;
}
