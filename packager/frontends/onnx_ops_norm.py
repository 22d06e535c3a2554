"""ONNX normalization (LayerNormalization, InstanceNormalization, GroupNormalization), LRN, CumSum,
TopK, and Einsum (rewritten as transpose / reshape / matmul / reduce_sum) -> IR nodes."""

from __future__ import annotations

import math

import numpy as np

from packager import ops
from packager.frontends.onnx_convert import Converter, OnnxNode, emits, identity


# ---- normalization (LayerNormalization, InstanceNormalization, GroupNormalization), LRN, CumSum, TopK --------
# The three normalizations are one IR op, layer_norm (statistics over its last axes, then scale and bias
# mapped onto x): InstanceNormalization is layer_norm over the spatial axes with a [C, 1, ...] scale,
# GroupNormalization layer_norm of x viewed as [N, G, C/G, spatial] over its last two axes.


def _used(cv: Converter, name: str) -> bool:
    return bool(name) and cv.uses.get(name, 0) > 0


def _refuse_stash(cv: Converter, node: OnnxNode) -> None:
    """stash_type 1 (float32 statistics) only; dsopack's kernel accumulates them in double, which is
    at least as precise."""
    stash = node.attrs.get("stash_type", 1)
    if stash != 1:
        raise cv.error(node, f"stash_type {stash} is not supported (only 1: float32 statistics)")


def _affine_params(cv: Converter, node: OnnxNode, x_shape, params: list[str]) -> list[str]:
    """Scale and bias as layer_norm takes them (their non-1 dims one run of x's dims, the same for both):
    as they are when they fit, else constants broadcast to the run that covers both."""
    shapes = [cv.type_of(p).shape for p in params]
    runs = [ops.affine_run(s, x_shape) for s in shapes]
    if None not in runs and len(set(runs)) == 1:
        return params
    r = len(x_shape)
    padded = [(1,) * (r - len(s)) + tuple(s) for s in shapes]
    if any(len(s) > r for s in shapes) or ops.broadcast_shapes(x_shape, *padded) != tuple(x_shape):
        raise cv.error(node, f"scale and bias {[list(s) for s in shapes]} do not broadcast to x {list(x_shape)}")
    dims = [k for p in padded for k, d in enumerate(p) if d != 1]
    lo, hi = min(dims), max(dims) + 1
    block = tuple(x_shape[lo:hi]) + (1,) * (r - hi)
    out = []
    for p, pad in zip(params, padded):
        value = cv.const(p)
        if value is None:
            raise cv.error(node, f"'{p}' of shape {list(cv.type_of(p).shape)} covers other dimensions of x "
                                 f"{list(x_shape)} than its partner; only a constant can be broadcast to them")
        full = np.broadcast_to(value.reshape(pad)[(0,) * lo], block)
        out.append(cv.weight(full, f"{p}/broadcast", value.dtype))
    return out


def _reshaped(cv: Converter, node: OnnxNode, name: str, shape: list[int]) -> str:
    """`name` viewed with `shape`: a constant reshaped at build time, a run-time tensor by a reshape node."""
    value = cv.const(name)
    if value is not None:
        return cv.weight(value.reshape(shape), f"{name}/reshaped", value.dtype)
    return cv.emit(node, "reshape", [name], shape=shape)


@emits("layer_norm", "reduce_mean", "sub", "mul", "add", "sqrt", "reciprocal")
def _layer_normalization(cv: Converter, node: OnnxNode) -> None:
    """Y by layer_norm; the optional Mean and InvStdDev outputs, when a model reads them, by the ops of the
    spec's own definition (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Reciprocal)."""
    _refuse_stash(cv, node)
    x = node.inputs[0]
    params = [p for p in node.inputs[1:3] if p]
    shape = cv.type_of(x).shape
    axis, eps = node.attrs.get("axis", -1), float(node.attrs.get("epsilon", 1e-5))
    y, mean_out, inv_out = (list(node.outputs) + ["", ""])[:3]
    if _used(cv, y):
        cv.emit(node, "layer_norm", [x, *_affine_params(cv, node, shape, params)], y, axis=axis, epsilon=eps)
    if not (_used(cv, mean_out) or _used(cv, inv_out)):
        return
    axes = list(range(ops.axis_of(axis, len(shape)), len(shape)))
    mean = cv.emit(node, "reduce_mean", [x], mean_out if _used(cv, mean_out) else None, axes=axes)
    if _used(cv, inv_out):
        d = cv.emit(node, "sub", [x, mean])
        var = cv.emit(node, "reduce_mean", [cv.emit(node, "mul", [d, d])], axes=axes)
        std = cv.emit(node, "sqrt", [cv.emit(node, "add", [var, np.asarray(eps, cv.type_of(x).dtype)])])
        cv.emit(node, "reciprocal", [std], inv_out)


