/*
 * dpk.h: the public C API of libdpk, the dsopack runtime.
 *
 * A dsopack model file is an ordinary ELF shared object with one extra
 * read-only section, `.dpk` (symbol `__dpk_blob`):
 *
 *     blob     = header | manifest | zero padding | payload area
 *     header   = 64 bytes, little-endian:
 *         0  magic "DSOPACK\0"          8  u16 format major, u16 minor
 *        12  u32 flags (0)             16  u64 manifest offset, u64 manifest size
 *        32  u64 payload area offset (multiple of 4096), u64 payload area size
 *        48  u64 XXH3-64 of the manifest bytes
 *        56  u64 XXH3-64 of header bytes 0..55
 *     manifest = YAML, UTF-8 (docs/format.md lists every field)
 *     payload  = bytes at an offset inside the payload area, 64-aligned
 *                (weights 4096), `raw` (used in place) or `zstd`.
 * Every byte of the payload area outside a payload is zero, so `verify`
 * detects a change to any byte of the section.
 *
 * A signed file (`dsopack sign`) has one 128-byte trailer after its ELF
 * contents (which the ELF loader and this reader ignore otherwise):
 *         0  magic "DSOPKSIG"           8  u16 version (1), u16 algorithm (1 = Ed25519ph)
 *        12  u32 trailer size (128)    16  u64 signed length L (= the trailer's file offset)
 *        24  8-byte key id (BLAKE2b-256 of the public key, first 8 bytes)
 *        32  32 bytes reserved, zero   64  64-byte Ed25519ph signature over
 *                                          file bytes 0..L-1, then trailer bytes 0..63
 * Only the *_signed calls read it; they check it before any code of the file
 * runs (see "Signatures" below and docs/format.md).
 *
 * Conventions (once for the whole API):
 * - Fallible calls return dpk_status_t; DPK_OK is 0. On failure a message
 *   naming the file, module, field and numbers is kept for the calling
 *   thread: dpk_last_error().
 * - Out-params are last, named out_*, cleared on entry, written on success
 *   (the one exception, dpk_registered_kinds, says so).
 * - Ownership. *_open / *_load return owned objects, each freed by the
 *   matching *_free, which accepts NULL. Everything else the API returns is
 *   borrowed: accessors return pointers into their owner, valid until the
 *   owner is freed (a model's strings until dpk_model_free, a package's
 *   until dpk_package_free); constant strings (dpk_status_name, dpk_version,
 *   kind names) live for the process. The caller never frees a borrowed
 *   pointer. Tables the caller hands in (a dpk_kind) are borrowed by the
 *   runtime, never copied, and must outlive every use the declaration names.
 * - NULL. No call dereferences a NULL handle or a NULL pointer argument
 *   that it needs. A fallible call given one returns INVALID_ARGUMENT naming
 *   the call and the argument ("dpk_model_run: model is NULL"), after
 *   clearing those of its out-params that are not NULL; an infallible
 *   accessor (a count, a borrowed pointer) given a NULL handle returns 0 or
 *   NULL and clears its out-params; *_free(NULL) does nothing. Each
 *   declaration below says what it does with NULL. Pointers that are
 *   optional say so (`options` NULL means the defaults).
 * - A loaded model is immutable; every function taking a const model is
 *   safe to call from many threads at once. dpk_model_run is too: each
 *   concurrent run uses its own activation arena from a pool.
 * - Growth. Option structs start with `size_t struct_size`, which their
 *   *_init function sets to the size the caller was compiled with; a
 *   runtime reads only the fields that fit in it, so callers built against
 *   an older (shorter) header keep working and new fields are added only at
 *   the end. The ABI of code inside model files is versioned major.minor
 *   (dpk_abi.h, "Versions").
 */
#ifndef DPK_H
#define DPK_H

#include <stddef.h>

#include "dpk_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DPK_FORMAT_MAJOR 1
#define DPK_FORMAT_MINOR 0

