"""The build pipeline (packager/build.py): manifest -> one .so.

Numerics run through the loader against NumPy;
structure through loader.open_package and tests/section.py (the section as written)."""

import json
import os

import numpy as np
import pytest
import yaml

from packager.build import build  # noqa: E402
from packager import isa_variants, toolchain  # noqa: E402
import loader  # noqa: E402
import reference as ref  # noqa: E402
import section  # noqa: E402
from packager.ir import BuildError  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


def weights(rng):
    return {"fc1.weight": rng.standard_normal((8, 4)).astype(np.float32),
            "fc1.bias": rng.standard_normal(8).astype(np.float32),
            "fc2.weight": rng.standard_normal((3, 8)).astype(np.float32),
            "fc2.bias": rng.standard_normal(3).astype(np.float32),
            "unused": np.ones(100, np.float32)}


def mlp(tmp_path, nodes=None, outputs=("probs",), backends=None, target=None, name="mlp"):
    np.savez(tmp_path / "mlp.npz", **weights(np.random.default_rng(0)))
    doc = {"name": name, "model": {"graph": {
        "inputs": {"x": {"shape": [2, 4], "dtype": "float32"}},
        "weights": "mlp.npz",
        "nodes": nodes or [
            {"op": "dense", "inputs": ["x", "fc1.weight", "fc1.bias"], "output": "h"},
            {"op": "relu", "inputs": ["h"], "output": "a"},
            {"op": "dense", "inputs": ["a", "fc2.weight", "fc2.bias"], "output": "logits"},
            {"op": "softmax", "inputs": ["logits"], "output": "probs", "axis": -1},
        ],
        "outputs": list(outputs)}}}
    if backends:
        doc["backends"] = backends
    if target:
        doc["target"] = target
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def reference(x):
    """The MLP's tensors as ref.Approx: float64 values and their float32 rounding bounds."""
    w = weights(np.random.default_rng(0))
    h = ref.dense_approx(x, w["fc1.weight"], w["fc1.bias"])
    a = ref.unary_approx(ref.relu, h)
    logits = ref.dense_approx(a, w["fc2.weight"], w["fc2.bias"])
    return {"h": h, "a": a, "logits": logits, "probs": ref.softmax_approx(logits, -1)}


def graph_payload(path):
    manifest = loader.open_package(path).manifest
    main = next(m for m in manifest["modules"] if m["name"] == manifest["entry"])
    return json.loads(section.payload(path, main["payload"]))


def test_mlp_builds_runs_and_matches_numpy(tmp_path):
    out = str(tmp_path / "mlp.so")
    report = build(mlp(tmp_path), out, quiet=True)
    assert os.path.isfile(out) and report.file_bytes == os.path.getsize(out)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    y = loader.load(out).run(x=x)["probs"]
    ref.assert_close(y, reference(x)["probs"], "probs")


def test_manifest_content(tmp_path):
    out = str(tmp_path / "mlp.so")
    report = build(mlp(tmp_path), out, quiet=True)
    package = loader.open_package(out)
    m = package.manifest
    assert m == report.manifest
    package.verify()
    assert m["format"] == "dsopack/1" and m["name"] == "mlp" and m["checksum"] == "xxh3-64"
    assert m["producer"]["dsopack"] and m["producer"]["cflags"] == ["-O3"]
    assert m["producer"]["cc"].split()[0] in ("gcc", "clang")
    assert m["target"]["machine"] == "x86_64" and m["target"]["triple"].startswith("x86_64")
    assert m["requires"] == [] and m["entry"] == "main"
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": [2, 4]}]
    assert m["outputs"] == [{"name": "probs", "dtype": "float32", "shape": [2, 3]}]
    kinds = {mod["name"]: mod["kind"] for mod in m["modules"]}
    assert kinds == {"host": "dso", "weights": "params", "main": "graph"}
    lib, params, main = m["modules"]
    assert lib["functions"] == ["host_dense_0", "host_relu_1", "host_dense_2", "host_softmax_3"]
    assert list(params["tensors"]) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # not "unused"
    assert main["imports"] == ["host", "weights"] and main["payload"]["codec"] == "zstd"
    stored = np.frombuffer(section.payload(out, params["tensors"]["fc2.weight"]), np.float32).reshape(3, 8)
    np.testing.assert_array_equal(stored, weights(np.random.default_rng(0))["fc2.weight"])


