"""ONNX operators -> IR nodes (frontends/onnx.py drives it).

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

from packager import ops
from packager.frontends.onnx_fold import (FOLDERS, TYPE_ONLY, axes_of, pad_parameters,
                                          reshaped_shape, resolved_axes, split_sizes, squeezed_shape, unsqueezed_shape)
from packager.ir import BuildError, Node, TensorType


class OnnxNode:
    """An ONNX node as the converters see it: op, name, inputs ('' = absent), outputs, attrs, opset, and
    version: the since_version of the op's schema at that opset (0 outside the default domain)."""

    def __init__(self, op: str, domain: str, name: str, inputs: list[str], outputs: list[str], attrs: dict,
                 opset: int, version: int = 0):
        self.op, self.domain, self.name = op, domain, name
        self.inputs, self.outputs, self.attrs, self.opset = inputs, outputs, attrs, opset
        self.version = version

    @property
    def op_type(self) -> str:
        """'Conv', or 'ai.onnx.ml.ArrayFeatureExtractor' outside the default domain."""
        return self.op if self.domain in ("", "ai.onnx") else f"{self.domain}.{self.op}"

    def describe(self) -> str:
        return f"node '{self.name}' ({self.op_type})"


class Converter:
    def __init__(self, where: str, inputs: dict[str, TensorType], constants: dict[str, np.ndarray],
                 uses: dict[str, int], taken: set[str]):
        self.where = where
        self.types: dict[str, TensorType] = dict(inputs)  # run-time tensors: graph inputs, node outputs
        self.consts: dict[str, np.ndarray] = dict(constants)  # build-time tensors
        self.alias: dict[str, str] = {}  # ONNX name -> the tensor that holds it (Identity & co.)
        self.uses = uses  # ONNX name -> number of readers (nodes and graph outputs)
        self.taken = set(taken)  # every name in the model: fresh names avoid them
        self.nodes: list[Node] = []
        self.producer: dict[str, Node] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.node_names: set[str] = set()

    # ---- errors and names

    def error(self, node: OnnxNode, message: str) -> BuildError:
        return BuildError(f"{self.where}: {node.describe()}: {message}")

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    # ---- what a tensor is

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, name: str) -> np.ndarray | None:
        """The build-time value of ONNX tensor `name`, or None if it is computed at run time."""
        return self.consts.get(self.resolve(name)) if name else None

    def type_of(self, name: str) -> TensorType:
        name = self.resolve(name)
        if name in self.consts:
            a = self.consts[name]
            return TensorType(tuple(int(d) for d in a.shape), a.dtype.name)
        return self.types[name]

    def tensor(self, ref) -> str:
        """The IR name for an ONNX tensor name or a new constant (np.ndarray): constants become weights."""
        if isinstance(ref, np.ndarray):
            return self.weight(ref, "const", ref.dtype)
        name = self.resolve(ref)
        if name in self.consts and name not in self.weights:
            self.weights[name] = np.require(self.consts[name], requirements="C")
        return name

    def weight(self, array: np.ndarray, base: str, dtype) -> str:
        name = self.fresh(base)
        self.weights[name] = np.require(np.asarray(array).astype(dtype), requirements="C")
        self.consts[name] = self.weights[name]
        return name

    # ---- emitting IR

    def emit(self, node: OnnxNode, op: str, inputs: list, output: str | None = None, **attrs) -> str:
        """Append an IR node reading `inputs` (ONNX names, IR names or arrays); returns its output's name."""
        assert op in CONVERTERS[node.op_type].emits, f"the {node.op_type} converter does not declare IR op {op}"
        output = output or self.fresh(f"{node.outputs[0]}/{op}")
        name = node.name if node.name not in self.node_names else self.fresh_node(f"{node.name}/{op}")
        ir = Node(op, [self.tensor(i) for i in inputs], output, attrs, name)
        self.node_names.add(name)
        try:
            ops.normalize(ir)
            t = ops.infer(ir, [self.type_of(i) for i in ir.inputs])
        except BuildError as e:
            raise self.error(node, f"as IR {e}") from None
        self.nodes.append(ir)
        self.types[output] = t
        self.producer[output] = ir
        self.taken.add(output)
        return output

    def fresh_node(self, base: str) -> str:
        name, k = base, 1
        while name in self.node_names:
            name, k = f"{base}_{k}", k + 1
        return name

    def rename(self, old: str, new: str) -> None:
        """Give the run-time tensor `old` (written by an IR node, read by nobody yet) the name `new`."""
        ir = self.producer.pop(old)
        ir.output = new
        self.producer[new] = ir
        self.types[new] = self.types.pop(old)

    def single_use(self, name: str) -> Node | None:
        """The IR node writing ONNX tensor `name` if this node is its only reader and no alias hides it."""
        if name in self.alias or self.uses.get(name, 0) != 1:
            return None
        return self.producer.get(name)

    # ---- the walk

    def run(self, nodes: list[OnnxNode]) -> None:
        for node in nodes:
            present = [i for i in node.inputs if i]
            if node.op_type in FOLDERS and (node.op_type in TYPE_ONLY or all(self.const(i) is not None for i in present)):
                self._fold(node)
            elif node.op_type in CONVERTERS:
                CONVERTERS[node.op_type](self, node)
            else:
                dynamic = [i for i in present if self.const(i) is None]
                raise self.error(node, f"dsopack computes {node.op} only at build time (constant folding), "
                                       f"but input '{dynamic[0]}' is computed at run time")
            for out in node.outputs[1:]:
                if out and self.uses.get(out) and out not in self.consts and out not in self.types:
                    raise self.error(node, f"output '{out}' is not supported (only the first output is computed)")

    def _fold(self, node: OnnxNode) -> None:
        if node.op_type in TYPE_ONLY:
            t = self.type_of(node.inputs[0])
            values = [np.zeros(t.shape, np.uint8)]  # only the shape matters
        else:
            values = [None if not i else self.const(i) for i in node.inputs]
        try:
            results = FOLDERS[node.op_type](node, values)
        except Exception as e:  # NumPy's message says what did not fit
            raise self.error(node, f"cannot compute it at build time: {e}") from None
        for out, value in zip(node.outputs, results):
            if out:
                self.consts[out] = np.asarray(value)