typedef enum {
  DPK_OK = 0,
  DPK_STATUS_INVALID_ARGUMENT = 1,   /* bad input from the caller (wrong input name/shape/dtype) */
  DPK_STATUS_NOT_FOUND = 2,          /* missing file, section, kind, symbol, function, library */
  DPK_STATUS_OUT_OF_RANGE = 3,       /* an offset or size past the end of what holds it */
  DPK_STATUS_DATA_LOSS = 4,          /* corrupt bytes: bad magic, checksum mismatch, bad YAML */
  DPK_STATUS_UNIMPLEMENTED = 5,      /* newer format major, other ABI version, other machine */
  DPK_STATUS_RESOURCE_EXHAUSTED = 6, /* out of memory */
  DPK_STATUS_INTERNAL = 7,           /* a kernel or kind failed at run time */
  DPK_STATUS_FAILED_PRECONDITION = 8,/* valid bytes, inconsistent content (wrong field type, cycle) */
  DPK_STATUS_ALREADY_EXISTS = 9,     /* kind registered twice */
  DPK_STATUS_UNAUTHENTICATED = 10    /* a key was given and the file is unsigned, signed by another
                                        key, changed after signing, or its trailer is malformed */
} dpk_status_t;

/* The calling thread's last error message; "" if none. Borrowed, valid
 * until the thread's next failing dpk call. Never NULL. Thread-safe (one
 * message per thread). */
const char *dpk_last_error(void);

/* A short constant name for a status ("NOT_FOUND"; "UNKNOWN" for a value
 * outside dpk_status_t). Static, never NULL. */
const char *dpk_status_name(dpk_status_t status);

/* The version of dsopack this header belongs to: the one place it is
 * written (setup.py gives it to the Python distribution, which the packager
 * stamps into every file's manifest as producer.dsopack). */
#define DPK_VERSION "0.1.0"

/* The runtime's version string, DPK_VERSION as the runtime was compiled
 * (compare it with DPK_VERSION to detect a header/library mismatch). Static,
 * never NULL. (The ABI version of model code is DPK_ABI_VERSION, dpk_abi.h.) */
const char *dpk_version(void);

/* ---- Packages: the file, mapped and checked, no code run -------------- */

typedef struct dpk_package dpk_package_t;

/* Map `path`, find the `.dpk` section from the ELF section headers, and
 * validate the header (magic, major version, header and manifest
 * checksums), the manifest (YAML, field types) and every payload offset and
 * size against the payload area. Runs none of the file's code.
 * Works for a file of any machine (a cross-built package too).
 * Returns NOT_FOUND (missing file or section), DATA_LOSS (not ELF, bad
 * magic, bad YAML, checksum, a manifest target.machine other than the ELF
 * header's machine), UNIMPLEMENTED (newer major), OUT_OF_RANGE
 * (truncated section, payload past the end), FAILED_PRECONDITION (field of
 * the wrong type or missing), INVALID_ARGUMENT (path or out_package NULL).
 * The package is owned: free it with dpk_package_free. */
dpk_status_t dpk_package_open(const char *path, dpk_package_t **out_package);
/* Unmap and free a package; NULL does nothing. Not while a model loaded
 * from it is alive (a model frees its own package). */
void dpk_package_free(dpk_package_t *package);

/* The embedded manifest (YAML text, not NUL-terminated; *out_size bytes).
 * Borrowed from the mapping, valid until the package is freed. A NULL
 * package gives NULL and *out_size 0; out_size may be NULL. */
const char *dpk_package_manifest(const dpk_package_t *package, size_t *out_size);

/* Section geometry, for tools: format version, section size. Each out-param
 * may be NULL (not written); a NULL package writes 0 to each. */
void dpk_package_format(const dpk_package_t *package, uint16_t *out_major, uint16_t *out_minor,
                        uint64_t *out_section_size);

/* Check every checksum and that the payload area's gaps are zero.
 * DATA_LOSS names the first failing module (and tensor) on failure. O(file).
 * INVALID_ARGUMENT if package is NULL. */
dpk_status_t dpk_package_verify(const dpk_package_t *package);

/* ---- Models: a package with its code loaded and modules rebuilt -------- */

typedef struct dpk_model dpk_model_t;