def test_graph_payload_arena_and_calls(tmp_path):
    out = str(tmp_path / "mlp.so")
    report = build(mlp(tmp_path), out, quiet=True)
    g = graph_payload(out)
    by_name = {t["name"]: t for t in g["tensors"]}
    assert by_name["x"]["storage"] == "input" and by_name["x"]["index"] == 0
    assert by_name["probs"]["storage"] == "output" and by_name["probs"]["index"] == 0
    assert by_name["fc1.weight"]["storage"] == "param"
    for name in ("h", "a", "logits"):
        assert by_name[name]["storage"] == "arena" and by_name[name]["offset"] % 64 == 0
    assert by_name["h"]["offset"] != by_name["a"]["offset"]  # both alive in relu
    assert g["arena_bytes"] == report.arena_bytes < 3 * 64 + 64  # h is dead by the time logits exists
    names = [t["name"] for t in g["tensors"]]
    assert [(c["func"], [names[i] for i in c["args"]]) for c in g["calls"]] == [
        ("host_dense_0", ["x", "fc1.weight", "fc1.bias", "h"]),
        ("host_relu_1", ["h", "a"]),
        ("host_dense_2", ["a", "fc2.weight", "fc2.bias", "logits"]),
        ("host_softmax_3", ["logits", "probs"])]


def test_outputs_that_alias_get_copies(tmp_path):
    # an intermediate, the input itself, and a weight
    out = str(tmp_path / "copies.so")
    build(mlp(tmp_path, outputs=["probs", "h", "x", "fc2.bias"]), out, quiet=True)
    m = loader.open_package(out).manifest
    assert [o["name"] for o in m["outputs"]] == ["probs", "h", "x", "fc2.bias"]
    assert m["outputs"][2]["shape"] == [2, 4] and m["outputs"][3]["shape"] == [3]
    assert [f for f in m["modules"][0]["functions"] if f.startswith("dpk_copy")] == [
        "dpk_copy_output_2", "dpk_copy_output_3"]
    g = graph_payload(out)
    outputs = sorted((t["index"], t["name"]) for t in g["tensors"] if t["storage"] == "output")
    assert outputs == list(enumerate(["probs", "h", "x", "fc2.bias"]))
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    got = loader.load(out).run(x=x)
    want = reference(x)
    ref.assert_close(got["probs"], want["probs"], "probs")
    ref.assert_close(got["h"], want["h"], "h")
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["fc2.bias"], weights(np.random.default_rng(0))["fc2.bias"])


def test_output_listed_twice_is_refused(tmp_path):
    with pytest.raises(BuildError, match="graph output 'probs' is listed twice"):
        build(mlp(tmp_path, outputs=["probs", "h", "probs"]), str(tmp_path / "d.so"), quiet=True)
    assert not (tmp_path / "d.so").exists()


@pytest.mark.parametrize("nodes, words", [
    ([{"op": "dense", "inputs": ["x", "fc1.weight", "fc1.bias"], "output": "h"},
      {"op": "frobnicate", "inputs": ["h"], "output": "probs"}],
     ["node 'frobnicate_1' (op frobnicate): unknown op 'frobnicate'"]),
    ([{"op": "dense", "inputs": ["x", "fc2.weight", "fc2.bias"], "output": "probs"}],
     ["dense_0", "dense", "[2, 4]", "[3, 8]"]),
    ([{"op": "dense", "inputs": ["x", "fc3.weight", "fc1.bias"], "output": "probs"}],
     ["node 'dense_0' (op dense) reads 'fc3.weight'", "missing from the weights"]),
    ([{"op": "relu", "inputs": ["x"], "output": "h"}, {"op": "relu", "inputs": ["h9"], "output": "probs"}],
     ["node 'relu_1' (op relu) reads 'h9', which is not a graph input, a weight or an earlier node's output"]),
])
def test_model_errors_name_the_node_and_leave_no_file(tmp_path, nodes, words):
    out = tmp_path / "bad.so"
    with pytest.raises(BuildError) as info:
        build(mlp(tmp_path, nodes=nodes), str(out), quiet=True)
    for w in words:
        assert w in str(info.value), str(info.value)
    assert not out.exists()


