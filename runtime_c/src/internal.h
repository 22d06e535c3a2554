/*
 * internal.h: declarations shared by libdpk's own sources (not installed).
 */
#ifndef DPK_INTERNAL_H
#define DPK_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <yaml.h>

#include "dpk.h"

/* ---- errors (error.c) ---------------------------------------------------
 * Record the calling thread's message and return `status`, so a failure
 * site reads: return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "payload '%s' ...", ...). */
dpk_status_t dpk_fail(dpk_status_t status, const char *fmt, ...);
/* Prefix the current message: "<prefix>: <old message>" (keeps the status). */
dpk_status_t dpk_fail_context(dpk_status_t status, const char *fmt, ...);
void dpk_set_error(const char *fmt, ...);    /* the dpk_backend_api.set_error */
void dpk_clear_error(void);

/* ---- ABI versions (abi.c) ---------------------------------------------
 * "1.1" for a packed version (1 reads as "1.0"); returns buffer. */
#define DPK_ABI_VERSION_TEXT 16
char *dpk_abi_version_text(uint32_t version, char buffer[DPK_ABI_VERSION_TEXT]);
/* True if this runtime accepts `version`: its major, an older or equal minor. */
bool dpk_abi_accepts(uint32_t version);
/* DPK_OK, or UNIMPLEMENTED "<what> was built for ABI version 1.2 but this
 * runtime has ABI version 1.1". */
dpk_status_t dpk_abi_check(uint32_t version, const char *what);

/* ---- option structs (options.c) ----------------------------------------
 * The caller's options (NULL: the defaults) as a full struct of this
 * runtime's size; `api` names the public call in the message. INVALID_ARGUMENT
 * for a struct_size outside [DPK_LOAD_OPTIONS_MIN_SIZE, DPK_LOAD_OPTIONS_MAX_SIZE],
 * UNIMPLEMENTED for a non-zero byte past the fields this runtime knows. */
dpk_status_t dpk_load_options_read(const char *api, const dpk_load_options_t *caller, dpk_load_options_t *out_options);

/* ---- YAML trees (yamltree.c) --------------------------------------------
 * A parsed YAML (or JSON) document and typed accessors over its nodes.
 * Accessors that take a `what` string use it in error messages, e.g.
 * "module 'ext0' field 'payload.size'". */
typedef struct dpk_yaml {
  yaml_document_t doc;
  bool loaded;
} dpk_yaml_t;

/* Parse `size` bytes; `source` names them in errors ("manifest of 'm.so'").
 * DATA_LOSS with line and column on a syntax error. Free with dpk_yaml_free. */
dpk_status_t dpk_yaml_parse(const void *bytes, size_t size, const char *source, dpk_yaml_t *out_yaml);
void dpk_yaml_free(dpk_yaml_t *yaml);
yaml_node_t *dpk_yaml_root(dpk_yaml_t *yaml);

/* Child of a mapping by key; NULL if absent or `map` is not a mapping. */
yaml_node_t *dpk_yaml_get(dpk_yaml_t *yaml, yaml_node_t *map, const char *key);
/* Sequence length and items (0 / NULL if not a sequence). */
size_t dpk_yaml_len(yaml_node_t *seq);
yaml_node_t *dpk_yaml_item(dpk_yaml_t *yaml, yaml_node_t *seq, size_t index);
/* Mapping pairs: number, and key (a scalar string) / value of pair i. */
size_t dpk_yaml_map_len(yaml_node_t *map);
const char *dpk_yaml_map_key(dpk_yaml_t *yaml, yaml_node_t *map, size_t index);
yaml_node_t *dpk_yaml_map_value(dpk_yaml_t *yaml, yaml_node_t *map, size_t index);

/* Typed reads. They fail with FAILED_PRECONDITION naming `what` when the
 * node is missing (NULL) or of the wrong type. Strings are borrowed from the
 * document (NUL-terminated). */
