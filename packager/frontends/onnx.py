"""ONNX models -> an ir.Graph (docs/onnx.md).

    graph = load_graph("model.onnx", shapes={"x": [1, 3, 32, 32]})

`dsopack build model.onnx` and the deployment manifest's `model: {onnx: FILE,
shapes: {...}}` come here (through spec.py). Before any conversion the file is
parsed, checked with onnx.checker, its external data found, its opset checked,
and every op type looked up, so that ONE error lists all unsupported ops with
their nodes:

    model.onnx: unsupported ONNX ops (opset 17): NonMaxSuppression (nms_1), TopK (topk_3, topk_9)

Graph inputs that are initializers are weights, not inputs. A dimension with
no fixed size (a symbolic batch) takes its value from `shapes` (the CLI's
`--shape NAME=1,3,32,32` or the manifest's `model.shapes`); a missing one is an
error that names the input and the dimension. The operators themselves are in
onnx_ops.py (IR nodes) and onnx_fold.py (constant folding with NumPy).
"""

from __future__ import annotations

import os

import numpy as np

from packager import blob, dynamic, ops
from packager.dynamic import DimRange
from packager.frontends.onnx_convert import Converter, OnnxNode
from packager.frontends.onnx_ops import SUPPORTED
from packager.ir import BuildError, Graph, Node, TensorType