def test_failed_compile_leaves_no_output_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "mlp.so"
    out.write_bytes(b"previous build")
    spec = mlp(tmp_path, target={"cflags": ["-O2", "-fno-such-flag-dsopack"]})
    with pytest.raises(BuildError) as info:
        build(spec, str(out), quiet=True)
    message = str(info.value)
    assert "failed" in message and "-fno-such-flag-dsopack" in message  # the command ...
    assert "unrecognized" in message or "unknown" in message  # ... and the compiler's output
    assert out.read_bytes() == b"previous build"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_failed_link_leaves_no_output(tmp_path):
    out = tmp_path / "mlp.so"
    with pytest.raises(BuildError, match="linking mlp.so failed"):
        build(mlp(tmp_path, target={"ldflags": ["-lno_such_library_dsopack"]}), str(out), quiet=True)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mlp.so")]


def test_compiler_choice_and_target_errors(tmp_path, monkeypatch):
    spec = mlp(tmp_path)
    with pytest.raises(BuildError, match="compiler 'no-such-cc' not found"):
        build(spec, str(tmp_path / "a.so"), cc="no-such-cc", quiet=True)
    monkeypatch.setenv("CC", "also-no-such-cc")
    with pytest.raises(BuildError, match="compiler 'also-no-such-cc' not found"):
        build(spec, str(tmp_path / "a.so"), quiet=True)
    build(spec, str(tmp_path / "a.so"), cc="gcc", quiet=True)  # --cc beats $CC
    cross = mlp(tmp_path, target={"triple": "aarch64-linux-gnu", "cc": "gcc"})
    with pytest.raises(BuildError, match="target triple 'aarch64-linux-gnu' needs a cross compiler"):
        build(cross, str(tmp_path / "b.so"), quiet=True)
    with pytest.raises(BuildError, match="does not exist"):
        build(spec, str(tmp_path / "no" / "dir.so"), cc="gcc", quiet=True)


def test_progress_explain_and_quiet(tmp_path):
    lines = []
    report = build(mlp(tmp_path), str(tmp_path / "a.so"), explain=True, log=lines.append)
    stages = [line for line in lines if line.startswith("[")]
    assert [s.split(":")[0] for s in stages] == [f"[{i}/6] {n}" for i, n in enumerate(
        ["frontend", "infer", "partition", "lower", "package", "compile"], 1)]
    assert stages[0].startswith("[1/6] frontend: 'mlp': 4 nodes, 1 input, 5 weights") and stages[0].endswith(" ms")
    assert "dense_0 -> host (first in [host] that supports dense)" in [line.strip() for line in lines]
    assert report.explain[3] == "softmax_3 -> host (first in [host] that supports softmax)"
    assert set(report.timings) == {"frontend", "infer", "partition", "lower", "package", "compile"}

    quiet = []
    build(mlp(tmp_path), str(tmp_path / "b.so"), quiet=True, log=quiet.append)
    assert quiet == []


def test_unchanged_model_skips_the_compile(tmp_path, isa_variants_on):
    spec = mlp(tmp_path)
    first = build(spec, str(tmp_path / "a.so"), quiet=True)
    lines = []
    second = build(spec, str(tmp_path / "b.so"), log=lines.append)
    variants = isa_variants.for_target(toolchain.host_machine(), ["-O3"])
    objects = len(variants) + 1 if variants else 1  # the unit once per ISA variant, and the dispatch unit
    assert (first.compiled, first.cached) == (objects, 0)
    assert (second.compiled, second.cached) == (0, objects)
    assert "C from the cache" in lines[-1]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loader.load(str(tmp_path / "b.so")).run(x=x)["probs"],
                                  loader.load(str(tmp_path / "a.so")).run(x=x)["probs"])
    third = build(mlp(tmp_path, target={"cflags": ["-O1"]}), str(tmp_path / "c.so"), quiet=True)
    assert third.compiled == objects  # flags are part of the key


