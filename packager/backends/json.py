"""The `json` backend: a region serialized as JSON, interpreted at run time.

The region becomes one module of kind `json` (docs/format.md, "JSON payload"):
its nodes, the typed signature of its one function, and a workspace layout for
the tensors that live only inside the region. The runtime's `json` kind
(runtime_c/src/json.c) checks all of it at load and runs the nodes with its own
float32 kernels; weights are found by name through the module's imports.

The workspace layout is the build's liveness plan (plan.plan_arena, each node a
call): a tensor lives from the node that writes it to the last node that reads
it (both inclusive, so an output never shares bytes with that node's inputs),
offsets are 64-aligned.
"""

from __future__ import annotations

import json

from packager import plan
from packager.backends.base import Backend, Payload, Region
from packager.ir import Graph, Node

FORMAT_VERSION = 1
# The ops the runtime's json kind implements (runtime_c/src/json_ops.c; tests check that both agree with
# each other and with the registry, packager/ops.py)
OPS = ("dense", "matmul", "add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "softmax", "flatten", "reshape")
MAX_DIMS = 8  # the runtime's limit (DPK_K_MAX_DIMS)


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
        workspace = plan.plan_arena([plan.Call(node.name, node.inputs, [node.output]) for node in region.nodes],
                                    {n: graph.type_of(n).nbytes for n in private})
        intermediates = {}
        for name in private:
            sig = signature(name)
            intermediates[name] = {"dtype": sig["dtype"], "shape": sig["shape"], "offset": workspace.offsets[name]}
        doc = {
            "version": FORMAT_VERSION,
            "function": region.name,
            "inputs": [signature(n) for n in region.activations],
            "outputs": [signature(n) for n in region.outputs],
            "workspace_bytes": workspace.size,
            "intermediates": intermediates,
            # attributes as ops.normalize left them: every one explicit, defaults filled
            "nodes": [{"op": node.op, "inputs": list(node.inputs), "output": node.output, "attrs": dict(node.attrs)}
                      for node in region.nodes],
        }
        data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        return Payload(kind="json", data=data, function=region.name, workspace_bytes=workspace.size)