OLDEST_OPSET = 7  # the newest is the installed onnx's (onnx.defs.onnx_opset_version())
LEGACY_OPSETS = (13, 21)  # an op without an entry in VERSIONS is read at these opsets only
# The versions (schema since_version) of each default-domain op whose semantics the converters and
# folders follow, from opset 7 to 28 (onnx 1.23); docs/onnx.md says what differs between them.
# tests/test_onnx_versions.py checks that every version the installed onnx defines is listed.
VERSIONS = {
    "Abs": (6, 13), "Add": (7, 13, 14), "ArgMax": (1, 11, 12, 13), "AveragePool": (7, 10, 11, 19, 22),
    "BatchNormalization": (7, 9, 14, 15), "Cast": (6, 9, 13, 19, 21, 23, 24, 25, 28), "Ceil": (6, 13),
    "Clip": (6, 11, 12, 13), "Concat": (4, 11, 13), "Constant": (1, 9, 11, 12, 13, 19, 21, 23, 24, 25),
    "ConstantOfShape": (9, 20, 21, 23, 24, 25), "Conv": (1, 11, 22), "Div": (7, 13, 14),
    "Dropout": (7, 10, 12, 13, 22), "Equal": (7, 11, 13, 19), "Exp": (6, 13), "Expand": (8, 13),
    "Flatten": (1, 9, 11, 13, 21, 23, 24, 25), "Floor": (6, 13), "Gather": (1, 11, 13), "Gemm": (7, 9, 11, 13),
    "GlobalAveragePool": (1, 22), "GlobalMaxPool": (1, 22), "Greater": (7, 9, 13),
    "Identity": (1, 13, 14, 16, 19, 21, 23, 24, 25), "LeakyRelu": (6, 16), "Less": (7, 9, 13), "Log": (6, 13),
    "LogSoftmax": (1, 11, 13), "MatMul": (1, 9, 13), "Max": (6, 8, 12, 13), "MaxPool": (1, 8, 10, 11, 12, 22),
    "Min": (6, 8, 12, 13), "Mul": (7, 13, 14), "Neg": (6, 13), "Not": (1,), "Pow": (7, 12, 13, 15),
    "Range": (11, 27), "ReduceProd": (1, 11, 13, 18), "Relu": (6, 13, 14),
    "Reshape": (5, 13, 14, 19, 21, 23, 24, 25), "Shape": (1, 13, 15, 19, 21, 23, 24, 25),
    "Sigmoid": (6, 13), "Size": (1, 13, 19, 21, 23, 24, 25), "Slice": (1, 10, 11, 13), "Softmax": (1, 11, 13),
    "Sqrt": (6, 13), "Squeeze": (1, 11, 13, 21, 23, 24, 25), "Sub": (7, 13, 14), "Tanh": (6, 13),
    "Transpose": (1, 13, 21, 23, 24, 25), "Unsqueeze": (1, 11, 13, 21, 23, 24, 25), "Where": (9, 16),
    # elementwise ops and activations: the later versions add element types only (Mod-28 defines fmod=0 on
    # floats, which its converter reads from the opset; PRelu-7 broadcasts the slope, as the converter does)
    "Reciprocal": (6, 13), "Erf": (9, 13), "Sin": (7, 22), "Cos": (7, 22), "Round": (11, 22), "Sign": (9, 13),
    "Mod": (10, 13, 28), "PRelu": (7, 9, 16), "Gelu": (20,), "Elu": (6, 22), "Selu": (6, 22),
    "Softplus": (1, 22), "Softsign": (1, 22), "HardSigmoid": (6, 22), "HardSwish": (14, 22), "Mish": (18, 22),
    "Celu": (12, 28), "ThresholdedRelu": (10, 22),
    # reductions: axes an attribute before 13 (ReduceSum) or 18 (the others), then a constant input; the
    # converter reads either; 11 allows negative axes, 12 and 20 add element types
    "ReduceSum": (1, 11, 13), "ReduceMean": (1, 11, 13, 18), "ReduceMax": (1, 11, 12, 13, 18, 20),
    "ReduceMin": (1, 11, 12, 13, 18, 20), "ReduceL2": (1, 11, 13, 18), "ReduceSumSquare": (1, 11, 13, 18),
    "ArgMin": (1, 11, 12, 13), "Sum": (6, 8, 13), "Mean": (6, 8, 13),
    # recurrent: 14 adds layout (batch first), 22 adds element types; 1 and 3 (output_sequence) are not read
    "LSTM": (7, 14, 22), "GRU": (7, 14, 22), "RNN": (7, 14, 22),
    # data movement at run time: later versions add element types (Gather-11 and GatherElements take negative
    # indices, as every version is read; Split-13 and Pad-11 move sizes and pads from attributes to inputs,
    # Split-18 adds num_outputs, Pad-18 axes, Pad-19 mode wrap; DepthToSpace-11 and SpaceToDepth-28
    # add mode CRD)
    "GatherElements": (11, 13), "Split": (2, 11, 13, 18), "Tile": (6, 13),
    "Pad": (2, 11, 13, 18, 19, 21, 23, 24, 25), "DepthToSpace": (1, 11, 13, 28), "SpaceToDepth": (1, 13, 28),
    "Trilu": (14,),
    # normalization & co.: InstanceNormalization-22, LRN-13, CumSum-14, TopK-24 add element types; TopK takes k
    # as an attribute before 10, largest and sorted from 11; GroupNormalization-18 (scale per group) is
    # deprecated: onnx's checker refuses it, 21 scales per channel
    "LayerNormalization": (17,), "InstanceNormalization": (6, 22), "GroupNormalization": (18, 21),
    "LRN": (1, 13), "CumSum": (11, 14), "TopK": (1, 10, 11, 24),
    "Einsum": (12, 28),  # 28 adds bfloat16
    # the convolution family: ConvTranspose-22 and the pools' later versions add element types; Resize-11
    # adds roi, sizes and the coordinate modes, 13 lets scales be left out, 18 adds axes, antialias and
    # keep_aspect_ratio_policy, 19 half_pixel_symmetric; Upsample-9 takes scales as an input (10: the same)
    "ConvTranspose": (1, 11, 22), "Resize": (10, 11, 13, 18, 19), "Upsample": (7, 9, 10),
    # comparisons and logic: later versions add element types only (Equal, Less, Greater, Not, Where above)
    "LessOrEqual": (12, 16), "GreaterOrEqual": (12, 16), "And": (7,), "Or": (7,), "Xor": (7,),
    "IsNaN": (9, 13, 20), "IsInf": (10, 20),
}
INSTALL_HINT = "pip install 'dsopack[onnx]'"
DEFAULT_DOMAINS = ("", "ai.onnx")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise BuildError(f"reading ONNX models needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def load_graph(path, shapes: dict | None = None, *, name: str | None = None, where: str | None = None,
               sizes: dict | None = None) -> Graph:
    """The IR graph of an ONNX file, with every dimension fixed (`shapes`: input name -> list of ints, or of
    dynamic.DimRange for a dynamic dim, built at its size in `sizes`, else at its max)."""
    onnx = _onnx()
    path = os.fspath(path)
    where = where or path
    model = _read(onnx, path, where)
    opset = _opset(model, where)
    nodes = _nodes(onnx, model.graph, opset, where)
    unsupported: dict[str, list[str]] = {}
    for node in nodes:
        if node.op_type not in SUPPORTED:
            unsupported.setdefault(node.op_type, []).append(node.name)
        elif not _handled(node):
            unsupported.setdefault(f"{node.op_type} version {node.version}", []).append(node.name)
    if unsupported:
        listing = ", ".join(f"{op} ({', '.join(names)})" for op, names in sorted(unsupported.items()))
        hint = ""
        if any(" version " in op for op in unsupported):
            hint = (f"; dsopack reads these ops at other versions: convert the model with "
                    f"onnx.version_converter.convert_version(model, {LEGACY_OPSETS[1]}) or export it at that opset")
        raise BuildError(f"{where}: unsupported ONNX ops (opset {opset}): {listing}{hint}")

    base = os.path.dirname(os.path.abspath(path))
    constants = {t.name: _array(onnx, t, where, base) for t in model.graph.initializer}
    dims: dict = {}
    inputs = _inputs(onnx, model.graph, constants, shapes or {}, where, dims, sizes)
    outputs = [o.name for o in model.graph.output]
    uses: dict[str, int] = {}
    for node in nodes:
        for i in node.inputs:
            if i:
                uses[i] = uses.get(i, 0) + 1
    for o in outputs:
        uses[o] = uses.get(o, 0) + 1
    taken = set(inputs) | set(constants) | {o for n in nodes for o in n.outputs} | {n.name for n in nodes}
    cv = Converter(where, inputs, constants, uses, taken)
    cv.run(nodes)
    graph_nodes, weights = _finish(cv, model.graph, outputs, where)
    return Graph(name=name or os.path.splitext(os.path.basename(path))[0], inputs=inputs, weights=weights,
                 nodes=graph_nodes, outputs=outputs, dims=dims)


