"""The op registry: every op declared once, with all the packager knows of it.

Every op of the YAML graph (DESIGN.md, "Input: the deployment manifest") has an
`OpSpec` in `OPS`: its inputs (roles and the dtypes they take), its attributes
(kind, default and the condition a value must meet), its shape and dtype rule,
and for elementwise ops the C expression of one element. Backends, frontends
and the tests derive their tables from it, or a test checks that theirs agree
with it (tests/test_op_registry.py); docs/ops.md says how to add an op.

A few ops extend the YAML vocabulary (leaky_relu, clip, log_softmax, argmax,
cast; avgpool2d's count_include_pad; the reductions reduce_*, argmin, maximum,
minimum; the data movement of gather, slice, pad...; conv_transpose2d, resize
and the pools' dilations; the comparisons, logical_*, isnan, isinf, where): the
ONNX frontend emits them, and a YAML graph may use them too. An elementwise op's C
is given per dtype family (`by_dtype`: float32, float64, signed and unsigned
integers, bool), and its inputs take exactly the dtypes it has C for.
Frontends and `ir` use two entry points:

    normalize(node)            check attributes, fill defaults (in node.attrs)
    infer(node, in_types)      -> the output TensorType

After `normalize`, attributes are canonical: kernel, strides and dilations are
lists of two ints, pads a list of four [top, left, bottom, right], axes are
ints (possibly negative; `axis_of` resolves them; a reduction's `axes` is a
list, [] meaning all axes, `reduced_axes` resolves it), `perm` is a list or None
(reversed; `perm_of` resolves it), epsilon is a float, `shape` a list of ints.
Every failure is a BuildError that names the node, the op and the shapes.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

from packager.ir import BuildError, Node, TensorType

REQUIRED = object()  # an attribute default meaning "the node must give it"

FLOAT_DTYPES = ("float16", "float32", "float64")
CAST_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "bool")  # every dtype a tensor may have (ONNX's others are refused when read)


@dataclass(frozen=True)
class Check:
    """A condition on an attribute's canonical value; `says` ends "attribute 'x' must be ..."."""
    ok: Callable[[object], bool]
    says: str


AT_LEAST_1 = Check(lambda v: v >= 1, ">= 1")
NOT_NEGATIVE = Check(lambda v: v >= 0, ">= 0")  # NaN is refused too
ZERO_OR_ONE = Check(lambda v: v in (0, 1), "0 or 1")


def one_of(*values: str) -> Check:
    return Check(lambda v: v in values, "one of " + ", ".join(values))


@dataclass(frozen=True)
class Attr:
    kind: str  # int | float | ints | floats | str | pair | pads | perm | dtype
    default: object = REQUIRED
    doc: str = ""
    check: Check | None = None  # on the value, once every attribute has its kind


@dataclass(frozen=True)
class Dtypes:
    """The dtypes an input takes; `what` names them in messages."""
    what: str
    names: tuple[str, ...] | None  # None: any dtype

    def __contains__(self, dtype: str) -> bool:
        return self.names is None or dtype in self.names

    def __add__(self, other: Dtypes) -> Dtypes:
        return Dtypes(f"{self.what} or {other.what}", self.names + other.names)


FLOAT = Dtypes("floating-point", FLOAT_DTYPES)
ANY = Dtypes("any", None)  # data movement: elements are copied, never computed on
INDEX = Dtypes("index", ("int32", "int64"))  # positions into another tensor (Gather's indices...)
BOOL = Dtypes("bool", ("bool",))  # masks and conditions (one byte, 0 or 1)
# The dtype families elementwise C is written for (`by_dtype`): the floats, the signed and the unsigned
# integers, bool. An elementwise op computes exactly the dtypes its C covers. float16 has no C type: it is
# computed with the float32 text (COMPUTED_AS), converted on load and rounded once on store.
F32 = Dtypes("floating-point", ("float16", "float32"))  # one C text (float32 C) computes these
FLOATS = Dtypes("floating-point", FLOAT_DTYPES)
COMPUTED_AS = {"float16": "float32"}  # dtype -> the dtype whose C text computes it
SIGNED = Dtypes("signed integer", ("int8", "int16", "int32", "int64"))
UNSIGNED = Dtypes("unsigned integer", ("uint8", "uint16", "uint32", "uint64"))
INTEGER = Dtypes("integer", SIGNED.names + UNSIGNED.names)
NUMERIC = Dtypes("numeric", FLOATS.names + INTEGER.names)
VALUES = Dtypes("numeric or bool", NUMERIC.names + BOOL.names)  # every dtype with a C type (cgen.C_TYPES)


@dataclass(frozen=True)
class Input:
    role: str  # how messages call it: "input", "weight", "bias", "scale"...
    symbol: str  # how formulas call it: x, W, b...
    optional: bool = False
    variadic: bool = False  # one or more of these (concat)
    dtypes: Dtypes = FLOAT  # the dtypes it takes
    # Inputs of the same group must have the same dtype (the op's "T"); an input of its own group
    # (Gather's indices "I", Where's condition "C") has its own.
    group: str = "T"


@dataclass(frozen=True)
class ByDtype:
    """An elementwise op's C per dtype family of its "T" inputs (the first input's group): the first entry
    whose Dtypes holds the dtype gives the text. Besides the inputs and attributes, a text may use
    $T (the C element type), $F (the <math.h> suffix of the element type: "f" for float32, "" for float64:
    fabs$F, 1.0$F) and $U (an unsigned type of at least 32 bits and the element's width: integer
    arithmetic done in $U wraps around modulo 2^bits, as NumPy's does, where C's signed overflow is
    undefined)."""
    entries: tuple[tuple[Dtypes, object], ...]

    def text(self, dtype: str):
        """The C text (or function of the attributes) for elements of `dtype`, or None."""
        return next((text for dtypes, text in self.entries if dtype in dtypes), None)

    def dtypes(self) -> Dtypes:
        """Every dtype some entry covers, under a family's name when they make one (NUMERIC...)."""
        names = tuple(dict.fromkeys(n for dtypes, _ in self.entries for n in dtypes.names))
        named = [d for d in (FLOATS, INTEGER, NUMERIC, VALUES) if set(d.names) == set(names)]
        return named[0] if named else Dtypes(" or ".join(d.what for d, _ in self.entries), names)


def by_dtype(*entries: tuple[Dtypes, object]) -> ByDtype:
    """C per dtype family: by_dtype((FLOATS, "fabs$F($x)"), (SIGNED, ...), (UNSIGNED, "$x"))."""
    return ByDtype(tuple(entries))


def c_text(c_expr, dtype: str):
    """The text (or function of the attributes) an elementwise `c_expr` has for `dtype` (float16: the float32
    text, COMPUTED_AS), or None."""
    dtype = COMPUTED_AS.get(dtype, dtype)
    if isinstance(c_expr, ByDtype):
        return c_expr.text(dtype)
    return c_expr if dtype in F32 else None


def c_dtypes(c_expr) -> Dtypes:
    """The dtypes an elementwise `c_expr` computes on."""
    return c_expr.dtypes() if isinstance(c_expr, ByDtype) else F32


@dataclass(frozen=True)
class OpSpec:
    name: str
    inputs: tuple[Input, ...]
    attrs: dict[str, Attr]
    rule: Callable  # (ctx: _Ctx) -> TensorType
    doc: str = ""
    # A condition on several attributes: attrs -> None, or what is wrong with them.
    check: Callable[[dict], str | None] | None = None
    # Elementwise ops: one element of the output as a C expression of the inputs' elements, named $ and
    # their symbol ($x; $A, $B), and the attributes ($alpha, spelled as C constants of the element
    # type); or a function of the attributes that returns that text. One text is float32 C; `by_dtype`
    # gives a text per dtype family (ByDtype). `unary`, `binary` and `pointwise` derive the inputs'
    # dtypes from it: an elementwise op takes exactly the dtypes it has C for.
    c_expr: str | Callable[[dict], str] | ByDtype | None = None

    def arity(self) -> tuple[int, int | None]:
        """(min, max) number of inputs; max None = unbounded."""
        if any(i.variadic for i in self.inputs):
            return len(self.inputs), None
        required = sum(1 for i in self.inputs if not i.optional)
        return required, len(self.inputs)


