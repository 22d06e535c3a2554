"""ONNX operators -> IR nodes: `CONVERTERS`, the table of every op read (frontends/onnx.py drives it,
with onnx_convert.Converter). The elementwise ops, MatMul/Gemm, reshapes, reductions and the like are
here; the families have their own modules: onnx_ops_conv (Conv, pools, ConvTranspose, Resize),
onnx_ops_movement (Gather, Slice, Split, Pad...), onnx_ops_norm (LayerNormalization & co., LRN, CumSum,
TopK, Einsum), onnx_ops_recurrent (LSTM, GRU, RNN).

`Converter.run(nodes)` walks the ONNX nodes in order. A node whose inputs are
all known at build time is computed with NumPy (onnx_fold.FOLDERS) and becomes
a constant; any other node goes to its entry in `CONVERTERS`, which emits IR
nodes (packager/ops.py) through `Converter.emit`: each emitted node is
normalized and its type inferred at once, so later converters see every
shape (Reshape's 0 and -1, auto_pad, ceil_mode and Squeeze axes are resolved
here, at build time). Constants that IR nodes read become weights, under their
ONNX names when they have one.

Rewrites (each exact up to float32 rounding; docs/onnx.md):
  Gemm / MatMul with a constant 2-D B  -> dense (W = B.T, times alpha)
  Add(dense without bias, constant [N]) -> the dense's bias
  BatchNormalization after Conv        -> folded into the conv's weight and bias
  Identity, Dropout, Cast to the same dtype -> no node
  Squeeze, Unsqueeze                    -> reshape
  LSTM, GRU, RNN                        -> one lstm / gru / rnn node per output read (Y, Y_h, Y_c)
  Split                                 -> one slice per output
"""

from __future__ import annotations

import math

import numpy as np

from packager import ops, spill
from packager.frontends import onnx_ops_conv, onnx_ops_movement, onnx_ops_norm, onnx_ops_recurrent
from packager.frontends.onnx_convert import Converter, OnnxNode, emits, identity, shape_error
from packager.frontends.onnx_fold import FOLDERS, axes_of, reshaped_shape, squeezed_shape, unsqueezed_shape


def _unary(op: str, **defaults):
    """ONNX op -> IR op `op` of the same input; defaults: IR attribute -> (ONNX attribute, ONNX default)."""
    @emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        attrs = {k: node.attrs.get(onnx_name, v) for k, (onnx_name, v) in defaults.items()}
        cv.emit(node, op, [node.inputs[0]], node.outputs[0], **attrs)
    return convert


def _binary(op: str):
    @emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        a, b = node.inputs[:2]
        if op == "add" and _fuse_bias(cv, node, a, b):
            return
        cv.emit(node, op, [a, b], node.outputs[0])
    return convert


def _fuse_bias(cv: Converter, node: OnnxNode, a: str, b: str) -> bool:
    """Add(dense without bias, constant broadcast along the last axis only) -> the dense's bias."""
    for x, c in ((a, b), (b, a)):
        dense, bias = cv.single_use(x), cv.const(c)
        if dense is None or bias is None or dense.op != "dense" or len(dense.inputs) != 2:
            continue
        out = cv.types[x].shape
        n = out[-1]
        if bias.dtype != np.float32 or bias.size != n or bias.ndim > len(out) or (bias.ndim and bias.shape[-1] != n):
            continue  # not one value per output column, or it would broadcast the output to a larger shape
        dense.inputs.append(cv.tensor(c) if bias.shape == (n,) else cv.weight(bias.reshape(n), f"{c}/bias", bias.dtype))
        cv.rename(x, node.outputs[0])
        return True
    return False


@emits("dense", "matmul")
def _matmul(cv: Converter, node: OnnxNode) -> None:
    a, b = node.inputs[:2]
    bv = cv.const(b)
    if bv is not None and bv.ndim == 2 and len(cv.type_of(a).shape) >= 2:
        w = cv.weight(spill.transposed(bv), f"{b}/T", bv.dtype)  # dense wants W [out, in]
        cv.emit(node, "dense", [a, w], node.outputs[0])
    else:
        cv.emit(node, "matmul", [a, b], node.outputs[0])