/* Options of dpk_model_load. Fill with dpk_load_options_init, then set
 * fields:
 *     dpk_load_options_t options;
 *     dpk_load_options_init(&options);
 *     options.num_threads = 4;
 * Fields are only ever added at the end; struct_size tells the runtime how
 * many of them the caller's header had (see "Growth" at the top). */
typedef struct dpk_load_options {
  size_t struct_size;   /* sizeof(dpk_load_options_t) as the caller was compiled: set by dpk_load_options_init */
  int verify_checksums; /* non-zero: dpk_package_verify before dlopen (default 0) */
  int populate;         /* non-zero: pre-fault the weights (one bulk read) (default 0) */
  int num_threads;      /* threads a run may use; 0: the default (below) */
} dpk_load_options_t;

/* The smallest struct_size a runtime accepts: the first version of
 * dpk_load_options_t ended after num_threads. */
#define DPK_LOAD_OPTIONS_MIN_SIZE (offsetof(dpk_load_options_t, num_threads) + sizeof(int))
/* The largest struct_size a runtime accepts (anything bigger is taken for an
 * uninitialised struct). */
#define DPK_LOAD_OPTIONS_MAX_SIZE 4096

/* Set every field of *options to its default and struct_size to
 * sizeof(dpk_load_options_t) of this header. NULL does nothing. Cannot fail;
 * thread-safe. */
void dpk_load_options_init(dpk_load_options_t *options);

/* Threads. A run splits the loops of generated code over a process-wide
 * pool of worker threads (dpk_abi.h, __dpk_parallel), started by the first
 * model that wants more than one thread, grown to the largest count a loaded
 * model wants (a loop uses at most 64 threads), joined by the last
 * dpk_model_free; idle workers sleep. A model's thread count is, in order:
 * num_threads if > 0 (< 0 fails with INVALID_ARGUMENT); else the environment
 * variable DPK_NUM_THREADS, an integer from 1 to 1024 (any other value fails
 * the load with INVALID_ARGUMENT naming the variable and its value); else
 * the number of CPUs in the process's affinity mask (sched_getaffinity).
 * Concurrent runs share the pool: a loop that finds it busy runs on its own
 * thread. OpenBLAS: if a `requires` library exports
 * openblas_set_num_threads, the load sets it to 1 (dsopack splits BLAS
 * calls over its own threads; OpenBLAS's would oversubscribe the cores),
 * unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set in the environment.
 * The setting is process-wide, as OpenBLAS's own is. */

/* Open and validate `path` (as dpk_package_open), check the file's machine
 * against the host's, check that every module's kind is registered in the
 * process or declared carried by the file (manifest `kinds.carried`) --
 * all BEFORE dlopen, so a file with an unknown kind runs none of its code --
 * then dlopen each library the manifest `requires` (kept open until
 * dpk_model_free), then dlopen the file (RTLD_LOCAL), check its
 * __dpk_kinds table (see dpk_abi.h), resolve every symbol the manifest
 * lists, and rebuild the modules in import order (each module payload's
 * checksum is checked before it is decoded: DATA_LOSS). `options` may be
 * NULL (the defaults of dpk_load_options_init: no checksum pass over the
 * weights, no populate, the default thread count); otherwise the runtime
 * reads the fields that fit in options->struct_size, uses the defaults for
 * the others, and refuses INVALID_ARGUMENT a struct_size below
 * DPK_LOAD_OPTIONS_MIN_SIZE (e.g. 0: the struct was not initialised with
 * dpk_load_options_init) or above DPK_LOAD_OPTIONS_MAX_SIZE ("dpk_model_load:
 * options->struct_size is 0 but must be from 20 to 4096 (fill the options
 * with dpk_load_options_init)"), and UNIMPLEMENTED a larger struct (a
 * caller built against a newer header) that sets a field this runtime does
 * not know: a non-zero byte past sizeof(dpk_load_options_t) (the message
 * names its offset). After this, runs do no lookups or parsing.
 * Errors: as dpk_package_open, plus NOT_FOUND (unknown kind: the message
 * lists the registered kinds and the carried ones; a declared carried kind
 * the table lacks; missing symbol; a `requires` library that cannot be
 * loaded: "'m.so' needs libopenblas.so.0 (manifest 'requires'), which this
 * machine cannot load: <dlerror>"; another missing shared library: the
 * dlerror text names it), UNIMPLEMENTED (other machine; a carried table
 * or kind of another ABI version),
 * FAILED_PRECONDITION (import cycle; a malformed __dpk_kinds), INVALID_ARGUMENT
 * (path or out_model NULL; a bad struct_size, above; a bad thread count: see
 * "Threads"), RESOURCE_EXHAUSTED (a worker thread could not be started).
 * UNIMPLEMENTED also covers the ABI version of the file's code
 * (__dpk_abi_version, dpk_abi.h: "'m.so': its code (__dpk_abi_version) was
 * built for ABI version 1.3 but this runtime has ABI version 1.2").
 * The model is owned: free it with dpk_model_free. Thread-safe. */
