"""NumPy implementations of ONNX operators, for constant folding (frontends/onnx.py).

A node whose inputs are all known at build time (initializers, Constant nodes,
shapes of tensors whose shape is fixed) is computed here once, and its outputs
become constants: this is how the Shape -> Gather -> Unsqueeze -> Concat ->
Reshape chains that exporters emit for `x.view(x.size(0), -1)` turn into one
static reshape. `FOLDERS` maps an op type to `fn(node, inputs) -> [outputs]`;
`node.attrs` holds the node's attributes (ints, floats, lists, numpy arrays for
tensors, str for strings) and `node.opset` the model's default-domain opset, `node.version` the op's version
(its schema's since_version at that opset).

Ops listed here but without a converter in onnx_ops.CONVERTERS (Shape, Range,
Equal...) are build-time only: with an input computed at run time they
are refused, naming the node.
"""

from __future__ import annotations

import numpy as np


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div truncates toward zero (C semantics); NumPy's // floors."""
    q = np.abs(a) // np.abs(b)
    return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))


def _div(a, b):
    return _int_div(a, b) if a.dtype.kind in "iu" else (a / b).astype(a.dtype)


def _softmax(x, axis):
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    x64 = x.astype(np.float64)
    s = x64 - x64.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def _coerced(fn, node, x):
    """Softmax / LogSoftmax: one axis from version 13; before, x as 2-D [.., axis) x [axis, ..) (axis 1)."""
    if node.version >= 13:
        return fn(x, node.attrs.get("axis", -1)).astype(x.dtype)
    axis = _axis(node.attrs.get("axis", 1), x.ndim)
    flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    return fn(flat, 1).astype(x.dtype).reshape(x.shape)


def squeezed_shape(shape: tuple[int, ...], axes: list[int] | None) -> list[int]:
    if axes is None:
        return [d for d in shape if d != 1]
    axes = {_axis(a, len(shape)) for a in axes}
    for a in axes:
        if not 0 <= a < len(shape) or shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of shape {list(shape)} (it must exist and be 1)")
    return [d for i, d in enumerate(shape) if i not in axes]


def unsqueezed_shape(shape: tuple[int, ...], axes: list[int]) -> list[int]:
    rank = len(shape) + len(axes)
    axes_set = {_axis(a, rank) for a in axes}
    if len(axes_set) != len(axes) or not all(0 <= a < rank for a in axes_set):
        raise ValueError(f"axes {list(axes)} are repeated or out of range for rank {rank}")
    dims = iter(shape)
    return [1 if i in axes_set else next(dims) for i in range(rank)]


def reshaped_shape(shape: tuple[int, ...], target, allowzero: int = 0) -> list[int]:
    """ONNX Reshape: 0 copies the input's dimension (unless allowzero), one -1 is inferred."""
    out = [int(d) for d in target]
    if not allowzero:
        for i, d in enumerate(out):
            if d == 0:
                if i >= len(shape):
                    raise ValueError(f"shape {list(target)}: 0 at position {i} but the input has {len(shape)} dims")
                out[i] = shape[i]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ValueError(f"shape {list(target)} may hold dimensions >= 0 and at most one -1")
    size = int(np.prod(shape, dtype=np.int64))
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape {list(shape)} ({size} elements) to {list(target)}")
        out[out.index(-1)] = size // known
    elif int(np.prod(out, dtype=np.int64)) != size:
        raise ValueError(f"cannot reshape {list(shape)} ({size} elements) to {list(target)}")
    return out