# ---------------------------------------------------------------------------
# Converters: one per ONNX op type. Each declares the IR ops it emits (`emits`:
# Converter.emit holds it to that, tests/test_op_registry.py checks that the
# registry has them).


def _emits(*ir_ops: str):
    def declare(convert):
        convert.emits = ir_ops
        return convert
    return declare


def _unary(op: str, **defaults):
    """ONNX op -> IR op `op` of the same input; defaults: IR attribute -> (ONNX attribute, ONNX default)."""
    @_emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        attrs = {k: node.attrs.get(onnx_name, v) for k, (onnx_name, v) in defaults.items()}
        cv.emit(node, op, [node.inputs[0]], node.outputs[0], **attrs)
    return convert


def _binary(op: str):
    @_emits(op)
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


@_emits("dense", "matmul")
def _matmul(cv: Converter, node: OnnxNode) -> None:
    a, b = node.inputs[:2]
    bv = cv.const(b)
    if bv is not None and bv.ndim == 2 and len(cv.type_of(a).shape) >= 2:
        w = cv.weight(bv.T, f"{b}/T", bv.dtype)  # dense wants W [out, in]
        cv.emit(node, "dense", [a, w], node.outputs[0])
    else:
        cv.emit(node, "matmul", [a, b], node.outputs[0])


@_emits("transpose", "dense", "matmul", "mul", "add")
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
            wv = bv if trans_b else bv.T
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


