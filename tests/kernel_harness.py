"""Run generated kernels without the rest of the pipeline (tests only).

    lib = compile_sources([csource], tmp_dir)      # CSource(s) -> loaded KernelLib
    lib.call("host_dense_0", x, w, b, out)          # numpy arrays -> packed call
    y = run_node("conv2d", [x, w, b], tmp_dir, pads=[1, 1, 1, 1])   # one node end to end

The C file is laid out as the build lays it out (docs/format.md, "Generated
code"): `dpk_abi.h` and the C headers, the `__dpk_api` definition, each distinct
prelude once, then every source. It is compiled with -fvisibility=hidden and
strict warnings (-Wall -Wextra -Werror), so sloppy generated C fails a test.
`__dpk_api` is pointed at a small C table (built once, kept for the process)
whose set_error formats into a buffer that `KernelLib.call` turns into a
KernelError carrying the kernel's message.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "runtime_c", "include")
CC = os.environ.get("CC", "gcc")
CFLAGS = ["-std=c99", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
          "-Wno-unused-parameter"]

FILE_HEADER = """\
#include "dpk_abi.h"
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <float.h>

DPK_EXPORT const dpk_backend_api *__dpk_api = 0;
DPK_EXPORT const dpk_parallel_api *__dpk_parallel = 0;
"""

_API_SOURCE = r"""
#include <stdarg.h>
#include <stdio.h>
#include "dpk_abi.h"
static char last_error[1024];
static void harness_set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}
DPK_EXPORT const dpk_backend_api harness_api = {DPK_ABI_VERSION, harness_set_error};
DPK_EXPORT const char *harness_last_error(void) { return last_error; }
DPK_EXPORT void harness_clear_error(void) { last_error[0] = 0; }

/* A stand-in for the runtime's pool: [0, n) split into up to harness_parts
 * (default 3) ranges run one after another, last range first (a task that
 * depends on order shows), each range but the caller's with its own scratch
 * filled with NaN bytes. */
