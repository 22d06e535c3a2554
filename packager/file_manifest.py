"""The file's modules, its embedded manifest and the blob: the build's package stage.

Modules (DESIGN.md, "The embedded manifest"), in this order: one `dso` module per
backend that generated C (named after it, listing its functions); each payload
module (importing `weights` when it reads weights); `weights`, the params module
with every weight a call reads (laid out by plan.place_weights), if any; and
`main`, the graph module, which imports all of them and is the entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from packager import isa_variants, plan
from packager.blob import Blob, BlobWriter
from packager.ir import BuildError
from packager.lower import GraphOutput, Lowered
from packager.toolchain import Toolchain
from packager.version import version


@dataclass
class Package:
    manifest: dict
    blob: Blob  # header, manifest and payloads, ready to write
    weights: list[str]  # the weights stored, in the order calls read them


def package(name: str, low: Lowered, graph_payloads: dict[str, bytes], outputs: list[GraphOutput], tc: Toolchain,
            dynamic: dict | None = None) -> Package:
    """Model `name`, lowered to `low`, built with `tc`; `graph_payloads`: graph module name -> its payload, the
    entry (`main`) last. `dynamic` (a dynamic build's; dynamic.manifest_fields): each input's and output's
    `dims`, and the manifest's `dims` and `plans`."""
    writer = BlobWriter()
    weights = list(dict.fromkeys([*low.dso_weights, *(w for p in low.payloads for w in p.weights)]))
    modules = _modules(writer, low, graph_payloads, weights)
    graph = low.graph
    manifest = {
        "format": "dsopack/1",
        "name": name,
        "producer": {"dsopack": version(), "cc": tc.cc_name, "cflags": list(tc.cflags)},
        "target": {"triple": tc.triple, "machine": tc.machine},  # and "variants" below
        "requires": list(dict.fromkeys(low.requires)),
        "checksum": "xxh3-64",
        "entry": "main",
        "inputs": [{"name": n, "dtype": t.dtype, "shape": list(t.shape)} for n, t in graph.inputs.items()],
        "outputs": [{"name": graph.outputs[k], "dtype": graph.type_of(out.source).dtype,
                     "shape": list(graph.type_of(out.source).shape)} for k, out in enumerate(outputs)],
        "modules": modules,
    }
    if dynamic:
        for entry, dims in zip(manifest["inputs"] + manifest["outputs"], dynamic["inputs"] + dynamic["outputs"]):
            entry["dims"] = dims
        manifest["dims"], manifest["plans"] = dynamic["dims"], dynamic["plans"]
    if tc.variants:
        manifest["target"]["variants"] = isa_variants.manifest_entry(tc.variants)
    if low.carried.names:
        manifest["kinds"] = {"carried": low.carried.names}
    return Package(manifest, writer.finish(manifest), weights)


def _modules(writer: BlobWriter, low: Lowered, graph_payloads: dict[str, bytes], weights: list[str]) -> list[dict]:
    """The manifest's modules, their payloads added to `writer` (the graphs' first, the weights' last)."""
    taken = {"weights", *graph_payloads, *(p.name for p in low.payloads)}
    if taken & set(low.functions):
        raise BuildError(f"backend name '{sorted(taken & set(low.functions))[0]}' is also the name of a module "
                         "this build makes; rename the backend")
    modules: list[dict] = [{"name": backend, "kind": "dso", "functions": functions}
                           for backend, functions in low.functions.items()]
    graphs = [{"name": module, "kind": "graph", "imports": list(low.functions), "payload": writer.add(data, "zstd")}
              for module, data in graph_payloads.items()]
    for p in low.payloads:
        module = {"name": p.name, "kind": p.payload.kind}
        if p.payload.imports_weights and weights:
            module["imports"] = ["weights"]
        module["functions"] = [p.payload.function]
        module["payload"] = writer.add(p.payload.data, p.payload.codec)
        modules.append(module)
        for graph in graphs:
            graph["imports"].append(p.name)
    if weights:
        tensors = plan.place_weights(writer, {w: low.graph.weights[w] for w in weights})
        modules.append({"name": "weights", "kind": "params", "tensors": tensors})
        for graph in graphs:
            graph["imports"].append("weights")
    return modules + graphs
