"""cffi build script (out-of-line API mode): compiles libdpk's C sources into
the extension `loader._dpk`. Run by setup.py at install; the runtime code stays
in runtime_c/ and knows nothing of Python."""

from __future__ import annotations

import glob
import os

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")

CDEF = """
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void *data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t *shape; int64_t *strides; uint64_t byte_offset;
} DLTensor;
typedef union {
  int64_t v_int64; double v_float64; void *v_handle; const char *v_str; DLTensor *v_tensor;
} dpk_value;
typedef int (*dpk_packed_fn)(const dpk_value *args, const int *type_codes, int nargs,
                             dpk_value *ret, int *ret_type_code, void *resource);

typedef int dpk_status_t;
const char *dpk_last_error(void);
const char *dpk_status_name(dpk_status_t status);
const char *dpk_version(void);

typedef struct dpk_package dpk_package_t;
dpk_status_t dpk_package_open(const char *path, dpk_package_t **out_package);
void dpk_package_free(dpk_package_t *package);
const char *dpk_package_manifest(const dpk_package_t *package, size_t *out_size);
void dpk_package_format(const dpk_package_t *package, uint16_t *out_major, uint16_t *out_minor,
                        uint64_t *out_section_size);
dpk_status_t dpk_package_verify(const dpk_package_t *package);

typedef struct dpk_model dpk_model_t;
typedef struct dpk_load_options {
  size_t struct_size; int verify_checksums; int populate; int num_threads;
} dpk_load_options_t;
void dpk_load_options_init(dpk_load_options_t *options);
dpk_status_t dpk_model_load(const char *path, const dpk_load_options_t *options, dpk_model_t **out_model);
void dpk_model_free(dpk_model_t *model);
int dpk_model_num_threads(const dpk_model_t *model);
const dpk_package_t *dpk_model_package(const dpk_model_t *model);
typedef struct dpk_tensor_info {
  const char *name; DLDataType dtype; int32_t ndim; const int64_t *shape;
} dpk_tensor_info_t;
size_t dpk_model_num_inputs(const dpk_model_t *model);
size_t dpk_model_num_outputs(const dpk_model_t *model);
dpk_status_t dpk_model_input_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info);
dpk_status_t dpk_model_output_info(const dpk_model_t *model, size_t index, dpk_tensor_info_t *out_info);
dpk_status_t dpk_model_run(const dpk_model_t *model, const DLTensor *const *inputs, size_t num_inputs,
                           DLTensor *const *outputs, size_t num_outputs);
size_t dpk_model_num_modules(const dpk_model_t *model);
dpk_status_t dpk_model_module_info(const dpk_model_t *model, size_t index, const char **out_name,
                                   const char **out_kind);
dpk_status_t dpk_model_get_function(const dpk_model_t *model, const char *name, dpk_packed_fn *out_fn,
                                    void **out_resource);
dpk_status_t dpk_registered_kinds(const char **names, size_t capacity, size_t *out_count);

typedef struct dpk_public_key { uint8_t bytes[32]; } dpk_public_key_t;
dpk_status_t dpk_public_key_read(const char *path, dpk_public_key_t *out_key);
dpk_status_t dpk_package_open_signed(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package);
dpk_status_t dpk_package_signed_size(const dpk_package_t *package, uint64_t *out_size);
dpk_status_t dpk_model_load_signed(const char *path, const dpk_public_key_t *key, const dpk_load_options_t *options,
                                   dpk_model_t **out_model);

/* A packed call made from Python: a plain C call so cffi releases the GIL. */
int dpk_py_run(const dpk_model_t *model, void **inputs, size_t num_inputs, void **outputs, size_t num_outputs);
int dpk_py_call(dpk_packed_fn fn, void *resource, const dpk_value *args, const int *codes, int nargs,
                dpk_value *ret, int *ret_code);
"""

SOURCE = """
#include <stdbool.h>
#include "dpk.h"

/* Run the entry function on bare data pointers, describing each buffer with
 * the model's own signature (Python has checked shape, dtype and layout), so a
 * call from Python builds no structs of its own. */
int dpk_py_run(const dpk_model_t *model, void **inputs, size_t num_inputs, void **outputs, size_t num_outputs) {
  DLTensor tensors[num_inputs + num_outputs + 1];
  const DLTensor *in[num_inputs + 1];
  DLTensor *out[num_outputs + 1];
  dpk_tensor_info_t info;
  for (size_t i = 0; i < num_inputs + num_outputs; i++) {
    bool is_input = i < num_inputs;
    dpk_status_t status = is_input ? dpk_model_input_info(model, i, &info)
                                   : dpk_model_output_info(model, i - num_inputs, &info);
    if (status) return status;
    DLTensor t = {is_input ? inputs[i] : outputs[i - num_inputs], {kDLCPU, 0}, info.ndim, info.dtype,
                  (int64_t *)info.shape, NULL, 0};
    tensors[i] = t;
    if (is_input) in[i] = &tensors[i]; else out[i - num_inputs] = &tensors[i];
  }
  return dpk_model_run(model, in, num_inputs, out, num_outputs);
}

int dpk_py_call(dpk_packed_fn fn, void *resource, const dpk_value *args, const int *codes, int nargs,
                dpk_value *ret, int *ret_code) {
  return fn(args, codes, nargs, ret, ret_code, resource);
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
_sources = sorted(glob.glob(os.path.join(RUNTIME, "src", "*.c")) + glob.glob(os.path.join(RUNTIME, "src", "kernels", "*.c")))
ffibuilder.set_source(
    "loader._dpk",
    SOURCE,
    sources=[os.path.relpath(s, ROOT) for s in _sources],
    include_dirs=[os.path.join("runtime_c", "include"), os.path.join("runtime_c", "src")],
    libraries=["zstd", "yaml", "xxhash", "sodium", "dl", "pthread", "m"],
    extra_compile_args=["-std=c99", "-O2", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-Wno-format-truncation"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
