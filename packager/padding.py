"""Whether a dynamic dim may be padded: do the graph's ops keep its rows apart?

A file runs a size that falls between two plans in the larger one, its inputs padded along the dim
and the padded rows' results dropped. That gives the right values only if no output row reads a
padded row: every op keeps the dim as one axis whose positions never mix (a dense over the features
does; a softmax over the batch, a reduction over it or a matmul that contracts it do not). This
module follows the dim through the graph, node by node, with one rule per kind of op, and either
finds the axis it has in every tensor (so in each output) or names the first node that mixes it.
An op with no rule here is taken to mix (a conservative answer: the dim is then never padded, and
sizes without their own plan are refused at run time, saying why).
"""

from __future__ import annotations

import math

from packager import ops
from packager.ir import Graph, Node

# Ops that see each image of axis 0 alone (the rest of the tensor is one sample).
PER_SAMPLE = ("conv2d", "conv_transpose2d", "maxpool2d", "avgpool2d", "global_avgpool", "batchnorm", "lrn",
              "depth_to_space", "space_to_depth")
# Ops that compute along one `axis` attribute and keep the others apart.
ALONG_AXIS = ("softmax", "log_softmax", "cumsum", "top_k", "top_k_indices")


class Mixed(Exception):
    """A node mixes the dim's positions; the message says how."""


def follow(graph: Graph, axes: list[tuple[str, int]]) -> dict[str, int]:
    """The axis of the dim in every tensor that depends on it, from its `axes` in the graph's inputs
    ((input name, axis) pairs). Raises Mixed naming the node where positions of the dim would mix."""
    carried: dict[str, int] = {}
    for name, axis in axes:
        if name in carried:  # [n, n]: an op along either axis mixes the other's rows; no rule follows two
            raise Mixed(f"input '{name}' has it on two axes ({carried[name]} and {axis})")
        carried[name] = axis
    size = graph.type_of(axes[0][0]).shape[axes[0][1]]
    for node in graph.nodes:
        ins = [carried.get(i) if i else None for i in node.inputs]
        if all(a is None for a in ins):
            continue
        axis, shape = _rule(graph, node, ins), graph.type_of(node.output).shape
        if not 0 <= axis < len(shape) or shape[axis] != size:  # a rule's slip must not pass as a proof
            raise Mixed(f"{node.describe()}: dsopack cannot follow it to its output {list(shape)}")
        carried[node.output] = axis
    return carried


def output_axes(graph: Graph, axes: list[tuple[str, int]]) -> list[int | None]:
    """The dim's axis in each graph output (None: the output does not depend on it). Raises Mixed."""
    carried = follow(graph, axes)
    return [carried.get(name) for name in graph.outputs]


def _rule(graph: Graph, node: Node, ins: list[int | None]) -> int:
    op, shape = node.op, graph.type_of(node.output).shape
    spec = ops.OPS.get(op)
    shapes = [graph.type_of(i).shape if i else () for i in node.inputs]
    if spec is not None and (spec.c_expr is not None or op == "cast"):
        return _broadcasting(node, ins, shapes, shape)
    x = ins[0]
    other = next((node.inputs[k] for k in range(1, len(ins)) if ins[k] is not None), None)
    if other is not None and op not in ("matmul", "gather", "concat"):
        raise Mixed(f"{node.describe()} takes it in its input '{other}', which it applies to every row")
    if op in PER_SAMPLE:
        if x != 0:
            raise Mixed(f"{node.describe()} computes across axis {x} of its input")
        return 0
    if op == "dense":
        if x == len(shapes[0]) - 1:
            raise Mixed(f"{node.describe()} sums over it (its features axis)")
        return x
    if op == "matmul":
        return _matmul(node, ins, shapes, shape)
    if op in ALONG_AXIS:
        if ops.axis_of(node.attrs["axis"], len(shapes[0])) == x:
            raise Mixed(f"{node.describe()} works along it (axis {x})")
        return x
    if op == "layer_norm":
        if x >= ops.axis_of(node.attrs["axis"], len(shapes[0])):
            raise Mixed(f"{node.describe()} normalizes over it (axes from {node.attrs['axis']} on)")
        return x
    if op == "trilu":
        if x >= len(shapes[0]) - 2:
            raise Mixed(f"{node.describe()} masks across it (its last two axes)")
        return x
    if op.startswith("reduce_") or op in ("argmax", "argmin"):
        reduced = (ops.reduced_axes(node.attrs, len(shapes[0])) if op.startswith("reduce_")
                   else [ops.axis_of(node.attrs["axis"], len(shapes[0]))])
        if x in reduced:
            raise Mixed(f"{node.describe()} reduces over it")
        return x if node.attrs.get("keepdims", 1) else x - sum(1 for r in reduced if r < x)
    if op in ("flatten", "reshape"):
        return _reshape(node, x, shapes[0], shape)
    if op == "transpose":
        return ops.perm_of(node, len(shapes[0])).index(x)
    if op == "concat":
        return _concat(node, ins, shapes)
    if op == "slice":
        whole = ops.slice_range(node.attrs["starts"][x], node.attrs["ends"][x], node.attrs["steps"][x],
                                shapes[0][x]) == range(shapes[0][x])
        if not whole:
            raise Mixed(f"{node.describe()} slices it")
        return x
    if op == "pad":
        if node.attrs["pads"][x] or node.attrs["pads"][x + len(shapes[0])]:
            raise Mixed(f"{node.describe()} pads it")
        return x
    if op == "tile":
        if node.attrs["repeats"][x] != 1:
            raise Mixed(f"{node.describe()} repeats it")
        return x
    if op == "expand":
        out_axis = x + len(shape) - len(shapes[0])
        if shape[out_axis] != shapes[0][x]:
            raise Mixed(f"{node.describe()} broadcasts it")
        return out_axis
    if op == "gather":
        return _gather(node, ins, shapes)
    if op == "resize":  # N-D: per sample only if axis 0 is neither scaled nor cropped
        roi = node.attrs["roi"]
        if x != 0 or shape[0] != shapes[0][0] or node.attrs["scales"][0] != 1 or (
                node.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
                and (roi[0], roi[len(shape)]) != (0, 1)):
            raise Mixed(f"{node.describe()} resamples along it")
        return 0
    raise Mixed(f"{node.describe()}: dsopack does not know whether {op} keeps its positions apart")


