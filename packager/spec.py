"""The deployment manifest (DESIGN.md, "Input: the deployment manifest") -> a Spec: what to build.

    spec = load("manifests/digits_mlp.yaml")           # a path
    spec = load({"name": ..., "model": ...}, base_dir)  # an already-loaded dict
    spec = load("model.onnx", shapes={"x": [1, 64]})   # an ONNX file, with the defaults (from_onnx)

A Spec is the ir.Graph (not yet inferred; made by a frontend: frontends/yaml_graph.py
for `model.graph`, frontends/onnx.py for `model.onnx`), the backend priority list and
the target. A manifest without `backends` means [host]; a bare .onnx file leaves
`backends` None: the build then uses the fastest the target has (backend_choice.py). `shapes` (the CLI's --shape) fixes ONNX input dimensions; it overrides the
manifest's `model.shapes` input by input, and is an error for a YAML graph. Every
problem is a BuildError that names the file and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from packager.fields import Fields, typename
from packager.frontends import onnx as onnx_frontend
from packager.frontends import yaml_graph
from packager.ir import BuildError, Graph


@dataclass
class Target:
    triple: str = "native"
    cflags: list[str] = field(default_factory=lambda: ["-O3"])
    cc: str | None = None
    ldflags: list[str] = field(default_factory=list)


@dataclass
class Spec:
    name: str
    graph: Graph
    backends: list[str] | None = field(default_factory=lambda: ["host"])  # None: the fastest for the target
    target: Target = field(default_factory=Target)
    path: str | None = None  # the manifest file, if it came from one
    base_dir: str = "."  # relative paths (weights) are resolved here


def load(source, base_dir: str | os.PathLike | None = None, shapes: dict | None = None,
         sizes: dict | None = None) -> Spec:
    """Parse a deployment manifest: a YAML file path, or a dict (paths relative to base_dir); or an .onnx path.
    `sizes` (dim name -> int): the size to build each dynamic dim at (dynamic.py); by default its max."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".onnx"):
        return from_onnx(source, shapes, sizes=sizes)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise BuildError(f"{path}: cannot read the manifest: {e.strerror or e}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise BuildError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
        base = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(path))
        default_name = os.path.splitext(os.path.basename(path))[0]
        return parse(doc, base, where=path, default_name=default_name, path=path, shapes=shapes, sizes=sizes)
    if isinstance(source, dict):
        return parse(source, os.fspath(base_dir) if base_dir is not None else os.getcwd(), where="<manifest>",
                     shapes=shapes, sizes=sizes)
    raise BuildError(f"a manifest is a YAML file path or a dict, got {typename(source)}")


def from_onnx(path, shapes: dict | None = None, *, name: str | None = None, backends: list[str] | None = None,
              target: Target | None = None, sizes: dict | None = None) -> Spec:
    """A Spec for an ONNX file with the defaults of `dsopack build model.onnx`: native -O3, and backends None
    (the build picks the fastest the target has: backend_choice.choose) unless `backends` is given."""
    path = os.fspath(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    graph = onnx_frontend.load_graph(path, shapes, name=name, sizes=sizes)
    return Spec(name=name, graph=graph, backends=list(backends) if backends else None, target=target or Target(),
                path=path, base_dir=os.path.dirname(os.path.abspath(path)))


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def parse(doc, base_dir: str, *, where: str = "<manifest>", default_name: str = "model",
          path: str | None = None, shapes: dict | None = None, sizes: dict | None = None) -> Spec:
    fields = Fields(where)
    if doc is None:
        raise fields.error("", "the manifest is empty")
    fields.mapping(doc, "", ("name", "model", "backends", "target"))
    name = fields.string(doc["name"], "name") if "name" in doc else default_name
    if "model" not in doc:
        raise fields.error("model", "missing (a model is `model: {graph: ...}` or `model: {onnx: FILE}`)")
    model = fields.mapping(doc["model"], "model", ("graph", "onnx", "shapes"))
    if "onnx" in model and "graph" in model:
        raise fields.error("model", "give `graph` or `onnx`, not both")
    if "onnx" in model:
        graph = _onnx_model(fields, model, name, base_dir, shapes, sizes)
    elif "graph" not in model:
        raise fields.error("model", "missing `graph` (or `onnx`)")
    elif "shapes" in model:
        raise fields.error("model.shapes", "only used with model.onnx")
    elif shapes:
        raise fields.error("model", "input shapes (--shape) apply to ONNX models only; "
                                    "a YAML graph gives them in model.graph.inputs")
    else:
        graph = yaml_graph.parse_graph(fields, model["graph"], "model.graph", name, base_dir, sizes)

    backends = ["host"]
    if "backends" in doc:
        backends = fields.strings(doc["backends"], "backends", "backend names")
        if not backends:
            raise fields.error("backends", "empty (leave it out to use [host])")
        dupes = sorted({b for b in backends if backends.count(b) > 1})
        if dupes:
            raise fields.error("backends", f"lists {', '.join(dupes)} more than once")
    target = _target(fields, doc.get("target"), "target") if "target" in doc else Target()
    return Spec(name=name, graph=graph, backends=backends, target=target, path=path, base_dir=base_dir)


def _onnx_model(fields: Fields, model: dict, name: str, base_dir: str, override: dict | None,
                sizes: dict | None) -> Graph:
    rel = fields.string(model["onnx"], "model.onnx")
    path = rel if os.path.isabs(rel) else os.path.join(base_dir, rel)
    shapes = {}
    if "shapes" in model:
        for iname, shape in fields.mapping(model["shapes"], "model.shapes").items():
            shapes[iname] = list(fields.shape(shape, f"model.shapes.{iname}", ranges=True))
    shapes.update(override or {})
    if not os.path.isfile(path):
        raise fields.error("model.onnx", f"ONNX file '{rel}' not found (looked at {os.path.abspath(path)})")
    return onnx_frontend.load_graph(path, shapes, name=name, where=f"{fields.where}: model.onnx '{rel}'",
                                    sizes=sizes)


def _target(fields: Fields, value, fp: str) -> Target:
    t = fields.mapping(value, fp, ("triple", "cflags", "cc", "ldflags"))
    target = Target()
    if "triple" in t:
        target.triple = fields.string(t["triple"], f"{fp}.triple")
    if "cflags" in t:
        target.cflags = fields.strings(t["cflags"], f"{fp}.cflags", "compiler flags")
    if "ldflags" in t:
        target.ldflags = fields.strings(t["ldflags"], f"{fp}.ldflags", "linker flags")
    if "cc" in t and t["cc"] is not None:
        target.cc = fields.string(t["cc"], f"{fp}.cc")
    return target