# --------------------------------------------------------------------------
# Helpers usable by backends


def axis_of(axis: int, ndim: int) -> int:
    """A possibly negative axis as an index into a shape of `ndim` dims."""
    return axis + ndim if axis < 0 else axis


def perm_of(node: Node, ndim: int) -> list[int]:
    """The transpose permutation of a normalized node (default: reversed)."""
    perm = node.attrs.get("perm")
    return list(range(ndim - 1, -1, -1)) if perm is None else list(perm)


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """NumPy broadcasting of shapes, or None if they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    out = []
    for k in range(ndim):
        dims = {s[len(s) - ndim + k] for s in shapes if len(s) - ndim + k >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def conv_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int = 1) -> int:
    """Output length of a sliding window (floor mode)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------
# Inference context: what a rule sees, and how it reports


class _Ctx:
    def __init__(self, node: Node, spec: OpSpec, types: list[TensorType]):
        self.node = node
        self.spec = spec
        self.types = types
        self.attrs = node.attrs

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.types[i].shape)

    def input_spec(self, i: int) -> Input:
        return self.spec.inputs[min(i, len(self.spec.inputs) - 1)]

    def desc(self, i: int) -> str:
        """'weight fc1.weight is float32[64, 64]'"""
        name = self.node.inputs[i] if i < len(self.node.inputs) else f"#{i}"
        return f"{self.input_spec(i).role} {name} is {self.types[i]}"

    def fail(self, message: str, *inputs: int) -> BuildError:
        shown = " but ".join(self.desc(i) for i in inputs)
        sep = ": " if shown else ""
        return BuildError(f"{self.node.describe()}: {shown}{sep}{message}")

    def need_ndim(self, i: int, ok: Callable[[int], bool], what: str) -> None:
        if not ok(len(self.types[i].shape)):
            sym = self.input_spec(i).symbol
            raise self.fail(f"{sym} must be {what}", i)

    def axis(self, name: str, ndim: int, allow_end: bool = False) -> int:
        axis = self.attrs[name]
        hi = ndim + 1 if allow_end else ndim
        if not -hi <= axis < hi:
            raise self.fail(f"{name} {axis} is out of range for {ndim} dimensions "
                            f"(allowed {-hi}..{hi - 1})", 0)
        return axis_of(axis, ndim)

    def out(self, shape, dtype: str | None = None) -> TensorType:
        return TensorType(tuple(int(d) for d in shape), dtype or self.types[0].dtype)


# --------------------------------------------------------------------------
# Rules


def _dense(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 2, "at least 2-D [N, in]")
    c.need_ndim(1, lambda n: n == 2, "2-D [out, in]")
    x, w = c.shape(0), c.shape(1)
    if x[-1] != w[1]:
        raise c.fail(f"x's last dimension must equal W's second ({w[1]})", 0, 1)
    if len(c.types) == 3 and c.shape(2) != (w[0],):
        raise c.fail(f"b must have shape [{w[0]}] (W's first dimension)", 1, 2)
    return c.out(x[:-1] + (w[0],))


def _matmul(c: _Ctx) -> TensorType:
    a, b = c.shape(0), c.shape(1)
    if len(a) < 1 or len(b) < 1:
        raise c.fail("matmul needs operands of at least 1 dimension", 0, 1)
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise c.fail(f"A's last dimension ({a2[-1]}) must equal B's "
                     f"{'first' if len(b) == 1 else 'second to last'} ({b2[-2]})", 0, 1)
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    if batch is None:
        raise c.fail(f"batch dimensions {list(a2[:-2])} and {list(b2[:-2])} do not broadcast", 0, 1)
    shape = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return c.out(shape)


def _broadcast(c: _Ctx, dtype: str | None = None) -> TensorType:
    """NumPy broadcasting of every input's shape; the output has `dtype`, or the "T" inputs' dtype."""
    shape = broadcast_shapes(*(c.shape(i) for i in range(len(c.types))))
    if shape is None:
        raise c.fail("shapes do not broadcast (NumPy rules: trailing dimensions must be equal or 1)",
                     *range(len(c.types)))
    t = next(i for i in range(len(c.types)) if c.input_spec(i).group == "T")
    return c.out(shape, dtype or c.types[t].dtype)


def _to_bool(rule: Callable) -> Callable:
    """`rule` with a bool output (comparisons, logic, IsNaN)."""
    def bool_rule(c: _Ctx) -> TensorType:
        return TensorType(rule(c).shape, "bool")
    return bool_rule


def same_shape(c: _Ctx) -> TensorType:
    return c.out(c.shape(0))


def _cast(c: _Ctx) -> TensorType:
    return c.out(c.shape(0), c.attrs["to"])


def _argmax(c: _Ctx) -> TensorType:
    x = c.shape(0)
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    axis = c.axis("axis", len(x))
    if x[axis] == 0:
        raise c.fail(f"{c.node.op} over an empty axis ({axis})", 0)
    shape = x[:axis] + ((1,) if c.attrs["keepdims"] else ()) + x[axis + 1:]
    return c.out(shape, "int64")