dpk_status_t dpk_yaml_str(yaml_node_t *node, const char *what, const char **out_str);
dpk_status_t dpk_yaml_int(yaml_node_t *node, const char *what, int64_t *out_value);
dpk_status_t dpk_yaml_uint(yaml_node_t *node, const char *what, uint64_t *out_value);
dpk_status_t dpk_yaml_float(yaml_node_t *node, const char *what, double *out_value);
bool dpk_yaml_is_map(yaml_node_t *node);
bool dpk_yaml_is_seq(yaml_node_t *node);

/* ---- dtypes ------------------------------------------------------------ */
/* "float32" -> {kDLFloat, 32, 1}. INVALID_ARGUMENT naming `what` if unknown. */
dpk_status_t dpk_dtype_parse(const char *name, const char *what, DLDataType *out_dtype);
const char *dpk_dtype_name(DLDataType dtype); /* "float32", or "unknown" */
size_t dpk_dtype_size(DLDataType dtype);       /* bytes per element */

/* ---- the file (file.c) --------------------------------------------------
 * The whole file mapped read-only, and where its `.dpk` section is. */
typedef struct dpk_file {
  const uint8_t *map;      /* the whole file, PROT_READ */
  size_t map_size;
  const uint8_t *section;  /* the `.dpk` section inside `map` */
  uint64_t section_size;
  uint16_t machine;        /* ELF e_machine */
  bool borrowed;           /* `map` is the caller's memory (dpk_file_from_memory): not unmapped */
} dpk_file_t;

/* Map `path` and find its `.dpk` section from the ELF section headers; every
 * offset and size is checked against the file size. NOT_FOUND (no file, no
 * section), DATA_LOSS (not ELF, bad headers), UNIMPLEMENTED (ELF32, big-endian).
 * Close with dpk_file_close (accepts a zeroed struct). */
dpk_status_t dpk_file_open(const char *path, dpk_file_t *out_file);
/* The same checks on `size` bytes the caller owns and keeps alive until
 * dpk_file_close (for fuzzing and tools; `source` names them in messages). */
dpk_status_t dpk_file_from_memory(const char *source, const uint8_t *bytes, size_t size, dpk_file_t *out_file);
void dpk_file_close(dpk_file_t *file);
/* "x86_64", "aarch64"..., or "ELF machine 243" written into `buffer`. */
const char *dpk_machine_name(uint16_t machine, char *buffer, size_t capacity);
/* The ELF machine this runtime was compiled for; 0 if unknown (no check). */
uint16_t dpk_host_machine(void);

/* ---- the blob (blob.c) --------------------------------------------------
 * Header fields, decoded. */
typedef struct dpk_blob_header {
  uint16_t major, minor;
  uint32_t flags;
  uint64_t manifest_offset, manifest_size;
  uint64_t payload_offset, payload_size;
  uint64_t manifest_checksum, header_checksum;
} dpk_blob_header_t;

#define DPK_BLOB_HEADER_SIZE 64

/* Validate the header of the `size` bytes at `section` in the order of
 * docs/format.md, up to and including the manifest checksum. `source` names
 * the file in messages. */
dpk_status_t dpk_blob_read_header(const uint8_t *section, uint64_t size, const char *source,
                                  dpk_blob_header_t *out_header);

typedef enum { DPK_CODEC_RAW = 0, DPK_CODEC_ZSTD = 1 } dpk_codec_t;

/* A payload descriptor, bounds-checked. `data` points at the stored bytes
 * in the mapping. */
typedef struct dpk_payload {
  uint64_t offset, size, raw_size; /* raw_size == size for raw */
  dpk_codec_t codec;
  uint64_t checksum;
  const uint8_t *data;
} dpk_payload_t;

/* Parse the descriptor mapping `node`. Messages name `owner` ("module 'ext0'")
 * and the field, under `prefix` if not NULL ("module 'ext0' field
 * 'payload.size'"; without prefix "module 'w' tensor 'b' field 'size'").
 * `area` is the payload area (`area_size` bytes). FAILED_PRECONDITION (field
 * type), OUT_OF_RANGE (past the area), UNIMPLEMENTED (unknown codec). */
