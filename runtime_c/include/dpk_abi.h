/*
 * dpk_abi.h: the binary interface between the dsopack runtime and the code
 * inside a model file (generated kernels, external-library wrappers, kinds
 * carried by the model itself).
 *
 * Generated code includes this header ONLY; it never links against libdpk.
 * Whatever it needs from the runtime reaches it through `__dpk_api`, a
 * pointer the model file defines and the runtime fills in after dlopen
 * (the idea of TVM's `__TVMAPISetLastError`, extended to a table).
 *
 * Everything here is plain C99 with fixed layouts.
 *
 * Versions. The ABI has a major and a minor version, packed into the
 * uint32_t `abi_version` fields below as DPK_ABI_MAKE_VERSION(major, minor)
 * = (major << 16) | minor, so no table layout changed when minors were
 * introduced. A value below 0x10000 is the single number that files of ABI
 * 1.0 wrote: it reads as major = value, minor = 0 (1 is 1.0; majors start
 * at 1, so the two spellings never meet: 0 is 0.0, refused). A minor adds
 * (a field at the end of a table, a table, a symbol, a meaning for a value
 * that was refused) and never changes what exists; a major may change
 * anything. A runtime of version M.n accepts code, carried kind tables and
 * registered kinds of version M.m with m <= n, and refuses any other
 * version (a newer minor or another major) with UNIMPLEMENTED naming both,
 * "built for ABI version 1.3 but this runtime has ABI version 1.2"; so
 * code built against M.m is only ever handed tables of M.m or later and may
 * use every field its header declares.
 *
 *     1.0  the first version (abi_version fields hold 1)
 *     1.1  abi_version fields hold packed major.minor; the code of a file may
 *          export __dpk_abi_version (below); the runtime checks it before it
 *          hands the file __dpk_api and __dpk_parallel
 *     1.2  dpk_kind ends with get_tensor (optional): any kind may hold
 *          tensors that importing modules find through import_tensor (before,
 *          only the built-in `params` kind could); the runtime reads the
 *          field only from kind tables of minor 2 or later
 */
#ifndef DPK_ABI_H
#define DPK_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DPK_ABI_VERSION_MAJOR 1
#define DPK_ABI_VERSION_MINOR 2

/* A packed version, and its parts (a value < 0x10000 is the 1.0 spelling:
 * major = value, minor = 0). */
#define DPK_ABI_MAKE_VERSION(major, minor) ((uint32_t)(((uint32_t)(major) << 16) | (uint32_t)(minor)))
#define DPK_ABI_MAJOR_OF(version) \
  ((uint32_t)(version) >> 16 ? (uint32_t)(version) >> 16 : (uint32_t)(version))
#define DPK_ABI_MINOR_OF(version) ((uint32_t)(version) >> 16 ? (uint32_t)(version) & 0xFFFFu : 0u)

/* The version this header describes: what code compiled against it puts in
 * its tables, and what a runtime built from it puts in the tables it hands
 * out. */
#define DPK_ABI_VERSION DPK_ABI_MAKE_VERSION(DPK_ABI_VERSION_MAJOR, DPK_ABI_VERSION_MINOR)

/* What the packager's generated model code declares (__dpk_abi_version): the
 * oldest version whose dpk_backend_api and dpk_parallel_api are the ones that
 * code reads. 1.2 grew only dpk_kind (get_tensor), which model code does not
 * use, so a file built today still loads on a 1.1 runtime already deployed.
 * Raise it when the generated code starts to read something newer. */
#define DPK_ABI_CODE_VERSION DPK_ABI_MAKE_VERSION(1, 1)

/* ---- DLPack tensors ------------------------------------------------------
 * Layout-compatible with DLPack's DLTensor (dlpack.h v0.8 and later), so
 * numpy/torch buffers can be described without conversion. If the real
 * dlpack.h was included first, its definitions are used instead. */
#ifndef DLPACK_VERSION
typedef enum { kDLCPU = 1 } DLDeviceType;
typedef struct {
  int32_t device_type; /* DLDeviceType */
  int32_t device_id;
} DLDevice;
typedef enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6 } DLDataTypeCode;
typedef struct {
  uint8_t code;   /* DLDataTypeCode */
  uint8_t bits;   /* 8, 16, 32, 64 */
  uint16_t lanes; /* always 1 here */
} DLDataType;
typedef struct {
  void *data;            /* start of the buffer */
  DLDevice device;       /* always {kDLCPU, 0} here */
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;        /* ndim entries */
  int64_t *strides;      /* NULL: compact row-major (the only layout kernels accept) */
  uint64_t byte_offset;  /* added to data */
} DLTensor;
#endif

