"""The deployment manifest (packager/spec.py) and the YAML graph frontend (packager/frontends/yaml_graph.py)."""

import os

import numpy as np
import pytest
import yaml

from packager import spec as spec_mod
from packager.ir import BuildError, TensorType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp_doc(**overrides):
    doc = {
        "name": "mlp",
        "model": {"graph": {
            "inputs": {"x": {"shape": [1, 4], "dtype": "float32"}},
            "weights": "mlp.npz",
            "nodes": [
                {"op": "dense", "inputs": ["x", "w", "b"], "output": "h"},
                {"op": "relu", "inputs": ["h"], "output": "a"},
                {"op": "softmax", "inputs": ["a"], "output": "y", "axis": -1},
            ],
            "outputs": ["y"],
        }},
    }
    doc.update(overrides)
    return doc


def write(tmp_path, doc, name="m.yaml", weights=True):
    if weights:
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "mlp.npz", w=rng.standard_normal((3, 4)).astype(np.float32),
                 b=np.zeros(3, np.float32))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if isinstance(doc, dict) else doc)
    return str(path)


def error_of(tmp_path, doc, **kw) -> str:
    path = write(tmp_path, doc, **kw)
    with pytest.raises(BuildError) as info:
        spec_mod.load(path)
    message = str(info.value)
    assert message.startswith(path), message  # every error names the file
    return message


def test_loads_graph_weights_and_defaults(tmp_path):
    spec = spec_mod.load(write(tmp_path, mlp_doc()))
    g = spec.graph
    assert spec.name == "mlp" and g.name == "mlp"
    assert g.inputs == {"x": TensorType((1, 4), "float32")}
    assert sorted(g.weights) == ["b", "w"] and g.weights["w"].shape == (3, 4)
    assert [n.name for n in g.nodes] == ["dense_0", "relu_1", "softmax_2"]
    assert g.nodes[2].attrs == {"axis": -1}  # attributes inline in the node
    assert g.nodes[0].attrs == {} and g.nodes[0].backend is None
    assert g.outputs == ["y"]
    assert spec.backends == ["host"]
    assert spec.target.triple == "native" and spec.target.cflags == ["-O3"] and spec.target.cc is None
    assert spec.base_dir == str(tmp_path)


def test_dict_with_base_dir_names_backends_and_target(tmp_path):
    write(tmp_path, mlp_doc())
    doc = mlp_doc(backends=["json", "host"], target={"triple": "x86_64-linux-gnu", "cflags": ["-O2"], "cc": "gcc"})
    doc["model"]["graph"]["nodes"][1].update(name="act", backend="host")
    spec = spec_mod.load(doc, base_dir=tmp_path)
    assert spec.backends == ["json", "host"]
    assert (spec.target.triple, spec.target.cflags, spec.target.cc) == ("x86_64-linux-gnu", ["-O2"], "gcc")
    node = spec.graph.nodes[1]
    assert (node.name, node.backend, node.attrs) == ("act", "host", {})


def test_name_defaults_to_the_file_stem(tmp_path):
    doc = mlp_doc()
    del doc["name"]
    assert spec_mod.load(write(tmp_path, doc, name="tiny.yaml")).name == "tiny"