dpk_status_t dpk_model_load(const char *path, const dpk_load_options_t *options,
                            dpk_model_t **out_model);
/* Free a model (its modules, its code, its package); NULL does nothing. Not
 * while a run or a function of the model is running; every pointer borrowed
 * from the model becomes invalid. */
void dpk_model_free(dpk_model_t *model);

/* The model's thread count, resolved at load (see "Threads" above): runs
 * through dpk_model_run use up to that many; functions called through
 * dpk_model_get_function outside a run use 1. 0 for a NULL model. */
int dpk_model_num_threads(const dpk_model_t *model);

/* The ISA variant of the file's generated code this load runs: "baseline",
 * "avx2" or "avx512" for a file that carries several (a default x86-64 build;
 * its manifest's target.variants lists them), picked at load as the best the
 * CPU runs, or as the environment variable DPK_ISA names (a load refuses a
 * DPK_ISA the file lacks or the CPU cannot run: FAILED_PRECONDITION). NULL for
 * a file that carries one (a build with a -march, another machine than
 * x86-64; DPK_ISA is then ignored) and for a NULL model. Borrowed: valid until
 * the model is freed. */
const char *dpk_model_isa(const dpk_model_t *model);

/* The package the model was loaded from (borrowed: valid until the model is
 * freed; do not free it). NULL for a NULL model. */
const dpk_package_t *dpk_model_package(const dpk_model_t *model);

/* Input and output signature of the entry function. In a file with dynamic
 * dims, `shape` is the largest plan's (each dynamic axis at its dim's max;
 * see "Dynamic shapes" for the ranges: dpk_model_input_dims). */
typedef struct dpk_tensor_info {
  const char *name;     /* borrowed from the model */
  DLDataType dtype;
  int32_t ndim;
  const int64_t *shape; /* borrowed from the model, ndim entries */
} dpk_tensor_info_t;

/* The number of inputs / outputs of the entry function; 0 for a NULL model. */
size_t dpk_model_num_inputs(const dpk_model_t *model);
size_t dpk_model_num_outputs(const dpk_model_t *model);
/* Input / output `index` (signature order) into *out_info, whose pointers
 * are borrowed from the model. *out_info is cleared on entry. OUT_OF_RANGE
 * if index >= the count; INVALID_ARGUMENT if model or out_info is NULL. */
dpk_status_t dpk_model_input_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info);
dpk_status_t dpk_model_output_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info);

/* Run the entry function. `inputs` and `outputs` are in signature order;
 * output buffers are the caller's. Each tensor must be compact row-major
 * with the exact shape and dtype (INVALID_ARGUMENT names the input and the
 * expected shape and dtype); in a file with dynamic dims (see "Dynamic
 * shapes" below) each dynamic axis of an input may take any size in its
 * dim's range, and each output must have the shape those sizes give it
 * (dpk_model_output_shape). Thread-safe. INTERNAL (or the kernel's own
 * status) if a kernel fails.
 * NULL: INVALID_ARGUMENT if model is NULL, if inputs (outputs) is NULL while
 * num_inputs (num_outputs) is not 0, or if an entry is NULL ("input 'x' has
 * no data").
 * Outputs after a failure: if the arguments are refused (a NULL, a wrong
 * count, shape, dtype, layout or device: INVALID_ARGUMENT) or memory runs
 * out before the entry function is called (RESOURCE_EXHAUSTED), no byte of
 * any output buffer has been written. If the entry function fails (a
 * kernel's error; no memory for the run's arena), every output buffer is
 * filled with zero bytes before the call returns, whatever the kernels had
 * written, so a partial result is never mistaken for one. Inputs are never
 * written. */
