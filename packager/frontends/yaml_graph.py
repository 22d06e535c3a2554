"""A graph written in YAML (the manifest's `model.graph`, DESIGN.md) -> an ir.Graph.

    graph = parse_graph(Fields("digits.yaml"), doc["model"]["graph"], "model.graph", "digits", base_dir)

Checks every field as it reads it (`fields`, the file it came from), so a
problem is a BuildError that names the file and the field, e.g. "digits.yaml:
model.graph.nodes[1].inputs: expected a list of tensor names, got int".
Weights are inline or an .npz file relative to `base_dir`. The graph is not
inferred here (ir_check.infer does that).
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from packager import blob, dynamic, spill
from packager.fields import Fields, join, typename
from packager.frontends import safetensors
from packager.ir import Graph, Node, TensorType

DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "bool")
NODE_KEYS = ("op", "inputs", "output", "name", "backend", "attrs")


def _dtype(fields: Fields, value, fp: str) -> str:
    if value not in DTYPES:
        raise fields.error(fp, f"unknown dtype {value!r} (known: {', '.join(DTYPES)})")
    return value


def parse_graph(fields: Fields, value, fp: str, name: str, base_dir: str, sizes: dict | None = None) -> Graph:
    g = fields.mapping(value, fp, ("inputs", "weights", "nodes", "outputs"))
    for key in ("inputs", "nodes", "outputs"):
        if key not in g:
            raise fields.error(join(fp, key), "missing")

    inputs: dict[str, TensorType] = {}
    dims: dict = {}  # dynamic dims: input shapes with ranges (dynamic.py), built at `sizes` or their max
    for iname, spec in fields.mapping(g["inputs"], f"{fp}.inputs").items():
        ifp = f"{fp}.inputs.{iname}"
        spec = fields.mapping(spec, ifp, ("shape", "dtype"))
        if "shape" not in spec:
            raise fields.error(f"{ifp}.shape", "missing")
        shape = list(fields.shape(spec["shape"], f"{ifp}.shape", ranges=True))
        for k, d in enumerate(shape):
            if isinstance(d, dynamic.DimRange):
                shape[k] = dynamic.size_of(dynamic.declare(dims, d, d.name or f"{iname}.{k}", iname, k, fields.where),
                                           sizes)
        inputs[iname] = TensorType(tuple(shape), _dtype(fields, spec.get("dtype", "float32"), f"{ifp}.dtype"))
    if not inputs:
        raise fields.error(f"{fp}.inputs", "empty: a model needs at least one input")

    weights = _parse_weights(fields, g.get("weights"), f"{fp}.weights", base_dir) if "weights" in g else {}

    raw_nodes = g["nodes"]
    if not isinstance(raw_nodes, list):
        raise fields.error(f"{fp}.nodes", f"expected a list of nodes, got {typename(raw_nodes)}")
    nodes = [_parse_node(fields, raw, f"{fp}.nodes[{i}]", i) for i, raw in enumerate(raw_nodes)]
    seen: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise fields.error(f"{fp}.nodes[{i}].name",
                               f"'{node.name}' is already the name of {fp}.nodes[{seen[node.name]}]")
        seen[node.name] = i

    outputs = fields.strings(g["outputs"], f"{fp}.outputs", "tensor names")
    if not outputs:
        raise fields.error(f"{fp}.outputs", "empty: a model needs at least one output")
    return Graph(name=name, inputs=inputs, weights=weights, nodes=nodes, outputs=outputs, dims=dims)


def _parse_node(fields: Fields, raw, fp: str, index: int) -> Node:
    raw = fields.mapping(raw, fp)
    for key in ("op", "inputs", "output"):
        if key not in raw:
            hint = " (a node has one `output`)" if key == "output" and "outputs" in raw else ""
            raise fields.error(f"{fp}.{key}", f"missing{hint}")
    op = fields.string(raw["op"], f"{fp}.op")
    inputs = fields.strings(raw["inputs"], f"{fp}.inputs", "tensor names")
    output = fields.string(raw["output"], f"{fp}.output")
    name = fields.string(raw["name"], f"{fp}.name") if "name" in raw else f"{op}_{index}"
    backend = fields.string(raw["backend"], f"{fp}.backend") if raw.get("backend") is not None else None
    attrs = {}
    if "attrs" in raw:
        attrs.update(fields.mapping(raw["attrs"], f"{fp}.attrs"))
    for key, value in raw.items():
        if key in NODE_KEYS:
            continue
        if key in attrs:
            raise fields.error(f"{fp}.{key}", "given both inline and under attrs")
        attrs[key] = value
    return Node(op=op, inputs=inputs, output=output, attrs=attrs, name=name, backend=backend)


def _parse_weights(fields: Fields, value, fp: str, base_dir: str) -> dict[str, np.ndarray]:
    if isinstance(value, str):
        return _load_npz(fields, value, fp, base_dir)
    if value is None:
        return {}
    weights = {}
    for wname, spec in fields.mapping(value, fp).items():
        wfp = f"{fp}.{wname}"
        dtype, shape = "float32", None
        data = spec
        if isinstance(spec, dict):
            fields.mapping(spec, wfp, ("data", "dtype", "shape"))
            if "data" not in spec:
                raise fields.error(f"{wfp}.data", "missing")
            data = spec["data"]
            dtype = _dtype(fields, spec.get("dtype", "float32"), f"{wfp}.dtype")
            if "shape" in spec:
                shape = fields.shape(spec["shape"], f"{wfp}.shape")
        if isinstance(data, bool) or not isinstance(data, (list, int, float)):
            raise fields.error(wfp, f"expected a number, a (nested) list of numbers or {{data, dtype, shape}}, "
                                 f"got {typename(data)}")
        try:
            array = np.array(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as e:
            raise fields.error(wfp, f"not a rectangular array of {dtype}: {e}") from None
        if shape is not None:
            if array.size != int(np.prod(shape)):
                raise fields.error(f"{wfp}.shape", f"{list(shape)} holds {int(np.prod(shape))} values, "
                                                f"data has {array.size}")
            array = array.reshape(shape)
        weights[wname] = np.require(array, requirements="C")  # (ascontiguousarray makes 0-d 1-d)
    return weights


def _member(path: str, archive: zipfile.ZipFile, key: str) -> np.ndarray | None:
    """Member `key` of a .npz, so that a large model's weights go from their file into the build's output
    without a copy in memory: mapped from the file as numpy.savez stores it (uncompressed), or, compressed
    (numpy.savez_compressed), decompressed into a spill file (spill.streamed). None for a member in Fortran
    order or of objects, which np.load reads instead."""
    info = archive.getinfo(key + ".npy")
    with archive.open(info) as member:
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(member))
        if read_header is None:
            return None
        shape, fortran, dtype = read_header(member)
        if fortran or dtype.hasobject or not dtype.itemsize or not math.prod(shape):
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return spill.streamed(member.read, shape, dtype)
        header = member.tell()
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: its name and extra field lengths at bytes 26..29
        if local[:4] != b"PK\x03\x04":
            return None
        names = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    return blob.mapped(path, dtype, info.header_offset + 30 + names + header, shape)


def _load_npz(fields: Fields, rel: str, fp: str, base_dir: str) -> dict[str, np.ndarray]:
    """A .npz (numpy.savez or savez_compressed; its members mapped where they can be: _member) or a .safetensors file
    (mapped: frontends/safetensors.py)."""
    path = rel if os.path.isabs(rel) else os.path.join(base_dir, rel)
    if not os.path.isfile(path):
        raise fields.error(fp, f"weight file '{rel}' not found (looked at {os.path.abspath(path)})")
    if path.endswith(".safetensors"):
        try:
            return safetensors.load(path)
        except (OSError, safetensors.SafetensorsError) as e:
            raise fields.error(fp, f"cannot read '{rel}' as a .safetensors file: {e}") from None
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (a .npy); save the weights with numpy.savez")
        with loaded as npz:
            arrays = {key: _member(path, npz.zip, key) for key in npz.files}
            arrays = {key: npz[key] if array is None else array for key, array in arrays.items()}
    except Exception as e:  # zipfile, pickle and format errors all land here
        raise fields.error(fp, f"cannot read '{rel}' as a .npz file: {e}") from None
    weights = {}
    for key, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise fields.error(fp, f"weight '{key}' in '{rel}' has dtype {array.dtype} "
                                f"(supported: {', '.join(DTYPES)})")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        weights[key] = np.require(array, requirements="C")
    return weights