@emits("transpose", "dense", "matmul", "mul", "add")
def _gemm(cv: Converter, node: OnnxNode) -> None:
    """Y = alpha * A' @ B' + beta * C; with a constant B, a dense whose W is B' (times alpha)."""
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_b = node.attrs.get("transB", 0)
    if node.attrs.get("transA", 0):
        a = cv.emit(node, "transpose", [a], perm=[1, 0])
    out = node.outputs[0]
    bv, cval = cv.const(b), (cv.const(c) if c else None)
    if bv is not None:
        n = bv.shape[0] if trans_b else bv.shape[1]
        bias = None
        if cval is not None and cval.size in (1, n) and cval.ndim <= 2 and (cval.ndim == 0 or cval.shape[-1] == cval.size):
            # a scalar, [N] or [1, N]: one value per output column -> the dense's bias
            if cval.shape == (n,) and beta == 1.0:
                bias = cv.tensor(c)
            else:
                vec = np.broadcast_to(cval.reshape(-1), (n,)).astype(np.float64) * beta
                bias = cv.weight(vec, f"{c}/bias", cval.dtype)
            c = None
        if trans_b and alpha == 1.0:
            w = cv.tensor(b)
        else:
            wv = bv if trans_b else spill.transposed(bv)
            w = cv.weight(wv.astype(np.float64) * alpha if alpha != 1.0 else wv, f"{b}/W", bv.dtype)
        y = cv.emit(node, "dense", [a, w] + ([bias] if bias else []), None if c else out)
    else:
        if trans_b:
            b = cv.emit(node, "transpose", [b], perm=[1, 0])
        y = cv.emit(node, "matmul", [a, b], None if (c or alpha != 1.0) else out)
        if alpha != 1.0:
            y = cv.emit(node, "mul", [y, np.asarray(alpha, np.float32)], None if c else out)
    if c:
        if beta != 1.0:
            c = (cv.weight(cval.astype(np.float64) * beta, f"{c}/beta", cval.dtype) if cval is not None
                 else cv.emit(node, "mul", [c, np.asarray(beta, np.float32)]))
        cv.emit(node, "add", [y, c], out)




def _softmax(op: str):
    """Softmax / LogSoftmax. Before version 13 the input is coerced to 2-D, [d0 * .. * d(axis-1),
    d(axis) * .. * d(n-1)] (axis default 1), and normalized over the second dimension: a reshape around
    the IR op unless axis is the last one."""
    @emits(op, "reshape")
    def convert(cv: Converter, node: OnnxNode) -> None:
        x, out = node.inputs[0], node.outputs[0]
        if node.version >= 13:
            cv.emit(node, op, [x], out, axis=node.attrs.get("axis", -1))
            return
        shape = cv.type_of(x).shape
        axis = node.attrs.get("axis", 1)
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis <= len(shape):
            raise cv.error(node, f"axis {node.attrs.get('axis', 1)} is out of range for input '{x}' of rank {len(shape)}")
        if axis >= len(shape) - 1:
            if axis == len(shape):  # coerced to [N, 1]: every value is its own row
                raise cv.error(node, f"axis {axis} equal to the rank is not supported")
            cv.emit(node, op, [x], out, axis=-1)
            return
        flat = cv.emit(node, "reshape", [x], shape=[math.prod(shape[:axis]), math.prod(shape[axis:])])
        y = cv.emit(node, op, [flat], axis=-1)
        cv.emit(node, "reshape", [y], out, shape=list(shape))
    return convert