def axes_of(node, inputs, index: int = 1) -> list[int] | None:
    """Squeeze/Unsqueeze/Reduce axes: an input from opset 13 (18 for reductions), an attribute before."""
    if len(inputs) > index and inputs[index] is not None:
        return [int(a) for a in np.asarray(inputs[index]).reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _slice(node, inputs):
    if node.version < 10:  # starts, ends, axes are attributes
        inputs = [inputs[0]] + [None if k not in node.attrs else np.asarray(node.attrs[k], np.int64)
                                for k in ("starts", "ends", "axes")]
    data, starts, ends = inputs[:3]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else np.arange(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ValueError("Slice step 0")
        index[_axis(int(a), data.ndim)] = slice(int(s), int(e), int(st))
    return [data[tuple(index)].copy()]


# ---- data movement (the converters in onnx_ops emit the same ops at run time and share these helpers)


def resolved_axes(axes, ndim: int) -> list[int]:
    out = [int(a) + ndim if int(a) < 0 else int(a) for a in axes]
    if any(not 0 <= a < ndim for a in out) or len(set(out)) != len(out):
        raise ValueError(f"axes {[int(a) for a in axes]} are repeated or out of range for rank {ndim}")
    return out


def split_sizes(node, shape, split) -> tuple[int, list[int]]:
    """(axis, sizes) of a Split: `split` (the attribute before version 13, else the constant input; None if
    absent), else num_outputs (18+: chunks of ceil(d / n), the last smaller), else equal parts."""
    axis = node.attrs.get("axis", 0)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for rank {len(shape)}")
    axis = _axis(axis, len(shape))
    d, n = shape[axis], len(node.outputs)
    if split is None and "num_outputs" in node.attrs:
        chunk = -(-d // max(1, node.attrs["num_outputs"]))
        split = [min(chunk, d - k * chunk) for k in range(node.attrs["num_outputs"])]
    elif split is None:
        if d % n:
            raise ValueError(f"axis {axis} of size {d} does not split into {n} equal parts")
        split = [d // n] * n
    sizes = [int(v) for v in np.asarray(split).reshape(-1)]
    if len(sizes) != n or sum(sizes) != d or min(sizes) < 0:
        raise ValueError(f"split sizes {sizes} must be {n} non-negative values (one per output) "
                         f"summing to {d} (axis {axis})")
    return axis, sizes


def full_pads(pads, axes, ndim: int) -> list[int]:
    """Pad's pads over `axes` (None: all) as [begin of each dim, then end of each]."""
    axes = list(range(ndim)) if axes is None else resolved_axes(axes, ndim)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads} must have 2 values per padded axis ({2 * len(axes)})")
    full = [0] * (2 * ndim)
    for k, a in enumerate(axes):
        full[a], full[ndim + a] = pads[k], pads[len(axes) + k]
    return full


def pad_parameters(node, ndim: int, pads=None, axes=None) -> tuple[list[int], str, float | None]:
    """(full pads, mode, the value attribute or None) of a Pad: pads and value are attributes before
    version 11; from 11 pads (and axes, 18+) are the inputs given, the value an input too (not read here)."""
    mode = node.attrs.get("mode", "constant")
    if node.version < 11:
        value = node.attrs.get("value", 0.0)
        return full_pads(node.attrs["pads"], None, ndim), mode, None if value == 0.0 else value
    return full_pads(pads, axes, ndim), mode, None


def _split(node, inputs):
    axis, sizes = split_sizes(node, inputs[0].shape, node.attrs.get("split") if node.version < 13 else
                              (inputs[1] if len(inputs) > 1 else None))
    return np.split(inputs[0], np.cumsum(sizes)[:-1], axis=axis)


def _pad(node, inputs):
    x = inputs[0]
    pads, mode, value = pad_parameters(node, x.ndim, *inputs[1:2], *inputs[3:4])
    if node.version >= 11:
        value = inputs[2] if len(inputs) > 2 else None
    n = x.ndim
    x = x[tuple(slice(max(0, -b), x.shape[d] - max(0, -e)) for d, (b, e) in enumerate(zip(pads, pads[n:])))]
    width = [(max(0, b), max(0, e)) for b, e in zip(pads, pads[n:])]
    if mode != "constant":
        return [np.pad(x, width, mode=mode)]
    return [np.pad(x, width, constant_values=np.asarray(0 if value is None else value).reshape(-1)[0])]


def _depth_to_space(node, inputs):
    x, b = inputs[0], node.attrs["blocksize"]
    n, c, h, w = x.shape
    if node.attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // b // b, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // b // b, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [np.ascontiguousarray(y.reshape(n, c // b // b, h * b, w * b))]


def _space_to_depth(node, inputs):
    x, b = inputs[0], node.attrs["blocksize"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.transpose(0, 3, 5, 1, 2, 4) if node.attrs.get("mode", "DCR") == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return [np.ascontiguousarray(y.reshape(n, c * b * b, h // b, w // b))]


def _gather_elements(node, inputs):
    x, idx = inputs[0], inputs[1].astype(np.int64)
    axis = _axis(node.attrs.get("axis", 0), x.ndim)
    x = x[tuple(slice(None) if d == axis else slice(0, k) for d, k in enumerate(idx.shape))]
    return [np.take_along_axis(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)]


def _trilu(node, inputs):
    k = int(np.asarray(inputs[1]).reshape(-1)[0]) if len(inputs) > 1 and inputs[1] is not None else 0
    return [np.triu(inputs[0], k) if node.attrs.get("upper", 1) else np.tril(inputs[0], k)]


def _gemm(node, inputs):
    a, b = inputs[0], inputs[1]
    a = a.T if node.attrs.get("transA", 0) else a
    b = b.T if node.attrs.get("transB", 0) else b
    y = node.attrs.get("alpha", 1.0) * (a.astype(np.float64) @ b.astype(np.float64))
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + node.attrs.get("beta", 1.0) * inputs[2]
    return [y.astype(inputs[0].dtype)]


def _clip(node, inputs):
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else node.attrs.get("min")
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else node.attrs.get("max")
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return [x.astype(inputs[0].dtype)]


def _argmax(node, inputs):
    x = inputs[0]
    axis = _axis(node.attrs.get("axis", 0), x.ndim)
    if node.attrs.get("select_last_index", 0):
        index = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        index = np.argmax(x, axis=axis)
    if node.attrs.get("keepdims", 1):
        index = np.expand_dims(index, axis)
    return [index.astype(np.int64)]


def _reduce_prod(node, inputs):
    axes = axes_of(node, inputs) if node.opset >= 18 else node.attrs.get("axes")
    keep = bool(node.attrs.get("keepdims", 1))
    x = inputs[0]
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    return [np.prod(x, axis=tuple(axes), keepdims=keep).astype(x.dtype)]


def _constant(node, inputs):
    a = node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            value = a[key]
            if key == "value":
                return [np.asarray(value)]
            dtype = np.float32 if "float" in key else np.int64
            return [np.asarray(value, dtype=dtype)]
    raise ValueError(f"Constant with attribute {', '.join(a) or 'none'} is not supported "
                     f"(only value, value_float(s), value_int(s))")


def _shape(node, inputs):
    shape = np.asarray(inputs[0].shape, np.int64)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return [shape[start:end].copy()]


def _unary(fn):
    return lambda node, inputs: [np.asarray(fn(inputs[0])).astype(inputs[0].dtype)]


def _binary(fn):
    return lambda node, inputs: [np.asarray(fn(inputs[0], inputs[1])).astype(inputs[0].dtype)]


def _compare(fn):
    return lambda node, inputs: [np.asarray(fn(inputs[0], inputs[1]))]


FOLDERS = {
    "Constant": _constant,
    "Identity": lambda node, inputs: [inputs[0]],
    "Dropout": lambda node, inputs: [inputs[0]],
    "Shape": _shape,
    "Size": lambda node, inputs: [np.asarray(inputs[0].size, np.int64)],
    "Gather": lambda node, inputs: [np.take(inputs[0], inputs[1].astype(np.int64), axis=node.attrs.get("axis", 0))],
    "Slice": _slice,
    "Concat": lambda node, inputs: [np.concatenate(inputs, axis=node.attrs["axis"])],
    "Unsqueeze": lambda node, inputs: [inputs[0].reshape(unsqueezed_shape(inputs[0].shape, axes_of(node, inputs)))],
    "Squeeze": lambda node, inputs: [inputs[0].reshape(squeezed_shape(inputs[0].shape, axes_of(node, inputs)))],
    "Reshape": lambda node, inputs: [inputs[0].reshape(
        reshaped_shape(inputs[0].shape, inputs[1], node.attrs.get("allowzero", 0)))],
    "Flatten": lambda node, inputs: [inputs[0].reshape(
        int(np.prod(inputs[0].shape[:_axis(node.attrs.get("axis", 1), inputs[0].ndim)])), -1)],
    "Transpose": lambda node, inputs: [np.ascontiguousarray(np.transpose(inputs[0], node.attrs.get("perm")))],
    "Cast": lambda node, inputs: [inputs[0].astype(node.attrs["to"])],
    "Expand": lambda node, inputs: [np.broadcast_to(inputs[0], np.broadcast_shapes(
        inputs[0].shape, tuple(int(d) for d in inputs[1]))).copy()],
    "ConstantOfShape": lambda node, inputs: [np.full(
        tuple(int(d) for d in inputs[0]), np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)[0],
        dtype=np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).dtype)],
    "Range": lambda node, inputs: [np.arange(inputs[0], inputs[1], inputs[2]).astype(inputs[0].dtype)],
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
    "Not": lambda node, inputs: [np.logical_not(inputs[0])],
    "Where": lambda node, inputs: [np.where(inputs[0], inputs[1], inputs[2])],
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": lambda node, inputs: [_div(inputs[0], inputs[1])],
    "Pow": _binary(np.power),
    # fmod=1: C's fmod (the sign of A); fmod=0: NumPy's mod (the sign of B), as the IR op mod computes them
    "Mod": lambda node, inputs: [_binary(np.fmod if node.attrs.get("fmod", 0) else np.mod)(node, inputs)[0]],
    "Min": lambda node, inputs: [np.minimum.reduce(np.broadcast_arrays(*inputs)).astype(inputs[0].dtype)],
    "Max": lambda node, inputs: [np.maximum.reduce(np.broadcast_arrays(*inputs)).astype(inputs[0].dtype)],
    "Neg": _unary(np.negative),
    "Abs": _unary(np.abs),
    "Sqrt": _unary(np.sqrt),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Sigmoid": _unary(lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))),
    "Tanh": _unary(np.tanh),
    "LeakyRelu": lambda node, inputs: [np.where(inputs[0] >= 0, inputs[0],
                                                node.attrs.get("alpha", 0.01) * inputs[0]).astype(inputs[0].dtype)],
    "Clip": _clip,
    "Softmax": lambda node, inputs: [_coerced(_softmax, node, inputs[0])],
    "LogSoftmax": lambda node, inputs: [_coerced(_log_softmax, node, inputs[0])],
    "MatMul": lambda node, inputs: [np.matmul(inputs[0].astype(np.float64), inputs[1]).astype(inputs[0].dtype)],
    "Gemm": _gemm,
    "ArgMax": _argmax,
    "ReduceProd": _reduce_prod,
    # data movement (at run time: onnx_ops_movement.CONVERTERS)
    "Split": _split, "Tile": lambda node, inputs: [np.tile(inputs[0], [int(r) for r in inputs[1]])],
    "Pad": _pad, "DepthToSpace": _depth_to_space, "SpaceToDepth": _space_to_depth,
    "GatherElements": _gather_elements, "Trilu": _trilu,
    # comparisons and logic (Equal, Less, Greater, Not, Where above)
    "LessOrEqual": _compare(np.less_equal),
    "GreaterOrEqual": _compare(np.greater_equal),
    "And": _compare(np.logical_and),
    "Or": _compare(np.logical_or),
    "Xor": _compare(np.logical_xor),
    "IsNaN": lambda node, inputs: [np.isnan(inputs[0])],
    "IsInf": lambda node, inputs: [(np.isposinf(inputs[0]) & bool(node.attrs.get("detect_positive", 1)))
                                   | (np.isneginf(inputs[0]) & bool(node.attrs.get("detect_negative", 1)))],
}
# Shape and Size need only their input's type, which is known for run-time tensors too.
TYPE_ONLY = {"Shape", "Size"}