@emits("layer_norm", "reshape")
def _instance_normalization(cv: Converter, node: OnnxNode) -> None:
    x, scale, bias = node.inputs[:3]
    shape = list(cv.type_of(x).shape)
    if len(shape) < 2:
        raise cv.error(node, f"input '{x}' must be at least 2-D [N, C, ...], it is {cv.type_of(x)}")
    xs = x if len(shape) > 2 else cv.emit(node, "reshape", [x], shape=shape + [1])
    view = [shape[1]] + [1] * max(len(shape) - 2, 1)
    y = cv.emit(node, "layer_norm", [xs, _reshaped(cv, node, scale, view), _reshaped(cv, node, bias, view)],
                node.outputs[0] if len(shape) > 2 else None, axis=2, epsilon=float(node.attrs.get("epsilon", 1e-5)))
    if len(shape) == 2:
        cv.emit(node, "reshape", [y], node.outputs[0], shape=shape)


@emits("layer_norm", "reshape")
def _group_normalization(cv: Converter, node: OnnxNode) -> None:
    """Version 21: scale and bias per channel. (Version 18 took them per group; onnx's checker refuses it as
    deprecated before it gets here, and a per-group scale fails the shape check below.)"""
    _refuse_stash(cv, node)
    x, scale, bias = node.inputs[:3]
    shape = list(cv.type_of(x).shape)
    groups = node.attrs.get("num_groups")
    if len(shape) < 2 or not isinstance(groups, int) or groups < 1 or shape[1] % groups:
        raise cv.error(node, f"num_groups ({groups}) must divide the channels of input '{x}' "
                             f"({cv.type_of(x)}, channels on axis 1)")
    per = shape[1] // groups
    for p in (scale, bias):
        if cv.type_of(p).shape != (shape[1],):
            raise cv.error(node, f"'{p}' is {cv.type_of(p)}, GroupNormalization-{node.version} takes one value per "
                                 f"channel ([{shape[1]}])")
    xs = cv.emit(node, "reshape", [x], shape=[shape[0], groups, per, math.prod(shape[2:])])
    view = [groups, per, 1]
    y = cv.emit(node, "layer_norm", [xs, _reshaped(cv, node, scale, view), _reshaped(cv, node, bias, view)],
                axis=2, epsilon=float(node.attrs.get("epsilon", 1e-5)))
    cv.emit(node, "reshape", [y], node.outputs[0], shape=shape)


@emits("lrn")
def _lrn(cv: Converter, node: OnnxNode) -> None:
    attrs = {k: node.attrs[k] for k in ("size", "alpha", "beta", "bias") if k in node.attrs}
    cv.emit(node, "lrn", [node.inputs[0]], node.outputs[0], **attrs)


def _constant_int(cv: Converter, node: OnnxNode, index: int, what: str) -> int:
    """The one integer of constant input `index` (CumSum's axis, TopK's k)."""
    value = cv.const(node.inputs[index])
    if value is None:
        raise cv.error(node, f"{what} ('{node.inputs[index]}') must be known at build time (a constant)")
    if value.size != 1 or value.dtype.kind not in "iu":
        raise cv.error(node, f"{what} ('{node.inputs[index]}') must be one integer, "
                             f"it is {value.dtype}{list(value.shape)}")
    return int(value.reshape(-1)[0])


@emits("cumsum")
def _cumsum(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "cumsum", [node.inputs[0]], node.outputs[0], axis=_constant_int(cv, node, 1, "axis"),
            exclusive=node.attrs.get("exclusive", 0), reverse=node.attrs.get("reverse", 0))


@emits("top_k", "top_k_indices")
def _top_k(cv: Converter, node: OnnxNode) -> None:
    """One IR node per output a model reads. TopK-1 gives k as an attribute, 10 as an input; largest and
    sorted exist from 11 (sorted=0 leaves the order open: dsopack sorts anyway)."""
    k = node.attrs.get("k") if node.version < 10 else _constant_int(cv, node, 1, "k")
    attrs = dict(k=k, axis=node.attrs.get("axis", -1), largest=node.attrs.get("largest", 1),
                 sorted=node.attrs.get("sorted", 1))
    for out, op in zip(node.outputs, ("top_k", "top_k_indices")):
        if _used(cv, out):
            cv.emit(node, op, [node.inputs[0]], out, **attrs)


# ---- Einsum: the contractions transformers write, as transpose / reshape / matmul (or dense) / reduce_sum ----


def _equation(node: OnnxNode) -> str:
    equation = node.attrs.get("equation", "")
    return equation.decode() if isinstance(equation, bytes) else equation


