"""LutBackend: sigmoid and tanh by table lookup, as modules of kind `lut`.

The dsopack backend interface (docs/backends.md in dsopack):
- `name`: what manifests write in `backends:` (and the entry point name);
- `payload = True`: lower() returns Payloads, so consecutive nodes this backend
  takes form one region;
- `supports(node, graph)`: None if it takes the node, else why not;
- `lower(region, graph)`: a Payload of kind `lut` whose function takes the
  region's activations, then its outputs (no workspace), plus the kind's C.
"""

from __future__ import annotations

from importlib import resources

from packager.backends.base import Backend, KindSource, Payload, Region
from packager.ir import Graph, Node

from dsopack_lut import payload

KIND = "lut"


def kind_source() -> KindSource:
    """The C of kind `lut` (defines `const dpk_kind dpk_kind_lut`), shipped with this package."""
    text = resources.files("dsopack_lut").joinpath("lut_kind.c").read_text(encoding="utf-8")
    return KindSource(name=KIND, source=text)


class LutBackend(Backend):
    name = "lut"
    payload = True

    def supports(self, node: Node, graph: Graph) -> str | None:
        if node.op not in payload.TABLES:
            return f"op {node.op} has no table (lut takes {', '.join(payload.TABLES)})"
        source = node.inputs[0]
        if source in graph.weights:
            return f"lut takes activations, and {source} is a weight"
        t = graph.type_of(source)
        if t.dtype != "float32":
            return f"lut is float32 only ({source} is {t})"
        return None

    def lower(self, region: Region, graph: Graph) -> Payload:
        ids = {name: i for i, name in enumerate([*region.activations, *region.outputs])}
        for node in region.nodes:  # intermediates: read inside the region only
            ids.setdefault(node.output, len(ids))
        numel = 1
        for d in graph.type_of(region.nodes[0].output).shape:
            numel *= int(d)
        stages = [(ids[node.inputs[0]], ids[node.output], node.op) for node in region.nodes]
        data = payload.pack(region.name, len(region.activations), len(region.outputs), len(ids), numel, stages)
        return Payload(kind=KIND, data=data, function=region.name, imports_weights=False,
                       kind_source=kind_source())
