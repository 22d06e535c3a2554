"""The C codegen layer: the pieces every C-generating backend's output is made of.

A backend that returns a CSource (host, cblas, a plugin) builds it from these
helpers and lists `PRELUDE` first in `CSource.prelude`; the helpers emit calls
to the C in `c/cgen_prelude.h` (argument checks, tensor data, parallel tasks).
Long fixed C lives in `c/*.h` (read with `read_c`); what is generated is plain
text from the small templates below. A C function takes its tensors as packed
arguments: `arg_data(i)` is argument i's data, bound to a restrict pointer
(`pointer`) named `in0, in1...` / `out0` by convention.

    function(name, comment, checks, blocks)  the packed function: argument count and types, checks, blocks
    check(fn, i, name, type), check_workspace(fn, i, nbytes)   one tensor argument's dtype and shape
    block(comment, bindings, body), pointer(name, ctype, expr, const), arg_data(i)
    task(name, comment, types, units, body, parallel, ...)  a loop over units the runtime may split over threads
    each_unit(body)                          a task body written for one unit `u`
    nest(dims, strides, template, **fields)  loops over strided dimensions (collapse, strides, broadcast_strides)
    if_defined(macro, then, otherwise)       #if defined(macro) ... #else ... #endif
    c_float, c_constant, c_string, c_comment, ctype, uint_ctype, wrap_ctype, math_suffix, C_TYPES,
    is_identifier, indent
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from string import Template

import numpy as np

from packager.ir import BuildError, TensorType

C_DIR = Path(__file__).with_name("c")


def read_c(name: str) -> str:
    """The text of a fixed C file shipped in packager/backends/c/ (package data)."""
    return (C_DIR / name).read_text(encoding="utf-8")


PRELUDE = read_c("cgen_prelude.h")

# ---------------------------------------------------------------------------
# C spelling of names, types and constants

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DL_CODE = {"f": 2, "i": 0, "u": 1, "b": 6}  # DLDataTypeCode by numpy kind
# float16 elements are their bits: the host computes them as float (c/host_prelude.h converts)
C_TYPES = {"float16": "uint16_t", "float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t",
           "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t",
           "uint64": "uint64_t", "bool": "uint8_t"}
_UINT_CTYPES = {1: "uint8_t", 2: "uint16_t", 4: "uint32_t", 8: "uint64_t"}
# Integer arithmetic that wraps: C promotes narrower types to (signed) int, so a 1-, 2- or 4-byte
# element computes in uint32_t, an 8-byte one in uint64_t, and the result is cast back.
_WRAP_CTYPES = {1: "uint32_t", 2: "uint32_t", 4: "uint32_t", 8: "uint64_t"}


def is_identifier(name: str) -> bool:
    return _IDENT.match(name) is not None


def ctype(dtype: str) -> str:
    """The C element type of a dtype in C_TYPES."""
    return C_TYPES[dtype]


def uint_ctype(itemsize: int) -> str:
    """An unsigned C type of `itemsize` bytes (1, 2, 4 or 8): elements moved without being read."""
    return _UINT_CTYPES[itemsize]


def wrap_ctype(dtype: str) -> str:
    """The unsigned C type integer arithmetic on `dtype` wraps in (at least 32 bits, the element's width)."""
    return _WRAP_CTYPES[np.dtype(dtype).itemsize]


def math_suffix(dtype: str) -> str:
    """The suffix of <math.h> functions and of constants for `dtype`: "f" for float32 (fabsf, 1.0f), else ""."""
    return "f" if dtype == "float32" else ""


def c_constant(value: float, dtype: str) -> str:
    """`value` as a C constant for elements of `dtype`: a double constant for float64, else a float one."""
    if dtype != "float64" or math.isinf(float(value)):
        return c_float(value)
    return repr(float(value))


def c_float(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    text = repr(value)
    return text + ("f" if ("." in text or "e" in text) else ".0f")


def c_string(text: str) -> str:
    """`text` escaped for the inside of a C string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def c_comment(text: str) -> str:
    """`/* text */`, with any `*/` in `text` broken up."""
    return "/* " + text.replace("*/", "* /") + " */"


def indent(text: str, pad: str) -> str:
    return "\n".join(pad + line if line else line for line in text.splitlines())


def if_defined(macro: str, then: str, otherwise: str = "") -> str:
    """`then` where the compiler defines `macro` (e.g. __AVX512F__), else `otherwise`."""
    parts = [f"#if defined({macro})", then] + (["#else", otherwise] if otherwise else []) + ["#endif"]
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# The packed function: checks, then blocks that bind tensors and run a body

FUNCTION = Template("""\
$comment
DPK_EXPORT int $name(const dpk_value *args, const int *type_codes, int nargs,
    dpk_value *ret, int *ret_type_code, void *resource) {
  (void)ret; (void)ret_type_code; (void)resource;
  if (dpk_host_check_args("$name", type_codes, nargs, $nargs) != 0) return -1;
$checks
$blocks
  return 0;
}
""")
CHECK = Template('if (dpk_host_check_tensor("$fn", args, $i, "$tensor", $code, $bits, $ndim, '
                 '(const int64_t[]){$dims}, "$want") != 0) return -1;')


def function(name: str, comment: str, checks: list[str], blocks: list[str]) -> str:
    """The exported packed function `name`: one argument per check (each a line from `check`), then the
    blocks in order; it returns -1 after set_error on a bad argument, else 0."""
    return FUNCTION.substitute(comment=c_comment(comment), name=name, nargs=len(checks),
                               checks=indent("\n".join(checks), "  "), blocks="\n".join(blocks))


def check(fn: str, index: int, tensor: str, t: TensorType) -> str:
    """Argument `index` of `fn` must be a compact tensor of type `t` (`tensor` names it in the error)."""
    dt = np.dtype(t.dtype)
    dims = ", ".join(str(d) for d in t.shape) or "0"
    return CHECK.substitute(fn=fn, i=index, tensor=c_string(tensor), code=_DL_CODE[dt.kind],
                            bits=dt.itemsize * 8, ndim=len(t.shape), dims=dims, want=c_string(str(t)))


def check_workspace(fn: str, index: int, nbytes: int) -> str:
    """Argument `index` of `fn` must be the uint8 workspace of `nbytes` bytes."""
    return CHECK.substitute(fn=fn, i=index, tensor="workspace", code=1, bits=8, ndim=1, dims=nbytes,
                            want=f"uint8[{nbytes}]")


def arg_data(index: int) -> str:
    """The data pointer (void *) of tensor argument `index`."""
    return f"dpk_host_data(&args[{index}])"


def pointer(name: str, ctype: str, expr: str, const: bool = True) -> str:
    """`name`, a restrict pointer to `ctype` elements at `expr` (read-only if `const`)."""
    t = f"const {ctype}" if const else ctype
    return f"{t} *restrict {name} = ({t} *){expr};"


def block(comment: str, bindings: list[str], body: str) -> str:
    """A scope of the function: `bindings` (from `pointer`: the names the body reads), then the body."""
    lines = [f"  {{ {c_comment(comment)}", *("    " + b for b in bindings), indent(body, "    "), "  }"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Tasks: a loop body over units [begin, end) that dpk_host_parallel may split over threads

# Work (multiply-adds, or elements touched) below which a loop stays on the
# calling thread: waking a worker and joining costs about as much as this
# (2^16 multiply-adds is about 1 us; 2^18 left ResNet's 1x1 shortcut convs
# serial while a worker spun, 3.7% slower at batch 1 on 2 threads).
PARALLEL_MIN_WORK = 1 << 16
TASK_MAX_INPUTS = 4  # the size of dpk_host_task.in in c/cgen_prelude.h

# `in0..` and `out0` are bound from the dpk_host_task. The body takes the
# whole range (so a serial run is one big call, not many small ones);
# EACH_UNIT wraps a body written for one unit `u`.
TASK = Template("""\
$comment
static void $name(void *ctx, int64_t begin, int64_t end, void *scratch) {
  const dpk_host_task *task = (const dpk_host_task *)ctx;
$bind
  (void)scratch;
$body
}
""")
EACH_UNIT = Template("""\
for (int64_t u = begin; u < end; ++u) {
$body
}""")
TASK_CALL = {  # parallel?
    True: Template("dpk_host_parallel($units, $name, &(dpk_host_task){{$ins}, out0}, $scratch_bytes, $scratch);"),
    False: Template("$name(&(dpk_host_task){{$ins}, out0}, 0, $units, $scratch);"),
}


def task(name: str, comment: str, types: list[str], units: int, body: str, parallel: bool,
         scratch_bytes: int = 0, scratch: str = "(void *)0") -> tuple[str, str]:
    """(definition, call) of a task named `name` running `body` over units [begin, end) of `units`.
    `types` are the C element types of in0.., then out0: the task binds each, so the body must read each
    (the compiler warns about one it does not). The call passes the enclosing block's in0.. and out0, and
    splits the units over threads if `parallel` (and there are two or more); `scratch` (of
    `scratch_bytes`) is the calling thread's scratch, the runtime gives other threads their own."""
    if len(types) - 1 > TASK_MAX_INPUTS:  # dpk_host_task.in holds this many
        raise BuildError(f"task {name}: {len(types) - 1} inputs, more than the {TASK_MAX_INPUTS} a task carries")
    bind = [pointer(f"in{i}", t, f"task->in[{i}]") for i, t in enumerate(types[:-1])]
    bind.append(pointer("out0", types[-1], "task->out", const=False))
    definition = TASK.substitute(comment=c_comment(f"{comment}: {units} units"), name=name,
                                 bind=indent("\n".join(bind), "  "), body=indent(body, "  "))
    ins = ", ".join(f"in{i}" for i in range(len(types) - 1)) or "0"
    call = TASK_CALL[parallel and units > 1].substitute(units=units, name=name, ins=ins,
                                                        scratch_bytes=scratch_bytes, scratch=scratch)
    return definition, call


def each_unit(body: str) -> str:
    """A task body running `body` (written for one unit `u`) for every unit of the range."""
    return EACH_UNIT.substitute(body=indent(body, "  "))


# ---------------------------------------------------------------------------
# Loop nests over strided dimensions (broadcasting, transposes, batches)


def strides(shape) -> list[int]:
    """Element strides of a compact row-major `shape`."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def broadcast_strides(shape, out_shape) -> list[int]:
    """Element strides of `shape` read as `out_shape` (0 along broadcast dims)."""
    pad = [1] * (len(out_shape) - len(shape)) + list(shape)
    return [s if d == o and d != 1 else 0 for d, o, s in zip(pad, out_shape, strides(pad))]


def collapse(dims, operand_strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that every operand walks contiguously."""
    kept: list[tuple[int, list[int]]] = []
    for k, d in enumerate(dims):
        if d == 1:
            continue
        st = [s[k] for s in operand_strides]
        if kept and all(ps == s * d for ps, s in zip(kept[-1][1], st)):
            kept[-1] = (kept[-1][0] * d, st)
        else:
            kept.append((d, st))
    return [d for d, _ in kept], [[st[j] for _, st in kept] for j in range(len(operand_strides))]


def _term(base: str, index: str, stride: int) -> str:
    if stride == 0:
        return base
    step = index if stride == 1 else f"{index} * {stride}"
    return step if base == "0" else f"{base} + {step}"


NEST_OFFSETS = ("o", "a", "b", "c", "d")  # how `nest` names the operands' offsets in its body


def nest(dims, operand_strides: list[list[int]], body: Template, **fields) -> str:
    """Loops over `dims` around `body`; operand j's offset (`$o`, then `$a`, `$b`... in the body:
    NEST_OFFSETS) walks operand_strides[j]; `fields` fill the body's other placeholders."""
    names = list(NEST_OFFSETS[: len(operand_strides)])
    offs = ["0"] * len(operand_strides)
    lines, pad = [], ""
    for k, d in enumerate(dims):
        i = f"i{k}"
        lines.append(f"{pad}for (int64_t {i} = 0; {i} < {d}; ++{i}) {{")
        pad += "  "
        last = k == len(dims) - 1
        for j in range(len(operand_strides)):
            expr = _term(offs[j], i, operand_strides[j][k])
            if last or expr == offs[j]:
                offs[j] = expr
            else:
                var = f"{names[j]}{k}"
                lines.append(f"{pad}const int64_t {var} = {expr};")
                offs[j] = var
    text = body.substitute(fields, **dict(zip(names, offs)))
    lines.extend(pad + line for line in text.splitlines())
    for k in range(len(dims)):
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n".join(lines)


def flat_offset(dims: list[int], operand_strides: list[int], index: str) -> str:
    """C expression of the element offset, along `operand_strides`, of flat index `index` over `dims`."""
    terms, inner = [], math.prod(dims)
    for d, s in zip(dims, operand_strides):
        inner //= d
        if s == 0:
            continue
        q = index if inner == 1 else f"{index} / {inner}"
        q = q if inner * d == math.prod(dims) else f"{q} % {d}"
        terms.append(q if s == 1 else f"({q}) * {s}")
    return " + ".join(terms) or "0"