def test_inline_weights(tmp_path):
    doc = mlp_doc()
    doc["model"]["graph"]["weights"] = {
        "w": [[1, 2, 3, 4]] * 3,
        "b": {"data": [1, 2, 3], "dtype": "float64"},
        "s": 0.5,
        "r": {"data": [1, 2, 3, 4, 5, 6], "dtype": "int64", "shape": [2, 3]},
    }
    w = spec_mod.load(write(tmp_path, doc, weights=False)).graph.weights
    assert w["w"].dtype == np.float32 and w["w"].shape == (3, 4)
    assert w["b"].dtype == np.float64
    assert w["s"].shape == () and w["s"] == np.float32(0.5)
    assert w["r"].dtype == np.int64 and w["r"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_attrs_mapping_is_merged(tmp_path):
    doc = mlp_doc()
    doc["model"]["graph"]["nodes"][2] = {"op": "softmax", "inputs": ["a"], "output": "y", "attrs": {"axis": 1}}
    assert spec_mod.load(write(tmp_path, doc)).graph.nodes[2].attrs == {"axis": 1}


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d.update(extra=1), "extra", "unknown key"),
    (lambda d: d["model"]["graph"].update(weights="nope.npz"), "model.graph.weights", "'nope.npz' not found"),
    (lambda d: d["model"]["graph"]["inputs"]["x"].update(shape="1x4"), "model.graph.inputs.x.shape",
     "expected a list of positive integers, got str"),
    (lambda d: d["model"]["graph"]["inputs"]["x"].update(shape=[1, 0]), "model.graph.inputs.x.shape[1]",
     "positive integer"),
    (lambda d: d["model"]["graph"]["inputs"]["x"].update(dtype="float8"), "model.graph.inputs.x.dtype",
     "unknown dtype 'float8'"),
    (lambda d: d["model"]["graph"]["inputs"]["x"].update(layout="nchw"), "model.graph.inputs.x.layout",
     "unknown key"),
    (lambda d: d["model"]["graph"].update(nodes={"op": "relu"}), "model.graph.nodes", "expected a list of nodes"),
    (lambda d: d["model"]["graph"]["nodes"][1].pop("output"), "model.graph.nodes[1].output", "missing"),
    (lambda d: d["model"]["graph"]["nodes"][1].update(inputs="h"), "model.graph.nodes[1].inputs",
     "expected a list of tensor names, got str"),
    (lambda d: d["model"]["graph"]["nodes"][0].update(op=3), "model.graph.nodes[0].op", "non-empty string"),
    (lambda d: [n.update(name="same") for n in d["model"]["graph"]["nodes"]], "model.graph.nodes[1].name",
     "already the name of model.graph.nodes[0]"),
    (lambda d: d["model"]["graph"].pop("outputs"), "model.graph.outputs", "missing"),
    (lambda d: d["model"]["graph"].update(outputs="y"), "model.graph.outputs", "got str"),
    (lambda d: d["model"]["graph"].update(inputs={}), "model.graph.inputs", "at least one input"),
    (lambda d: d.update(model={"onnx": "m.onnx"}), "model.onnx", "ONNX file 'm.onnx' not found"),
    (lambda d: d["model"].update(onnx="m.onnx"), "model", "give `graph` or `onnx`, not both"),
    (lambda d: d["model"].update(shapes={"x": [1, 64]}), "model.shapes", "only used with model.onnx"),
    (lambda d: d.update(model={}), "model", "missing `graph`"),
    (lambda d: d.pop("model"), "model", "missing"),
    (lambda d: d.update(backends="host"), "backends", "expected a list of backend names"),
    (lambda d: d.update(backends=["host", "host"]), "backends", "more than once"),
    (lambda d: d.update(target={"triple": "native", "cflag": ["-O2"]}), "target.cflag", "unknown key"),
    (lambda d: d.update(target={"cflags": "-O2"}), "target.cflags", "expected a list of compiler flags"),
    (lambda d: d["model"]["graph"].update(weights={"w": "zeros"}), "model.graph.weights.w", "got str"),
    (lambda d: d["model"]["graph"].update(weights={"w": [[1, 2], [3]]}), "model.graph.weights.w",
     "not a rectangular array"),
])
def test_bad_fields_name_the_file_and_field(tmp_path, mutate, field, words):
    doc = mlp_doc()
    mutate(doc)
    message = error_of(tmp_path, doc)
    assert f": {field}: " in message, message
    assert words in message, message


def test_missing_weight_file_says_where_it_looked(tmp_path):
    doc = mlp_doc()
    doc["model"]["graph"]["weights"] = "sub/w.npz"
    message = error_of(tmp_path, doc, weights=False)
    assert os.path.join(str(tmp_path), "sub", "w.npz") in message


def test_weights_must_be_an_npz(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name in ("one.npy", "junk.npz"):
        doc = mlp_doc()
        doc["model"]["graph"]["weights"] = name
        message = error_of(tmp_path, doc, weights=False)
        assert f"cannot read '{name}' as a .npz file" in message


def test_weight_dtypes_are_checked(tmp_path):
    np.savez(tmp_path / "c.npz", w=np.zeros(3, np.complex64))
    doc = mlp_doc()
    doc["model"]["graph"]["weights"] = "c.npz"
    assert "weight 'w' in 'c.npz' has dtype complex64" in error_of(tmp_path, doc, weights=False)


def test_invalid_yaml_and_empty_file(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "name: [unclosed\n", weights=False)
    assert "the manifest is empty" in error_of(tmp_path, "", weights=False)
    assert "expected a mapping, got list" in error_of(tmp_path, "- 1\n- 2\n", weights=False)


def test_unreadable_manifest(tmp_path):
    with pytest.raises(BuildError, match="cannot read the manifest"):
        spec_mod.load(str(tmp_path / "absent.yaml"))


def test_typo_in_a_node_key_is_reported_as_missing_output(tmp_path):
    doc = mlp_doc()
    node = doc["model"]["graph"]["nodes"][1]
    node["outputs"] = [node.pop("output")]
    message = error_of(tmp_path, doc)
    assert "model.graph.nodes[1].output: missing (a node has one `output`)" in message


@pytest.mark.parametrize("name", ["digits_mlp", "lenet"])
def test_bundled_manifests_parse(name):
    path = os.path.join(ROOT, "manifests", f"{name}.yaml")
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    spec = spec_mod.load(path)
    assert spec.name == name and spec.graph.nodes and spec.graph.weights