# ---------------------------------------------------------------------------
# Reading and checking the file


def _read(onnx, path: str, where: str):
    if not os.path.isfile(path):
        raise BuildError(f"{where}: ONNX file not found")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise BuildError(f"{where}: not a valid ONNX file (cannot parse it: {type(e).__name__}: {e})") from None
    base = os.path.dirname(os.path.abspath(path))
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location", "")
            full = os.path.join(base, location)
            if not location or not os.path.isfile(full):
                raise BuildError(f"{where}: initializer '{tensor.name}' keeps its data in external file "
                                 f"'{location}', which is not found (looked at {full}); keep the data file "
                                 f"next to the model")
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
            if end > os.path.getsize(full):
                raise BuildError(f"{where}: initializer '{tensor.name}': external file '{location}' has "
                                 f"{os.path.getsize(full)} bytes, the model reads up to byte {end}")
    try:
        onnx.checker.check_model(path)
    except Exception as e:
        message = str(e).strip().splitlines()
        raise BuildError(f"{where}: not a valid ONNX model (onnx.checker: {message[0] if message else e})") from None
    return model


def _opset(model, where: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise BuildError(f"{where}: the model imports no default-domain (ai.onnx) opset")
    opset = max(versions)
    lo, hi = OLDEST_OPSET, _onnx().defs.onnx_opset_version()
    if not lo <= opset <= hi:
        raise BuildError(f"{where}: opset {opset} is not supported (dsopack reads opsets {lo} to {hi}); "
                         f"export with an opset in that range, e.g. torch.onnx.export(..., opset_version=17) "
                         f"or skl2onnx.to_onnx(..., target_opset=21), or convert it with "
                         f"onnx.version_converter.convert_version(model, 21)"
                         + (" (a newer onnx package reads newer opsets)" if opset > hi else ""))
    return opset


def _attrs(onnx, proto, where: str, node_name: str) -> dict:
    attrs = {}
    for a in proto.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, onnx.TensorProto):
            value = _array(onnx, value, where)
        elif isinstance(value, (list, tuple)):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        attrs[a.name] = value
    return attrs