@emits("batchnorm")
def _batchnorm(cv: Converter, node: OnnxNode) -> None:
    if node.attrs.get("training_mode", 0):
        raise cv.error(node, "training_mode=1 is not supported (export the model in eval mode)")
    if node.version < 9 and node.attrs.get("spatial", 1) != 1:
        raise cv.error(node, f"spatial=0 (version {node.version}: per-activation statistics) is not supported")
    x, scale, bias, mean, var = node.inputs[:5]
    eps = float(node.attrs.get("epsilon", 1e-5))
    params = [cv.const(t) for t in (scale, bias, mean, var)]
    conv = cv.single_use(x)
    if conv is not None and conv.op == "conv2d" and all(p is not None for p in params) \
            and all(cv.const(t) is not None for t in conv.inputs[1:]):
        s, b, m, v = (p.astype(np.float64) for p in params)
        k = s / np.sqrt(v + eps)
        w = cv.const(conv.inputs[1])
        cb = cv.const(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 else np.zeros(w.shape[0])
        conv.inputs[1:] = [cv.weight(w.astype(np.float64) * k[:, None, None, None], f"{conv.inputs[1]}/bn", w.dtype),
                           cv.weight((cb - m) * k + b, f"{node.outputs[0]}/bias", w.dtype)]
        cv.rename(x, node.outputs[0])
        return
    cv.emit(node, "batchnorm", [x, scale, bias, mean, var], node.outputs[0], epsilon=eps)


@emits("clip")
def _clip(cv: Converter, node: OnnxNode) -> None:
    bounds = {}
    for i, key in ((1, "min"), (2, "max")):
        if len(node.inputs) > i and node.inputs[i]:
            value = cv.const(node.inputs[i])
            if value is None:
                raise cv.error(node, f"{key} ('{node.inputs[i]}') must be known at build time")
            bounds[key] = float(np.asarray(value).reshape(-1)[0])
        elif key in node.attrs:
            bounds[key] = float(node.attrs[key])
    cv.emit(node, "clip", [node.inputs[0]], node.outputs[0], **bounds)


def _reshape_to(cv: Converter, node: OnnxNode, shape) -> None:
    cv.emit(node, "reshape", [node.inputs[0]], node.outputs[0], shape=[int(d) for d in shape])


@emits("reshape")
def _reshape(cv: Converter, node: OnnxNode) -> None:
    target = cv.const(node.inputs[1])
    if target is None:
        raise cv.error(node, f"the shape ('{node.inputs[1]}') must be known at build time")
    x = cv.type_of(node.inputs[0])
    _reshape_to(cv, node, shape_error(cv, node, reshaped_shape, x.shape, target.reshape(-1),
                                       node.attrs.get("allowzero", 0)))


def _axes(cv: Converter, node: OnnxNode) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] and cv.const(node.inputs[1]) is None:
        raise cv.error(node, f"axes ('{node.inputs[1]}') must be known at build time")
    return axes_of(node, [None] + [cv.const(i) for i in node.inputs[1:]])


@emits("reshape")
def _squeeze(cv: Converter, node: OnnxNode) -> None:
    shape = cv.type_of(node.inputs[0]).shape
    _reshape_to(cv, node, shape_error(cv, node, squeezed_shape, shape, _axes(cv, node)))


@emits("reshape")
def _unsqueeze(cv: Converter, node: OnnxNode) -> None:
    axes = _axes(cv, node)
    if axes is None:
        raise cv.error(node, "axes are missing")
    shape = cv.type_of(node.inputs[0]).shape
    _reshape_to(cv, node, shape_error(cv, node, unsqueezed_shape, shape, axes))


@emits("reshape")
def _dropout(cv: Converter, node: OnnxNode) -> None:
    """Inference: the identity. From version 12 training_mode is an input; a true one is refused."""
    mode = cv.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if len(node.inputs) > 2 and node.inputs[2] and (mode is None or bool(np.asarray(mode).reshape(-1)[0])):
        raise cv.error(node, "training_mode must be a constant false (dsopack runs inference only)")
    identity(cv, node)


@emits("cast")
def _cast(cv: Converter, node: OnnxNode) -> None:
    if cv.type_of(node.inputs[0]).dtype == node.attrs["to"]:
        identity(cv, node)
    else:
        cv.emit(node, "cast", [node.inputs[0]], node.outputs[0], to=node.attrs["to"])


@emits("concat")
def _concat(cv: Converter, node: OnnxNode) -> None:
    inputs = [i for i in node.inputs if i]
    if len(inputs) == 1:
        identity(cv, node)
    else:
        cv.emit(node, "concat", inputs, node.outputs[0], axis=node.attrs["axis"])


