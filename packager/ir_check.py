"""Graph validation and type inference: `infer(graph)`, the build's infer stage.

Checks, in order, each failure a BuildError that names the node and the tensor:
  - input, weight and node-output names do not collide; node names are unique;
  - every node input is defined before use (a graph input, a weight or an
    earlier node's output), with a hint when it is produced later or looks
    like a missing weight;
  - every graph output exists, and is listed once (the runtime knows outputs by name);
  - each node's op is known; `ops.normalize` fills its attributes and
    `ops.infer` gives its output type.
Fills `graph.types` for every tensor: inputs from the manifest, weights from
their arrays, node outputs from inference.
"""

from __future__ import annotations

import difflib

from packager import ops
from packager.ir import BuildError, Graph, Node, TensorType


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_names(graph: Graph) -> None:
    for name in graph.inputs:
        if name in graph.weights:
            raise BuildError(f"'{name}' is both a graph input and a weight")
    names: dict[str, Node] = {}
    for node in graph.nodes:
        if not node.name:
            raise BuildError(f"a node of op {node.op} has no name")
        if node.name in names:
            raise BuildError(f"two nodes are named '{node.name}' (ops {names[node.name].op} and {node.op})")
        names[node.name] = node
    producers: dict[str, Node] = {}
    for node in graph.nodes:
        out = node.output
        if out in graph.inputs:
            raise BuildError(f"{node.describe()} writes '{out}', which is a graph input")
        if out in graph.weights:
            raise BuildError(f"{node.describe()} writes '{out}', which is a weight")
        if out in producers:
            raise BuildError(f"{node.describe()} writes '{out}', which {producers[out].describe()} "
                             f"already writes (each tensor has one producer)")
        producers[out] = node


def _check_uses(graph: Graph) -> None:
    producers = graph.producer()
    defined = set(graph.inputs) | set(graph.weights)
    for node in graph.nodes:
        for name in node.inputs:
            if name in defined:
                continue
            message = (f"{node.describe()} reads '{name}', which is not a graph input, a weight "
                       f"or an earlier node's output")
            if name in producers:
                later = producers[name]
                message += f"; {later.describe()} writes it later (nodes must be in execution order)"
            elif name == node.output:
                message += " (a node cannot read its own output)"
            else:
                message += _suggest(name, defined)
                if "." in name or not graph.weights:
                    have = ", ".join(sorted(graph.weights)) or "none"
                    message += f"; if it is a weight, it is missing from the weights (they are: {have})"
            raise BuildError(message)
        defined.add(node.output)
    if not graph.outputs:
        raise BuildError("the graph has no outputs")
    for i, name in enumerate(graph.outputs):
        if name in graph.outputs[:i]:
            raise BuildError(f"graph output '{name}' is listed twice (outputs are known by name: list it once)")
        if name not in defined:
            raise BuildError(f"graph output '{name}' is not a graph input, a weight or a node's output"
                             + _suggest(name, defined))


def infer(graph: Graph) -> Graph:
    """Check `graph`, normalize its nodes' attributes and fill `graph.types`; returns `graph`."""
    _check_names(graph)
    _check_uses(graph)
    types: dict[str, TensorType] = dict(graph.inputs)
    for name, array in graph.weights.items():
        types[name] = TensorType.of(array)
    for node in graph.nodes:
        if node.op not in ops.OPS:
            raise BuildError(f"{node.describe()}: unknown op '{node.op}'" + _suggest(node.op, ops.OPS)
                             + f" (known: {', '.join(sorted(ops.OPS))})")
        in_types = [types[name] for name in node.inputs]
        try:
            ops.normalize(node)
            out = ops.infer(node, in_types)
        except BuildError:
            raise
        except Exception as e:  # a rule tripped on input it did not expect: still name the node
            shapes = ", ".join(f"{n}: {t}" for n, t in zip(node.inputs, in_types))
            raise BuildError(f"{node.describe()} with inputs ({shapes}): {type(e).__name__}: {e}") from e
        if not isinstance(out, TensorType):
            raise BuildError(f"{node.describe()}: shape inference gave {out!r}, not a TensorType")
        types[node.output] = out
    graph.types = types
    return graph