#include <stdlib.h>
#include <string.h>
static int64_t harness_ranges;
static int64_t harness_parts = 3;
DPK_EXPORT void harness_set_parts(int64_t parts) { harness_parts = parts; }
static int harness_parallel_for(int64_t n, dpk_task_fn fn, void *ctx, size_t scratch_bytes, void *own_scratch) {
  const int64_t parts = n < harness_parts ? n : harness_parts;
  for (int64_t p = parts - 1; p >= 0; --p) {
    const int64_t begin = n * p / parts, end = n * (p + 1) / parts;
    void *scratch = own_scratch;
    if (p > 0) {
      scratch = malloc(scratch_bytes ? scratch_bytes : 1);
      if (!scratch) return 6;
      memset(scratch, 0xff, scratch_bytes);
    }
    fn(ctx, begin, end, scratch);
    if (p > 0) free(scratch);
    ++harness_ranges;
  }
  return 0;
}
DPK_EXPORT const dpk_parallel_api harness_parallel = {DPK_ABI_VERSION, harness_parallel_for};
DPK_EXPORT int64_t harness_parallel_ranges(void) { return harness_ranges; }
"""


class KernelError(RuntimeError):
    """A kernel returned non-zero; the message is what it passed to set_error."""


# ---- DLPack structs ---------------------------------------------------------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DpkValue(ctypes.Union):
    _fields_ = [("v_int64", ctypes.c_int64), ("v_float64", ctypes.c_double), ("v_handle", ctypes.c_void_p),
                ("v_str", ctypes.c_char_p), ("v_tensor", ctypes.POINTER(DLTensor))]


DPK_TYPE_INT, DPK_TYPE_TENSOR = 0, 7
PACKED_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DpkValue), ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                             ctypes.POINTER(DpkValue), ctypes.POINTER(ctypes.c_int), ctypes.c_void_p)
_DL_CODE = {"f": 2, "i": 0, "u": 1, "b": 6}


def dltensor(array: np.ndarray, keep: list) -> DLTensor:
    """A DLTensor describing a C-contiguous array; `keep` holds what C borrows."""
    if not array.flags.c_contiguous:
        raise ValueError("dltensor: the array must be C-contiguous")
    shape = (ctypes.c_int64 * max(1, array.ndim))(*array.shape)
    keep.extend([array, shape])
    dt = DLDataType(_DL_CODE[array.dtype.kind], array.dtype.itemsize * 8, 1)
    return DLTensor(array.ctypes.data, DLDevice(1, 0), array.ndim, dt, shape, None, 0)


# ---- compiling and loading ----------------------------------------------------


def _compile(source: str, out_dir: str, stem: str, libraries=(), cflags=()) -> str:
    digest = hashlib.sha256("\0".join([source, *cflags]).encode()).hexdigest()[:16]
    path = os.path.join(out_dir, f"{stem}_{digest}.so")
    if os.path.exists(path):
        return path
    c_path = path[:-3] + ".c"
    with open(c_path, "w") as f:
        f.write(source)
    tmp = path + ".tmp"
    argv = [CC, *CFLAGS, *cflags, "-I", INCLUDE, c_path, "-o", tmp, *[f"-l{lib}" for lib in libraries], "-lm"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {c_path} failed: {' '.join(argv)}\n{proc.stdout}")
    os.replace(tmp, path)
    return path


_api = None


def _api_lib() -> ctypes.CDLL:
    global _api
    if _api is None:
        out_dir = tempfile.mkdtemp(prefix="dpk_harness_")
        _api = ctypes.CDLL(_compile(_API_SOURCE, out_dir, "harness_api"))
        _api.harness_last_error.restype = ctypes.c_char_p
    return _api


def file_source(csources) -> str:
    """The C file the build would write for these CSources."""
    parts, preludes = [FILE_HEADER], []
    for cs in csources:
        for prelude in [cs.prelude] if isinstance(cs.prelude, str) else cs.prelude:
            if prelude and prelude not in preludes:
                preludes.append(prelude)
    parts.extend(preludes)
    parts.extend(cs.source for cs in csources)
    return "\n".join(parts)


class KernelLib:
    """`parallel=True` points `__dpk_parallel` at the harness's splitting stand-in
    (ranges_run() counts the ranges it ran); False leaves it NULL (serial)."""

    def __init__(self, path: str, functions: list[str], parallel: bool = False):
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.functions = functions
        api = _api_lib()
        slot = ctypes.c_void_p.in_dll(self.lib, "__dpk_api")
        slot.value = ctypes.addressof(ctypes.c_char.in_dll(api, "harness_api"))
        slot = ctypes.c_void_p.in_dll(self.lib, "__dpk_parallel")
        slot.value = ctypes.addressof(ctypes.c_char.in_dll(api, "harness_parallel")) if parallel else None

    @staticmethod
    def set_parts(parts: int) -> None:
        """How many ranges the stand-in pool cuts each loop into (default 3)."""
        _api_lib().harness_set_parts(ctypes.c_int64(parts))

    @staticmethod
    def ranges_run() -> int:
        api = _api_lib()
        api.harness_parallel_ranges.restype = ctypes.c_int64
        return api.harness_parallel_ranges()

    def function(self, name: str):
        return PACKED_FN(("%s" % name, self.lib))

    def call_values(self, name: str, values: list, codes: list[int]) -> None:
        """Call with raw dpk_values and type codes (for testing argument checks)."""
        api = _api_lib()
        api.harness_clear_error()
        n = len(values)
        args = (DpkValue * max(1, n))(*values)
        type_codes = (ctypes.c_int * max(1, n))(*codes)
        ret, ret_code = DpkValue(), ctypes.c_int(0)
        status = self.function(name)(args, type_codes, n, ctypes.byref(ret), ctypes.byref(ret_code), None)
        if status != 0:
            raise KernelError(api.harness_last_error().decode())

    def call(self, name: str, *arrays: np.ndarray) -> None:
        """Call `name` with tensors for `arrays` (inputs, then outputs, written in place)."""
        keep: list = []
        tensors = [dltensor(a, keep) for a in arrays]
        values = []
        for t in tensors:
            v = DpkValue()
            v.v_tensor = ctypes.pointer(t)
            values.append(v)
        self.call_values(name, values, [DPK_TYPE_TENSOR] * len(values))


def compile_sources(csources, out_dir: str, parallel: bool = False, cflags=()) -> KernelLib:
    source = file_source(csources)
    functions = [f for cs in csources for f in cs.functions]
    libraries = sorted({lib for cs in csources for lib in cs.libraries})
    return KernelLib(_compile(source, str(out_dir), "kernels", libraries, cflags), functions, parallel)


# ---- one node end to end --------------------------------------------------------


def lower_node(op: str, inputs: list[np.ndarray], weights: tuple[int, ...] = (), name: str | None = None,
               backend=None, **attrs):
    """(backend, region, graph) for one node reading `inputs` (indices in `weights` become weights)."""
    from packager.backends.base import Region
    from packager import ir_check
    from packager.backends.host import HostBackend
    from packager.ir import Graph, Node, TensorType

    names = [f"w{i}" if i in weights else f"x{i}" for i in range(len(inputs))]
    node = Node(op=op, inputs=names, output="y", attrs=dict(attrs), name=name or f"{op}_0")
    graph = Graph(name="t", inputs={n: TensorType(a.shape, a.dtype.name) for n, a in zip(names, inputs)
                                    if not n.startswith("w")},
                  weights={n: a for n, a in zip(names, inputs) if n.startswith("w")},
                  nodes=[node], outputs=["y"])
    ir_check.infer(graph)
    backend = backend or HostBackend()
    region = Region(name=f"host_{op}_0", nodes=[node], inputs=list(dict.fromkeys(names)), outputs=["y"],
                    weights=[n for n in dict.fromkeys(names) if n.startswith("w")])
    return backend, region, graph


def run_node(op: str, inputs: list[np.ndarray], out_dir, weights: tuple[int, ...] = (), **attrs) -> np.ndarray:
    """Lower one node with the host backend, compile it, run it on `inputs`."""
    backend, region, graph = lower_node(op, inputs, weights, **attrs)
    csrc = backend.lower(region, graph)
    lib = compile_sources([csrc], out_dir)
    t = graph.types["y"]
    out = np.full(t.shape, np.nan, dtype=t.dtype) if t.dtype.startswith("float") else np.zeros(t.shape, t.dtype)
    lib.call(region.name, *[np.asarray(a, order="C") for a in inputs], out)
    return out