@emits("transpose")
def _transpose(cv: Converter, node: OnnxNode) -> None:
    perm = node.attrs.get("perm")
    cv.emit(node, "transpose", [node.inputs[0]], node.outputs[0], perm=None if perm is None else list(perm))


@emits("reshape", "cast")
def _array_feature_extractor(cv: Converter, node: OnnxNode) -> None:
    """skl2onnx's label lookup classes[argmax]: supported when the classes are 0..n-1 (then it is the index)."""
    table = cv.const(node.inputs[0])
    if table is None or table.ndim != 1 or not np.array_equal(table, np.arange(table.size)):
        raise cv.error(node, "only a constant 1-D table holding 0, 1, ..., n-1 is supported "
                             "(train the classifier on labels 0..n-1)")
    index = cv.type_of(node.inputs[1])
    if index.dtype != "int64":
        raise cv.error(node, f"indices must be int64, '{node.inputs[1]}' is {index}")
    shape = [1, math.prod(index.shape)]  # onnxruntime's shape for a 1-D table
    if table.dtype.name == "int64":
        cv.emit(node, "reshape", [node.inputs[1]], node.outputs[0], shape=shape)
    else:  # the labels' dtype (skl2onnx writes int32 classes)
        flat = cv.emit(node, "reshape", [node.inputs[1]], shape=shape)
        cv.emit(node, "cast", [flat], node.outputs[0], to=table.dtype.name)


# ---- reductions (ReduceMean & co.), ArgMin, variadic Sum / Mean / Max / Min ----------------------------


def _reduce(op: str):
    """ReduceX -> IR op `op`: axes from the attribute (opset < 18) or a constant second input (18+),
    whichever the node has; keepdims, noop_with_empty_axes."""
    @emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        axes = _axes(cv, node)
        cv.emit(node, op, [node.inputs[0]], node.outputs[0], axes=axes or [], keepdims=node.attrs.get("keepdims", 1),
                noop_with_empty_axes=node.attrs.get("noop_with_empty_axes", 0))
    return convert


def _variadic(op: str, mean: bool = False):
    """Sum / Max / Min of n inputs -> a chain of n - 1 broadcasting `op` nodes, left to right (as the ONNX
    reference computes them: exact for max and min, the same float32 order for sums); Mean divides that
    sum by n. One input is the input itself."""
    @emits(*((op, "div") if mean else (op,)))
    def convert(cv: Converter, node: OnnxNode) -> None:
        inputs = [i for i in node.inputs if i]
        if len(inputs) == 1:
            identity(cv, node)
            return
        y = inputs[0]
        for k, x in enumerate(inputs[1:], 2):
            last = k == len(inputs) and not mean
            y = cv.emit(node, op, [y, x], node.outputs[0] if last else None)
        if mean:
            cv.emit(node, "div", [y, np.asarray(len(inputs), cv.type_of(y).dtype)], node.outputs[0])
    return convert


@emits("gelu", "gelu_tanh")
def _gelu(cv: Converter, node: OnnxNode) -> None:
    approximate = node.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise cv.error(node, f"approximate '{approximate}' is not one of none, tanh")
    cv.emit(node, "gelu" if approximate == "none" else "gelu_tanh", [node.inputs[0]], node.outputs[0])


MOD_FLOAT_FLOOR_OPSET = 28  # Mod-28 defines fmod=0 on floats (A - floor(A / B) * B); Mod-13 requires fmod=1


@emits("mod")
def _mod(cv: Converter, node: OnnxNode) -> None:
    fmod = node.attrs.get("fmod", 0)
    a = cv.type_of(node.inputs[0])
    if fmod == 0 and a.dtype in ops.FLOAT_DTYPES and node.opset < MOD_FLOAT_FLOOR_OPSET:
        raise cv.error(node, f"fmod=0 on floating-point inputs ('{node.inputs[0]}' is {a}) is invalid at opset "
                             f"{node.opset}: Mod before opset {MOD_FLOAT_FLOOR_OPSET} requires fmod=1 for floats")
    cv.emit(node, "mod", node.inputs[:2], node.outputs[0], fmod=fmod)





