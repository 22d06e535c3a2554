"""cffi build script (out-of-line API mode): compiles libdpk's C sources into
the extension `loader._dpk`. Run by setup.py at install; the runtime code stays
in runtime_c/ and knows nothing of Python. The cdef is read from the public
headers (dpk_abi.h, dpk.h) at build time, so no prototype is written twice."""

from __future__ import annotations

import glob
import os
import re

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")

INCLUDE = os.path.join(RUNTIME, "include")
HEADERS = ("dpk_abi.h", "dpk.h")  # dpk.h includes dpk_abi.h; this order declares before use

# `#define NAME <integer>`: the one kind of macro cffi reads (array sizes, constants)
_INT_DEFINE = re.compile(r"#\s*define\s+(\w+)\s+(-?(?:0[xX][0-9a-fA-F]+|\d+))[uUlL]*\s*$")


def declarations(text: str, source: str) -> str:
    """A public header as cffi's cdef reads it: comments, #include lines, include
    guards and every macro but integer constants removed; `#ifdef __cplusplus`
    blocks dropped, other #ifdef/#ifndef blocks kept. Any other directive (#if,
    #else...) is refused, naming the line, rather than guessed at."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"\\\n", " ", text)  # a macro continued over lines is one line
    lines, skipping = [], []
    for number, line in enumerate(text.split("\n"), 1):
        directive = re.match(r"\s*#\s*(\w+)\s*(.*)", line)
        if not directive:
            if not any(skipping) and line.strip():
                lines.append(line.rstrip())
        elif directive.group(1) in ("ifdef", "ifndef"):
            skipping.append(directive.group(1) == "ifdef" and directive.group(2).strip() == "__cplusplus")
        elif directive.group(1) == "endif" and skipping:
            skipping.pop()
        elif directive.group(1) == "define":
            constant = _INT_DEFINE.match(line.strip())
            if constant and not any(skipping):
                lines.append(f"#define {constant.group(1)} {constant.group(2)}")
        elif directive.group(1) != "include":
            raise ValueError(f"{source}:{number}: #{directive.group(1)} is not understood by "
                             "loader/build_ffi.py's header reader")
    return "\n".join(lines)


def header_cdef() -> str:
    """Every declaration of the public headers, for cffi: read from the headers, never copied."""
    return "\n".join(declarations(open(os.path.join(INCLUDE, name)).read(), name) for name in HEADERS)


# The extension's own functions (defined in SOURCE below).
OWN_CDEF = """
/* A packed call made from Python: a plain C call so cffi releases the GIL. */
int dpk_py_run(const dpk_model_t *model, void **inputs, size_t num_inputs, void **outputs, size_t num_outputs);
int dpk_py_call(dpk_packed_fn fn, void *resource, const dpk_value *args, const int *codes, int nargs,
                dpk_value *ret, int *ret_code);
"""

CDEF = header_cdef() + "\n" + OWN_CDEF

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
