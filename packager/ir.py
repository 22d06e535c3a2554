"""The packager's graph IR: tensors and nodes, plain data.

A Graph holds typed inputs, weights (numpy arrays), nodes in topological order
(one output each) and output names. `ir_check.infer(graph)` checks it and fills
`types` for every tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class BuildError(Exception):
    """A problem in the user's model or manifest; the message says what and where."""


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: float32, int64...

    @classmethod
    def of(cls, array: np.ndarray) -> "TensorType":
        return cls(tuple(int(d) for d in array.shape), array.dtype.name)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


@dataclass
class Node:
    op: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    name: str = ""  # unique; frontends default it to "<op>_<index>"
    backend: str | None = None  # the node's `backend:` override

    def describe(self) -> str:
        return f"node '{self.name}' (op {self.op})"


@dataclass
class Graph:
    name: str
    inputs: dict[str, TensorType]
    weights: dict[str, np.ndarray]
    nodes: list[Node]
    outputs: list[str]
    types: dict[str, TensorType] = field(default_factory=dict)  # every tensor, after infer()
    # dynamic dims (dynamic.Dim by name): input axes declared as ranges; the graph is built at one size of each
    dims: dict = field(default_factory=dict)
    # a dynamic build's largest plan: a backend that picks a weight's layout by the activations' shapes picks
    # it there, so that every plan stores the weight alike (it is stored once)
    layouts_from: "Graph | None" = field(default=None, repr=False, compare=False)

    def type_of(self, name: str) -> TensorType:
        """The type of any tensor of the graph: inferred, a weight's or an input's."""
        if name in self.types:
            return self.types[name]
        if name in self.weights:
            return TensorType.of(self.weights[name])
        if name in self.inputs:
            return self.inputs[name]
        raise BuildError(f"tensor '{name}' has no type (run ir_check.infer(graph) first)")

    def producer(self) -> dict[str, Node]:
        return {node.output: node for node in self.nodes}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users