/* ---- Packed calling convention -------------------------------------------
 * Every function a module exposes has this signature, compiled or
 * interpreted. Arguments are tagged values; tensors are passed by pointer.
 * Returns 0 on success; non-zero after calling __dpk_api->set_error. */
typedef union {
  int64_t v_int64;
  double v_float64;
  void *v_handle;
  const char *v_str;
  DLTensor *v_tensor;
} dpk_value;

enum {
  DPK_TYPE_INT = 0,    /* v_int64 */
  DPK_TYPE_FLOAT = 2,  /* v_float64 */
  DPK_TYPE_HANDLE = 3, /* v_handle */
  DPK_TYPE_NULL = 4,   /* nothing */
  DPK_TYPE_TENSOR = 7, /* v_tensor */
  DPK_TYPE_STR = 11    /* v_str, NUL-terminated, borrowed */
};

typedef int (*dpk_packed_fn)(const dpk_value *args, const int *type_codes, int nargs,
                             dpk_value *ret, int *ret_type_code, void *resource);

/* ---- Services the runtime hands to code inside a model file -------------
 * Static, never freed, valid for the life of the process. */
typedef struct dpk_backend_api {
  uint32_t abi_version; /* DPK_ABI_VERSION of the runtime (packed major.minor) */
  /* Record the calling thread's error message (printf format). */
  void (*set_error)(const char *fmt, ...);
} dpk_backend_api;

/* A model file's code declares (the packager emits this definition):
 *     DPK_EXPORT const dpk_backend_api *__dpk_api = 0;
 * and the runtime stores its table there right after dlopen. */
#define DPK_EXPORT __attribute__((visibility("default")))

/* The ABI version a model file's code needs (since 1.1; the packager emits
 * this definition next to __dpk_api; other code may say DPK_ABI_VERSION):
 *     DPK_EXPORT const uint32_t __dpk_abi_version = DPK_ABI_CODE_VERSION;
 * Right after dlopen, before it fills __dpk_api or __dpk_parallel, the
 * runtime reads it and refuses the file (UNIMPLEMENTED, naming both
 * versions) unless it is of the runtime's major with an older or equal
 * minor. A file that does not export it was built for 1.0. */

/* ---- Parallel loops for code inside a model file --------------------------
 * A model file that wants to split a loop over threads declares
 *     DPK_EXPORT const dpk_parallel_api *__dpk_parallel = 0;
 * and the runtime stores its table there after dlopen (a runtime that
 * predates it leaves the pointer NULL: the code then runs the loop itself,
 * serially, which must always be correct).
 *
 * parallel_for(n, fn, ctx, scratch_bytes, own_scratch) calls fn over the
 * index range [0, n), split into contiguous, non-empty [begin, end) ranges
 * (at most 4 T, T being the thread count of the model being run:
 * dpk_load_options_t.num_threads, DPK_NUM_THREADS, or the default), which the
 * calling thread and up to T - 1 workers claim one at a time. It returns when
 * every range is done. Ranges the calling thread runs get `own_scratch`
 * (which the caller provides, at least scratch_bytes); those a worker runs
 * get that worker's private, 64-byte-aligned scratch buffer of at least
 * scratch_bytes (one thread runs its ranges one after another: scratch holds
 * nothing from one range to the next). If the model runs on 1 thread, n < 2,
 * or the process's worker threads are busy with another run, fn is called once
 * with [0, n) and own_scratch on the calling thread. Ranges must not depend
 * on each other, nor a result on how the loop was split; fn must not call
 * parallel_for. Returns 0, or
 * DPK_STATUS_RESOURCE_EXHAUSTED (6) with the error set if scratch could not
 * be allocated (nothing was run). */
typedef void (*dpk_task_fn)(void *ctx, int64_t begin, int64_t end, void *scratch);

typedef struct dpk_parallel_api {
  uint32_t abi_version; /* DPK_ABI_VERSION of the runtime (packed major.minor) */
  int (*parallel_for)(int64_t n, dpk_task_fn fn, void *ctx, size_t scratch_bytes, void *own_scratch);
} dpk_parallel_api;

/* ---- Module kinds (the plugin ABI) ---------------------------------------
 * A kind turns a module's payload into callable functions. The runtime
 * registers the built-in kinds (dso, params, graph, json); applications may
 * register more; a model file may carry kinds in its own code (see
 * __dpk_kinds below). Kind tables are static const and never copied. */