dpk_status_t dpk_payload_parse(dpk_yaml_t *yaml, yaml_node_t *node, const char *owner, const char *prefix,
                               const uint8_t *area, uint64_t area_size, dpk_payload_t *out_payload);
/* The decoded bytes: for raw, `data` itself (*out_owned = NULL); for zstd, a
 * heap buffer of raw_size bytes that the caller frees (*out_owned). */
dpk_status_t dpk_payload_decode(const dpk_payload_t *payload, const char *what, const uint8_t **out_data,
                                void **out_owned);
/* DATA_LOSS naming `what` if the stored bytes do not hash to the checksum. */
dpk_status_t dpk_payload_verify(const dpk_payload_t *payload, const char *what);
uint64_t dpk_checksum(const void *bytes, size_t size); /* XXH3-64, seed 0 */

/* ---- the parsed manifest (package.c) ------------------------------------
 * Strings are borrowed from the package's YAML document. */
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
};

/* dpk_package_open over `size` bytes of a whole model file in memory, which
 * the caller keeps alive until dpk_package_free; `source` stands for the
 * path in messages. Nothing is mapped or dlopened (the fuzzer's entry). */
dpk_status_t dpk_package_open_memory(const char *source, const void *bytes, size_t size,
                                     dpk_package_t **out_package);
/* Open `path` once, check its signature trailer against `key` on the
 * mapping, then build the package over that same mapping (signature.c).
 * With `out_fd`, the open descriptor is handed to the caller (to dlopen the
 * very file that was checked; the caller closes it); else it is closed. */
dpk_status_t dpk_signed_open(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package, int *out_fd);
/* Parse and check the manifest of an opened package (manifest.c). */
dpk_status_t dpk_manifest_parse(dpk_package_t *package);
/* Zeroed memory owned by the package, freed with it; NULL if out of memory. */
void *dpk_package_alloc(dpk_package_t *package, size_t count, size_t size);
void dpk_package_free_allocs(dpk_package_t *package);
/* Index of the module called `name`, or (size_t)-1. */
size_t dpk_package_find_module(const dpk_package_t *package, const char *name);
/* Product of the dims; false on overflow or a negative dim. */
bool dpk_shape_numel(int32_t ndim, const int64_t *shape, uint64_t *out_numel);
/* "[1, 64]" into `buffer`. */
const char *dpk_shape_str(int32_t ndim, const int64_t *shape, char *buffer, size_t capacity);
/* Check that `tensor` is a CPU, compact row-major tensor of exactly `decl`'s
 * dtype and shape; INVALID_ARGUMENT "<role> 'x' has shape [1, 63] but the model
 * expects float32[1, 64]". */
dpk_status_t dpk_check_tensor(const DLTensor *tensor, const char *role, const dpk_tensor_decl_t *decl);

/* ---- kinds (registry.c, model.c) ---------------------------------------- */
extern const dpk_kind dpk_kind_dso;    /* dso.c */
extern const dpk_kind dpk_kind_params; /* params.c */
extern const dpk_kind dpk_kind_graph;  /* graph.c */
extern const dpk_kind dpk_kind_json;   /* json.c */

/* The kinds of a model's modules (model_kinds.c). Before dlopen: every
 * module's kind is registered or declared carried by the manifest, else
 * NOT_FOUND listing the registered kinds; no code of the file runs. */
dpk_status_t dpk_model_check_kinds(struct dpk_model *model);
/* After dlopen: validate the file's __dpk_kinds against the manifest's
 * kinds.carried (as dpk_abi.h describes) and bind every module to its kind. */
dpk_status_t dpk_model_bind_kinds(struct dpk_model *model);

/* A registered kind by name, or NULL. Thread-safe. */
const dpk_kind *dpk_registry_find(const char *name);
/* The registered names, sorted, ", "-separated ("dso, graph, json, params"), into
 * buffer (truncated to capacity_bytes - 1 characters). Thread-safe. */
void dpk_registry_names(char *buffer, size_t capacity);