def _nodes(onnx, graph, opset: int, where: str) -> list[OnnxNode]:
    nodes, names = [], set()
    for index, proto in enumerate(graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        base, k = name, 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        attrs = _attrs(onnx, proto, where, name)
        if proto.op_type == "Cast" and proto.domain in DEFAULT_DOMAINS and "to" in attrs:
            attrs["to"] = _np_dtype(onnx, attrs["to"], f"{where}: node '{name}' (Cast): to")
        version = 0
        if proto.domain in DEFAULT_DOMAINS:
            try:
                version = onnx.defs.get_schema(proto.op_type, max_inclusive_version=opset, domain="").since_version
            except Exception:  # no such op at this opset: the op check reports it as unsupported
                version = 0
        nodes.append(OnnxNode(proto.op_type, proto.domain, name, list(proto.input), list(proto.output), attrs, opset,
                              version))
    return nodes


def _handled(node: OnnxNode) -> bool:
    """Whether the converters follow the semantics of this version of the node's op."""
    if node.domain not in DEFAULT_DOMAINS:
        return True
    if node.op in VERSIONS:
        return node.version in VERSIONS[node.op]
    lo, hi = LEGACY_OPSETS
    return lo <= node.opset <= hi


def _np_dtype(onnx, elem_type: int, what: str) -> str:
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        dtype = None
    if dtype is None or dtype.kind not in "fiub" or dtype.name not in ops.CAST_DTYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() \
            else str(elem_type)
        raise BuildError(f"{what}: element type {type_name} is not supported")
    return dtype.name


def _array(onnx, tensor, where: str, base: str = "") -> np.ndarray:
    """The tensor's values; an initializer in an external data file (`base`: the model's directory) is mapped
    from it, not read: a model of many GB goes from its files into the build's output without that copy."""
    try:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return _mapped(onnx, tensor, base)
        array = onnx.numpy_helper.to_array(tensor)
    except BuildError:
        raise
    except Exception as e:
        raise BuildError(f"{where}: cannot read tensor '{tensor.name}': {type(e).__name__}: {e}") from None
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.require(array, requirements="C")


def _mapped(onnx, tensor, base: str) -> np.ndarray:
    """An external initializer (its file and range checked by _read) as a read-only mapping."""
    info = {e.key: e.value for e in tensor.external_data}
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(shape, dtype=np.int64))
    length = int(info.get("length", count * dtype.itemsize))
    if length != count * dtype.itemsize:
        raise ValueError(f"its external data holds {length} bytes but {dtype}{list(shape)} takes "
                         f"{count * dtype.itemsize}")
    return blob.mapped(os.path.join(base, info["location"]), dtype, int(info.get("offset", 0)), shape)


# ---------------------------------------------------------------------------
# Inputs and their shapes


def _example(dims: list, ranged: int | None = None) -> str:
    """A --shape value for `dims`: 1 for each symbolic dim, or 1..64 for the one at index `ranged`."""
    return ",".join(str(d) if isinstance(d, int) else "1..64" if k == ranged else "1" for k, d in enumerate(dims))


def _inputs(onnx, graph, constants: dict, shapes: dict, where: str, dims: dict,
            sizes: dict | None) -> dict[str, TensorType]:
    """The inputs' types, at `sizes` (or the max) for the dims declared as ranges, which go into `dims`."""
    inputs: dict[str, TensorType] = {}
    declared = [vi for vi in graph.input if vi.name not in constants]
    names = [vi.name for vi in declared]
    for given in shapes:
        if given not in names:
            raise BuildError(f"{where}: shape given for '{given}', which is not an input of the model "
                             f"(inputs: {', '.join(names) or 'none'})")
    in_model = {vi.name: _model_dims(vi) for vi in declared}
    named = {d: g.name for vi in declared for d, g in zip(in_model[vi.name] or [], shapes.get(vi.name) or [])
             if isinstance(g, DimRange) and g.name and isinstance(d, str) and d != "?"}  # dim_param -> the name given
    for vi in declared:
        if not vi.type.HasField("tensor_type"):
            raise BuildError(f"{where}: input '{vi.name}' is not a tensor (sequences and maps are not supported)")
        tt = vi.type.tensor_type
        dtype = _np_dtype(onnx, tt.elem_type, f"{where}: input '{vi.name}'")
        dims_in_model = in_model[vi.name]
        given = shapes.get(vi.name)
        if given is not None:
            given = _given_shape(given, vi.name, where)
            if dims_in_model is not None:
                if len(given) != len(dims_in_model):
                    raise BuildError(f"{where}: input '{vi.name}' has {len(dims_in_model)} dimensions "
                                     f"[{', '.join(map(str, dims_in_model))}], the shape given has {len(given)}: "
                                     f"[{', '.join(map(str, given))}]")
                for k, (d, g) in enumerate(zip(dims_in_model, given)):
                    if isinstance(d, int) and d != g:
                        raise BuildError(f"{where}: input '{vi.name}' dimension {k} is {d} in the model, "
                                         f"the shape given says {g}")
            shape = []
            for k, g in enumerate(given):
                if isinstance(g, DimRange):
                    symbol = dims_in_model[k] if dims_in_model and dims_in_model[k] != "?" else None
                    name = g.name or named.get(symbol) or symbol or f"{vi.name}.{k}"
                    dim = dynamic.declare(dims, g, name, vi.name, k, where)
                    g = dynamic.size_of(dim, sizes)
                shape.append(g)
            inputs[vi.name] = TensorType(tuple(shape), dtype)
            continue
        if dims_in_model is None:
            raise BuildError(f"{where}: input '{vi.name}' has no shape in the model: give it one with "
                             f"--shape {vi.name}=D0,D1,... (or model.shapes in the manifest)")
        for k, d in enumerate(dims_in_model):
            if not isinstance(d, int):
                label = f" ('{d}')" if d != "?" else ""
                raise BuildError(f"{where}: input '{vi.name}' dimension {k}{label} has no fixed size: give it "
                                 f"one with --shape {vi.name}={_example(dims_in_model)}, or a range with "
                                 f"--shape {vi.name}={_example(dims_in_model, k)} (or in the manifest, "
                                 f"model: {{shapes: {{{vi.name}: [{_example(dims_in_model).replace(',', ', ')}]}}}})")
        inputs[vi.name] = TensorType(tuple(dims_in_model), dtype)
    if not inputs:
        raise BuildError(f"{where}: the model has no inputs (every graph input is an initializer)")
    return inputs