def _softmax(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    c.axis("axis", len(c.shape(0)))
    return c.out(c.shape(0))


def _window(c: _Ctx, kernel, dilations) -> tuple[int, int]:
    x = c.shape(0)
    strides, pads = c.attrs["strides"], c.attrs["pads"]
    out = []
    for d in range(2):
        size, k, dil = x[2 + d], kernel[d], dilations[d]
        extent = dil * (k - 1) + 1
        padded = size + pads[d] + pads[d + 2]
        if extent > padded:
            raise c.fail(f"the {'kernel' if dil == 1 else 'dilated kernel'} ({extent}) is larger than "
                         f"the padded input ({padded}) along {'HW'[d]}", *range(min(2, len(c.types))))
        out.append(conv_out(size, k, strides[d], pads[d], pads[d + 2], dil))
    return out[0], out[1]


def _conv2d(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    c.need_ndim(1, lambda n: n == 4, "4-D OIHW")
    x, w = c.shape(0), c.shape(1)
    g = c.attrs["groups"]
    if x[1] % g or w[0] % g:
        raise c.fail(f"groups ({g}) must divide x's channels ({x[1]}) and W's output channels ({w[0]})", 0, 1)
    if w[1] * g != x[1]:
        raise c.fail(f"W's second dimension must be x's channels / groups ({x[1]} / {g} = {x[1] // g})", 0, 1)
    if len(c.types) == 3 and c.shape(2) != (w[0],):
        raise c.fail(f"b must have shape [{w[0]}] (W's first dimension)", 1, 2)
    oh, ow = _window(c, w[2:], c.attrs["dilations"])
    return c.out((x[0], w[0], oh, ow))


def _pool(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    kernel, pads = c.attrs["kernel"], c.attrs["pads"]
    for d in range(2):
        if pads[d] >= kernel[d] or pads[d + 2] >= kernel[d]:
            raise c.fail(f"pads {pads} must be smaller than the kernel {kernel} on each side", 0)
    oh, ow = _window(c, kernel, c.attrs["dilations"])
    x = c.shape(0)
    return c.out((x[0], x[1], oh, ow))


def _global_avgpool(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    x = c.shape(0)
    return c.out((x[0], x[1], 1, 1))


def _flatten(c: _Ctx) -> TensorType:
    x = c.shape(0)
    axis = c.axis("axis", len(x), allow_end=True)
    return c.out((math.prod(x[:axis]), math.prod(x[axis:])))


def _reshape(c: _Ctx) -> TensorType:
    x, shape = c.shape(0), list(c.attrs["shape"])
    if any(d < -1 for d in shape) or shape.count(-1) > 1:
        raise c.fail(f"shape {shape} may hold dimensions >= 0 and at most one -1", 0)
    size = math.prod(x)
    known = math.prod(d for d in shape if d != -1)
    if -1 in shape:
        if known == 0 or size % known:
            raise c.fail(f"cannot reshape {size} elements to {shape}", 0)
        shape[shape.index(-1)] = size // known
    elif known != size:
        raise c.fail(f"cannot reshape {size} elements to {shape} ({known} elements)", 0)
    return c.out(shape)


def _transpose(c: _Ctx) -> TensorType:
    x = c.shape(0)
    perm = perm_of(c.node, len(x))
    if sorted(perm) != list(range(len(x))):
        raise c.fail(f"perm {perm} is not a permutation of 0..{len(x) - 1}", 0)
    return c.out([x[p] for p in perm])


def _concat(c: _Ctx) -> TensorType:
    first = c.shape(0)
    axis = c.axis("axis", len(first))
    total = 0
    for i in range(len(c.types)):
        s = c.shape(i)
        if len(s) != len(first) or s[:axis] != first[:axis] or s[axis + 1:] != first[axis + 1:]:
            raise c.fail(f"concat inputs must match in every dimension but axis {axis}", 0, i)
        total += s[axis]
    return c.out(first[:axis] + (total,) + first[axis + 1:])


def _batchnorm(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 2, "at least 2-D [N, C, ...]")
    channels = c.shape(0)[1]
    for i in range(1, 5):
        if c.shape(i) != (channels,):
            raise c.fail(f"{c.input_spec(i).symbol} must have shape [{channels}] (x's channels, axis 1)", 0, i)
    return c.out(c.shape(0))


# --------------------------------------------------------------------------
# The vocabulary

_X = Input("input", "x")
_MOVED = Input("input", "x", dtypes=ANY)
_PAIR1 = Attr("pair", [1, 1], "int or [h, w]")
_PADS0 = Attr("pads", [0, 0, 0, 0], "int, [h, w] or [top, left, bottom, right]")
_FLAG0 = Attr("int", 0, check=ZERO_OR_ONE)


def binary(name: str, doc: str, c_expr, rule: Callable = _broadcast) -> OpSpec:
    """An elementwise op of two inputs with NumPy broadcasting; `c_expr` over $A and $B."""
    return pointwise(name, doc, c_expr, (Input("input", "A"), Input("input", "B")), rule=rule)


def unary(name: str, doc: str, c_expr, attrs: dict[str, Attr] | None = None,
          check: Callable[[dict], str | None] | None = None, rule: Callable = same_shape) -> OpSpec:
    """An elementwise op of one input; `c_expr` over $x and the attributes."""
    return pointwise(name, doc, c_expr, (_X,), attrs, check, rule)


def pointwise(name: str, doc: str, c_expr, inputs: tuple[Input, ...], attrs: dict[str, Attr] | None = None,
              check: Callable[[dict], str | None] | None = None, rule: Callable = _broadcast) -> OpSpec:
    """An elementwise op (NumPy broadcasting over its inputs): its "T" inputs take the dtypes `c_expr` has C
    for; inputs of another group keep the dtypes they declare (Where's condition, Pow's exponent)."""
    dtypes = c_dtypes(c_expr)
    inputs = tuple(Input(i.role, i.symbol, i.optional, i.variadic, dtypes, i.group) if i.group == "T" else i
                   for i in inputs)
    return OpSpec(name, inputs, attrs or {}, rule, doc, check=check, c_expr=c_expr)


def _clip_c(attrs: dict) -> str:
    """An infinite bound is no compare."""
    expr = "$x" if attrs["max"] == math.inf else "$x > $max ? $max : $x"
    return expr if attrs["min"] == -math.inf else f"$x < $min ? $min : ({expr})"


def _clip_bounds(attrs: dict) -> str | None:
    if any(math.isnan(attrs[k]) for k in ("min", "max")):
        return "attributes 'min' and 'max' must be numbers, not NaN"
    return None


# ---- C of the integer-aware arithmetic (the float32 texts are what they were; float64 shares them via $F)


def _arithmetic(op: str) -> ByDtype:
    """A + B and friends: integers computed in $U, so that overflow wraps (C's signed overflow is undefined)."""
    return by_dtype((FLOATS, f"$A {op} $B"), (INTEGER, f"($T)(($U)$A {op} ($U)$B)"))


# Integer x / 0 and x % 0 trap (SIGFPE), and so do MIN / -1 and MIN % -1: they are defined instead, as
# NumPy defines them (x / 0 = 0, x % 0 = 0, MIN / -1 = MIN); the ONNX spec leaves them undefined.
_DIV = by_dtype((FLOATS, "$A / $B"),
                (SIGNED, "$B == 0 ? 0 : ($B == -1 ? ($T)(0 - ($U)$A) : $A / $B)"),
                (UNSIGNED, "$B == 0 ? 0 : $A / $B"))
# dpk_expf, dpk_sigmoidf, dpk_tanhf, dpk_erff, dpk_pow: the host prelude's vectorizable math (c/host_prelude.h, bounds there)
_POW = by_dtype((NUMERIC, "($T)dpk_pow((double)$A, (double)$B)"))  # C pow; x^2, x^3 as products (host_prelude.h)
_MOD = by_dtype(
    (FLOATS, lambda attrs: "fmod$F($A, $B)" if attrs["fmod"] else
     "(fmod$F($A, $B) != 0 ? ((fmod$F($A, $B) < 0) != ($B < 0) ? fmod$F($A, $B) + $B : fmod$F($A, $B))"
     " : copysign$F(0, $B))"),
    (SIGNED, lambda attrs: "($B == 0 || $B == -1) ? 0 : $A % $B" if attrs["fmod"] else
     "($B == 0 || $B == -1) ? 0 : ($A % $B != 0 && ($A % $B < 0) != ($B < 0) ? $A % $B + $B : $A % $B)"),
    (UNSIGNED, "$B == 0 ? 0 : $A % $B"))


# ---- reductions and variadic elementwise ops (ReduceMean & co., ArgMin, Sum/Mean/Max/Min) ----------


def reduced_axes(attrs: dict, ndim: int) -> list[int]:
    """The sorted, non-negative axes a normalized reduction reduces: `axes`, or every axis if `axes` is
    empty, unless noop_with_empty_axes (then none: each element is reduced alone)."""
    axes = attrs["axes"]
    if not axes:
        return [] if attrs["noop_with_empty_axes"] else list(range(ndim))
    return sorted(axis_of(a, ndim) for a in axes)


def _reduce(c: _Ctx) -> TensorType:
    x = c.shape(0)
    axes = c.attrs["axes"]
    for a in axes:
        if not -len(x) <= a < len(x):
            raise c.fail(f"axes {axes}: axis {a} is out of range for {len(x)} dimensions "
                         f"(allowed {-len(x)}..{len(x) - 1})", 0)
    if len({axis_of(a, len(x)) for a in axes}) != len(axes):
        raise c.fail(f"axes {axes} name an axis twice", 0)
    reduced = set(reduced_axes(c.attrs, len(x)))
    keep = c.attrs["keepdims"]
    return c.out([1 if k in reduced else d for k, d in enumerate(x) if keep or k not in reduced])


def arg_best(name: str, best: str) -> OpSpec:
    """argmax / argmin: the int64 index of the `best` value along axis."""
    return OpSpec(name, (_X,), {"axis": Attr("int", 0), "keepdims": Attr("int", 1, check=ZERO_OR_ONE),
                                "select_last_index": _FLAG0}, _argmax,
                  f"int64 index of the {best} value along axis (first, or last if select_last_index); "
                  f"NaN counts as {best}")


def reduction(name: str, doc: str) -> OpSpec:
    """A reduction over `axes` (empty: all, or none if noop_with_empty_axes), keepdims 0/1."""
    return OpSpec(name, (_X,), {"axes": Attr("ints", [], "axes to reduce (negative from the end); [] = all"),
                                "keepdims": Attr("int", 1, check=ZERO_OR_ONE),
                                "noop_with_empty_axes": _FLAG0}, _reduce, doc)


_REDUCTIONS = [
    reduction("reduce_sum", "sum over axes"),
    reduction("reduce_mean", "sum over axes / number of elements reduced (NaN over none)"),
    reduction("reduce_max", "largest value over axes (-inf over none); NaN if any is NaN"),
    reduction("reduce_min", "smallest value over axes (+inf over none); NaN if any is NaN"),
    reduction("reduce_prod", "product over axes (1 over none)"),
    reduction("reduce_l2", "sqrt(sum of squares over axes)"),
    reduction("reduce_sum_square", "sum of squares over axes"),
    arg_best("argmin", "smallest"),
    # Max / Min of ONNX (Sum and Mean are chains of add, then a div): NaN in either operand gives NaN
    binary("maximum", "max(A, B) with NumPy broadcasting; NaN if either is NaN",
           by_dtype((FLOATS, "($A > $B || $A != $A) ? $A : $B"), (INTEGER, "$A > $B ? $A : $B"))),
    binary("minimum", "min(A, B) with NumPy broadcasting; NaN if either is NaN",
           by_dtype((FLOATS, "($A < $B || $A != $A) ? $A : $B"), (INTEGER, "$A < $B ? $A : $B"))),
]


# ---- comparisons and logic (Equal, Less..., Not, And, Or, Xor, IsNaN, IsInf, Where): bool is one byte 0/1


def _isinf_c(attrs: dict) -> str:
    tests = [t for flag, t in (("detect_positive", "$x == INFINITY"), ("detect_negative", "$x == -INFINITY"))
             if attrs[flag]]
    return " || ".join(tests) or "$x > INFINITY"  # neither: never (not even NaN)


def compare(name: str, doc: str, op: str, dtypes: Dtypes = NUMERIC) -> OpSpec:
    return binary(name, f"{doc} (bool), NumPy broadcasting", by_dtype((dtypes, f"$A {op} $B")), _to_bool(_broadcast))


_LOGIC = [
    compare("equal", "A == B", "==", VALUES),
    compare("less", "A < B", "<"),
    compare("less_equal", "A <= B", "<="),
    compare("greater", "A > B", ">"),
    compare("greater_equal", "A >= B", ">="),
    unary("logical_not", "not x (bool)", by_dtype((BOOL, "!$x"))),
    binary("logical_and", "A and B (bool), NumPy broadcasting", by_dtype((BOOL, "$A && $B"))),
    binary("logical_or", "A or B (bool), NumPy broadcasting", by_dtype((BOOL, "$A || $B"))),
    binary("logical_xor", "A xor B (bool), NumPy broadcasting", by_dtype((BOOL, "!$A != !$B"))),
    unary("isnan", "x is NaN (bool)", by_dtype((FLOATS, "$x != $x")), rule=_to_bool(same_shape)),
    unary("isinf", "x is +inf (if detect_positive) or -inf (if detect_negative) (bool)", by_dtype((FLOATS, _isinf_c)),
          {"detect_positive": Attr("int", 1, check=ZERO_OR_ONE), "detect_negative": Attr("int", 1, check=ZERO_OR_ONE)},
          rule=_to_bool(same_shape)),
    pointwise("where", "X where condition else Y, NumPy broadcasting of the three", by_dtype((VALUES, "$c ? $X : $Y")),
              (Input("condition", "c", dtypes=BOOL, group="C"), Input("input", "X"), Input("input", "Y"))),
]


# ---- recurrent: lstm, gru, rnn (ONNX LSTM, GRU, RNN) ---------------------------------------------------
# ONNX's shapes and gate orders: x [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1);
# W [directions, gates * hidden, input], R [directions, gates * hidden, hidden], b [directions,
# 2 * gates * hidden] (W's biases, then R's); states [directions, batch, hidden] (layout 1: [batch,
# directions, hidden]); LSTM's peepholes P [directions, 3 * hidden]. A node computes ONE of the ONNX
# outputs (`returns`): a graph that reads several has a node per output, each running the recurrence.

RNN_GATES = {"lstm": "iofc", "gru": "zrh", "rnn": "i"}  # the gates in ONNX's order within W, R and b
RNN_OUTPUTS = ("Y", "Y_h", "Y_c")  # `returns` 0, 1, 2: every step's h, the last h, the last c (lstm)
RNN_DIRECTIONS = ("forward", "reverse", "bidirectional")  # `direction` 0, 1, 2
# `activations` are indices into this: registry ops (their default attributes), applied as their c_expr
RNN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "hard_sigmoid", "elu", "softsign", "softplus")
RNN_DEFAULT_ACTIVATIONS = {"lstm": [0, 1, 1], "gru": [0, 1], "rnn": [1]}  # f, g, h: Sigmoid, Tanh, Tanh


def rnn_dims(node: Node, x: tuple[int, ...], w: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """(seq, batch, input, hidden, directions) of a normalized recurrent node from the shapes of x and W."""
    seq, batch = (x[0], x[1]) if node.attrs["layout"] == 0 else (x[1], x[0])
    return seq, batch, x[2], w[1] // len(RNN_GATES[node.op]), w[0]


def _recurrent(c: _Ctx) -> TensorType:
    op, layout = c.node.op, c.attrs["layout"]
    c.need_ndim(0, lambda n: n == 3, "3-D: [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1)")
    c.need_ndim(1, lambda n: n == 3, "3-D [directions, gates * hidden, input]")
    gates, dirs = len(RNN_GATES[op]), 2 if c.attrs["direction"] == 2 else 1
    w = c.shape(1)
    if w[0] != dirs or w[1] % gates or w[2] != c.shape(0)[2]:
        raise c.fail(f"W must be [{dirs}, {gates} * hidden, {c.shape(0)[2]}] ({RNN_DIRECTIONS[c.attrs['direction']]}, "
                     f"{op}'s {gates} gates, x's input size)", 0, 1)
    seq, batch, _, hidden, _ = rnn_dims(c.node, c.shape(0), w)
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    want = [(dirs, gates * hidden, hidden), (dirs, 2 * gates * hidden), state, state, (dirs, 3 * hidden)]
    for i in range(2, len(c.types)):
        if c.shape(i) != want[i - 2]:
            raise c.fail(f"{c.input_spec(i).symbol} must have shape {list(want[i - 2])}", 1, i)
    if c.attrs["returns"] == 0:
        return c.out((seq, dirs, batch, hidden) if layout == 0 else (batch, seq, dirs, hidden))
    return c.out(state)


def recurrent(op: str, doc: str) -> OpSpec:
    """lstm, gru or rnn: its inputs (lstm adds initial_c and the peepholes P) and attributes."""
    inputs = [_X, Input("weight", "W"), Input("recurrence", "R"), Input("bias", "b", optional=True),
              Input("initial state", "initial_h", optional=True)]
    if op == "lstm":
        inputs += [Input("initial cell", "initial_c", optional=True), Input("peepholes", "P", optional=True)]
    last = 2 if op == "lstm" else 1  # the last of Y, Y_h, Y_c it has
    attrs = {"direction": Attr("int", 0, "0 forward, 1 reverse, 2 bidirectional",
                               Check(lambda v: 0 <= v <= 2, "0, 1 or 2")),
             "layout": _FLAG0,
             "clip": Attr("float", math.inf, "gate inputs clipped to [-clip, clip]", Check(lambda v: v > 0, "> 0")),
             "activations": Attr("ints", RNN_DEFAULT_ACTIVATIONS[op], "indices into RNN_ACTIVATIONS"),
             "returns": Attr("int", 0, "0 Y, 1 Y_h" + (", 2 Y_c" if last == 2 else ""),
                             Check(lambda v: 0 <= v <= last, "0 to 2" if last == 2 else "0 or 1"))}
    attrs.update({"input_forget": _FLAG0} if op == "lstm" else {"linear_before_reset": _FLAG0} if op == "gru" else {})
    n_act = len(RNN_DEFAULT_ACTIVATIONS[op])

    def check(a: dict) -> str | None:
        acts, dirs = a["activations"], 2 if a["direction"] == 2 else 1
        if len(acts) not in (n_act, n_act * dirs) or any(not 0 <= k < len(RNN_ACTIVATIONS) for k in acts):
            return (f"activations {acts} must be {n_act}" + (f" or {n_act * dirs}" if dirs == 2 else "") +
                    f" indices into {list(RNN_ACTIVATIONS)}")
        return None
    return OpSpec(op, tuple(inputs), attrs, _recurrent, doc, check=check)


_RECURRENT = [
    recurrent("lstm", "LSTM (ONNX's equations, gates iofc): c = f*c + i*g(x W_c + h R_c + b_c), h = o*h(c); "
                      "input_forget: f = 1 - i"),
    recurrent("gru", "GRU (ONNX's equations, gates zrh): h = (1 - z)*g(...) + z*h; linear_before_reset: "
                     "r multiplies h R_h + Rb_h, not h"),
    recurrent("rnn", "simple RNN: h = f(x W + h R + Wb + Rb)"),
]


# ---- data movement at run time (Gather, GatherElements, Slice/Split, Expand, Tile, Pad, DepthToSpace,
# SpaceToDepth, Trilu): elements of any dtype are moved, never computed on; index inputs are int32/int64.

PAD_MODES = ("constant", "reflect", "edge", "wrap")
DEPTH_MODES = ("DCR", "CRD")
_INDICES = Input("indices", "indices", dtypes=INDEX, group="I")


def slice_range(start: int, end: int, step: int, size: int) -> range:
    """The positions a slice [start:end:step] takes along a dim of `size`: Python's rules (negative bounds
    count from the end, bounds clamp), which are ONNX Slice's."""
    return range(*slice(start, end, step).indices(size))


def _gather(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    x = c.shape(0)
    axis = c.axis("axis", len(x))
    return c.out(x[:axis] + c.shape(1) + x[axis + 1:])


def _gather_elements(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    x, idx = c.shape(0), c.shape(1)
    axis = c.axis("axis", len(x))
    if len(idx) != len(x) or any(i > d for k, (i, d) in enumerate(zip(idx, x)) if k != axis):
        raise c.fail(f"indices must have x's rank and dimensions no larger than x's but along axis {axis}", 0, 1)
    return c.out(idx)


def _per_dim(c: _Ctx, names, count: int, what: str) -> None:
    for name in names:
        if len(c.attrs[name]) != count:
            raise c.fail(f"{name} {c.attrs[name]} must have {count} values ({what})", 0)


def _slice(c: _Ctx) -> TensorType:
    x = c.shape(0)
    _per_dim(c, ("starts", "ends", "steps"), len(x), "one per dimension")
    if 0 in c.attrs["steps"]:
        raise c.fail(f"steps {c.attrs['steps']} must not be 0", 0)
    return c.out(len(slice_range(s, e, st, d)) for s, e, st, d in zip(c.attrs["starts"], c.attrs["ends"],
                                                                       c.attrs["steps"], x))


def _expand(c: _Ctx) -> TensorType:
    shape = broadcast_shapes(c.shape(0), tuple(c.attrs["shape"]))
    if shape is None or any(d < 0 for d in c.attrs["shape"]):
        raise c.fail(f"shape {c.attrs['shape']} does not broadcast with x (NumPy rules)", 0)
    return c.out(shape)


def _tile(c: _Ctx) -> TensorType:
    x = c.shape(0)
    _per_dim(c, ("repeats",), len(x), "one per dimension")
    if min(c.attrs["repeats"], default=0) < 0:
        raise c.fail(f"repeats {c.attrs['repeats']} must be >= 0", 0)
    return c.out(d * r for d, r in zip(x, c.attrs["repeats"]))


def _pad(c: _Ctx) -> TensorType:
    x, pads = c.shape(0), c.attrs["pads"]
    _per_dim(c, ("pads",), 2 * len(x), "[begin of each dimension, then end of each]")
    out = [d + b + e for d, b, e in zip(x, pads, pads[len(x):])]
    if min(out, default=0) < 0:
        raise c.fail(f"pads {pads} crop more than the input has (output {out})", 0)
    cropped = [d + min(0, b) + min(0, e) for d, b, e in zip(x, pads, pads[len(x):])]  # negative pads crop first
    if c.attrs["mode"] != "constant" and any(d == 0 < o for d, o in zip(cropped, out)):
        raise c.fail(f"mode '{c.attrs['mode']}' cannot pad an empty dimension (output {out})", 0)
    if len(c.types) == 2 and math.prod(c.shape(1)) != 1:
        raise c.fail("the pad value must be one element", 0, 1)
    return c.out(out)


def _depth_to_space(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    (n, ch, h, w), b = c.shape(0), c.attrs["blocksize"]
    if ch % (b * b):
        raise c.fail(f"channels ({ch}) must be a multiple of blocksize^2 ({b * b})", 0)
    return c.out((n, ch // (b * b), h * b, w * b))


def _space_to_depth(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    (n, ch, h, w), b = c.shape(0), c.attrs["blocksize"]
    if h % b or w % b:
        raise c.fail(f"height ({h}) and width ({w}) must be multiples of blocksize ({b})", 0)
    return c.out((n, ch * b * b, h // b, w // b))


def _trilu(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 2, "at least 2-D")
    return c.out(c.shape(0))


_MOVEMENT = [
    OpSpec("gather", (_MOVED, _INDICES), {"axis": Attr("int", 0)}, _gather,
           "x's slices at the indices along axis (negative counts from the end; out of range is a run-time "
           "error): shape x[:axis] + indices + x[axis+1:]"),
    OpSpec("gather_elements", (_MOVED, _INDICES), {"axis": Attr("int", 0)}, _gather_elements,
           "y[i..] = x[i.. with i[axis] replaced by indices[i..]]; shape of indices"),
    OpSpec("slice", (_MOVED,), {"starts": Attr("ints"), "ends": Attr("ints"), "steps": Attr("ints")}, _slice,
           "x[starts[d]:ends[d]:steps[d] for each dim d] (Python's rules: negative from the end, clamped)"),
    OpSpec("expand", (_MOVED,), {"shape": Attr("ints")}, _expand, "x broadcast with shape (NumPy rules)"),
    OpSpec("tile", (_MOVED,), {"repeats": Attr("ints")}, _tile, "x repeated repeats[d] times along each dim d"),
    OpSpec("pad", (_MOVED, Input("value", "value", optional=True, dtypes=ANY)),
           {"pads": Attr("ints", doc="begin of each dim, then end of each; negative crops"),
            "mode": Attr("str", "constant", check=one_of(*PAD_MODES))}, _pad,
           "x cropped by the negative pads, then padded by the others: constant (value, default 0), reflect "
           "(mirror without the edge), edge (repeat it), wrap"),
    OpSpec("depth_to_space", (_MOVED,), {"blocksize": Attr("int", check=AT_LEAST_1),
                                         "mode": Attr("str", "DCR", check=one_of(*DEPTH_MODES))},
           _depth_to_space, "channel blocks moved into b x b spatial blocks (DCR: depth, column, row order)"),
    OpSpec("space_to_depth", (_MOVED,), {"blocksize": Attr("int", check=AT_LEAST_1),
                                         "mode": Attr("str", "DCR", check=one_of(*DEPTH_MODES))},
           _space_to_depth, "b x b spatial blocks moved into channels (the inverse of depth_to_space, same mode)"),
    OpSpec("trilu", (_MOVED,), {"upper": Attr("int", 1, check=ZERO_OR_ONE), "k": Attr("int", 0)}, _trilu,
           "the upper (j - i >= k) or lower (j - i <= k) triangle of the last two dims, zeros elsewhere"),
]


# ---- normalization, LRN, CumSum, TopK (LayerNormalization & co.; Einsum is a converter rewrite) -------


def affine_run(shape, x_shape) -> tuple[int, int] | None:
    """How a scale or bias of `shape` maps onto x: (S, C) such that element e of x (flat, row-major)
    takes parameter (e // S) % C. That holds when `shape`, aligned right to x_shape, has its non-1 dims
    in one run [lo, hi) equal to x's (then C = prod(x[lo:hi]), S = prod(x[hi:])); None otherwise."""
    if len(shape) > len(x_shape):
        return None
    padded = (1,) * (len(x_shape) - len(shape)) + tuple(shape)
    run = [k for k, d in enumerate(padded) if d != 1]
    if not run:
        return 1, 1
    lo, hi = run[0], run[-1] + 1
    if any(padded[k] != x_shape[k] for k in range(lo, hi)):
        return None
    return math.prod(x_shape[hi:]), math.prod(x_shape[lo:hi])


def _layer_norm(c: _Ctx) -> TensorType:
    x = c.shape(0)
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    c.axis("axis", len(x))
    runs = [affine_run(c.shape(i), x) for i in range(1, len(c.types))]
    for i, run in enumerate(runs, 1):
        if run is None:
            raise c.fail(f"{c.input_spec(i).symbol} must broadcast to x with its dimensions other than 1 in one "
                         f"run equal to x's (e.g. x's last dimensions)", 0, i)
    if len(runs) == 2 and runs[0] != runs[1]:
        raise c.fail("scale and bias must cover the same dimensions of x", 1, 2)
    return c.out(x)


def _lrn(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 2, "at least 2-D [N, C, ...]")
    return c.out(c.shape(0))


def _cumsum(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    c.axis("axis", len(c.shape(0)))
    return c.out(c.shape(0))


def _top_k(c: _Ctx) -> TensorType:
    x = c.shape(0)
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    axis = c.axis("axis", len(x))
    if c.attrs["k"] > x[axis]:
        raise c.fail(f"k ({c.attrs['k']}) is larger than axis {axis} ({x[axis]} elements)", 0)
    shape = x[:axis] + (c.attrs["k"],) + x[axis + 1:]
    return c.out(shape, "int64" if c.node.op == "top_k_indices" else None)


def top_k(name: str, what: str) -> OpSpec:
    return OpSpec(name, (_X,), {"k": Attr("int", check=NOT_NEGATIVE), "axis": Attr("int", -1),
                                "largest": Attr("int", 1, check=ZERO_OR_ONE),
                                "sorted": Attr("int", 1, check=ZERO_OR_ONE)}, _top_k,
                  f"{what} of the k largest (or smallest) values along axis, best first; equal values: lower "
                  f"index first; NaN counts as larger than any number")


_NORMALIZATION = [
    OpSpec("layer_norm", (_X, Input("scale", "scale"), Input("bias", "bias", optional=True)),
           {"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5, check=NOT_NEGATIVE)}, _layer_norm,
           "(x - mean) / sqrt(var + epsilon) * scale + bias, mean and var over axes [axis, rank); scale and "
           "bias broadcast to x (InstanceNormalization and GroupNormalization are this op after a reshape)"),
    OpSpec("lrn", (_X,), {"size": Attr("int", check=AT_LEAST_1), "alpha": Attr("float", 1e-4),
                          "beta": Attr("float", 0.75), "bias": Attr("float", 1.0)}, _lrn,
           "x / (bias + alpha / size * sum of x^2 over channels c - (size-1)//2 .. c + ceil((size-1)/2))^beta"),
    OpSpec("cumsum", (_X,), {"axis": Attr("int"), "exclusive": _FLAG0, "reverse": _FLAG0}, _cumsum,
           "running sum along axis (exclusive: without the element itself; reverse: from the end)"),
    top_k("top_k", "values"),
    top_k("top_k_indices", "int64 indices"),
]


# ---- the convolution family: transposed convolution, resize (ConvTranspose, Resize / Upsample) ----------


FOUR_INTS = Check(lambda v: len(v) == 4, "4 integers [top, left, bottom, right]")


def conv_transpose_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """Output length of a transposed convolution: the full scatter's length less the pads (a negative pad
    adds rows that only the bias reaches: ONNX's output_padding)."""
    return (size - 1) * stride + dilation * (kernel - 1) + 1 - pad_begin - pad_end


def _conv_transpose2d(c: _Ctx) -> TensorType:
    c.need_ndim(0, lambda n: n == 4, "4-D NCHW")
    c.need_ndim(1, lambda n: n == 4, "4-D [C_in, C_out / groups, KH, KW]")
    x, w = c.shape(0), c.shape(1)
    g = c.attrs["groups"]
    if x[1] % g or w[0] != x[1]:
        raise c.fail(f"W's first dimension must be x's channels ({x[1]}), a multiple of groups ({g})", 0, 1)
    if len(c.types) == 3 and c.shape(2) != (w[1] * g,):
        raise c.fail(f"b must have shape [{w[1] * g}] (W's second dimension x groups)", 1, 2)
    pads, strides, dilations = c.attrs["pads"], c.attrs["strides"], c.attrs["dilations"]
    out = [conv_transpose_out(x[2 + d], w[2 + d], strides[d], pads[d], pads[d + 2], dilations[d]) for d in range(2)]
    if min(out) < 1:
        raise c.fail(f"pads {pads} leave an output of {out[0]} x {out[1]}", 0, 1)
    return c.out((x[0], w[1] * g, out[0], out[1]))


RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                      "tf_half_pixel_for_nearest", "tf_crop_and_resize")
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize(c: _Ctx) -> TensorType:
    x = c.shape(0)
    c.need_ndim(0, lambda n: n >= 1, "at least 1-D")
    sizes, scales, roi = c.attrs["sizes"], c.attrs["scales"], c.attrs["roi"]
    if len(sizes) != len(x) or len(scales) != len(x):
        raise c.fail(f"sizes {sizes} and scales {scales} must have one value per dimension ({len(x)})", 0)
    if min(sizes) < 0 or not all(s > 0 for s in scales):
        raise c.fail(f"sizes {sizes} must be >= 0 and scales {scales} > 0", 0)
    if c.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and len(roi) != 2 * len(x):
        raise c.fail(f"tf_crop_and_resize needs roi [starts, ends] of {2 * len(x)} values, got {roi}", 0)
    if any(d == 0 for d, s in zip(x, sizes) if s):
        raise c.fail(f"cannot resize an empty dimension to {sizes}", 0)
    return c.out(sizes)


def _resize_check(attrs: dict) -> str | None:
    if attrs["antialias"] and attrs["mode"] == "nearest":
        return "antialias=1 applies to modes linear and cubic, not nearest"
    return None


_CONV_FAMILY = [
    OpSpec("conv_transpose2d", (_X, Input("weight", "W"), Input("bias", "b", optional=True)),
           {"strides": _PAIR1, "pads": Attr("ints", [0, 0, 0, 0], "[top, left, bottom, right]; < 0 grows the output",
                                            check=FOUR_INTS),
            "dilations": _PAIR1, "groups": Attr("int", 1, check=AT_LEAST_1)},
           _conv_transpose2d, "2-D transposed convolution (the gradient of conv2d): NCHW input, "
                              "W [C_in, C_out / groups, KH, KW]; y[oh, ow] sums x[ih, iw] W[.., kh, kw] over "
                              "oh = ih * stride + kh * dilation - pad_top (likewise ow)"),
    OpSpec("resize", (_X,),
           {"sizes": Attr("ints", doc="the output shape"),
            "scales": Attr("floats", doc="per dimension, the scale of the coordinate transform"),
            "mode": Attr("str", "nearest", check=one_of(*RESIZE_MODES)),
            "coordinate_transformation_mode": Attr("str", "half_pixel", check=one_of(*RESIZE_COORDINATES)),
            "nearest_mode": Attr("str", "round_prefer_floor", check=one_of(*RESIZE_NEAREST)),
            "cubic_coeff_a": Attr("float", -0.75), "exclude_outside": _FLAG0, "antialias": _FLAG0,
            "extrapolation_value": Attr("float", 0.0),
            "roi": Attr("floats", [], "tf_crop_and_resize: [starts..., ends...] as fractions of each dimension")},
           _resize, "ONNX Resize: each output coordinate mapped to the input (coordinate_transformation_mode), "
                    "sampled by mode (nearest, linear, cubic; antialias widens the filter when shrinking), "
                    "separable over dimensions", check=_resize_check),
]


OPS: dict[str, OpSpec] = {spec.name: spec for spec in [
    OpSpec("dense", (_X, Input("weight", "W"), Input("bias", "b", optional=True)), {}, _dense,
           "y = x @ W.T + b; x [..., in], W [out, in], b [out]"),
    OpSpec("matmul", (Input("input", "A"), Input("input", "B")), {}, _matmul,
           "NumPy matmul: 1-D, 2-D and batched with broadcasting"),
    binary("add", "A + B with NumPy broadcasting (integers wrap around)", _arithmetic("+")),
    binary("sub", "A - B with NumPy broadcasting (integers wrap around)", _arithmetic("-")),
    binary("mul", "A * B with NumPy broadcasting (integers wrap around)", _arithmetic("*")),
    binary("div", "A / B with NumPy broadcasting; integers: truncated toward zero, x / 0 = 0, "
                  "MIN / -1 = MIN (wraps)", _DIV),
    unary("relu", "max(x, 0)", "$x > 0.0f ? $x : 0.0f"),
    unary("sigmoid", "1 / (1 + exp(-x))", "dpk_sigmoidf($x)"),
    unary("tanh", "tanh(x)", "dpk_tanhf($x)"),
    OpSpec("softmax", (_X,), {"axis": Attr("int", -1)}, _softmax, "softmax along axis"),
    # extensions (the ONNX frontend emits them; the YAML graph may use them too)
    unary("leaky_relu", "x if x >= 0 else alpha * x", "$x >= 0.0f ? $x : $alpha * $x",
          {"alpha": Attr("float", 0.01)}),
    unary("clip", "min(max(x, min), max); NaN stays NaN", _clip_c,
          {"min": Attr("float", -math.inf), "max": Attr("float", math.inf)}, check=_clip_bounds),
    # ---- float elementwise math and activations (ONNX names in docs/onnx.md); NaN in gives NaN out
    unary("abs", "|x| (integers: |MIN| wraps to MIN)",
          by_dtype((FLOATS, "fabs$F($x)"), (SIGNED, "($T)($x < 0 ? 0 - ($U)$x : ($U)$x)"), (UNSIGNED, "$x"))),
    unary("neg", "-x (integers: -MIN wraps to MIN)", by_dtype((FLOATS, "-$x"), (SIGNED, "($T)(0 - ($U)$x)"))),
    unary("exp", "exp(x)", "dpk_expf($x)"),
    unary("log", "natural log of x (NaN below 0, -inf at 0)", "logf($x)"),
    unary("sqrt", "square root of x (NaN below 0)", "sqrtf($x)"),
    unary("reciprocal", "1 / x", "1.0f / $x"),
    unary("erf", "the error function", "dpk_erff($x)"),
    unary("sin", "sin(x), x in radians", "sinf($x)"),
    unary("cos", "cos(x), x in radians", "cosf($x)"),
    unary("floor", "largest integer <= x", "floorf($x)"),
    unary("ceil", "smallest integer >= x", "ceilf($x)"),
    unary("round", "nearest integer, halves to even", "nearbyintf($x)"),  # default rounding mode: to nearest even
    unary("sign", "1 if x > 0, -1 if x < 0, else x (0 or NaN)",
          by_dtype((FLOATS + SIGNED, "$x > 0 ? ($T)1 : ($x < 0 ? ($T)-1 : $x)"), (UNSIGNED, "$x > 0 ? 1 : 0"))),
    pointwise("pow", "A ** B with NumPy broadcasting, computed in double (C pow), the exponent of any "
                     "numeric dtype; integers: the double result truncated", _POW,
              (Input("input", "A"), Input("exponent", "B", dtypes=NUMERIC, group="E"))),
    pointwise("mod", "fmod=1: A - trunc(A / B) * B (sign of A, C fmod); fmod=0: A - floor(A / B) * B (sign "
                     "of B, NumPy's mod); NumPy broadcasting; integers: x mod 0 = 0", _MOD,
              (Input("input", "A"), Input("input", "B")), {"fmod": _FLAG0}),
    unary("gelu", "0.5 x (1 + erf(x / sqrt(2)))", "0.5f * $x * (1.0f + dpk_erff($x * 0.70710678118654752f))"),
    unary("gelu_tanh", "0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))",
          "0.5f * $x * (1.0f + dpk_tanhf(0.79788456080286536f * ($x + 0.044715f * $x * $x * $x)))"),
    unary("elu", "x if x >= 0 else alpha (exp(x) - 1)", "$x < 0.0f ? $alpha * expm1f($x) : $x",
          {"alpha": Attr("float", 1.0)}),
    unary("selu", "gamma x if x > 0 else gamma alpha (exp(x) - 1)",
          "$x > 0.0f ? $gamma * $x : $gamma * $alpha * expm1f($x)",
          {"alpha": Attr("float", 1.6732632423543772), "gamma": Attr("float", 1.0507009873554805)}),
    unary("softplus", "log(1 + exp(x))", "$x > 0.0f ? $x + log1pf(expf(-$x)) : log1pf(expf($x))"),
    unary("softsign", "x / (1 + |x|)", "$x / (1.0f + fabsf($x))"),
    unary("hard_sigmoid", "max(0, min(1, alpha x + beta))",
          "$alpha * $x + $beta > 1.0f ? 1.0f : ($alpha * $x + $beta < 0.0f ? 0.0f : $alpha * $x + $beta)",
          {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)}),
    unary("hard_swish", "x max(0, min(1, x / 6 + 1 / 2))",
          "$x * ($x / 6.0f + 0.5f > 1.0f ? 1.0f : ($x / 6.0f + 0.5f < 0.0f ? 0.0f : $x / 6.0f + 0.5f))"),
    unary("mish", "x tanh(log(1 + exp(x)))", "$x * tanhf($x > 0.0f ? $x + log1pf(expf(-$x)) : log1pf(expf($x)))"),
    unary("celu", "max(0, x) + min(0, alpha (exp(x / alpha) - 1))", "$x > 0.0f ? $x : $alpha * expm1f($x / $alpha)",
          {"alpha": Attr("float", 1.0)}),
    unary("thresholded_relu", "x if x > alpha else 0", "$x <= $alpha ? 0.0f : $x", {"alpha": Attr("float", 1.0)}),
    pointwise("prelu", "x if x >= 0 else slope x; slope broadcasts (NumPy rules)", "$x < 0.0f ? $slope * $x : $x",
              (_X, Input("slope", "slope"))),
    OpSpec("log_softmax", (_X,), {"axis": Attr("int", -1)}, _softmax, "log(softmax(x)) along axis"),
    arg_best("argmax", "largest"),
    OpSpec("cast", (_MOVED,), {"to": Attr("dtype")}, _cast,
           "convert elements to dtype `to` (float -> int truncates toward zero; -> bool is x != 0)"),
    OpSpec("conv2d", (_X, Input("weight", "W"), Input("bias", "b", optional=True)),
           {"strides": _PAIR1, "pads": _PADS0, "dilations": _PAIR1, "groups": Attr("int", 1, check=AT_LEAST_1)},
           _conv2d, "2-D convolution, NCHW input, OIHW weight"),
    OpSpec("maxpool2d", (_X,), {"kernel": Attr("pair"), "strides": _PAIR1, "pads": _PADS0, "dilations": _PAIR1},
           _pool, "max over windows (taps dilations apart); padding never wins"),
    OpSpec("avgpool2d", (_X,), {"kernel": Attr("pair"), "strides": _PAIR1, "pads": _PADS0, "dilations": _PAIR1,
                                "count_include_pad": _FLAG0},
           _pool, "mean over windows (taps dilations apart); padding counts in the divisor only if "
                  "count_include_pad"),
    OpSpec("global_avgpool", (_X,), {}, _global_avgpool, "mean over H, W -> [N, C, 1, 1]"),
    OpSpec("flatten", (_MOVED,), {"axis": Attr("int", 1)}, _flatten,
           "-> [prod(shape[:axis]), prod(shape[axis:])]"),
    OpSpec("reshape", (_MOVED,), {"shape": Attr("ints")}, _reshape,
           "same elements, new shape; one -1 allowed, 0 means 0"),
    OpSpec("transpose", (_MOVED,), {"perm": Attr("perm", None)}, _transpose,
           "permute dimensions (default: reverse them)"),
    OpSpec("concat", (Input("input", "x", variadic=True, dtypes=ANY),), {"axis": Attr("int")}, _concat,
           "join along axis"),
    OpSpec("batchnorm", (_X, Input("scale", "scale"), Input("bias", "bias"), Input("mean", "mean"),
                         Input("variance", "var")),
           {"epsilon": Attr("float", 1e-5, check=NOT_NEGATIVE)}, _batchnorm,
           "(x - mean) / sqrt(var + epsilon) * scale + bias, channel axis 1"),
    *_REDUCTIONS,
    *_RECURRENT,
    *_MOVEMENT,
    *_NORMALIZATION,
    *_CONV_FAMILY,
    *_LOGIC,
]}


def elementwise(arity: int, dtype: str | None = None) -> tuple[str, ...]:
    """The ops with a C expression of `arity` inputs, in registry order; with `dtype`, only those that compute
    on `dtype` and give `dtype` (cblas fuses the float32 ones after its kernels)."""
    return tuple(name for name, spec in OPS.items() if spec.c_expr is not None and len(spec.inputs) == arity
                 and (dtype is None or (dtype in c_dtypes(spec.c_expr) and spec.rule in (same_shape, _broadcast)
                                        and spec.inputs[0].group == "T")))


# --------------------------------------------------------------------------
# Attribute checking


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _ints(v) -> list[int] | None:
    if isinstance(v, (list, tuple)) and all(_is_int(e) for e in v):
        return [int(e) for e in v]
    return None


def _coerce(kind: str, value):
    """The canonical value, or None if `value` does not fit `kind`."""
    if kind == "int":
        return int(value) if _is_int(value) else None
    if kind == "float":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        return None
    if kind == "ints":
        return _ints(value)
    if kind == "floats":  # conv family (resize's scales)
        ok = isinstance(value, (list, tuple)) and all(_coerce("float", e) is not None for e in value)
        return [float(e) for e in value] if ok else None
    if kind == "str":  # conv family (resize's modes)
        return value if isinstance(value, str) else None
    if kind == "perm":
        return None if value is None else _ints(value)
    if kind == "pair":
        v = [int(value)] * 2 if _is_int(value) else _ints(value)
        return v if v is not None and len(v) == 2 and min(v) >= 1 else None
    if kind == "dtype":
        return value if isinstance(value, str) and value in CAST_DTYPES else None
    if kind == "pads":
        v = [int(value)] * 4 if _is_int(value) else _ints(value)
        if v is not None and len(v) == 2:
            v = v * 2
        return v if v is not None and len(v) == 4 and min(v) >= 0 else None
    raise AssertionError(kind)


_KIND_TEXT = {
    "int": "an integer",
    "float": "a number",
    "ints": "a list of integers",
    "floats": "a list of numbers",
    "perm": "a list of integers",
    "pair": "a positive integer or a list of two",
    "pads": "a non-negative integer or a list of 2 or 4 ([top, left, bottom, right])",
    "dtype": "a dtype name (" + ", ".join(CAST_DTYPES) + ")",
    "str": "a string",
}


def spec_of(node: Node) -> OpSpec:
    spec = OPS.get(node.op)
    if spec is None:
        raise BuildError(f"{node.describe()}: unknown op '{node.op}'; known ops: {', '.join(sorted(OPS))}")
    return spec


def normalize(node: Node) -> None:
    """Check the node's op, input count and attributes; fill defaults in place."""
    spec = spec_of(node)
    lo, hi = spec.arity()
    n = len(node.inputs)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo} or more" if hi is None else (str(lo) if lo == hi else f"{lo} or {hi}")
        roles = ", ".join(i.symbol + ("?" if i.optional else "...") if i.optional or i.variadic else i.symbol
                          for i in spec.inputs)
        raise BuildError(f"{node.describe()}: takes {want} inputs ({roles}), got {n}: {node.inputs}")
    unknown = sorted(set(node.attrs) - set(spec.attrs))
    if unknown:
        known = ", ".join(sorted(spec.attrs)) or "none"
        raise BuildError(f"{node.describe()}: unknown attribute{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; op {node.op} takes: {known}")
    out = {}
    for name, attr in spec.attrs.items():
        if name not in node.attrs:
            if attr.default is REQUIRED:
                raise BuildError(f"{node.describe()}: attribute '{name}' is required ({_KIND_TEXT[attr.kind]})")
            out[name] = list(attr.default) if isinstance(attr.default, list) else attr.default
            continue
        value = _coerce(attr.kind, node.attrs[name])
        if value is None and not (attr.kind == "perm" and node.attrs[name] is None):
            raise BuildError(f"{node.describe()}: attribute '{name}' must be {_KIND_TEXT[attr.kind]}, "
                             f"got {node.attrs[name]!r}")
        out[name] = value
    for name, attr in spec.attrs.items():  # every kind first: a wrong type is reported before a bad value
        if attr.check is not None and not attr.check.ok(out[name]):
            raise BuildError(f"{node.describe()}: attribute '{name}' must be {attr.check.says}, got {out[name]}")
    complaint = spec.check(out) if spec.check is not None else None
    if complaint is not None:
        raise BuildError(f"{node.describe()}: {complaint}")
    node.attrs.clear()
    node.attrs.update(out)


def infer(node: Node, in_types: list[TensorType]) -> TensorType:
    """The output type of a normalized node given its inputs' types."""
    spec = spec_of(node)
    lo, hi = spec.arity()
    if len(in_types) < lo or (hi is not None and len(in_types) > hi):
        raise BuildError(f"{node.describe()}: got {len(in_types)} input types for inputs {node.inputs}")
    c = _Ctx(node, spec, list(in_types))
    first: dict[str, int] = {}  # group -> the first input of it
    for i, t in enumerate(in_types):
        want = c.input_spec(i)
        j = first.setdefault(want.group, i)
        if t.dtype != in_types[j].dtype:
            raise c.fail(f"all inputs must have the same dtype ({in_types[j].dtype})", j, i)
    for i, t in enumerate(in_types):  # after every group agrees: a mixed pair is reported as such
        want = c.input_spec(i)
        if t.dtype not in want.dtypes:
            raise c.fail(f"op {node.op} needs {want.dtypes.what} inputs ({', '.join(want.dtypes.names)})", i)
    for i, t in enumerate(in_types):
        if any(not _is_int(d) or d < 0 for d in t.shape):
            raise c.fail("dimensions must be non-negative integers", i)
    return spec.rule(c)
