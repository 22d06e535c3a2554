"""Memory plans: the activation arena (by liveness) and the weight layout.

Arena: the one liveness planner, for the graph's per-run arena (graph_plan.py)
and for a region's own workspace (backends/json.py: each node a call). Every
tensor in `sizes` (for the graph: neither a graph input, an output nor a
weight), and every call's workspace, gets an offset into one arena. A tensor
lives from the call that writes it to the last call that reads it (a workspace
only during its call); two tensors whose lifetimes overlap never share bytes.
Placement is greedy by size (largest first), each at the best-fitting gap
among the tensors it overlaps in time; offsets and sizes are 64-aligned.

Weights: raw payloads, 4096-aligned when they are at least a page (so they can
be mapped and shared page by page), 64-aligned when small; big ones first so
the small ones pack together at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 64
PAGE = 4096


def align(value: int, alignment: int = ALIGN) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass
class Call:
    func: str
    inputs: list[str]
    outputs: list[str]
    workspace_bytes: int = 0


@dataclass
class ArenaPlan:
    offsets: dict[str, int] = field(default_factory=dict)  # tensor -> offset
    workspaces: dict[int, int] = field(default_factory=dict)  # call index -> offset
    size: int = 0  # arena bytes (a multiple of 64)
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (first call, last call)


def workspace_key(index: int) -> str:
    return f"\0workspace{index}"


def lifetimes(calls: list[Call], planned) -> dict[str, tuple[int, int]]:
    """First and last call index touching each planned tensor."""
    spans: dict[str, tuple[int, int]] = {}
    for i, call in enumerate(calls):
        for name in (*call.inputs, *call.outputs):
            if name in planned:
                first = spans[name][0] if name in spans else i
                spans[name] = (first, i)
    return spans


def plan_arena(calls: list[Call], sizes: dict[str, int]) -> ArenaPlan:
    """Offsets for the tensors in `sizes` (bytes each) and for every call's workspace."""
    spans = lifetimes(calls, sizes)
    items = [(name, align(max(sizes[name], 1)), spans[name]) for name in spans]
    for i, call in enumerate(calls):
        if call.workspace_bytes > 0:
            items.append((workspace_key(i), align(call.workspace_bytes), (i, i)))
    # largest first; ties by first use, then name, so a plan is reproducible
    items.sort(key=lambda item: (-item[1], item[2][0], item[0]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    total = 0
    for name, size, (first, last) in items:
        busy = sorted((o, s) for o, s, f, l in placed if f <= last and first <= l)
        best, best_gap, cursor = None, None, 0
        for offset, length in busy:
            gap = offset - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, offset + length)
        if best is None:
            best = cursor
        placed.append((best, size, first, last))
        offsets[name] = best
        total = max(total, best + size)
    plan = ArenaPlan(size=total, lifetimes=spans)
    for name, offset in offsets.items():
        if name.startswith("\0workspace"):
            plan.workspaces[int(name[len("\0workspace"):])] = offset
        else:
            plan.offsets[name] = offset
    return plan


def weight_alignment(nbytes: int) -> int:
    return PAGE if nbytes >= PAGE else ALIGN


def weight_order(weights: dict) -> list[str]:
    """Big (page-aligned) weights first, then the small ones; each group in the given order."""
    names = list(weights)
    return ([n for n in names if weights[n].nbytes >= PAGE]
            + [n for n in names if weights[n].nbytes < PAGE])


def place_weights(writer, weights: dict) -> dict[str, dict]:
    """Add each array to a BlobWriter as a raw payload; return name -> params descriptor."""
    tensors = {}
    for name in weight_order(weights):
        array = weights[name]
        desc = writer.add(array, codec="raw", align=weight_alignment(array.nbytes))
        tensors[name] = {"dtype": array.dtype.name, "shape": [int(d) for d in array.shape], **desc}
    return {name: tensors[name] for name in weights}  # listed in the model's order