def _model_dims(vi) -> list | None:
    """An input's dims as the file declares them: sizes, dim_param names, "?" for an unnamed one; None if no shape."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim]


def _given_shape(value, name: str, where: str) -> tuple:
    dims = [dynamic.parse_dim(d) for d in value] if isinstance(value, (list, tuple)) else []
    if not dims or None in dims:
        raise BuildError(f"{where}: shape for input '{name}' must be a list of positive integers or ranges "
                         f"LO..HI, got {value!r}")
    return tuple(dims)


def parse_shape_option(text: str) -> tuple[str, tuple]:
    """'x=1,3,32,32' -> ('x', (1, 3, 32, 32)); 'x=1..64,784' -> ('x', (DimRange(1, 64), 784)) (the CLI's --shape).
    A range may be named: 'ids=batch=1..8,seq=1..512'."""
    name, sep, rest = text.partition("=")
    parts = rest.split(",") if ".." in rest else rest.replace("x", ",").split(",")  # 1x3x32x32 too
    dims = tuple(dynamic.parse_dim(d if ".." in d else _int(d)) for d in parts) if sep else ()
    if not name or not dims or None in dims:
        raise BuildError(f"--shape '{text}': expected NAME=D0,D1,... with positive integers or ranges LO..HI, "
                         "e.g. x=1,3,32,32 or x=1..64,3,32,32")
    return name, dims


def _int(text: str):
    try:
        return int(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Outputs, dead nodes, weights


def _finish(cv: Converter, graph, outputs: list[str], where: str) -> tuple[list[Node], dict[str, np.ndarray]]:
    declared = {o.name: o for o in graph.output}
    renamed: set[str] = set()
    for out in outputs:
        src = cv.resolve(out)
        if src == out:
            continue
        cv.alias.pop(out)
        if src in cv.consts:  # a constant output: a weight under the output's name
            cv.consts[out] = cv.consts[src]
            cv.tensor(out)
            continue
        if src in cv.producer and src not in outputs and src not in renamed:
            _rename_everywhere(cv, src, out)
            renamed.add(src)
        else:  # a graph input, or a tensor another output already took: copy it
            node = OnnxNode("Identity", "", cv.fresh_node(f"{out}/copy"), [src], [out], {}, 0)
            cv.emit(node, "reshape", [src], out, shape=list(cv.type_of(src).shape))
    for out in outputs:
        if out not in cv.types and out not in cv.consts:
            raise BuildError(f"{where}: graph output '{out}' is not computed by any node")
        vi = declared[out]
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            want = _np_dtype(_onnx(), vi.type.tensor_type.elem_type, f"{where}: output '{out}'")
            got = cv.type_of(out).dtype
            if want != got:
                raise BuildError(f"{where}: graph output '{out}' is declared {want} but computes as {got}")
    # dead nodes (their results reach no output), then the weights the rest read
    live = set(outputs)
    kept = []
    for node in reversed(cv.nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.inputs)
    kept.reverse()
    weights = {name: cv.weights[name] for name in dict.fromkeys(
        [i for n in kept for i in n.inputs] + outputs) if name in cv.weights}
    for out in outputs:
        if out in cv.consts and out not in weights:
            weights[out] = np.require(cv.consts[out], requirements="C")
    return kept, weights


def _rename_everywhere(cv: Converter, old: str, new: str) -> None:
    cv.rename(old, new)
    cv.alias[old] = new  # other names of `old` now reach `new`
    for node in cv.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