def _einsum_terms(cv: Converter, node: OnnxNode, shapes: list[tuple]) -> tuple[list[str], str]:
    """The equation's input terms and output term, one letter per dimension: '...' becomes digits (never
    einsum letters), right-aligned across operands; the implicit output is NumPy's (the ellipsis, then the
    letters used once, sorted)."""
    equation = _equation(node)
    text = equation.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise cv.error(node, f"equation '{equation}' has {len(terms)} operands, the node {len(shapes)} inputs")
    ell = max((len(s) - len(t) + 3 for t, s in zip(terms, shapes) if "..." in t), default=0)
    digits = "".join(str(d) for d in range(ell))
    out = []
    for t, s in zip(terms, shapes):
        letters = t.replace("...", "", 1)
        if not all(c.isascii() and c.isalpha() for c in letters) or len(letters) > len(s) or \
                ("..." not in t and len(letters) != len(s)):
            raise cv.error(node, f"equation '{equation}': term '{t}' does not fit an input of rank {len(s)}")
        out.append(t.replace("...", digits[ell - (len(s) - len(letters)):]))
    if arrow:
        result = rhs.replace("...", digits)
    else:
        letters = "".join(out)
        result = digits + "".join(sorted(c for c in set(letters) if c.isalpha() and letters.count(c) == 1))
    return out, result


def _einsum_sizes(cv: Converter, node: OnnxNode, terms: list[str], shapes: list[tuple], result: str) -> dict:
    equation = _equation(node)
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        if len(set(t)) != len(t):
            raise cv.error(node, f"equation '{equation}': a letter repeated in one term (a diagonal) is not supported")
        for c, d in zip(t, s):
            if sizes.setdefault(c, d) != d:
                raise cv.error(node, f"equation '{equation}': '{c}' is {sizes[c]} in one operand and {d} in another "
                                     f"(broadcasting is not supported)")
    if len(set(result)) != len(result) or any(c not in sizes for c in result):
        raise cv.error(node, f"equation '{equation}': the output names a letter twice or one no input has")
    return sizes


def _permuted(cv: Converter, node: OnnxNode, x: str, have: str, want: str) -> str:
    perm = [have.index(c) for c in want]
    return x if perm == list(range(len(perm))) else cv.emit(node, "transpose", [x], perm=perm)


def _viewed(cv: Converter, node: OnnxNode, x: str, shape: list[int]) -> str:
    return x if list(cv.type_of(x).shape) == shape else cv.emit(node, "reshape", [x], shape=shape)


def _summed_out(cv: Converter, node: OnnxNode, x: str, term: str, keep: set[str]) -> tuple[str, str]:
    """x with the letters of `term` not in `keep` summed away."""
    axes = [k for k, c in enumerate(term) if c not in keep]
    if not axes:
        return x, term
    return (cv.emit(node, "reduce_sum", [x], axes=axes, keepdims=0),
            "".join(c for c in term if c in keep))


@emits("transpose", "reshape", "matmul", "dense", "reduce_sum")
def _einsum(cv: Converter, node: OnnxNode) -> None:
    """One operand: sums and a transpose. Two: each operand's own letters summed away, then a batched
    matmul of [batch, M, K] by [batch, K, N] (a dense when the second operand is a constant and there is no
    batch), reshaped and transposed to the output. Three or more operands, and diagonals, are refused."""
    inputs = [i for i in node.inputs if i]
    shapes = [cv.type_of(i).shape for i in inputs]
    if len(inputs) > 2:
        raise cv.error(node, f"equation '{_equation(node)}': einsum of {len(inputs)} operands is not "
                             f"supported (one or two)")
    terms, result = _einsum_terms(cv, node, shapes)
    sizes = _einsum_sizes(cv, node, terms, shapes, result)
    if len(inputs) == 1:
        y, term = _summed_out(cv, node, inputs[0], terms[0], set(result))
        y = _permuted(cv, node, y, term, result)
    else:
        (a, ta), (b, tb) = (_summed_out(cv, node, x, t, set(result) | set(other))
                            for x, t, other in ((inputs[0], terms[0], terms[1]), (inputs[1], terms[1], terms[0])))
        batch = [c for c in result if c in ta and c in tb]
        ks = [c for c in ta if c in tb and c not in result]
        ms, ns = [c for c in ta if c not in tb], [c for c in tb if c not in ta]
        bshape = [sizes[c] for c in batch]
        M, K, N = (math.prod(sizes[c] for c in part) for part in (ms, ks, ns))
        a = _viewed(cv, node, _permuted(cv, node, a, ta, "".join(batch + ms + ks)), bshape + [M, K])
        bt = "".join(batch + ks + ns)
        bv = cv.const(b)
        if bv is not None and not batch:
            w = cv.weight(np.transpose(bv, [tb.index(c) for c in bt]).reshape(K, N).T, f"{b}/einsum", bv.dtype)
            y = cv.emit(node, "dense", [a, w])
        else:
            y = cv.emit(node, "matmul", [a, _viewed(cv, node, _permuted(cv, node, b, tb, bt), bshape + [K, N])])
        term = "".join(batch + ms + ns)
        y = _permuted(cv, node, _viewed(cv, node, y, [sizes[c] for c in term]), term, result)
    if y in inputs:  # nothing to compute
        identity(cv, node)
    else:
        cv.rename(y, node.outputs[0])


CONVERTERS = {
    "LayerNormalization": _layer_normalization, "InstanceNormalization": _instance_normalization,
    "GroupNormalization": _group_normalization, "LRN": _lrn, "CumSum": _cumsum, "TopK": _top_k,
    "Einsum": _einsum,
}