def _broadcasting(node: Node, ins, shapes, shape) -> int:
    """Elementwise ops (NumPy broadcasting): the dim keeps its place counted from the last axis; an
    operand that does not carry it must not vary along it (size 1 there), or rows would get its values."""
    axes = {a + len(shape) - len(s) for a, s in zip(ins, shapes) if a is not None}
    if len(axes) != 1:
        raise Mixed(f"{node.describe()} combines it with another axis")
    out_axis = axes.pop()
    for i, (a, s) in enumerate(zip(ins, shapes)):
        k = out_axis - (len(shape) - len(s))
        if a is None and k >= 0 and s[k] != 1:
            raise Mixed(f"{node.describe()} applies its input '{node.inputs[i]}', which has {s[k]} values "
                        "along it, row by row")
        if a is not None and s[a] != shape[out_axis]:
            raise Mixed(f"{node.describe()} broadcasts it")
    return out_axis


def _matmul(node: Node, ins, shapes, shape) -> int:
    """NumPy's matmul: a 1-D operand is a vector whose axis the product drops."""
    a, b = ins
    (sa, sb), r = shapes, len(shape)
    found = set()
    if a is not None:
        if a == len(sa) - 1 or len(sa) == 1:
            raise Mixed(f"{node.describe()} sums over it (the inner dimension of its first input)")
        found.add(a if len(sb) == 1 else a + r - len(sa))
    if b is not None:
        if b == len(sb) - 2 or len(sb) == 1:
            raise Mixed(f"{node.describe()} sums over it (the inner dimension of its second input)")
        found.add(r - 1 if b == len(sb) - 1 else b if len(sa) == 1 else b + r - len(sb))
    if len(found) != 1:
        raise Mixed(f"{node.describe()} pairs each of its positions with every other (axes {sorted(found)} of its "
                    "output)")
    out_axis = found.pop()
    if out_axis < r - 2:  # a batch axis: an operand without the dim must not vary along it
        for x, s in zip(ins, shapes):
            k = out_axis - (r - len(s))
            if x is None and len(s) > 2 and k >= 0 and s[k] != 1:
                raise Mixed(f"{node.describe()} pairs it with {s[k]} matrices of another input")
    return out_axis


def _reshape(node: Node, x: int, before, after) -> int:
    """The axis keeps its rows if the dims before it keep their product and it keeps its size."""
    outer = math.prod(before[:x])
    for t in range(len(after)):
        if math.prod(after[:t]) == outer and after[t] == before[x]:
            return t
    raise Mixed(f"{node.describe()} merges or splits it ({list(before)} -> {list(after)})")


def _concat(node: Node, ins, shapes) -> int:
    axes = {a for a in ins if a is not None}
    axis = ops.axis_of(node.attrs["axis"], len(shapes[0]))
    if len(axes) != 1 or axis in axes:
        raise Mixed(f"{node.describe()} joins along it" if axis in axes else
                    f"{node.describe()} combines it with another axis")
    x = axes.pop()
    for i, (a, s) in enumerate(zip(ins, shapes)):
        if a is None and s[x] != 1:
            raise Mixed(f"{node.describe()} joins input '{node.inputs[i]}', which does not have it, row by row")
    return x


def _gather(node: Node, ins, shapes) -> int:
    data, indices = ins
    axis = ops.axis_of(node.attrs["axis"], len(shapes[0]))
    if data is not None and indices is not None:
        raise Mixed(f"{node.describe()} indexes it with values that depend on it")
    if data is not None:
        if data == axis:
            raise Mixed(f"{node.describe()} picks positions along it")
        return data if data < axis else data + len(shapes[1]) - 1
    return axis + indices