dpk_status_t dpk_model_run(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                           DLTensor *const *outputs, size_t num_outputs);

/* ---- Dynamic shapes -------------------------------------------------------
 * A file may declare dynamic dims (manifest `dims`): named sizes, each with a
 * range [min, max], that axes of its inputs and outputs take (an input
 * `x: float32[1..64, 784]` has dim `batch` at axis 0). Such a file carries
 * several plans (manifest `plans`), each a graph module specialised to one
 * size of every dim, smallest first; the last has every dim at its max and
 * is the entry, so dpk_model_input_info/output_info give the largest plan's
 * shapes. A run reads each dim's value off the inputs and takes the first
 * plan whose sizes are all >= the values: with sizes equal to the values it
 * calls the plan on the caller's tensors (no copy, no allocation); else it
 * pads -- each input copied into a zero-filled buffer of the plan's shape,
 * the real data at the low indices of every axis -- and copies the actual
 * region of each output back (the padded rows' results are dropped). When
 * padding would waste more than a quarter of the plan (batch 33 in the
 * batch-64 plan) and the dim is axis 0 of every tensor that has it, the run
 * goes in chunks instead, each a slice of the caller's buffers: the largest
 * plan size that fits (32), again, until the rest pads to its plan with at
 * most a quarter wasted (1). The chunks depend on the sizes alone, so a
 * given input gives the same bits on every run and thread count. A dim
 * with `exact` (a reason: "softmax 'attn' normalizes over it") is never
 * padded or chunked: its value must be a plan's size. A static file has no
 * dims and one plan, the entry. */

/* The number of dynamic dims; 0 for a static file or a NULL model. */
size_t dpk_model_num_dims(const dpk_model_t *model);
/* Dim `index` (the manifest's order): its name, its range [*out_min,
 * *out_max] (1 <= min <= max) and *out_exact, NULL for a dim that is padded
 * or the reason it is never padded. Strings are borrowed from the model.
 * Every out-param is cleared on entry. OUT_OF_RANGE if index >= the count;
 * INVALID_ARGUMENT if model or an out-param is NULL. */
dpk_status_t dpk_model_dim_info(const dpk_model_t *model, size_t index, const char **out_name,
                                int64_t *out_min, int64_t *out_max, const char **out_exact);
/* Input / output `index`'s dims: *out_dims is an array of its ndim entries
 * (dpk_model_input_info), each the name of the dim that axis takes (the
 * name dpk_model_dim_info gives) or NULL for a fixed axis; all NULL in a
 * static file. Borrowed from the model. *out_dims is cleared on entry.
 * OUT_OF_RANGE if index >= the count; INVALID_ARGUMENT if model or out_dims
 * is NULL. */
dpk_status_t dpk_model_input_dims(const dpk_model_t *model, size_t index, const char *const **out_dims);
dpk_status_t dpk_model_output_dims(const dpk_model_t *model, size_t index, const char *const **out_dims);

/* The number of plans: 1 for a static file (the entry), 0 for a NULL model. */
size_t dpk_model_num_plans(const dpk_model_t *model);
/* Plan `index` (smallest first): the name of its graph module and its
 * sizes, one per dim in dim order (dpk_model_num_dims entries; a static
 * file's one plan has none, *out_sizes still not NULL). Borrowed from the
 * model. Both out-params are cleared on entry. OUT_OF_RANGE if index >= the
 * count; INVALID_ARGUMENT if model, out_graph or out_sizes is NULL. */