# ---- comparisons, logic, IsNaN / IsInf, Where: bool results (one byte 0/1) ---------------------------
# Their versions differ only in the element types they allow (Equal-7 bool and integers, 11 adds floats, 19
# strings; Less/Greater-9 add integers; IsNaN/IsInf-20 float16), which onnx.checker holds the model to; the
# registry's dtypes say which of them dsopack computes.


def _elementwise(op: str):
    """ONNX op -> IR op `op` over all the node's inputs (Where: condition, X, Y)."""
    @emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        cv.emit(node, op, node.inputs, node.outputs[0])
    return convert


CONVERTERS = {
    "Add": _binary("add"), "Sub": _binary("sub"), "Mul": _binary("mul"), "Div": _binary("div"),
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "LeakyRelu": _unary("leaky_relu", alpha=("alpha", 0.01)),
    "Clip": _clip,
    "Abs": _unary("abs"), "Neg": _unary("neg"), "Exp": _unary("exp"), "Log": _unary("log"),
    "Sqrt": _unary("sqrt"), "Reciprocal": _unary("reciprocal"), "Erf": _unary("erf"),
    "Sin": _unary("sin"), "Cos": _unary("cos"), "Floor": _unary("floor"), "Ceil": _unary("ceil"),
    "Round": _unary("round"), "Sign": _unary("sign"),
    "Pow": _binary("pow"), "Mod": _mod, "PRelu": _binary("prelu"),
    "Gelu": _gelu,
    "Elu": _unary("elu", alpha=("alpha", 1.0)),
    "Selu": _unary("selu", alpha=("alpha", 1.67326319217681884765625), gamma=("gamma", 1.05070102214813232421875)),
    "Softplus": _unary("softplus"), "Softsign": _unary("softsign"),
    "HardSigmoid": _unary("hard_sigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _unary("hard_swish"), "Mish": _unary("mish"),
    "Celu": _unary("celu", alpha=("alpha", 1.0)),
    "ThresholdedRelu": _unary("thresholded_relu", alpha=("alpha", 1.0)),
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    "ArgMax": _unary("argmax", axis=("axis", 0), keepdims=("keepdims", 1), select_last_index=("select_last_index", 0)),
    "MatMul": _matmul, "Gemm": _gemm,
    "BatchNormalization": _batchnorm,
    "Flatten": _unary("flatten", axis=("axis", 1)),
    "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": _transpose, "Concat": _concat,
    "Identity": identity, "Dropout": _dropout, "Cast": _cast,
    "ai.onnx.ml.ArrayFeatureExtractor": _array_feature_extractor,
    "ReduceSum": _reduce("reduce_sum"), "ReduceMean": _reduce("reduce_mean"), "ReduceMax": _reduce("reduce_max"),
    "ReduceMin": _reduce("reduce_min"), "ReduceProd": _reduce("reduce_prod"), "ReduceL2": _reduce("reduce_l2"),
    "ReduceSumSquare": _reduce("reduce_sum_square"),
    "ArgMin": _unary("argmin", axis=("axis", 0), keepdims=("keepdims", 1), select_last_index=("select_last_index", 0)),
    "Sum": _variadic("add"), "Mean": _variadic("add", mean=True), "Max": _variadic("maximum"),
    "Min": _variadic("minimum"),
    # comparisons, logic, IsNaN / IsInf, Where
    "Equal": _binary("equal"), "Less": _binary("less"), "LessOrEqual": _binary("less_equal"),
    "Greater": _binary("greater"), "GreaterOrEqual": _binary("greater_equal"),
    "Not": _unary("logical_not"), "And": _binary("logical_and"), "Or": _binary("logical_or"),
    "Xor": _binary("logical_xor"), "IsNaN": _unary("isnan"),
    "IsInf": _unary("isinf", detect_positive=("detect_positive", 1), detect_negative=("detect_negative", 1)),
    "Where": _elementwise("where"),
    # the families' own tables
    **onnx_ops_conv.CONVERTERS, **onnx_ops_movement.CONVERTERS, **onnx_ops_norm.CONVERTERS,
    **onnx_ops_recurrent.CONVERTERS,
}
SUPPORTED = set(CONVERTERS) | set(FOLDERS)

