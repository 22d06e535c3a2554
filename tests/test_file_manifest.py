"""The package stage alone (packager/file_manifest.py): modules, manifest and blob from plain data."""

import numpy as np
import pytest
import yaml

from packager.backends.base import Payload
from packager.blob import read_header
from packager.carried_kinds import CarriedKinds
from packager.file_manifest import package
from packager.ir import BuildError, Graph, Node, TensorType
from packager.ir_check import infer
from packager.lower import Lowered, PayloadModule, output_plan
from packager.toolchain import Toolchain

F32 = "float32"
TC = Toolchain(cc=["cc"], cc_name="gcc 12.2.0", triple="x86_64-linux-gnu", machine="x86_64", cross=False,
               cflags=["-O3"], ldflags=[])


def graph(outputs=("y",)):
    return infer(Graph(name="g", inputs={"x": TensorType((2, 4), F32)},
                       weights={"w": np.ones((3, 4), np.float32), "big": np.zeros(2048, np.float32),
                                "unread": np.zeros(4, np.float32)},
                       nodes=[Node("dense", ["x", "w"], "h", name="fc"), Node("relu", ["h"], "y", name="act")],
                       outputs=list(outputs)))


def lowered(g, functions=None, payloads=(), dso_weights=("w",), requires=("libm.so.6", "libm.so.6")):
    return Lowered(graph=g, c_units=[], functions={"host": ["host_fc"]} if functions is None else functions,
                   payloads=list(payloads), calls=[], dso_weights=list(dso_weights), libraries=[],
                   requires=list(requires), install_hints=[], carried=CarriedKinds())


def ext(name, imports_weights=True, weights=("w", "big")):
    return PayloadModule(name, Payload(kind="json", data=b'{"n": 1}', function=name, imports_weights=imports_weights),
                         list(weights) if imports_weights else [])


def test_modules_in_order_with_their_imports():
    g = graph()
    pkg = package("m", lowered(g, payloads=[ext("ext0"), ext("ext1", imports_weights=False)]), {"main": b"{}"},
                  output_plan(g), TC)
    mods = pkg.manifest["modules"]
    assert [(m["name"], m["kind"]) for m in mods] == [("host", "dso"), ("ext0", "json"), ("ext1", "json"),
                                                      ("weights", "params"), ("main", "graph")]
    assert mods[0]["functions"] == ["host_fc"]
    assert mods[1]["imports"] == ["weights"] and "imports" not in mods[2]
    assert mods[1]["functions"] == ["ext0"] and mods[1]["payload"]["codec"] == "zstd"
    assert list(mods[3]["tensors"]) == ["w", "big"] and pkg.weights == ["w", "big"]  # not 'unread'
    assert mods[3]["tensors"]["big"]["offset"] % 4096 == 0
    assert mods[4]["imports"] == ["host", "ext0", "ext1", "weights"] and mods[4]["payload"]["offset"] == 0


def test_manifest_fields():
    g = graph(outputs=("y", "x"))
    m = package("model", lowered(g), {"main": b"{}"}, output_plan(g), TC).manifest
    assert list(m) == ["format", "name", "producer", "target", "requires", "checksum", "entry", "inputs", "outputs",
                       "modules"]
    assert m["format"] == "dsopack/1" and m["name"] == "model" and m["entry"] == "main"
    assert m["producer"]["cc"] == "gcc 12.2.0" and m["producer"]["cflags"] == ["-O3"]
    assert m["target"] == {"triple": "x86_64-linux-gnu", "machine": "x86_64"}
    assert m["requires"] == ["libm.so.6"]
    assert m["inputs"] == [{"name": "x", "dtype": F32, "shape": [2, 4]}]
    assert m["outputs"] == [{"name": "y", "dtype": F32, "shape": [2, 3]}, {"name": "x", "dtype": F32, "shape": [2, 4]}]


def test_without_weights_there_is_no_params_module():
    g = graph()
    mods = package("m", lowered(g, dso_weights=(), payloads=[ext("ext0", weights=())]), {"main": b"{}"}, output_plan(g),
                   TC).manifest["modules"]
    assert [m["name"] for m in mods] == ["host", "ext0", "main"]
    assert "imports" not in mods[1] and mods[2]["imports"] == ["host", "ext0"]


def test_a_backend_named_like_a_module_is_refused():
    g = graph()
    with pytest.raises(BuildError, match="backend name 'weights' is also the name of a module"):
        package("m", lowered(g, functions={"weights": ["f"]}), {"main": b"{}"}, output_plan(g), TC)


def test_the_blob_holds_the_manifest_and_knows_its_size(tmp_path):
    g = graph()
    pkg = package("m", lowered(g), {"main": b'{"graph": 1}'}, output_plan(g), TC)
    path = tmp_path / "m.blob"
    assert pkg.blob.write(str(path)) == pkg.blob.size == path.stat().st_size
    data = path.read_bytes()
    head = read_header(data)
    manifest = yaml.safe_load(data[head["manifest_offset"]:head["manifest_offset"] + head["manifest_size"]])
    assert manifest == pkg.manifest
    w = manifest["modules"][1]["tensors"]["w"]
    start = head["payload_offset"] + w["offset"]
    np.testing.assert_array_equal(np.frombuffer(data[start:start + w["size"]], np.float32).reshape(3, 4),
                                  g.weights["w"])