dpk_status_t dpk_model_plan_info(const dpk_model_t *model, size_t index, const char **out_graph,
                                 const int64_t **out_sizes);
/* The plan dpk_model_run would use for `inputs` (signature order; for a
 * run in chunks, the first chunk's) into *out_plan (cleared to 0 on entry), after the checks dpk_model_run makes
 * of the inputs (the outputs are not looked at). Errors, all
 * INVALID_ARGUMENT: those checks, naming the input -- a NULL tensor, a
 * wrong count, ndim, dtype, layout or device, a fixed axis other than its
 * shape ("input 'x' has shape [3, 5] but the model expects float32[1..64,
 * 784]"), a dynamic axis outside its range ("input 'x' dim 0 (batch) is 100,
 * outside the range 1..64 of 'm.so'"), two axes of one dim that disagree
 * ("input 'mask' dim 0 (batch) is 3 but input 'x' gives batch = 2") -- and
 * a value of an exact dim that no plan has ("'m.so' has no plan for seq =
 * 17 (plans: seq 8, 16, 32) and does not pad seq: <its reason>"); a NULL
 * model, out_plan, or inputs while num_inputs is not 0. A static file gives
 * 0 for inputs of its shapes. Thread-safe; allocates nothing. */
dpk_status_t dpk_model_select_plan(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                                   size_t *out_plan);
/* The shape output `index` has for `inputs` (each dynamic axis at the value
 * its dim takes in the inputs, each fixed axis at dpk_model_output_info's
 * shape), into the caller's array out_shape of that output's ndim entries
 * (cleared on entry once model and index are known good). Errors: those of
 * dpk_model_select_plan; OUT_OF_RANGE if index >= the number of outputs;
 * INVALID_ARGUMENT if out_shape is NULL. Thread-safe. */
dpk_status_t dpk_model_output_shape(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                                    size_t index, int64_t *out_shape);

/* Modules, in manifest order: the count (0 for a NULL model), and the name
 * and kind of module `index` (borrowed from the model). Both out-params are
 * cleared on entry. OUT_OF_RANGE if index >= the count; INVALID_ARGUMENT if
 * model, out_name or out_kind is NULL. */
size_t dpk_model_num_modules(const dpk_model_t *model);
dpk_status_t dpk_model_module_info(const dpk_model_t *model, size_t index, const char **out_name,
                                   const char **out_kind);

/* Find a function by name from the entry module, searching its imports
 * depth-first. The function is called as fn(args, codes, n, ret, ret_code,
 * *out_resource); both stay valid until the model is freed. NOT_FOUND if
 * absent; INVALID_ARGUMENT if model, name, out_fn or out_resource is NULL.
 * Thread-safe. */
dpk_status_t dpk_model_get_function(const dpk_model_t *model, const char *name, dpk_packed_fn *out_fn,
                                    void **out_resource);

/* ---- Signatures ---------------------------------------------------------
 * A deployment file is untrusted and loading it runs its code, so a caller
 * that holds the publisher's Ed25519 public key loads with a *_signed call:
 * the file is opened once and mapped, the signature trailer is checked on
 * that mapping (every byte of the file: code, .dpk section, trailer fields)
 * before anything past the ELF headers is parsed, and the model's code is
 * dlopened from the same open file (/proc/self/fd/N, so /proc must be
 * mounted), never by path again: swapping the path after the check changes
 * nothing. A signed load reads the whole file once (SHA-512). The libraries
 * of the manifest's `requires` are the system's and are not covered. */

#define DPK_PUBLIC_KEY_BYTES 32
#define DPK_SIGNATURE_VERSION 1

typedef struct dpk_public_key {
  uint8_t bytes[DPK_PUBLIC_KEY_BYTES]; /* a raw Ed25519 public key */
} dpk_public_key_t;

/* Read a public key file written by `dsopack keygen` (KEY.pub): one line
 * "dsopack-ed25519-public <64 hex digits>". NOT_FOUND (cannot open it),
 * INVALID_ARGUMENT (malformed; a secret key file is named as such; path or
 * out_key NULL). *out_key is zeroed on entry. */
