"""The ONNX converter's machinery (frontends/onnx.py drives it; the converters are in onnx_ops.py and
the onnx_ops_*.py family modules).

`Converter.run(nodes)` walks the ONNX nodes in order. A node whose inputs are
all known at build time is computed with NumPy (onnx_fold.FOLDERS) and becomes
a constant; any other node goes to its entry in `onnx_ops.CONVERTERS`, which emits IR
nodes (packager/ops.py) through `Converter.emit`: each emitted node is
normalized and its type inferred at once, so later converters see every
shape (Reshape's 0 and -1, auto_pad, ceil_mode and Squeeze axes are resolved
here, at build time). Constants that IR nodes read become weights, under their
ONNX names when they have one.
"""

from __future__ import annotations

import numpy as np

from packager import ops
from packager.frontends.onnx_fold import FOLDERS, TYPE_ONLY
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
        array = array if isinstance(array, np.ndarray) else np.asarray(array)
        self.weights[name] = np.require(array.astype(dtype, copy=False), requirements="C")  # a mapping stays one
        self.consts[name] = self.weights[name]
        return name

    # ---- emitting IR

    def emit(self, node: OnnxNode, op: str, inputs: list, output: str | None = None, **attrs) -> str:
        """Append an IR node reading `inputs` (ONNX names, IR names or arrays); returns its output's name."""
        from packager.frontends.onnx_ops import CONVERTERS  # the table's modules import this one

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
        from packager.frontends.onnx_ops import CONVERTERS  # the table's modules import this one

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


def emits(*ir_ops: str):
    def declare(convert):
        convert.emits = ir_ops
        return convert
    return declare


def build_time(cv: Converter, node: OnnxNode, index: int, what: str, dtype=np.int64) -> np.ndarray | None:
    """Input `index` (named `what` in the error) as a flat array (of `dtype`, None: its own), None if absent;
    it must be a constant."""
    if len(node.inputs) <= index or not node.inputs[index]:
        return None
    value = cv.const(node.inputs[index])
    if value is None:
        raise cv.error(node, f"{what} ('{node.inputs[index]}') must be known at build time")
    value = np.asarray(value).reshape(-1)
    return value if dtype is None else value.astype(dtype)


def shape_error(cv: Converter, node: OnnxNode, fn, *args):
    """fn(*args); a ValueError (onnx_fold's shape helpers) becomes the node's BuildError."""
    try:
        return fn(*args)
    except ValueError as e:
        raise cv.error(node, str(e)) from None


@emits("reshape")  # no node here; a graph output that aliases another tensor is copied by one (onnx._finish)
def identity(cv: Converter, node: OnnxNode) -> None:
    cv.alias[node.outputs[0]] = cv.resolve(node.inputs[0])