# dense/relu/softmax to json, the second dense to host: two json regions around a host call
JSON_AND_HOST_NODES = [
    {"op": "dense", "inputs": ["x", "fc1.weight", "fc1.bias"], "output": "h"},
    {"op": "relu", "inputs": ["h"], "output": "a"},
    {"op": "dense", "inputs": ["a", "fc2.weight", "fc2.bias"], "output": "logits", "backend": "host"},
    {"op": "softmax", "inputs": ["logits"], "output": "probs", "axis": -1}]


def test_json_regions_become_payload_modules(tmp_path):
    nodes = JSON_AND_HOST_NODES
    out = str(tmp_path / "j.so")
    lines = []
    report = build(mlp(tmp_path, nodes=nodes, backends=["json", "host"]), out, explain=True, log=lines.append)
    assert report.explain == ["dense_0 -> json (first in [json, host] that supports dense)",
                              "relu_1 -> json (first in [json, host] that supports relu)",
                              "dense_2 -> host (backend: host set on the node)",
                              "softmax_3 -> json (first in [json, host] that supports softmax)"]
    package = loader.open_package(out)
    mods = {m["name"]: m for m in package.manifest["modules"]}
    assert [m["name"] for m in package.manifest["modules"]] == ["host", "ext0", "ext1", "weights", "main"]
    assert mods["ext0"]["kind"] == "json" and mods["ext0"]["imports"] == ["weights"]
    assert mods["ext0"]["functions"] == ["ext0"] and mods["ext0"]["payload"]["codec"] == "zstd"
    assert mods["main"]["imports"] == ["host", "ext0", "ext1", "weights"]
    assert mods["host"]["functions"] == ["host_dense_2"]
    sub = json.loads(section.payload(out, mods["ext0"]["payload"]))
    assert sub["function"] == "ext0" and [n["op"] for n in sub["nodes"]] == ["dense", "relu"]
    g = graph_payload(out)
    names = [t["name"] for t in g["tensors"]]
    assert [(c["func"], [names[i] for i in c["args"]]) for c in g["calls"]][:2] == [
        ("ext0", ["x", "a", "ext0.workspace"]), ("host_dense_2", ["a", "fc2.weight", "fc2.bias", "logits"])]
    assert "h" not in names  # internal to ext0: in its workspace, planned in the arena
    workspace = g["tensors"][names.index("ext0.workspace")]
    assert workspace["storage"] == "arena" and workspace["dtype"] == "uint8"
    assert workspace["shape"] == [sub["workspace_bytes"]] and sub["workspace_bytes"] >= 2 * 8 * 4
    assert set(mods["weights"]["tensors"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    package.verify()


def test_model_without_weights_has_no_params_module(tmp_path):
    nodes = [{"op": "relu", "inputs": ["x"], "output": "r"}, {"op": "add", "inputs": ["r", "x"], "output": "probs"}]
    out = str(tmp_path / "nw.so")
    build(mlp(tmp_path, nodes=nodes), out, quiet=True)
    m = loader.open_package(out).manifest
    assert [(mod["name"], mod["kind"]) for mod in m["modules"]] == [("host", "dso"), ("main", "graph")]
    assert m["modules"][1]["imports"] == ["host"]
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(loader.load(out).run(x=x)["probs"], np.maximum(x, 0) + x)


def test_the_runtime_agrees(tmp_path):
    """The same files through libdpk (the loader): copies, json regions, arena."""
    nodes = JSON_AND_HOST_NODES
    out = str(tmp_path / "rt.so")
    build(mlp(tmp_path, nodes=nodes, outputs=["probs", "h", "x", "fc2.bias"], backends=["json", "host"]), out,
          quiet=True)
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    want = reference(x)
    with loader.load(out, verify=True) as model:
        got = model.run(x=x)
    ref.assert_close(got["probs"], want["probs"], "probs")
    ref.assert_close(got["h"], want["h"], "h")
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["fc2.bias"], weights(np.random.default_rng(0))["fc2.bias"])
