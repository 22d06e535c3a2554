"""Assign each node to a backend by priority, then group nodes into regions.

A node goes to the first backend in the priority list whose `supports()`
returns None; a node's `backend:` override wins if that backend takes it (else
a BuildError naming the node, the backend and its reason). Host regions hold
one node each; nodes of a payload backend (one that serializes a module, e.g.
json) form regions from maximal runs of consecutive nodes, named ext0, ext1...

A backend that declares fusions (`Backend.fuses`) also takes the elementwise
node that follows one of its nodes when the graph allows it: the follower is
the only consumer of the node's output, that output is not a graph output, the
follower has no `backend:` override naming another backend, and anything else
it reads (a residual add's other operand) is ready before the anchor runs (a
graph input, a weight, or made by an earlier node). The follower then joins its
anchor's region (whatever lies between them in node order: what it reads is
ready at the anchor, so running it with the anchor is safe), and so may the
follower's own follower (conv2d -> add -> relu).

Every decision keeps its reason, for `dsopack build --explain`:
    dense_0 -> json (first in [json, host] that supports dense)
    conv_1 -> host (json: op conv2d is not in the json kernel set)
    relu_2 -> cblas (fused into dense_0)
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from packager import plugins
from packager.backends.base import Backend, Region
from packager.ir import BuildError, Graph, Node

# name -> "module:Class" (imported only when a manifest asks for it) or a Backend class
BACKENDS = {
    "host": "packager.backends.host:HostBackend",
    "json": "packager.backends.json:JsonBackend",
    "cblas": "packager.backends.cblas:CblasBackend",
    "xnnpack": "packager.backends.xnnpack:XnnpackBackend",
}
# backends whose regions become serialized modules (several nodes per region)
PAYLOAD_BACKENDS = {"json"}


def get_backend(name: str, where: str = "backends") -> Backend:
    """The backend called `name`: a built-in (BACKENDS) or an installed `dsopack.backends` entry point."""
    known = {**plugins.entry_point_backends(), **BACKENDS}  # a built-in name wins
    if name not in known:
        raise BuildError(f"{where}: unknown backend '{name}' (known: {', '.join(sorted(known))})")
    cls = known[name]
    origin = "built in" if name in BACKENDS else f"entry point {name} = {cls}"
    if isinstance(cls, str):
        module_name, _, class_name = cls.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise BuildError(f"{where}: backend '{name}' is not available in this installation ({origin}: "
                             f"{type(e).__name__}: {e})") from None
    try:
        backend = cls()
    except Exception as e:
        raise BuildError(f"{where}: backend '{name}' ({origin}) failed to start: {type(e).__name__}: {e}") from None
    return backend if name in BACKENDS else plugins.check_backend(backend, name, origin)


def is_payload_backend(backend: Backend) -> bool:
    return backend.name in PAYLOAD_BACKENDS or getattr(backend, "payload", False)


@dataclass
class Assignment:
    node: Node
    backend: str
    reason: str  # why this backend, or why the earlier ones declined
    fused_into: str | None = None  # the anchor node's name when the node is fused into it

    def explain(self) -> str:
        return f"{self.node.name} -> {self.backend} ({self.reason})"


@dataclass
class Partition:
    regions: list[tuple[Backend, Region]]
    assignments: list[Assignment]
    backends: dict[str, Backend] = field(default_factory=dict)

    def explain(self) -> list[str]:
        return [a.explain() for a in self.assignments]


def c_identifier(text: str) -> str:
    ident = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return ident if ident and not ident[0].isdigit() else f"_{ident}"


def assign(graph: Graph, priority: list[str], backends: dict[str, Backend] | None = None) -> list[Assignment]:
    backends = {} if backends is None else backends
    for name in priority:
        if name not in backends:
            backends[name] = get_backend(name)
    listing = f"[{', '.join(priority)}]"
    assignments = []
    consumers = graph.consumers()
    pending: dict[str, tuple[Node, str]] = {}  # follower name -> (anchor, backend)
    made_at = {n.output: i for i, n in enumerate(graph.nodes)}  # tensor -> index of the node that makes it
    for node in graph.nodes:
        if node.name in pending:
            anchor, bname = pending.pop(node.name)
            assignments.append(Assignment(node, bname, f"fused into {anchor.name}", fused_into=anchor.name))
            _fuse_follower(node, bname, graph, backends, consumers, pending, made_at, anchor)
            continue
        if node.backend is not None:
            if node.backend not in backends:
                backends[node.backend] = get_backend(node.backend, f"{node.describe()}: backend")
            reason = backends[node.backend].supports(node, graph)
            if reason is not None:
                raise BuildError(f"{node.describe()} asks for backend '{node.backend}', which does not take it: "
                                 f"{reason}")
            assignments.append(Assignment(node, node.backend, f"backend: {node.backend} set on the node"))
            _fuse_follower(node, node.backend, graph, backends, consumers, pending, made_at)
            continue
        declined = []
        for name in priority:
            reason = backends[name].supports(node, graph)
            if reason is None:
                why = (f"first in {listing} that supports {node.op}" if not declined
                       else "; ".join(f"{b}: {r}" for b, r in declined))
                assignments.append(Assignment(node, name, why))
                _fuse_follower(node, name, graph, backends, consumers, pending, made_at)
                break
            declined.append((name, reason))
        else:
            shapes = ", ".join(f"{n}: {graph.type_of(n)}" for n in node.inputs)
            lines = "; ".join(f"{b}: {r}" for b, r in declined)
            raise BuildError(f"{node.describe()} with inputs ({shapes}): no backend in {listing} takes it ({lines})")
    return assignments


def _fuse_follower(node: Node, bname: str, graph: Graph, backends: dict[str, Backend],
                   consumers: dict[str, list[Node]], pending: dict[str, tuple[Node, str]],
                   made_at: dict[str, int], anchor: Node | None = None) -> None:
    """If backend `bname` may fold the node after `node` into `anchor`'s region (`node`'s own when it is the
    anchor), remember that follower."""
    anchor = anchor or node
    backend = backends[bname]
    if not backend.fuses.get(node.op) or node.output in graph.outputs:
        return
    users = consumers.get(node.output, [])
    if len(users) != 1:
        return
    follower = users[0]
    others = [t for t in follower.inputs if t != node.output]
    if len(others) != len(follower.inputs) - 1 or follower.backend not in (None, bname):
        return
    if any(made_at.get(t, -1) >= made_at[anchor.output] for t in others):  # not ready when the anchor runs
        return
    if backend.can_fuse(node, follower, graph):
        pending[follower.name] = (anchor, bname)


def _make_region(name: str, nodes: list[Node], graph: Graph, used_later, unused: set[str]) -> Region:
    produced = {node.output for node in nodes}
    inputs: list[str] = []
    for node in nodes:
        for t in node.inputs:
            if t not in produced and t not in inputs:
                inputs.append(t)
    # what others read, plus results nobody reads (they still need somewhere to go)
    outputs = [node.output for node in nodes if used_later(node.output) or node.output in unused]
    if not outputs:
        outputs = [nodes[-1].output]
    weights = [t for t in inputs if t in graph.weights]
    return Region(name=name, nodes=list(nodes), inputs=inputs, outputs=outputs, weights=weights)


def group(graph: Graph, assignments: list[Assignment], backends: dict[str, Backend]) -> list[tuple[Backend, Region]]:
    """Host-like backends: one region per node (plus its fused follower); payload backends: maximal
    consecutive runs."""
    runs: list[tuple[str, list[Node]]] = []
    run_of: dict[str, int] = {}  # node name -> index of its run
    for a in assignments:
        if a.fused_into is not None:  # joins its anchor's run, wherever that is
            runs[run_of[a.fused_into]][1].append(a.node)
        elif runs and runs[-1][0] == a.backend and is_payload_backend(backends[a.backend]):
            runs[-1][1].append(a.node)
        else:
            runs.append((a.backend, [a.node]))
        run_of[a.node.name] = run_of[a.fused_into] if a.fused_into is not None else len(runs) - 1
    last_read: dict[str, int] = {}  # tensor -> index of the last run that reads it
    for i, (_, nodes) in enumerate(runs):
        for node in nodes:
            for t in node.inputs:
                last_read[t] = i
    for t in graph.outputs:
        last_read[t] = len(runs)
    unused = {node.output for node in graph.nodes} - set(last_read)
    regions = []
    taken: set[str] = set()
    ext = 0
    for i, (bname, nodes) in enumerate(runs):
        def later(t: str, i: int = i) -> bool:
            return last_read.get(t, -1) > i
        if is_payload_backend(backends[bname]):
            name = f"ext{ext}"
            ext += 1
        else:
            name = c_identifier(f"{bname}_{nodes[0].name}")
            base, k = name, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
        taken.add(name)
        regions.append((backends[bname], _make_region(name, nodes, graph, later, unused)))
    return regions


def partition(graph: Graph, priority: list[str]) -> Partition:
    """`graph` must be inferred. Returns the regions in execution order and the reasons."""
    backends: dict[str, Backend] = {}
    assignments = assign(graph, priority, backends)
    return Partition(regions=group(graph, assignments, backends), assignments=assignments, backends=backends)
