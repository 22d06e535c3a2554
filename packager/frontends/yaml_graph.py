"""The deployment manifest (DESIGN.md, "Input: the deployment manifest") -> a Spec.

    spec = load("manifests/digits_mlp.yaml")           # a path
    spec = load({"name": ..., "model": ...}, base_dir)  # an already-loaded dict
    spec = load("model.onnx", shapes={"x": [1, 64]})   # an ONNX file: frontends/onnx.py, defaults

`shapes` (the CLI's --shape) fixes ONNX input dimensions; it overrides the
manifest's `model.shapes` input by input, and is an error for a YAML graph.

A Spec is what to build: the ir.Graph (not yet inferred), the backend priority
list and the target. Every problem is a BuildError that names the file and the
field, e.g. "digits.yaml: model.graph.nodes[1].inputs: expected a list of
tensor names, got int".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import yaml

from packager.ir import BuildError, Graph, Node, TensorType

DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool")
NODE_KEYS = ("op", "inputs", "output", "name", "backend", "attrs")


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
    backends: list[str] = field(default_factory=lambda: ["host"])
    target: Target = field(default_factory=Target)
    path: str | None = None  # the manifest file, if it came from one
    base_dir: str = "."  # relative paths (weights) are resolved here


class _Ctx:
    """Where we are, for error messages."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, field_path: str, message: str) -> BuildError:
        return BuildError(f"{self.where}: {field_path}: {message}" if field_path else f"{self.where}: {message}")

    def mapping(self, value, field_path: str, allowed: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.error(field_path, f"expected a mapping, got {_typename(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(field_path, f"keys must be strings, got {key!r}")
            if allowed is not None and key not in allowed:
                raise self.error(_join(field_path, key), f"unknown key (expected one of: {', '.join(allowed)})")
        return value

    def string(self, value, field_path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(field_path, f"expected a non-empty string, got {_typename(value)}")
        return value

    def strings(self, value, field_path: str, what: str = "strings") -> list[str]:
        if not isinstance(value, list):
            raise self.error(field_path, f"expected a list of {what}, got {_typename(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{field_path}[{i}]", f"expected a non-empty string, got {_typename(item)}")
        return list(value)


def _typename(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"bool ({value})"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} ({value!r})"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load(source, base_dir: str | os.PathLike | None = None, shapes: dict | None = None) -> Spec:
    """Parse a deployment manifest: a YAML file path, or a dict (paths relative to base_dir); or an .onnx path."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".onnx"):
        from packager.frontends import onnx as onnx_frontend

        return onnx_frontend.load_spec(source, shapes)
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
        return parse(doc, base, where=path, default_name=default_name, path=path, shapes=shapes)
    if isinstance(source, dict):
        return parse(source, os.fspath(base_dir) if base_dir is not None else os.getcwd(), where="<manifest>",
                     shapes=shapes)
    raise BuildError(f"a manifest is a YAML file path or a dict, got {_typename(source)}")


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def parse(doc, base_dir: str, *, where: str = "<manifest>", default_name: str = "model",
          path: str | None = None, shapes: dict | None = None) -> Spec:
    ctx = _Ctx(where)
    if doc is None:
        raise ctx.error("", "the manifest is empty")
    ctx.mapping(doc, "", ("name", "model", "backends", "target"))
    name = ctx.string(doc["name"], "name") if "name" in doc else default_name
    if "model" not in doc:
        raise ctx.error("model", "missing (a model is `model: {graph: ...}` or `model: {onnx: FILE}`)")
    model = ctx.mapping(doc["model"], "model", ("graph", "onnx", "shapes"))
    if "onnx" in model and "graph" in model:
        raise ctx.error("model", "give `graph` or `onnx`, not both")
    if "onnx" in model:
        graph = _parse_onnx(ctx, model, name, base_dir, shapes)
    elif "graph" not in model:
        raise ctx.error("model", "missing `graph` (or `onnx`)")
    elif "shapes" in model:
        raise ctx.error("model.shapes", "only used with model.onnx")
    elif shapes:
        raise ctx.error("model", "input shapes (--shape) apply to ONNX models only; "
                                 "a YAML graph gives them in model.graph.inputs")
    else:
        graph = _parse_graph(ctx, model["graph"], "model.graph", name, base_dir)

    backends = ["host"]
    if "backends" in doc:
        backends = ctx.strings(doc["backends"], "backends", "backend names")
        if not backends:
            raise ctx.error("backends", "empty (leave it out to use [host])")
        dupes = sorted({b for b in backends if backends.count(b) > 1})
        if dupes:
            raise ctx.error("backends", f"lists {', '.join(dupes)} more than once")
    target = _parse_target(ctx, doc.get("target"), "target") if "target" in doc else Target()
    return Spec(name=name, graph=graph, backends=backends, target=target, path=path, base_dir=base_dir)


def _parse_onnx(ctx: _Ctx, model: dict, name: str, base_dir: str, override: dict | None) -> Graph:
    from packager.frontends import onnx as onnx_frontend

    rel = ctx.string(model["onnx"], "model.onnx")
    path = rel if os.path.isabs(rel) else os.path.join(base_dir, rel)
    shapes = {}
    if "shapes" in model:
        for iname, shape in ctx.mapping(model["shapes"], "model.shapes").items():
            shapes[iname] = list(_shape(ctx, shape, f"model.shapes.{iname}"))
    shapes.update(override or {})
    if not os.path.isfile(path):
        raise ctx.error("model.onnx", f"ONNX file '{rel}' not found (looked at {os.path.abspath(path)})")
    return onnx_frontend.load_graph(path, shapes, name=name, where=f"{ctx.where}: model.onnx '{rel}'")


def _parse_target(ctx: _Ctx, value, fp: str) -> Target:
    t = ctx.mapping(value, fp, ("triple", "cflags", "cc", "ldflags"))
    target = Target()
    if "triple" in t:
        target.triple = ctx.string(t["triple"], f"{fp}.triple")
    if "cflags" in t:
        target.cflags = ctx.strings(t["cflags"], f"{fp}.cflags", "compiler flags")
    if "ldflags" in t:
        target.ldflags = ctx.strings(t["ldflags"], f"{fp}.ldflags", "linker flags")
    if "cc" in t and t["cc"] is not None:
        target.cc = ctx.string(t["cc"], f"{fp}.cc")
    return target


def _shape(ctx: _Ctx, value, fp: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ctx.error(fp, f"expected a list of positive integers, got {_typename(value)}")
    for i, d in enumerate(value):
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise ctx.error(f"{fp}[{i}]", f"expected a positive integer (static shapes only), got {_typename(d)}")
    return tuple(value)


def _dtype(ctx: _Ctx, value, fp: str) -> str:
    if value not in DTYPES:
        raise ctx.error(fp, f"unknown dtype {value!r} (known: {', '.join(DTYPES)})")
    return value


def _parse_graph(ctx: _Ctx, value, fp: str, name: str, base_dir: str) -> Graph:
    g = ctx.mapping(value, fp, ("inputs", "weights", "nodes", "outputs"))
    for key in ("inputs", "nodes", "outputs"):
        if key not in g:
            raise ctx.error(_join(fp, key), "missing")

    inputs: dict[str, TensorType] = {}
    for iname, spec in ctx.mapping(g["inputs"], f"{fp}.inputs").items():
        ifp = f"{fp}.inputs.{iname}"
        spec = ctx.mapping(spec, ifp, ("shape", "dtype"))
        if "shape" not in spec:
            raise ctx.error(f"{ifp}.shape", "missing")
        inputs[iname] = TensorType(_shape(ctx, spec["shape"], f"{ifp}.shape"),
                                   _dtype(ctx, spec.get("dtype", "float32"), f"{ifp}.dtype"))
    if not inputs:
        raise ctx.error(f"{fp}.inputs", "empty: a model needs at least one input")

    weights = _parse_weights(ctx, g.get("weights"), f"{fp}.weights", base_dir) if "weights" in g else {}

    raw_nodes = g["nodes"]
    if not isinstance(raw_nodes, list):
        raise ctx.error(f"{fp}.nodes", f"expected a list of nodes, got {_typename(raw_nodes)}")
    nodes = [_parse_node(ctx, raw, f"{fp}.nodes[{i}]", i) for i, raw in enumerate(raw_nodes)]
    seen: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise ctx.error(f"{fp}.nodes[{i}].name",
                            f"'{node.name}' is already the name of {fp}.nodes[{seen[node.name]}]")
        seen[node.name] = i

    outputs = ctx.strings(g["outputs"], f"{fp}.outputs", "tensor names")
    if not outputs:
        raise ctx.error(f"{fp}.outputs", "empty: a model needs at least one output")
    return Graph(name=name, inputs=inputs, weights=weights, nodes=nodes, outputs=outputs)


def _parse_node(ctx: _Ctx, raw, fp: str, index: int) -> Node:
    raw = ctx.mapping(raw, fp)
    for key in ("op", "inputs", "output"):
        if key not in raw:
            hint = " (a node has one `output`)" if key == "output" and "outputs" in raw else ""
            raise ctx.error(f"{fp}.{key}", f"missing{hint}")
    op = ctx.string(raw["op"], f"{fp}.op")
    inputs = ctx.strings(raw["inputs"], f"{fp}.inputs", "tensor names")
    output = ctx.string(raw["output"], f"{fp}.output")
    name = ctx.string(raw["name"], f"{fp}.name") if "name" in raw else f"{op}_{index}"
    backend = ctx.string(raw["backend"], f"{fp}.backend") if raw.get("backend") is not None else None
    attrs = {}
    if "attrs" in raw:
        attrs.update(ctx.mapping(raw["attrs"], f"{fp}.attrs"))
    for key, value in raw.items():
        if key in NODE_KEYS:
            continue
        if key in attrs:
            raise ctx.error(f"{fp}.{key}", "given both inline and under attrs")
        attrs[key] = value
    return Node(op=op, inputs=inputs, output=output, attrs=attrs, name=name, backend=backend)


def _parse_weights(ctx: _Ctx, value, fp: str, base_dir: str) -> dict[str, np.ndarray]:
    if isinstance(value, str):
        return _load_npz(ctx, value, fp, base_dir)
    if value is None:
        return {}
    weights = {}
    for wname, spec in ctx.mapping(value, fp).items():
        wfp = f"{fp}.{wname}"
        dtype, shape = "float32", None
        data = spec
        if isinstance(spec, dict):
            ctx.mapping(spec, wfp, ("data", "dtype", "shape"))
            if "data" not in spec:
                raise ctx.error(f"{wfp}.data", "missing")
            data = spec["data"]
            dtype = _dtype(ctx, spec.get("dtype", "float32"), f"{wfp}.dtype")
            if "shape" in spec:
                shape = _shape(ctx, spec["shape"], f"{wfp}.shape")
        if isinstance(data, bool) or not isinstance(data, (list, int, float)):
            raise ctx.error(wfp, f"expected a number, a (nested) list of numbers or {{data, dtype, shape}}, "
                                 f"got {_typename(data)}")
        try:
            array = np.array(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as e:
            raise ctx.error(wfp, f"not a rectangular array of {dtype}: {e}") from None
        if shape is not None:
            if array.size != int(np.prod(shape)):
                raise ctx.error(f"{wfp}.shape", f"{list(shape)} holds {int(np.prod(shape))} values, "
                                                f"data has {array.size}")
            array = array.reshape(shape)
        weights[wname] = np.require(array, requirements="C")  # (ascontiguousarray makes 0-d 1-d)
    return weights


def _load_npz(ctx: _Ctx, rel: str, fp: str, base_dir: str) -> dict[str, np.ndarray]:
    path = rel if os.path.isabs(rel) else os.path.join(base_dir, rel)
    if not os.path.isfile(path):
        raise ctx.error(fp, f"weight file '{rel}' not found (looked at {os.path.abspath(path)})")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (a .npy); save the weights with numpy.savez")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # zipfile, pickle and format errors all land here
        raise ctx.error(fp, f"cannot read '{rel}' as a .npz file: {e}") from None
    weights = {}
    for key, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise ctx.error(fp, f"weight '{key}' in '{rel}' has dtype {array.dtype} "
                                f"(supported: {', '.join(DTYPES)})")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        weights[key] = np.require(array, requirements="C")
    return weights
