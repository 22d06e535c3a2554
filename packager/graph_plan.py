"""The call list -> the `graph` module's payload (docs/format.md): tensors, calls, the arena plan.

Every tensor a call reads or writes gets one entry in the tensor table: a graph input
or output by its index, a weight by name (the params module has it), anything else
an offset into the per-run arena, planned by liveness (plan.plan_arena) like each
call's workspace (an extra uint8 tensor after the call's arguments). Inputs come
first in the table, outputs last; the rest in the order the calls use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from packager.ir import Graph
from packager.lower import GraphOutput
from packager.plan import ArenaPlan, Call, plan_arena


@dataclass
class GraphPlan:
    arena: ArenaPlan
    payload: dict  # the JSON document: {version, arena_bytes, tensors, calls}

    def payload_bytes(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()


def plan(graph: Graph, calls: list[Call], outputs: list[GraphOutput]) -> GraphPlan:
    """The arena and the payload for `calls` over the inferred `graph`; `outputs` is lower.output_plan(graph)."""
    output_index = {out.tensor: k for k, out in enumerate(outputs)}
    sizes = {t: graph.type_of(t).nbytes for call in calls for t in (*call.inputs, *call.outputs)
             if t not in graph.inputs and t not in graph.weights and t not in output_index}
    arena = plan_arena(calls, sizes)
    tensors: list[dict] = []
    index: dict[str, int] = {}  # tensor -> its entry

    def tensor(tid: str) -> int:
        if tid not in index:
            if tid in output_index:
                k = output_index[tid]
                name, t, storage = graph.outputs[k], graph.type_of(outputs[k].source), {"storage": "output", "index": k}
            else:
                name, t = tid, graph.type_of(tid)
                if tid in graph.inputs:
                    storage = {"storage": "input", "index": list(graph.inputs).index(tid)}
                elif tid in graph.weights:
                    storage = {"storage": "param"}
                else:
                    storage = {"storage": "arena", "offset": arena.offsets[tid]}
            tensors.append({"name": name, "dtype": t.dtype, "shape": list(t.shape), **storage})
            index[tid] = len(tensors) - 1
        return index[tid]

    for name in graph.inputs:
        tensor(name)
    graph_calls = []
    for i, call in enumerate(calls):
        args = [tensor(t) for t in (*call.inputs, *call.outputs)]
        if call.workspace_bytes > 0:
            tensors.append({"name": f"{call.func}.workspace", "dtype": "uint8", "shape": [call.workspace_bytes],
                            "storage": "arena", "offset": arena.workspaces[i]})
            args.append(len(tensors) - 1)
        graph_calls.append({"func": call.func, "args": args})
    for out in outputs:
        tensor(out.tensor)
    return GraphPlan(arena, {"version": 1, "arena_bytes": arena.size, "tensors": tensors, "calls": graph_calls})