/* The module a kind is loading, for the built-in kinds (model.c). */
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
  int num_threads;                /* resolved at load: dpk_model_num_threads */
  bool pool_held;                 /* dpk_pool_retain succeeded: release at free */
};

/* A kind's or packed function's non-zero return as a status: a known status
 * code as is, anything else INTERNAL. */
static inline dpk_status_t dpk_status_from_rc(int rc) {
  return rc > 0 && rc <= DPK_STATUS_UNAUTHENTICATED ? (dpk_status_t)rc : DPK_STATUS_INTERNAL;
}

/* Look `name` up in module `index` (if `self`), then its imports depth-first
 * (module.c). 0, DPK_STATUS_NOT_FOUND (no message set), or a kind's error. */
int dpk_module_find_function(const struct dpk_model *model, size_t index, bool self, const char *name,
                             dpk_packed_fn *out_fn, void **out_resource);
void *dpk_ctx_dl_handle(const dpk_kind_ctx *ctx);                 /* the model file's dlopen handle */
const dpk_module_decl_t *dpk_ctx_module(const dpk_kind_ctx *ctx); /* its manifest entry */
const dpk_package_t *dpk_ctx_package(const dpk_kind_ctx *ctx);
/* The services table handed to every kind (model.c). */
extern const dpk_kind_services dpk_services;

/* A params module's tensor by name (params.c); NOT_FOUND without a message. */
int dpk_params_find(void *state, const char *name, const DLTensor **out_tensor);

/* ---- worker threads (pool.c, threads.c) -----------------------------------
 * One process-wide pool serves every model's parallel_for (dpk_abi.h). */
#define DPK_POOL_MAX_THREADS 64 /* threads one loop uses at most, the caller included */
/* What dlopen'ed model code finds in __dpk_parallel. */
extern const dpk_parallel_api dpk_parallel;
/* A loaded model's hold on the pool: grows it to `threads` - 1 workers (at
 * most DPK_POOL_MAX_THREADS - 1) and counts the model; each successful retain
 * is paired with one release, and the last release joins the workers and
 * frees their scratch. RESOURCE_EXHAUSTED if a thread cannot be started
 * (then nothing is held). Thread-safe. */
dpk_status_t dpk_pool_retain(int threads);
void dpk_pool_release(void);
/* Set the calling thread's thread count for parallel_for (1 outside a run);
 * returns the previous value, to restore it. */
int dpk_pool_set_thread_count(int threads);
/* A model's thread count at load (threads.c): `requested` > 0, else
 * DPK_NUM_THREADS, else the CPUs in the affinity mask. INVALID_ARGUMENT if
 * `requested` < 0 or the variable is not an integer in 1..1024. */
dpk_status_t dpk_threads_resolve(int requested, int *out_threads);
/* After the `requires` libraries are open: one that exports
 * openblas_set_num_threads is set to 1 thread, unless OPENBLAS_NUM_THREADS or
 * OMP_NUM_THREADS is set. */
void dpk_threads_tame_openblas(void *const *handles, size_t count);

/* ---- .npy files (npy.c) -------------------------------------------------
 * Version 1/2/3, little-endian, C order, the dtypes of dtype.c. */
#define DPK_NPY_MAX_DIMS 32
typedef struct dpk_npy {
  DLDataType dtype;
  int32_t ndim;
  int64_t shape[DPK_NPY_MAX_DIMS];
  void *data;    /* owned, 64-aligned */
  size_t nbytes;
} dpk_npy_t;

/* Read `path`. NOT_FOUND (no file), DATA_LOSS (malformed, truncated),
 * UNIMPLEMENTED (big-endian, Fortran order, other dtype). Free with dpk_npy_free. */
dpk_status_t dpk_npy_read(const char *path, dpk_npy_t *out_npy);
void dpk_npy_free(dpk_npy_t *npy);
/* Write a compact tensor to `path` atomically (a temporary file renamed). */
dpk_status_t dpk_npy_write(const char *path, const DLTensor *tensor);

#endif /* DPK_INTERNAL_H */
