"""The `json` backend: a region serialized as JSON, interpreted at run time.

The region becomes one module of kind `json` (docs/format.md, "JSON payload"):
its nodes, the typed signature of its one function, and a workspace layout for
the tensors that live only inside the region. The runtime's `json` kind
(runtime_c/src/json.c) checks all of it at load and runs the nodes with its own
float32 kernels; weights are found by name through the module's imports.

The workspace layout is a liveness-based first fit: a tensor lives from the
node that writes it to the last node that reads it (both inclusive, so an
output never shares bytes with that node's inputs), offsets are 64-aligned.
"""

from __future__ import annotations

import json

from packager.backends.base import Backend, Payload, Region
from packager.ir import Graph, Node

FORMAT_VERSION = 1
# The ops the runtime's json kind implements (runtime_c/src/json_ops.c; tests check that both agree with
# each other and with the registry, packager/ops.py)
OPS = ("dense", "matmul", "add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "softmax", "flatten", "reshape")
MAX_DIMS = 8  # the runtime's limit (DPK_K_MAX_DIMS)
ALIGN = 64


def _align(value: int) -> int:
    return (value + ALIGN - 1) // ALIGN * ALIGN


def plan_workspace(nodes: list[Node], names: list[str], nbytes: dict[str, int]) -> tuple[dict[str, int], int]:
    """Offsets for the tensors `names` (each written by one of `nodes`) and the workspace size.

    First fit over the live set: at node i, the new tensor goes to the lowest
    64-aligned offset that no tensor still live at i (read at i or later) covers."""
    wanted = set(names)
    last = {node.output: i for i, node in enumerate(nodes) if node.output in wanted}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            if t in last:
                last[t] = max(last[t], i)
    placed: list[tuple[int, int, str]] = []  # (offset, aligned size, name)
    offsets: dict[str, int] = {}
    total = 0
    for i, node in enumerate(nodes):
        name = node.output
        if name not in wanted:
            continue
        size = _align(max(nbytes[name], 1))
        offset = 0
        for start, length in sorted((o, s) for o, s, n in placed if last[n] >= i):
            if offset + size <= start:
                break
            offset = max(offset, start + length)
        placed.append((offset, size, name))
        offsets[name] = offset
        total = max(total, offset + size)
    return offsets, total


class JsonBackend(Backend):
    name = "json"
    payload = True  # its regions become serialized modules

    def supports(self, node: Node, graph: Graph) -> str | None:
        if node.op not in OPS:
            return f"op {node.op} is not in the json kernel set"
        for name in [*node.inputs, node.output]:
            t = graph.type_of(name)
            if t.dtype != "float32":
                return f"json kernels are float32 only ({name} is {t})"
            if len(t.shape) > MAX_DIMS:
                return f"json kernels take at most {MAX_DIMS} dimensions ({name} is {t})"
            if any(d < 1 for d in t.shape):
                return f"json kernels need non-empty tensors ({name} is {t})"
        return None

    def lower(self, region: Region, graph: Graph) -> Payload:
        def signature(name: str) -> dict:
            t = graph.type_of(name)
            return {"name": name, "dtype": t.dtype, "shape": [int(d) for d in t.shape]}

        outputs = set(region.outputs)
        private = [node.output for node in region.nodes if node.output not in outputs]
        offsets, workspace = plan_workspace(region.nodes, private,
                                            {n: graph.type_of(n).nbytes for n in private})
        intermediates = {}
        for name in private:
            sig = signature(name)
            intermediates[name] = {"dtype": sig["dtype"], "shape": sig["shape"], "offset": offsets[name]}
        doc = {
            "version": FORMAT_VERSION,
            "function": region.name,
            "inputs": [signature(n) for n in region.activations],
            "outputs": [signature(n) for n in region.outputs],
            "workspace_bytes": workspace,
            "intermediates": intermediates,
            # attributes as ops.normalize left them: every one explicit, defaults filled
            "nodes": [{"op": node.op, "inputs": list(node.inputs), "output": node.output, "attrs": dict(node.attrs)}
                      for node in region.nodes],
        }
        data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        return Payload(kind="json", data=data, function=region.name, workspace_bytes=workspace)