def _pads(cv: Converter, node: OnnxNode, in_sizes, kernel, strides, dilations) -> list[int]:
    """ONNX pads [x1_begin, x2_begin.., x1_end, x2_end..] from pads or auto_pad, for len(in_sizes) dims."""
    nd = len(in_sizes)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto == "NOTSET":
        pads = list(node.attrs.get("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd:
            raise cv.error(node, f"pads {pads} must have {2 * nd} values for a {nd}-D window")
        return pads
    if auto == "VALID":
        return [0] * (2 * nd)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise cv.error(node, f"auto_pad '{auto}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _spatial(cv: Converter, node: OnnxNode, what: str = "windows", most: int = 2) -> int:
    """The number of spatial dims of the node's input: 1 (N, C, L), 2 (N, C, H, W), 3 if `most` allows."""
    x = cv.type_of(node.inputs[0])
    if not 3 <= len(x.shape) <= most + 2:
        shapes = "3-D NCL or 4-D NCHW input" if most == 2 else "3-D NCL, 4-D NCHW or 5-D NCDHW input"
        dims = [f"{d}-D" for d in range(1, most + 1)]
        raise cv.error(node, f"only {', '.join(dims[:-1])} and {dims[-1]} {what} ({shapes}) are supported; "
                             f"input '{node.inputs[0]}' is {x}")
    return len(x.shape) - 2


def _window_attrs(cv: Converter, node: OnnxNode, kernel=None, what: str = "windows", most: int = 2):
    """(x, kernel, strides, dilations, pads) of a window of 1 to `most` dims; pads as ONNX orders them."""
    nd = _spatial(cv, node, what, most)
    x = cv.type_of(node.inputs[0])
    kernel = list(node.attrs.get("kernel_shape", kernel or []))
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    for name, value in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if len(value) != nd:
            raise cv.error(node, f"{name} {value} must have {nd} values for a {nd}-D window")
    pads = _pads(cv, node, x.shape[2:], kernel, strides, dilations)
    return x, kernel, strides, dilations, pads


# A 1-D window (N, C, L) runs as a 2-D one of height 1 (N, C, 1, L): a reshape on each side (a copy of
# the tensor; small next to the window's work), a constant weight reshaped at build time.

def _as_2d(values: list, one: int) -> list:
    """[L] -> [one, L]; [begin, end] pads -> [0, begin, 0, end]; 2-D values stay."""
    if len(values) == 1:
        return [one, values[0]]
    if len(values) == 2 and one == 0:
        return [0, values[0], 0, values[1]]
    return list(values)


def _lift(cv: Converter, node: OnnxNode, name: str) -> str:
    """Tensor `name` [N, C, L] (or a weight [O, I, K]) as [N, C, 1, L]: a new weight if it is a constant."""
    shape = cv.type_of(name).shape
    target = list(shape[:2]) + [1] + list(shape[2:])
    value = cv.const(name)
    if value is not None:
        return cv.weight(value.reshape(target), f"{name}/2d", value.dtype)
    return cv.emit(node, "reshape", [name], shape=target)


def _windowed(cv: Converter, node: OnnxNode, op: str, inputs: list, nd: int, lifted: tuple[int, ...] = (0,),
              output: str | None = None, **attrs) -> str:
    """Emit IR `op` over `inputs` into `output` (default: the node's); for a 1-D window the inputs at
    `lifted` get height 1, and the output drops it again. Returns the output's name."""
    output = output or node.outputs[0]
    if nd == 2:
        return cv.emit(node, op, inputs, output, **attrs)
    inputs = [_lift(cv, node, t) if i in lifted else t for i, t in enumerate(inputs)]
    y = cv.emit(node, op, inputs, **attrs)
    shape = cv.types[y].shape
    return cv.emit(node, "reshape", [y], output, shape=[shape[0], shape[1], shape[3]])


@_emits("conv2d", "reshape")
def _conv(cv: Converter, node: OnnxNode) -> None:
    w = cv.type_of(node.inputs[1])
    nd = _spatial(cv, node, "convolution")
    if len(w.shape) != nd + 2:
        raise cv.error(node, f"weight '{node.inputs[1]}' is {w}: {nd + 2}-D for a {nd}-D convolution")
    _, kernel, strides, dilations, pads = _window_attrs(cv, node, w.shape[2:], "convolution")
    inputs = [i for i in node.inputs[:3] if i]
    _windowed(cv, node, "conv2d", inputs, nd, (0, 1), strides=_as_2d(strides, 1), pads=_as_2d(pads, 0),
              dilations=_as_2d(dilations, 1), groups=node.attrs.get("group", 1))


def _pool(op: str):
    @_emits(op, "reshape", "mul")
    def convert(cv: Converter, node: OnnxNode) -> None:
        x, kernel, strides, dilations, pads = _window_attrs(cv, node, most=3)
        nd = len(kernel)
        attrs = {}
        if op == "avgpool2d":
            attrs["count_include_pad"] = node.attrs.get("count_include_pad", 0)
        given = list(pads)
        if node.attrs.get("ceil_mode", 0):
            for d in range(nd):
                size, k, s = x.shape[2 + d], (kernel[d] - 1) * dilations[d] + 1, strides[d]
                span = size + pads[d] + pads[d + nd] - k
                out = -(-span // s) + 1
                if (out - 1) * s >= size + pads[d]:  # the last window must start inside the input
                    out -= 1
                pads[d + nd] += max(0, (out - 1) * s + k - (size + pads[d] + pads[d + nd]))
        rescale = attrs.get("count_include_pad") and pads != given
        output = cv.fresh(f"{node.outputs[0]}/sum") if rescale else None
        if nd == 3:
            y = _pool_3d(cv, node, op, x.shape, kernel, strides, dilations, pads, output, attrs)
        else:
            y = _windowed(cv, node, op, [node.inputs[0]], nd, output=output, kernel=_as_2d(kernel, 1),
                          strides=_as_2d(strides, 1), pads=_as_2d(pads, 0), dilations=_as_2d(dilations, 1), **attrs)
        if rescale:
            factor = _include_pad_rescale(x.shape[2:], cv.types[y].shape[2:], kernel, strides, dilations, given)
            cv.emit(node, "mul", [y, factor.reshape((1, 1) + factor.shape)], node.outputs[0])
    return convert


def _pool_3d(cv: Converter, node: OnnxNode, op: str, shape, kernel, strides, dilations, pads, output, attrs) -> str:
    """A 3-D pool as two 2-D ones: over (H, W) of [N, C * D, H, W], then over D of [N, C, D, H' * W']. A max
    over a box is the max over each axis in turn; so is a mean, its taps inside the input being a product
    of per-axis sets (and the kernel's size, with count_include_pad, a product too)."""
    n, c, d, h, w = shape
    planes = cv.emit(node, "reshape", [node.inputs[0]], shape=[n, c * d, h, w])
    hw = cv.emit(node, op, [planes], kernel=kernel[1:], strides=strides[1:], dilations=dilations[1:],
                 pads=[pads[1], pads[2], pads[4], pads[5]], **attrs)
    oh, ow = cv.types[hw].shape[2:]
    depth = cv.emit(node, "reshape", [hw], shape=[n, c, d, oh * ow])
    y = cv.emit(node, op, [depth], kernel=[kernel[0], 1], strides=[strides[0], 1], dilations=[dilations[0], 1],
                pads=[pads[0], 0, pads[3], 0], **attrs)
    return cv.emit(node, "reshape", [y], output or node.outputs[0], shape=[n, c, cv.types[y].shape[2], oh, ow])


def _include_pad_rescale(sizes, outs, kernel, strides, dilations, pads) -> np.ndarray:
    """count_include_pad=1 with ceil_mode: a window that runs past the given padding averages over its taps
    inside the padded input only (ONNX's reference, and PyTorch). The IR op, whose padding was extended to
    hold those windows, divides by the whole kernel: this factor (kernel size / taps inside) corrects it."""
    nd = len(sizes)
    inside = np.ones(tuple(outs))
    for d in range(nd):
        end = sizes[d] + pads[d + nd]  # the padded input's end, from the window's start at -pads[d]
        starts = np.arange(outs[d]) * strides[d] - pads[d]
        taps = (starts[:, None] + np.arange(kernel[d])[None, :] * dilations[d] < end).sum(axis=1)
        inside = inside * taps.reshape([-1 if k == d else 1 for k in range(nd)])
    return (math.prod(kernel) / inside).astype(np.float32)


def _global_pool(op: str, reduce: str):
    """global_avgpool, or a maxpool2d whose kernel is the whole plane; another rank than 4 (N, C, L...) is
    the reduction `reduce` over every axis after C."""
    @_emits(op, reduce)
    def convert(cv: Converter, node: OnnxNode) -> None:
        x = cv.type_of(node.inputs[0])
        if len(x.shape) < 3:
            raise cv.error(node, f"input '{node.inputs[0]}' is {x}: it needs N, C and at least one spatial dim")
        if len(x.shape) != 4:
            cv.emit(node, reduce, [node.inputs[0]], node.outputs[0], axes=list(range(2, len(x.shape))), keepdims=1)
        elif op == "global_avgpool":
            cv.emit(node, op, [node.inputs[0]], node.outputs[0])
        else:
            cv.emit(node, op, [node.inputs[0]], node.outputs[0], kernel=list(x.shape[2:]))
    return convert


def _softmax(op: str):
    """Softmax / LogSoftmax. Before version 13 the input is coerced to 2-D, [d0 * .. * d(axis-1),
    d(axis) * .. * d(n-1)] (axis default 1), and normalized over the second dimension: a reshape around
    the IR op unless axis is the last one."""
    @_emits(op, "reshape")
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


@_emits("batchnorm")
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


@_emits("clip")
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


def _shape_error(cv: Converter, node: OnnxNode, fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        raise cv.error(node, str(e)) from None


@_emits("reshape")
def _reshape(cv: Converter, node: OnnxNode) -> None:
    target = cv.const(node.inputs[1])
    if target is None:
        raise cv.error(node, f"the shape ('{node.inputs[1]}') must be known at build time")
    x = cv.type_of(node.inputs[0])
    _reshape_to(cv, node, _shape_error(cv, node, reshaped_shape, x.shape, target.reshape(-1),
                                       node.attrs.get("allowzero", 0)))


def _axes(cv: Converter, node: OnnxNode) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] and cv.const(node.inputs[1]) is None:
        raise cv.error(node, f"axes ('{node.inputs[1]}') must be known at build time")
    return axes_of(node, [None] + [cv.const(i) for i in node.inputs[1:]])


@_emits("reshape")
def _squeeze(cv: Converter, node: OnnxNode) -> None:
    shape = cv.type_of(node.inputs[0]).shape
    _reshape_to(cv, node, _shape_error(cv, node, squeezed_shape, shape, _axes(cv, node)))


@_emits("reshape")
def _unsqueeze(cv: Converter, node: OnnxNode) -> None:
    axes = _axes(cv, node)
    if axes is None:
        raise cv.error(node, "axes are missing")
    shape = cv.type_of(node.inputs[0]).shape
    _reshape_to(cv, node, _shape_error(cv, node, unsqueezed_shape, shape, axes))


@_emits("reshape")  # no node here; a graph output that aliases another tensor is copied by one (onnx._finish)
def _identity(cv: Converter, node: OnnxNode) -> None:
    cv.alias[node.outputs[0]] = cv.resolve(node.inputs[0])


@_emits("reshape")
def _dropout(cv: Converter, node: OnnxNode) -> None:
    """Inference: the identity. From version 12 training_mode is an input; a true one is refused."""
    mode = cv.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if len(node.inputs) > 2 and node.inputs[2] and (mode is None or bool(np.asarray(mode).reshape(-1)[0])):
        raise cv.error(node, "training_mode must be a constant false (dsopack runs inference only)")
    _identity(cv, node)


@_emits("cast")
def _cast(cv: Converter, node: OnnxNode) -> None:
    if cv.type_of(node.inputs[0]).dtype == node.attrs["to"]:
        _identity(cv, node)
    else:
        cv.emit(node, "cast", [node.inputs[0]], node.outputs[0], to=node.attrs["to"])


@_emits("concat")
def _concat(cv: Converter, node: OnnxNode) -> None:
    inputs = [i for i in node.inputs if i]
    if len(inputs) == 1:
        _identity(cv, node)
    else:
        cv.emit(node, "concat", inputs, node.outputs[0], axis=node.attrs["axis"])


@_emits("transpose")
def _transpose(cv: Converter, node: OnnxNode) -> None:
    perm = node.attrs.get("perm")
    cv.emit(node, "transpose", [node.inputs[0]], node.outputs[0], perm=None if perm is None else list(perm))


@_emits("reshape", "cast")
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
    @_emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        axes = _axes(cv, node)
        cv.emit(node, op, [node.inputs[0]], node.outputs[0], axes=axes or [], keepdims=node.attrs.get("keepdims", 1),
                noop_with_empty_axes=node.attrs.get("noop_with_empty_axes", 0))
    return convert


def _variadic(op: str, mean: bool = False):
    """Sum / Max / Min of n inputs -> a chain of n - 1 broadcasting `op` nodes, left to right (as the ONNX
    reference computes them: exact for max and min, the same float32 order for sums); Mean divides that
    sum by n. One input is the input itself."""
    @_emits(*((op, "div") if mean else (op,)))
    def convert(cv: Converter, node: OnnxNode) -> None:
        inputs = [i for i in node.inputs if i]
        if len(inputs) == 1:
            _identity(cv, node)
            return
        y = inputs[0]
        for k, x in enumerate(inputs[1:], 2):
            last = k == len(inputs) and not mean
            y = cv.emit(node, op, [y, x], node.outputs[0] if last else None)
        if mean:
            cv.emit(node, "div", [y, np.asarray(len(inputs), cv.type_of(y).dtype)], node.outputs[0])
    return convert


@_emits("gelu", "gelu_tanh")
def _gelu(cv: Converter, node: OnnxNode) -> None:
    approximate = node.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise cv.error(node, f"approximate '{approximate}' is not one of none, tanh")
    cv.emit(node, "gelu" if approximate == "none" else "gelu_tanh", [node.inputs[0]], node.outputs[0])


MOD_FLOAT_FLOOR_OPSET = 28  # Mod-28 defines fmod=0 on floats (A - floor(A / B) * B); Mod-13 requires fmod=1


@_emits("mod")
def _mod(cv: Converter, node: OnnxNode) -> None:
    fmod = node.attrs.get("fmod", 0)
    a = cv.type_of(node.inputs[0])
    if fmod == 0 and a.dtype in ops.FLOAT_DTYPES and node.opset < MOD_FLOAT_FLOOR_OPSET:
        raise cv.error(node, f"fmod=0 on floating-point inputs ('{node.inputs[0]}' is {a}) is invalid at opset "
                             f"{node.opset}: Mod before opset {MOD_FLOAT_FLOOR_OPSET} requires fmod=1 for floats")
    cv.emit(node, "mod", node.inputs[:2], node.outputs[0], fmod=fmod)



# ---- recurrent: LSTM, GRU, RNN (versions 7, 14 adds layout, 22 adds types) -------------------------------

# ONNX name -> IR op (ops.RNN_ACTIVATIONS). Not taken: Affine and ScaledTanh (no IR op), ThresholdedRelu (the spec
# gives recurrent activations no default alpha: onnxruntime uses 0, the ThresholdedRelu op 1).
RNN_ACTIVATION_NAMES = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "LeakyRelu": "leaky_relu",
                        "HardSigmoid": "hard_sigmoid", "Elu": "elu", "Softsign": "softsign", "Softplus": "softplus"}


def _rnn_activations(cv: Converter, node: OnnxNode, count: int) -> list[int] | None:
    """The activations (`count` of them: the op's per direction, times the directions) as indices into
    ops.RNN_ACTIVATIONS, or None for the defaults. activation_alpha and activation_beta are refused: each
    activation runs with its ONNX default parameters."""
    given = [k for k in ("activation_alpha", "activation_beta") if k in node.attrs]
    if given:
        raise cv.error(node, f"{' and '.join(given)} not supported (activations run with their default "
                             f"alpha and beta)")
    names = node.attrs.get("activations")
    if names is None:
        return None
    if len(names) != count:
        raise cv.error(node, f"activations {names} must be {count} functions (one per gate function and direction)")
    by_lower = {k.lower(): v for k, v in RNN_ACTIVATION_NAMES.items()}  # onnxruntime reads them in any case
    unknown = [a for a in names if a.lower() not in by_lower]
    if unknown:
        raise cv.error(node, f"activations {unknown} not supported (supported: {', '.join(RNN_ACTIVATION_NAMES)})")
    return [ops.RNN_ACTIVATIONS.index(by_lower[a.lower()]) for a in names]


def _recurrent(op: str):
    """LSTM / GRU / RNN -> one IR `op` node per ONNX output a reader uses (Y, Y_h, Y_c), each computing the
    recurrence again: the IR has one output per node. sequence_lens must be absent or a constant equal to
    the sequence length for every batch row; an absent input before a present one becomes zeros."""
    @_emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        ins = node.inputs + [""] * (8 - len(node.inputs))
        x, w = cv.type_of(ins[0]), cv.type_of(ins[1])
        layout = node.attrs.get("layout", 0) if node.version >= 14 else 0
        direction = node.attrs.get("direction", "forward")
        if direction not in ops.RNN_DIRECTIONS:
            raise cv.error(node, f"direction '{direction}' is not one of {', '.join(ops.RNN_DIRECTIONS)}")
        if len(x.shape) != 3 or len(w.shape) != 3:
            raise cv.error(node, f"X ('{ins[0]}' is {x}) and W ('{ins[1]}' is {w}) must be 3-D")
        gates = len(ops.RNN_GATES[op])
        hidden = node.attrs.get("hidden_size", w.shape[1] // gates)
        if hidden * gates != w.shape[1]:
            raise cv.error(node, f"hidden_size {hidden} does not match W ('{ins[1]}' is {w}: {gates} gates)")
        seq, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
        if ins[4]:
            lens = cv.const(ins[4])
            if lens is None or lens.shape != (batch,) or np.any(lens != seq):
                shown = "computed at run time" if lens is None else f"{lens.tolist()}"
                raise cv.error(node, f"sequence_lens ('{ins[4]}', {shown}) is supported only as a constant "
                                     f"equal to the sequence length ({seq}) for each of the {batch} batch rows")
        dirs = 2 if direction == "bidirectional" else 1
        state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
        zeros = {3: (dirs, 2 * gates * hidden), 5: state, 6: state, 7: (dirs, 3 * hidden)}
        wanted = [3, 5, 6, 7] if op == "lstm" else [3, 5]  # ONNX inputs the IR node takes after X, W, R
        last = max([i for i in wanted if ins[i]], default=2)
        inputs = ins[:3] + [ins[i] or np.zeros(zeros[i], np.dtype(x.dtype)) for i in wanted if i <= last]
        attrs = dict(direction=ops.RNN_DIRECTIONS.index(direction), layout=layout,
                     clip=float(node.attrs.get("clip", math.inf)))
        acts = _rnn_activations(cv, node, len(ops.RNN_DEFAULT_ACTIVATIONS[op]) * dirs)
        if acts is not None:
            attrs["activations"] = acts
        attrs.update({"input_forget": node.attrs.get("input_forget", 0)} if op == "lstm" else
                     {"linear_before_reset": node.attrs.get("linear_before_reset", 0)} if op == "gru" else {})
        for k, out in enumerate(node.outputs):
            if out and cv.uses.get(out):
                cv.emit(node, op, inputs, out, returns=k, **attrs)
    return convert
# ---- data movement at run time: Gather, GatherElements, Slice, Split, Expand, Tile, Pad, DepthToSpace,
# SpaceToDepth, Trilu (with every input known at build time, onnx_fold computes them instead) ---------------

INT64_MAX = np.iinfo(np.int64).max


def _build_time(cv: Converter, node: OnnxNode, index: int, what: str, dtype=np.int64) -> np.ndarray | None:
    """Input `index` (named `what` in the error) as a flat array (of `dtype`, None: its own), None if absent;
    it must be a constant."""
    if len(node.inputs) <= index or not node.inputs[index]:
        return None
    value = cv.const(node.inputs[index])
    if value is None:
        raise cv.error(node, f"{what} ('{node.inputs[index]}') must be known at build time")
    value = np.asarray(value).reshape(-1)
    return value if dtype is None else value.astype(dtype)


@_emits("gather")
def _gather_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "gather", node.inputs[:2], node.outputs[0], axis=node.attrs.get("axis", 0))


@_emits("gather_elements")
def _gather_elements(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "gather_elements", node.inputs[:2], node.outputs[0], axis=node.attrs.get("axis", 0))


def _emit_slice(cv: Converter, node: OnnxNode, output: str, ndim: int, axes, starts, ends, steps) -> None:
    """An IR slice of node.inputs[0]: full-rank starts/ends/steps, the untouched dims whole."""
    full = {"starts": [0] * ndim, "ends": [INT64_MAX] * ndim, "steps": [1] * ndim}
    for a, s, e, st in zip(axes, starts, ends, steps):
        full["starts"][a], full["ends"][a], full["steps"][a] = int(s), int(e), int(st)
    cv.emit(node, "slice", [node.inputs[0]], output, **full)


@_emits("slice")
def _slice_op(cv: Converter, node: OnnxNode) -> None:
    """starts, ends, axes: attributes before version 10, then constant inputs (with steps)."""
    ndim = len(cv.type_of(node.inputs[0]).shape)
    if node.version < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = _build_time(cv, node, 1, "starts"), _build_time(cv, node, 2, "ends")
        axes, steps = _build_time(cv, node, 3, "axes"), _build_time(cv, node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cv.error(node, f"starts, ends, axes and steps must have one value each per sliced axis "
                             f"(got {len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    axes = _shape_error(cv, node, resolved_axes, axes, ndim)
    _emit_slice(cv, node, node.outputs[0], ndim, axes, starts, ends, steps)


@_emits("slice")
def _split(cv: Converter, node: OnnxNode) -> None:
    """One IR slice per output. Sizes: the `split` attribute (before 13) or constant input (13+); else
    num_outputs (18+: chunks of ceil(d / n), the last smaller) or the outputs' count (equal parts)."""
    shape = cv.type_of(node.inputs[0]).shape
    split = node.attrs.get("split") if node.version < 13 else _build_time(cv, node, 1, "split")
    axis, sizes = _shape_error(cv, node, split_sizes, node, shape, split)
    begin = 0
    for out, size in zip(node.outputs, sizes):
        if out:
            _emit_slice(cv, node, out, len(shape), [axis], [begin], [begin + size], [1])
        begin += size


@_emits("expand")
def _expand_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "expand", [node.inputs[0]], node.outputs[0],
            shape=[int(d) for d in _build_time(cv, node, 1, "shape")])


@_emits("tile")
def _tile_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "tile", [node.inputs[0]], node.outputs[0],
            repeats=[int(r) for r in _build_time(cv, node, 1, "repeats")])


@_emits("pad")
def _pad_op(cv: Converter, node: OnnxNode) -> None:
    """pads and the constant value: attributes before version 11, then inputs (pads and axes constant, the
    value a constant or a run-time scalar); axes (18+) say which dims pads cover; negative pads crop."""
    x = node.inputs[0]
    t = cv.type_of(x)
    pads, axes = None, None
    if node.version >= 11:
        pads, axes = _build_time(cv, node, 1, "pads"), _build_time(cv, node, 3, "axes")
    full, mode, value = _shape_error(cv, node, pad_parameters, node, len(t.shape), pads, axes)
    if node.version >= 11:  # the value stays a tensor: a constant or a run-time scalar
        value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    elif value is not None:
        value = np.asarray(value, t.dtype)
    inputs = [x] if value is None or mode != "constant" else [x, value]
    cv.emit(node, "pad", inputs, node.outputs[0], pads=full, mode=mode)


@_emits("depth_to_space")
def _depth_to_space_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "depth_to_space", [node.inputs[0]], node.outputs[0], blocksize=node.attrs["blocksize"],
            mode=node.attrs.get("mode", "DCR"))


@_emits("space_to_depth")
def _space_to_depth_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "space_to_depth", [node.inputs[0]], node.outputs[0], blocksize=node.attrs["blocksize"],
            mode=node.attrs.get("mode", "DCR"))


@_emits("trilu")
def _trilu_op(cv: Converter, node: OnnxNode) -> None:
    k = _build_time(cv, node, 1, "k")
    cv.emit(node, "trilu", [node.inputs[0]], node.outputs[0], upper=node.attrs.get("upper", 1),
            k=0 if k is None else int(k[0]))


MOVE_CONVERTERS = {
    "Gather": _gather_op, "GatherElements": _gather_elements, "Slice": _slice_op, "Split": _split,
    "Expand": _expand_op, "Tile": _tile_op, "Pad": _pad_op, "DepthToSpace": _depth_to_space_op,
    "SpaceToDepth": _space_to_depth_op, "Trilu": _trilu_op,
}
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


@_emits("layer_norm", "reduce_mean", "sub", "mul", "add", "sqrt", "reciprocal")
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


@_emits("layer_norm", "reshape")
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


@_emits("layer_norm", "reshape")
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


@_emits("lrn")
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


@_emits("cumsum")
def _cumsum(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "cumsum", [node.inputs[0]], node.outputs[0], axis=_constant_int(cv, node, 1, "axis"),
            exclusive=node.attrs.get("exclusive", 0), reverse=node.attrs.get("reverse", 0))


@_emits("top_k", "top_k_indices")
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


@_emits("transpose", "reshape", "matmul", "dense", "reduce_sum")
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
        _identity(cv, node)
    else:
        cv.rename(y, node.outputs[0])
# ---- the convolution family: ConvTranspose, Resize, Upsample ---------------------------------------------


@_emits("conv_transpose2d", "reshape")
def _conv_transpose(cv: Converter, node: OnnxNode) -> None:
    """ConvTranspose -> conv_transpose2d (1-D through a height of 1). The IR's pads are where the output
    starts and ends in the full scatter [0, (in - 1) * stride + (k - 1) * dilation + 1): output_padding and
    an output_shape larger than that make the end pad negative (rows only the bias reaches)."""
    nd = _spatial(cv, node, "transposed convolutions")
    x, w = cv.type_of(node.inputs[0]), cv.type_of(node.inputs[1])
    if len(w.shape) != nd + 2:
        raise cv.error(node, f"weight '{node.inputs[1]}' is {w}: {nd + 2}-D for a {nd}-D transposed convolution")
    kernel = list(w.shape[2:])
    given = {k: list(node.attrs.get(k, default)) for k, default in
             (("kernel_shape", kernel), ("strides", [1] * nd), ("dilations", [1] * nd), ("output_padding", [0] * nd))}
    for name, value in given.items():
        if len(value) != nd:
            raise cv.error(node, f"{name} {value} must have {nd} values for a {nd}-D transposed convolution")
    if given["kernel_shape"] != kernel:
        raise cv.error(node, f"kernel_shape {given['kernel_shape']} differs from the weight's {kernel}")
    strides, dilations, extra = given["strides"], given["dilations"], given["output_padding"]
    full = [ops.conv_transpose_out(x.shape[2 + d], kernel[d], strides[d], 0, 0, dilations[d]) for d in range(nd)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise cv.error(node, f"auto_pad '{auto}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    shape = node.attrs.get("output_shape")
    if shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        # the spec's total padding, split as auto_pad says (the output is then exactly output_shape)
        out = list(shape)[-nd:] if shape is not None else [x.shape[2 + d] * strides[d] for d in range(nd)]
        total = [full[d] + extra[d] - out[d] for d in range(nd)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        end = [full[d] - out[d] - begin[d] for d in range(nd)]
    else:
        pads = [0] * (2 * nd) if auto == "VALID" else list(node.attrs.get("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd:
            raise cv.error(node, f"pads {pads} must have {2 * nd} values for a {nd}-D transposed convolution")
        begin, end = pads[:nd], [pads[nd + d] - extra[d] for d in range(nd)]
    inputs = [i for i in node.inputs[:3] if i]
    _windowed(cv, node, "conv_transpose2d", inputs, nd, (0, 1), strides=_as_2d(strides, 1),
              dilations=_as_2d(dilations, 1), pads=_as_2d(begin + end, 0), groups=node.attrs.get("group", 1))


def _resize_input(cv: Converter, node: OnnxNode, index: int, what: str) -> np.ndarray | None:
    """Resize's input `index` as a constant; None if absent or empty (Resize's way to leave one out)."""
    value = _build_time(cv, node, index, what, dtype=None)
    return value if value is not None and value.size else None


def _resize_axes(cv: Converter, node: OnnxNode, rank: int) -> list[int]:
    axes = [int(a) for a in node.attrs.get("axes", range(rank))]
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise cv.error(node, f"axes {axes} must be distinct axes of the input's {rank} dimensions")
    return [a % rank for a in axes]


def _resize_shape(cv: Converter, node: OnnxNode, x, axes, scales, sizes, roi) -> tuple[list[int], list[float]]:
    """(output shape, scale per dimension) from exactly one of scales and sizes, given for `axes`."""
    rank = len(x)
    if (scales is None) == (sizes is None):
        raise cv.error(node, "exactly one of scales and sizes must be given")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise cv.error(node, f"{'scales' if scales is not None else 'sizes'} {given.tolist()} must have one value "
                             f"per axis ({len(axes)})")
    out, scale = list(x), [1.0] * rank
    if scales is not None:
        if roi:
            raise cv.error(node, "tf_crop_and_resize with scales is not supported: the spec's output length "
                                 "floor(length * (roi_end - roi_start) * scale) and onnxruntime's (and ONNX's "
                                 "reference's) floor(length * scale) differ; give sizes")
        for a, s in zip(axes, scales.tolist()):
            scale[a] = float(s)
            out[a] = int(math.floor(x[a] * float(s)))
        return out, scale
    for a, n in zip(axes, sizes.tolist()):
        out[a] = int(n)
        scale[a] = int(n) / x[a] if x[a] else 1.0
    policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        if policy not in ("not_larger", "not_smaller"):
            raise cv.error(node, f"keep_aspect_ratio_policy '{policy}' is not one of stretch, not_larger, not_smaller")
        common = (min if policy == "not_larger" else max)(scale[a] for a in axes)
        for a in axes:
            scale[a], out[a] = common, int(common * x[a] + 0.5)  # the reference rounds half up
    return out, scale


@_emits("resize")
def _resize(cv: Converter, node: OnnxNode) -> None:
    """Resize -> resize, with scales or sizes (and roi) constant at build time. Resize-10 (X, scales) maps
    coordinates as Upsample does (asymmetric: x / scale; the spec says no more, onnxruntime does this),
    nearest rounding down, or up along a shrunk dimension (_resize_10_nearest)."""
    x = list(cv.type_of(node.inputs[0]).shape)
    rank = len(x)
    if node.version < 11:
        attrs = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        scales, sizes, roi = _resize_input(cv, node, 1, "scales"), None, None
    else:
        attrs = {k: node.attrs[k] for k in ("coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                                            "exclude_outside", "extrapolation_value", "antialias") if k in node.attrs}
        roi, scales, sizes = (_resize_input(cv, node, i, what) for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")))
    axes = _resize_axes(cv, node, rank)
    full_roi = []
    if roi is not None and attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        if len(roi) != 2 * len(axes):
            raise cv.error(node, f"roi {roi.tolist()} must have 2 values per axis ({2 * len(axes)})")
        full_roi = [0.0] * rank + [1.0] * rank
        for i, a in enumerate(axes):
            full_roi[a], full_roi[rank + a] = float(roi[i]), float(roi[len(axes) + i])
    out, scale = _resize_shape(cv, node, x, axes, scales, sizes, full_roi)
    mode = node.attrs.get("mode", "nearest")
    if node.version < 11 and mode == "nearest" and any(s < 1 for s in scale):
        _resize_10_nearest(cv, node, x, out, scale)
        return
    cv.emit(node, "resize", [node.inputs[0]], node.outputs[0], sizes=out, scales=scale, mode=mode, roi=full_roi,
            **attrs)


def _resize_10_nearest(cv: Converter, node: OnnxNode, x, out, scale) -> None:
    """Resize-10 nearest, shrinking some dimensions: the spec leaves the rounding open; onnxruntime rounds
    up along a shrunk dimension and down along the others. Nearest sampling is separable and exact, so
    that is two resizes: the shrunk dimensions (ceil), then the others (floor)."""
    shrunk = [s < 1 for s in scale]
    mid = [o if k else d for d, o, k in zip(x, out, shrunk)]
    y = cv.emit(node, "resize", [node.inputs[0]], None if mid != out else node.outputs[0], sizes=mid,
                scales=[s if k else 1.0 for s, k in zip(scale, shrunk)], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="ceil")
    if mid != out:
        cv.emit(node, "resize", [y], node.outputs[0], sizes=out, scales=[1.0 if k else s for s, k in zip(scale, shrunk)],
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@_emits("resize")
def _upsample(cv: Converter, node: OnnxNode) -> None:
    """Upsample (7: scales an attribute; 9, 10: an input) -> resize: output = floor(input * scale), the
    coordinates asymmetric (x / scale), nearest rounding down (so an integer scale repeats each element)."""
    x = list(cv.type_of(node.inputs[0]).shape)
    scales = np.asarray(node.attrs["scales"], np.float32) if node.version < 9 else _resize_input(cv, node, 1, "scales")
    if scales is None or len(scales) != len(x):
        raise cv.error(node, f"scales must have one value per dimension ({len(x)})")
    mode = node.attrs.get("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode  # Upsample-7's name in some exporters
    out = [int(math.floor(d * float(s))) for d, s in zip(x, scales.tolist())]
    cv.emit(node, "resize", [node.inputs[0]], node.outputs[0], sizes=out, scales=[float(s) for s in scales.tolist()],
            mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="floor")


CONV_FAMILY_CONVERTERS = {"ConvTranspose": _conv_transpose, "Resize": _resize, "Upsample": _upsample}
# ---- comparisons, logic, IsNaN / IsInf, Where: bool results (one byte 0/1) ---------------------------
# Their versions differ only in the element types they allow (Equal-7 bool and integers, 11 adds floats, 19
# strings; Less/Greater-9 add integers; IsNaN/IsInf-20 float16), which onnx.checker holds the model to; the
# registry's dtypes say which of them dsopack computes.


def _elementwise(op: str):
    """ONNX op -> IR op `op` over all the node's inputs (Where: condition, X, Y)."""
    @_emits(op)
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
    "Conv": _conv,
    "MaxPool": _pool("maxpool2d"), "AveragePool": _pool("avgpool2d"),
    "GlobalAveragePool": _global_pool("global_avgpool", "reduce_mean"),
    "GlobalMaxPool": _global_pool("maxpool2d", "reduce_max"),
    "BatchNormalization": _batchnorm,
    "Flatten": _unary("flatten", axis=("axis", 1)),
    "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": _transpose, "Concat": _concat,
    "Identity": _identity, "Dropout": _dropout, "Cast": _cast,
    "ai.onnx.ml.ArrayFeatureExtractor": _array_feature_extractor,
    "ReduceSum": _reduce("reduce_sum"), "ReduceMean": _reduce("reduce_mean"), "ReduceMax": _reduce("reduce_max"),
    "ReduceMin": _reduce("reduce_min"), "ReduceProd": _reduce("reduce_prod"), "ReduceL2": _reduce("reduce_l2"),
    "ReduceSumSquare": _reduce("reduce_sum_square"),
    "ArgMin": _unary("argmin", axis=("axis", 0), keepdims=("keepdims", 1), select_last_index=("select_last_index", 0)),
    "Sum": _variadic("add"), "Mean": _variadic("add", mean=True), "Max": _variadic("maximum"),
    "Min": _variadic("minimum"),
    "LSTM": _recurrent("lstm"), "GRU": _recurrent("gru"), "RNN": _recurrent("rnn"),
    **MOVE_CONVERTERS,
    # normalization, LRN, CumSum, TopK, Einsum
    "LayerNormalization": _layer_normalization, "InstanceNormalization": _instance_normalization,
    "GroupNormalization": _group_normalization, "LRN": _lrn, "CumSum": _cumsum, "TopK": _top_k,
    "Einsum": _einsum,
    **CONV_FAMILY_CONVERTERS,
    # comparisons, logic, IsNaN / IsInf, Where
    "Equal": _binary("equal"), "Less": _binary("less"), "LessOrEqual": _binary("less_equal"),
    "Greater": _binary("greater"), "GreaterOrEqual": _binary("greater_equal"),
    "Not": _unary("logical_not"), "And": _binary("logical_and"), "Or": _binary("logical_or"),
    "Xor": _binary("logical_xor"), "IsNaN": _unary("isnan"),
    "IsInf": _unary("isinf", detect_positive=("detect_positive", 1), detect_negative=("detect_negative", 1)),
    "Where": _elementwise("where"),
}
SUPPORTED = set(CONVERTERS) | set(FOLDERS)