typedef struct dpk_kind_ctx dpk_kind_ctx; /* opaque: one module being loaded */

/* What the runtime offers a kind while it loads a module and afterwards.
 * All calls are thread-safe; ctx is valid until the kind's free is called. */
typedef struct dpk_kind_services {
  uint32_t abi_version; /* DPK_ABI_VERSION of the runtime (packed major.minor) */
  void (*set_error)(const char *fmt, ...);
  /* Find a function in this module's imports, depth-first (TVM semantics).
   * Returns 0, or DPK_STATUS_NOT_FOUND (2) with the error message set. */
  int (*import_function)(const dpk_kind_ctx *ctx, const char *name, dpk_packed_fn *out_fn,
                         void **out_resource);
  /* Find a named tensor in the imports, depth-first: each imported module's
   * kind is asked through its get_tensor (a `params` module's weights, or
   * any kind's that provides the slot). The tensor is borrowed and
   * read-only; valid while the model is loaded. Returns 0 (*out_tensor not
   * NULL), DPK_STATUS_NOT_FOUND (2) with the error message set, or the error
   * a kind's get_tensor returned (its message set; INTERNAL if it returned 0
   * without a tensor). */
  int (*import_tensor)(const dpk_kind_ctx *ctx, const char *name, const DLTensor **out_tensor);
} dpk_kind_services;

typedef struct dpk_kind_load_args {
  const char *module_name;            /* the module's name in the manifest */
  const uint8_t *payload;             /* decoded payload bytes, or NULL if none */
  size_t payload_size;
  const char *const *functions;       /* names the manifest declares, NULL-terminated */
  const dpk_kind_ctx *ctx;            /* pass back to services */
  const dpk_kind_services *services;
} dpk_kind_load_args;

typedef struct dpk_kind {
  const char *name;      /* kind name as written in manifests */
  uint32_t abi_version;  /* DPK_ABI_VERSION the kind was compiled against: of the
                          * runtime's major, minor <= the runtime's (see Versions) */
  /* Build the module. The payload stays valid until free; the kind may keep
   * pointers into it. Return 0 and set *out_state, or non-zero after
   * services->set_error. */
  int (*load)(const dpk_kind_load_args *args, void **out_state);
  /* Look up one function. Return 0, or 2 (NOT_FOUND) without setting an
   * error (the runtime then searches the imports). Must be thread-safe. */
  int (*get_function)(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource);
  /* Release what load built. Called once, never with functions running. */
  void (*free)(void *state);
  /* Since ABI 1.2; optional (NULL: the module holds no tensors). Look up one
   * named tensor the module holds, for the modules that import it
   * (dpk_kind_services.import_tensor). Return 0 and set *out_tensor (borrowed
   * by the runtime and the importers, read-only, valid until free), 2
   * (NOT_FOUND) without setting an error (the runtime then searches on), or
   * another status after services->set_error (the importer's load fails with
   * it). Must be thread-safe. A table whose abi_version has a minor below 2
   * was compiled without this field (its struct ends before it), so the
   * runtime never reads it from such a table. */
  int (*get_tensor)(void *state, const char *name, const DLTensor **out_tensor);
} dpk_kind;

/* A model file may carry kind implementations: it exports
 *     DPK_EXPORT const dpk_kind_table __dpk_kinds = {DPK_ABI_VERSION, n, kinds};
 * and its manifest names them (`kinds: {carried: [name, ...]}`), so the
 * runtime knows before dlopen that the file provides them. After dlopen the
 * runtime checks the table: abi_version of its major with an older or equal
 * minor (else UNIMPLEMENTED naming both as "M.m"), count <=
 * DPK_KIND_TABLE_MAX, `kinds` and every entry non-NULL with a non-empty name
 * and load/get_function/free set (get_tensor may be NULL), each entry's
 * abi_version accepted by the same rule, no name twice, and every kind the
 * manifest declares present (else NOT_FOUND naming it). Kinds in the table
 * that the manifest does not declare are never used. The kinds serve that
 * model only (they are not registered in the process) and, for its modules,
 * take precedence over registered kinds of the same name. */
#define DPK_KIND_TABLE_MAX 64

typedef struct dpk_kind_table {
  uint32_t abi_version; /* DPK_ABI_VERSION the table was compiled against (see Versions) */
  uint32_t count;       /* entries in `kinds`, at most DPK_KIND_TABLE_MAX */
  const dpk_kind *const *kinds;
} dpk_kind_table;

#ifdef __cplusplus
}
#endif
#endif /* DPK_ABI_H */