dpk_status_t dpk_public_key_read(const char *path, dpk_public_key_t *out_key);

/* dpk_package_open, after checking that `path` is signed by `key`. Errors:
 * as dpk_package_open, plus UNAUTHENTICATED (the message names the file:
 * not signed; signed by key <id>, not by the given key <id>; the signature
 * does not match the file's bytes; a truncated or malformed trailer; bytes
 * after the trailer), UNIMPLEMENTED (a newer trailer version or another
 * algorithm), INVALID_ARGUMENT (path, key or out_package NULL). */
dpk_status_t dpk_package_open_signed(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package);

/* The bytes a signature covers: where the file's ELF contents end (the
 * furthest header, segment or section), so where a trailer starts. For
 * signing tools; the file is not required to be signed. UNAUTHENTICATED if
 * a header points past the end of the file; INVALID_ARGUMENT if package or
 * out_size is NULL. */
dpk_status_t dpk_package_signed_size(const dpk_package_t *package, uint64_t *out_size);

/* dpk_model_load for a file that must be signed by `key`: the signature is
 * checked first, as dpk_package_open_signed, and the code is dlopened
 * through the descriptor that was checked. With an unsigned, re-signed,
 * tampered or truncated file, none of its code runs. Errors: as
 * dpk_model_load and dpk_package_open_signed (INVALID_ARGUMENT if key is
 * NULL: use dpk_model_load for unsigned files); NOT_FOUND if /proc/self/fd
 * cannot be opened. */
dpk_status_t dpk_model_load_signed(const char *path, const dpk_public_key_t *key, const dpk_load_options_t *options,
                                   dpk_model_t **out_model);

/* ---- Kinds ------------------------------------------------------------- */

/* Register a kind (dpk_abi.h: {name, abi_version, load, get_function,
 * free, and since ABI 1.2 the optional get_tensor}) for every later dpk_model_load in this process; call it before
 * loading the models that use the kind. Models already loaded keep the kind
 * they were bound to. The table is borrowed, never copied: it must stay
 * valid for the life of the process (make it static const); there is no
 * unregister. A kind a model file carries (manifest `kinds.carried`) serves
 * that file only and is never registered.
 * Returns DPK_OK; ALREADY_EXISTS if the name is taken (a built-in or an
 * earlier registration) and `replace` is zero -- with `replace` non-zero
 * the new table takes the name for later loads; UNIMPLEMENTED if
 * kind->abi_version is not of this runtime's major with an older or equal
 * minor (dpk_abi.h, "Versions"; the message names both versions as "M.m":
 * "kind 'k' was built for ABI version 1.3 but this runtime has ABI version
 * 1.2"); INVALID_ARGUMENT if kind, its name, load, get_function or free is
 * NULL; RESOURCE_EXHAUSTED. Thread-safe. */
dpk_status_t dpk_register_kind(const dpk_kind *kind, int replace);

/* The registered kind names, sorted (the built-ins dso, graph, json, params
 * are always there), copied into the caller's array `names` of `capacity`
 * entries. Each name is the registered table's own string, which lives for
 * the process (tables are never freed, even when replaced), so the copy
 * stays valid whatever other threads register later.
 * *out_count is the number of registered kinds, written in every case but
 * INVALID_ARGUMENT (the one exception to "out-params are written on
 * success"):
 * - names NULL and capacity 0: a query; DPK_OK with the count.
 * - capacity >= the count: names[0 .. count) filled; DPK_OK.
 * - capacity < the count: names untouched; OUT_OF_RANGE ("dpk_registered_kinds:
 *   5 kinds are registered but the buffer holds 4"), *out_count the
 *   capacity needed. A registration by another thread between a query and
 *   the call that fills the buffer can cause this: query again and retry.
 * INVALID_ARGUMENT if out_count is NULL, or names is NULL while capacity is
 * not 0. Thread-safe: the count and the names are one snapshot, taken under
 * the registry's lock. */
dpk_status_t dpk_registered_kinds(const char **names, size_t capacity, size_t *out_count);

#ifdef __cplusplus
}
#endif
#endif /* DPK_H */
