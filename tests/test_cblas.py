"""The cblas backend (OpenBLAS through CBLAS): every op against NumPy, the
fusion rules of the partitioner, --explain, the link (DT_NEEDED, manifest
`requires`), and what a missing OpenBLAS gives at build and at load."""

import os
import stat
import struct

import numpy as np
import pytest

import loader
import reference as ref
from section import elf_sections
from packager import ir_check, partition
from packager.build import build
from packager.ir import BuildError, Graph, Node, TensorType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32 = "float32"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def spec(inputs, weights_path, nodes, outputs, backends=("cblas", "host")):
    return {"name": "cblas_test", "backends": list(backends),
            "model": {"graph": {"inputs": {k: {"shape": list(v), "dtype": F32} for k, v in inputs.items()},
                                "weights": weights_path, "nodes": nodes, "outputs": outputs}}}


def build_and_run(tmp_path, inputs, weights, nodes, outputs, feed, backends=("cblas", "host"), name="m"):
    np.savez(tmp_path / f"{name}.npz", **weights)
    out = str(tmp_path / f"{name}.so")
    report = build(spec(inputs, f"{name}.npz", nodes, outputs, backends), out, base_dir=str(tmp_path), quiet=True)
    with loader.load(out) as model:
        return report, model.run(**feed), out


# ---------------------------------------------------------------- numerics

ACTS = {"relu": ref.relu, "sigmoid": ref.sigmoid, "tanh": ref.tanh, None: lambda v: v,
        "leaky_relu": lambda v: ref.leaky_relu(v, 0.2), "clip": lambda v: ref.clip(v, 0.0, 0.5)}
ACT_ATTRS = {"leaky_relu": {"alpha": 0.2}, "clip": {"min": 0.0, "max": 0.5}}


def activated(act, a: ref.Approx) -> ref.Approx:
    """The activation `act` (an ACTS key) applied to a bounded reference (tests/reference.py)."""
    return a if act is None else ref.unary_approx(ACTS[act], a, ref.LIPSCHITZ.get(act, 1.0))


def test_dense_and_matmul_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    w = {"w1": rand(rng, 24, 40), "b1": rand(rng, 24), "w2": rand(rng, 7, 3), "b2": rand(rng, 7)}
    inputs = {"x1": (1, 40), "x5": (5, 40), "x3d": (2, 3, 3), "a": (2, 1, 3, 4), "b": (5, 4, 6), "v": (4,),
              "m": (3, 4)}
    feed = {k: rand(rng, *s) for k, s in inputs.items()}
    cases = [  # (output, node, fused activation, reference)
        ("d1", {"op": "dense", "inputs": ["x1", "w1", "b1"]}, "relu", ref.dense_approx(feed["x1"], w["w1"], w["b1"])),
        ("d2", {"op": "dense", "inputs": ["x1", "w1"]}, None, ref.dense_approx(feed["x1"], w["w1"])),
        ("d3", {"op": "dense", "inputs": ["x5", "w1", "b1"]}, "sigmoid",
         ref.dense_approx(feed["x5"], w["w1"], w["b1"])),
        ("d4", {"op": "dense", "inputs": ["x5", "w1"]}, "tanh", ref.dense_approx(feed["x5"], w["w1"])),
        ("d5", {"op": "dense", "inputs": ["x3d", "w2", "b2"]}, "relu",
         ref.dense_approx(feed["x3d"], w["w2"], w["b2"])),
        ("m1", {"op": "matmul", "inputs": ["a", "b"]}, "tanh", ref.matmul_approx(feed["a"], feed["b"])),
        ("m2", {"op": "matmul", "inputs": ["v", "b"]}, None, ref.matmul_approx(feed["v"], feed["b"])),
        ("m3", {"op": "matmul", "inputs": ["m", "v"]}, "relu", ref.matmul_approx(feed["m"], feed["v"])),
        ("m4", {"op": "matmul", "inputs": ["m", "b"]}, "sigmoid", ref.matmul_approx(feed["m"], feed["b"])),
    ]
    nodes, outputs = [], []
    for out, node, act, _ in cases:
        if act is None:
            nodes.append(dict(node, output=out))
        else:
            nodes += [dict(node, output=f"{out}_pre"), {"op": act, "inputs": [f"{out}_pre"], "output": out}]
        outputs.append(out)
    report, got, _ = build_and_run(tmp_path, inputs, w, nodes, outputs, feed)
    assert all(line.split(" -> ")[1].startswith("cblas") for line in report.explain), report.explain
    for out, _, act, expected in cases:
        ref.assert_close(got[out], activated(act, expected), err_msg=out)


CONVS = [  # (name, x shape, w shape, attrs, bias, activation)
    ("plain", (1, 3, 8, 8), (4, 3, 3, 3), {}, True, "relu"),
    ("padded", (2, 3, 7, 9), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}, False, "leaky_relu"),
    ("asym_pads_stride", (1, 2, 11, 10), (3, 2, 3, 2), {"pads": [0, 2, 1, 0], "strides": [2, 3]}, True, "tanh"),
    ("dilated", (1, 2, 12, 12), (4, 2, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 2, 1]}, True, "sigmoid"),
    ("groups", (2, 6, 8, 8), (9, 2, 3, 3), {"groups": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}, True, "relu"),
    ("depthwise", (1, 4, 6, 6), (4, 1, 3, 3), {"groups": 4, "pads": [1, 1, 1, 1]}, False, "relu"),
    ("pointwise", (2, 8, 5, 5), (6, 8, 1, 1), {}, True, "tanh"),
    ("pointwise_groups", (1, 8, 4, 4), (4, 4, 1, 1), {"groups": 2}, False, None),
    ("1x1_strided", (1, 3, 7, 7), (2, 3, 1, 1), {"strides": [2, 2]}, True, "clip"),
    ("1x1_padded", (1, 3, 4, 4), (2, 3, 1, 1), {"pads": [1, 0, 0, 1]}, True, "relu"),
    ("kernel_wider_than_pad", (1, 1, 3, 3), (2, 1, 5, 5), {"pads": [2, 2, 2, 2]}, True, None),
    ("wide_groups", (2, 16, 6, 6), (16, 8, 3, 3), {"groups": 2, "pads": [1, 1, 1, 1]}, True, "relu"),
    # above the parallel threshold: units are blocks of output rows (batch 1) or images
    ("big_b1", (1, 16, 24, 20), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}, True, "relu"),
    ("big_b1_stride2_odd_rows", (1, 16, 27, 25), (24, 16, 3, 3), {"pads": [1, 0, 1, 2], "strides": [2, 2]},
     True, "sigmoid"),
    ("big_b4_dilated", (4, 8, 16, 16), (16, 8, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, False, "tanh"),
    ("big_pointwise_b1", (1, 64, 20, 20), (64, 64, 1, 1), {}, True, "clip"),
    ("big_1x1_strided_b3", (3, 32, 16, 16), (64, 32, 1, 1), {"strides": [2, 2]}, False, "relu"),
    ("big_groups_b1", (1, 32, 16, 16), (32, 16, 3, 3), {"groups": 2, "pads": [1, 1, 1, 1]}, True, None),
]


def conv_backend(ws, attrs):
    """cblas, except for groups of fewer than 4 channels (depthwise...), which it leaves to host."""
    g = attrs.get("groups", 1)
    return "host" if g > 1 and min(ws[0] // g, ws[1]) < 4 else "cblas"


def conv_graph(rng, cases):
    """One graph holding every conv case (and its activation), with inputs, weights and NumPy results
    (ref.Approx: the value and its float32 rounding bound)."""
    inputs, weights, nodes, outputs, feed, expected = {}, {}, [], [], {}, {}
    for name, xs, ws, attrs, bias, act in cases:
        inputs[f"x_{name}"] = xs
        feed[f"x_{name}"] = rand(rng, *xs)
        weights[f"w_{name}"] = rand(rng, *ws)
        ins = [f"x_{name}", f"w_{name}"]
        if bias:
            weights[f"b_{name}"] = rand(rng, ws[0])
            ins.append(f"b_{name}")
        node = {"op": "conv2d", "inputs": ins, **attrs}
        if act is None:
            nodes.append(dict(node, output=name))
        else:
            nodes += [dict(node, output=f"{name}_pre"),
                      {"op": act, "inputs": [f"{name}_pre"], "output": name, **ACT_ATTRS.get(act, {})}]
        outputs.append(name)
        expected[name] = activated(act, ref.conv2d_approx(feed[f"x_{name}"], weights[f"w_{name}"],
                                                          weights.get(f"b_{name}"), **attrs))
    return inputs, weights, nodes, outputs, feed, expected


def test_conv2d_matches_numpy(tmp_path):
    inputs, weights, nodes, outputs, feed, expected = conv_graph(np.random.default_rng(1), CONVS)
    report, got, _ = build_and_run(tmp_path, inputs, weights, nodes, outputs, feed)
    convs = [line for line in report.explain if line.startswith("conv2d_")]
    assert [line.split(" -> ")[1].split(" ")[0] for line in convs] == [conv_backend(c[2], c[3]) for c in CONVS]
    assert any("groups=4 leaves 1 input and 1 output channels per group" in line for line in convs), convs
    fused = [line for line in report.explain if "fused into conv2d_" in line]
    assert len(fused) == sum(1 for c in CONVS if c[5] and conv_backend(c[2], c[3]) == "cblas"), fused
    assert any(line.startswith("leaky_relu_") for line in fused) and any(line.startswith("clip_") for line in fused)
    for name in outputs:
        ref.assert_close(got[name], expected[name], err_msg=name)


def test_pointwise_conv_needs_no_workspace_and_im2col_does(tmp_path):
    from packager.backends.cblas import CblasBackend

    g = Graph(name="g", inputs={"x": TensorType((1, 8, 5, 5), F32)},
              weights={"w1": np.zeros((4, 8, 1, 1), np.float32), "w3": np.zeros((4, 8, 3, 3), np.float32)},
              nodes=[Node("conv2d", ["x", "w1"], "a", name="c1"), Node("conv2d", ["x", "w3"], "b", name="c3")],
              outputs=["a", "b"])
    ir_check.infer(g)
    p = partition.partition(g, ["cblas"])
    (_, r1), (_, r3) = p.regions
    assert CblasBackend().lower(r1, g).workspace_bytes == 0
    lowered = CblasBackend().lower(r3, g)
    # im2col: (8 channels * 3 * 3 taps) rows x (3 * 3 outputs) floats = 2592 bytes, rounded up to 64
    assert lowered.workspace_bytes == 2624 and "/* kw = 2 */" in lowered.source  # the im2col of each tap column
    assert "malloc" not in lowered.source


def test_unsupported_shapes_and_dtypes_fall_back_with_a_reason():
    g = Graph(name="g", inputs={"x": TensorType((2, 4), "float64"), "e": TensorType((0, 4), F32)},
              weights={"w": np.zeros((3, 4), np.float64), "w32": np.zeros((3, 4), np.float32)},
              nodes=[Node("dense", ["x", "w"], "y", name="d"), Node("dense", ["e", "w32"], "z", name="d_empty"),
                     Node("softmax", ["z"], "s", name="sm")],
              outputs=["y", "s"])
    ir_check.infer(g)
    from packager.backends.cblas import CblasBackend

    backend = CblasBackend()
    assert "float32 only" in backend.supports(g.nodes[0], g)
    assert "non-empty" in backend.supports(g.nodes[1], g)
    assert backend.supports(g.nodes[2], g) == "op softmax has no cblas kernel (cblas takes dense, matmul, conv2d, conv_transpose2d)"


# ---------------------------------------------------------------- fusion rules

def fusion_graph(nodes, outputs):
    return ir_check.infer(Graph(name="g", inputs={"x": TensorType((2, 4), F32)},
                                weights={"w": np.zeros((4, 4), np.float32), "b": np.zeros(4, np.float32)},
                                nodes=[Node(op=n[0], inputs=list(n[1]), output=n[2], name=f"{n[0]}_{i}",
                                            backend=n[3] if len(n) > 3 else None) for i, n in enumerate(nodes)],
                                outputs=outputs))


def regions(p):
    return [(b.name, r.name, [n.name for n in r.nodes], r.outputs) for b, r in p.regions]


def test_activation_is_fused_into_its_op_and_explained():
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "y")], ["y"])
    p = partition.partition(g, ["cblas", "host"])
    assert p.explain() == ["dense_0 -> cblas (first in [cblas, host] that supports dense)",
                           "relu_1 -> cblas (fused into dense_0)"]
    assert regions(p) == [("cblas", "cblas_dense_0", ["dense_0", "relu_1"], ["y"])]


def test_no_fusion_when_the_op_output_is_a_graph_output():
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "y")], ["h", "y"])
    p = partition.partition(g, ["cblas", "host"])
    assert p.explain()[1] == ("relu_1 -> host (cblas: cblas takes relu only fused into the dense, matmul or "
                              "conv2d whose sole consumer it is)")
    assert regions(p) == [("cblas", "cblas_dense_0", ["dense_0"], ["h"]), ("host", "host_relu_1", ["relu_1"], ["y"])]


def test_no_fusion_when_the_op_output_has_another_consumer():
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "a"), ("add", ["a", "h"], "y")], ["y"])
    p = partition.partition(g, ["cblas", "host"])
    assert [a.backend for a in p.assignments] == ["cblas", "host", "host"]
    assert [a.fused_into for a in p.assignments] == [None, None, "relu_1"]  # host's own chain: relu -> add


def test_no_fusion_when_the_activation_reads_twice_or_is_not_elementwise():
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("mul", ["h", "h"], "y")], ["y"])
    assert [a.backend for a in partition.partition(g, ["cblas", "host"]).assignments] == ["cblas", "host"]
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("softmax", ["h"], "y")], ["y"])
    assert [a.backend for a in partition.partition(g, ["cblas", "host"]).assignments] == ["cblas", "host"]


def test_the_activation_override_decides():
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "y", "host")], ["y"])
    p = partition.partition(g, ["cblas", "host"])
    assert p.explain()[1] == "relu_1 -> host (backend: host set on the node)"
    g = fusion_graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "y", "cblas")], ["y"])
    assert partition.partition(g, ["cblas", "host"]).explain()[1] == "relu_1 -> cblas (fused into dense_0)"
    g = fusion_graph([("relu", ["x"], "y", "cblas")], ["y"])
    with pytest.raises(BuildError, match=r"node 'relu_0' \(op relu\) asks for backend 'cblas', which does not "
                                         r"take it: cblas takes relu only fused"):
        partition.partition(g, ["host"])


def test_an_overridden_anchor_still_fuses_and_a_later_follower_joins_its_region():
    # dense_0 (cblas by override) ... relu_2 reads only h: it runs with dense_0
    g = fusion_graph([("dense", ["x", "w", "b"], "h", "cblas"), ("relu", ["x"], "other"), ("relu", ["h"], "y"),
                      ("add", ["y", "other"], "z")], ["z"])
    p = partition.partition(g, ["host"])
    assert p.explain()[2] == "relu_2 -> cblas (fused into dense_0)"
    assert regions(p) == [("cblas", "cblas_dense_0", ["dense_0", "relu_2"], ["y"]),
                          ("host", "host_relu_1", ["relu_1"], ["other"]), ("host", "host_add_3", ["add_3"], ["z"])]


def test_unfused_activation_on_host_matches_numpy(tmp_path):
    rng = np.random.default_rng(2)
    w = {"w": rand(rng, 6, 5), "b": rand(rng, 6)}
    x = rand(rng, 3, 5)
    nodes = [{"op": "dense", "inputs": ["x", "w", "b"], "output": "h"}, {"op": "sigmoid", "inputs": ["h"], "output": "y"}]
    report, got, _ = build_and_run(tmp_path, {"x": (3, 5)}, w, nodes, ["h", "y"], {"x": x})
    assert report.explain[1].startswith("sigmoid_1 -> host")
    h = ref.dense_approx(x, w["w"], w["b"])
    ref.assert_close(got["h"], h, "h")
    ref.assert_close(got["y"], activated("sigmoid", h), "y")


def test_explain_in_the_cli(tmp_path, capsys):
    from packager.cli import main

    rng = np.random.default_rng(3)
    np.savez(tmp_path / "w.npz", w=rand(rng, 4, 4), b=rand(rng, 4))
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec({"x": (1, 4)}, "w.npz", [
        {"op": "dense", "inputs": ["x", "w", "b"], "output": "h"}, {"op": "tanh", "inputs": ["h"], "output": "y"}],
        ["y"])))
    assert main(["build", str(path), "-o", str(tmp_path / "m.so"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "dense_0 -> cblas (first in [cblas, host] that supports dense)" in out
    assert "tanh_1 -> cblas (fused into dense_0)" in out


# ---------------------------------------------------------------- linking and requires

def dt_needed(path: str) -> list[str]:
    """The DT_NEEDED entries of an ELF64 little-endian shared object (no readelf)."""
    data = open(path, "rb").read()
    sections = elf_sections(data)
    dyn_off, dyn_size = sections[".dynamic"].offset, sections[".dynamic"].size
    str_off = sections[".dynstr"].offset
    needed = []
    for k in range(dyn_off, dyn_off + dyn_size, 16):
        tag, value = struct.unpack_from("<qQ", data, k)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            needed.append(data[str_off + value:data.index(b"\0", str_off + value)].decode())
    return needed


@pytest.fixture(scope="module")
def blas_model(tmp_path_factory):
    """A dense + relu on cblas, its weights and an input."""
    work = tmp_path_factory.mktemp("blas_model")
    rng = np.random.default_rng(4)
    w = {"w": rand(rng, 8, 16), "b": rand(rng, 8)}
    np.savez(work / "w.npz", **w)
    out = str(work / "m.so")
    nodes = [{"op": "dense", "inputs": ["x", "w", "b"], "output": "h"}, {"op": "relu", "inputs": ["h"], "output": "y"}]
    report = build(spec({"x": (1, 16)}, "w.npz", nodes, ["y"]), out, base_dir=str(work), quiet=True,
                   use_cache=False)
    x = rand(rng, 1, 16)
    return out, report, x, activated("relu", ref.dense_approx(x, w["w"], w["b"]))


def test_dt_needed_and_manifest_requires(blas_model):
    out, report, x, expected = blas_model
    assert "libopenblas.so.0" in dt_needed(out)
    assert report.manifest["requires"] == ["libopenblas.so.0"]
    with loader.load(out) as model:
        assert model.manifest["requires"] == ["libopenblas.so.0"]
        ref.assert_close(model(x), expected)


def test_host_only_model_requires_nothing(tmp_path):
    rng = np.random.default_rng(5)
    nodes = [{"op": "dense", "inputs": ["x", "w"], "output": "y"}]
    report, _, out = build_and_run(tmp_path, {"x": (1, 4)}, {"w": rand(rng, 3, 4)}, nodes, ["y"],
                                   {"x": rand(rng, 1, 4)}, backends=["host"])
    assert report.manifest["requires"] == [] and "libopenblas.so.0" not in dt_needed(out)


def write_cc_wrapper(path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_missing_library_at_build_says_how_to_get_it(tmp_path):
    # a compiler that cannot find libopenblas: -lopenblas becomes a library that does not exist
    cc = write_cc_wrapper(tmp_path / "cc", 'for a; do shift; [ "$a" = -lopenblas ] && a=-lopenblas_not_here; '
                                           'set -- "$@" "$a"; done\nexec cc "$@"\n')
    np.savez(tmp_path / "w.npz", w=np.ones((3, 4), np.float32))
    out = tmp_path / "m.so"
    with pytest.raises(BuildError) as info:
        build(spec({"x": (2, 4)}, "w.npz", [{"op": "dense", "inputs": ["x", "w"], "output": "y"}], ["y"]),
              str(out), base_dir=str(tmp_path), quiet=True, cc=cc)
    message = str(info.value)
    assert message.startswith("library -lopenblas_not_here is missing: the cblas backend needs the OpenBLAS "
                              "headers (cblas.h) and library (libopenblas.so)"), message
    assert "apt-get install libopenblas-dev" in message
    assert not out.exists()


def test_missing_header_at_build_says_how_to_get_it(tmp_path, monkeypatch):
    from packager.backends import cblas

    monkeypatch.setattr(cblas, "CBLAS_PRELUDE", cblas.CBLAS_PRELUDE.replace("<cblas.h>", "<cblas_not_here.h>"))
    np.savez(tmp_path / "w.npz", w=np.ones((3, 4), np.float32))
    with pytest.raises(BuildError) as info:
        build(spec({"x": (2, 4)}, "w.npz", [{"op": "dense", "inputs": ["x", "w"], "output": "y"}], ["y"]),
              str(tmp_path / "m.so"), base_dir=str(tmp_path), quiet=True)
    message = str(info.value)
    assert message.startswith("header cblas_not_here.h is missing: the cblas backend needs"), message
    assert "apt-get install libopenblas-dev" in message


# ---------------------------------------------------------------- a missing library at load

def patched_copy(src: str, dst, old: bytes, new: bytes, where: str) -> str:
    """Copy `src` with `old` replaced by `new` (same length) in the manifest (checksums fixed) or in .dynstr."""
    import xxhash

    from packager.blob import HEADER, read_header

    assert len(old) == len(new)
    data = bytearray(open(src, "rb").read())
    if where == "manifest":
        start = data.find(b"DSOPACK\0")
        h = read_header(bytes(data[start:start + 64]))
        begin, end = start + h["manifest_offset"], start + h["manifest_offset"] + h["manifest_size"]
        manifest = bytes(data[begin:end])
        assert manifest.count(old) == 1
        data[begin:end] = manifest.replace(old, new)
        header = HEADER.pack(b"DSOPACK\0", h["major"], h["minor"], h["flags"], h["manifest_offset"],
                             h["manifest_size"], h["payload_offset"], h["payload_size"],
                             xxhash.xxh3_64_intdigest(bytes(data[begin:end])))
        data[start:start + 64] = header + struct.pack("<Q", xxhash.xxh3_64_intdigest(header))
    else:
        _, offset, size = elf_sections(bytes(data))[".dynstr"]
        k = data.find(old, offset, offset + size)
        assert k >= 0
        data[k:k + len(old)] = new
    dst.write_bytes(bytes(data))
    return str(dst)


def test_a_required_library_that_cannot_be_loaded_is_named(blas_model, tmp_path, dpk_run):
    import subprocess

    src, _, x, _ = blas_model
    bad = patched_copy(src, tmp_path / "m_requires.so", b"libopenblas.so.0", b"libopenblaz.so.0", "manifest")
    with loader.open_package(bad) as package:  # a well-formed file: only the library is missing
        package.verify()
    with pytest.raises(loader.NotFoundError) as info:
        loader.load(bad)
    message = str(info.value)
    assert message.startswith(f"'{bad}' needs libopenblaz.so.0 (manifest 'requires'), which this machine cannot "
                              f"load: libopenblaz.so.0: cannot open shared object file"), message
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, bad, f"x={tmp_path / 'x.npy'}"], capture_output=True, text=True)
    assert result.returncode != 0 and "needs libopenblaz.so.0 (manifest 'requires')" in result.stderr


def test_a_missing_dt_needed_library_is_named(blas_model, tmp_path):
    src, _, _, _ = blas_model
    bad = patched_copy(src, tmp_path / "m_needed.so", b"libopenblas.so.0", b"libopenblaz.so.0", "dynstr")
    assert "libopenblaz.so.0" in dt_needed(bad)
    with pytest.raises(loader.NotFoundError) as info:
        loader.load(bad)
    message = str(info.value)
    assert message.startswith(f"cannot load '{bad}': libopenblaz.so.0: cannot open shared object file"), message


# ---------------------------------------------------------------- the mixed example

def test_mixed_example_matches_numpy_and_inspect_lists_the_kinds(tmp_path, capsys):
    from packager.cli import main

    out = str(tmp_path / "mixed.so")
    report = build(os.path.join(ROOT, "manifests", "mixed.yaml"), out, quiet=True)
    taken = [line.split(" -> ")[1].split(" ")[0] for line in report.explain]
    assert taken == ["cblas", "cblas", "host", "cblas", "cblas", "cblas", "host", "json", "cblas", "cblas", "json",
                     "json"], report.explain
    assert "relu_1 -> cblas (fused into conv2d_0)" in report.explain
    assert "tanh_9 -> cblas (fused into dense_8)" in report.explain
    assert "libopenblas.so.0" in dt_needed(out)

    w = np.load(os.path.join(ROOT, "manifests", "mixed.npz"))
    rng = np.random.default_rng(6)
    with loader.load(out) as model:
        for _ in range(2):
            x = rng.random((1, 3, 16, 16)).astype(np.float32)
            h = activated("relu", ref.conv2d_approx(x, w["conv1.weight"], w["conv1.bias"], pads=(1, 1, 1, 1)))
            h = ref.maxpool_approx(h, (2, 2), (2, 2))
            h = activated("relu", ref.conv2d_approx(h, w["conv2.weight"], w["conv2.bias"], pads=(1, 1, 1, 1),
                                                    groups=2))
            h = ref.conv2d_approx(h, w["conv3.weight"], w["conv3.bias"])
            h = ref.mean_approx(h, (2, 3))
            h = ref.Approx(h.value.reshape(1, -1), h.err.reshape(1, -1))
            h = activated("tanh", ref.dense_approx(h, w["fc1.weight"], w["fc1.bias"]))
            expected = ref.softmax_approx(ref.dense_approx(h, w["fc2.weight"], w["fc2.bias"]), 1)
            ref.assert_close(model(x), expected)

    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "requires: [libopenblas.so.0]" in text
    table = text[text.index("\nmodule "):].split("\n")[2:]  # the rows under the header
    rows = {line.split()[0]: line.split() for line in table if line.strip()}
    assert {name: row[1] for name, row in rows.items()} == {
        "cblas": "dso", "host": "dso", "ext0": "json", "ext1": "json", "weights": "params", "main": "graph"}
    assert rows["main"][-5:] == ["cblas,", "host,", "ext0,", "ext1,", "weights"] and rows["ext0"][-1] == "weights"
    assert "(10 tensors)" in text


def test_eight_threads_share_one_cblas_model(blas_model):
    from concurrent.futures import ThreadPoolExecutor

    out, _, _, _ = blas_model
    rng = np.random.default_rng(7)
    xs = [rand(rng, 1, 16) for _ in range(32)]
    with loader.load(out) as model:
        want = [model(x) for x in xs]
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                for got, expected in zip(pool.map(model, xs), want):
                    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- threads

# (op, input shapes, weights, attrs): each above the parallel threshold, so its
# units go to __dpk_parallel; the harness's stand-in cuts them into 3 ranges.
SPLIT_CASES = [
    ("conv2d", [(1, 16, 19, 17), (24, 16, 3, 3), (24,)], (1, 2), {"pads": [1, 1, 1, 1]}),
    ("conv2d", [(3, 8, 20, 20), (16, 8, 3, 3)], (1,), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
    ("conv2d", [(2, 32, 12, 12), (48, 32, 1, 1), (48,)], (1, 2), {}),
    ("conv2d", [(4, 32, 16, 16), (48, 32, 1, 1)], (1,), {"strides": [2, 2]}),
    ("conv2d", [(1, 32, 14, 14), (32, 8, 3, 3), (32,)], (1, 2), {"groups": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("dense", [(1, 700), (600, 700), (600,)], (1, 2), {}),
    ("dense", [(3, 700), (600, 700)], (1,), {}),
    ("dense", [(50, 300), (40, 300), (40,)], (1, 2), {}),
    ("matmul", [(4, 30, 70), (4, 70, 50)], (), {}),
    ("matmul", [(200, 70), (70, 50)], (), {}),
    ("matmul", [(2, 1, 60, 70), (3, 70, 50)], (), {}),
]


def check_serial_and_split(tmp_path, lowered, region, graph, inputs, expected: ref.Approx, cflags=()):
    """Run the lowered kernel serially, then through a stand-in pool that cuts it into 3 ranges; each run
    within `expected`'s rounding bound."""
    import kernel_harness as kh

    assert "dpk_host_parallel(" in lowered.source, "the case is meant to be above the threshold"
    for parallel in (False, True):
        lib = kh.compile_sources([lowered], tmp_path, parallel=parallel, cflags=cflags)
        before = kh.KernelLib.ranges_run()
        out = np.full(graph.types["y"].shape, np.nan, np.float32)
        ws = [np.zeros(lowered.workspace_bytes, np.uint8)] if lowered.workspace_bytes else []
        args = [lowered.weights.get(name, a) for name, a in zip(region.inputs, inputs)]  # weights as the file stores them
        lib.call(region.name, *args, out, *ws)
        assert (kh.KernelLib.ranges_run() - before == 3) == parallel
        ref.assert_close(out, expected, "3 ranges" if parallel else "serial")


@pytest.mark.parametrize("op, shapes, weights, attrs", SPLIT_CASES)
def test_units_split_over_threads_match_numpy(tmp_path, op, shapes, weights, attrs):
    import kernel_harness as kh
    from packager.backends.cblas import CblasBackend

    rng = np.random.default_rng(7)
    inputs = [rand(rng, *s) for s in shapes]
    _, region, graph = kh.lower_node(op, inputs, weights, backend=CblasBackend(), **attrs)
    lowered = CblasBackend().lower(region, graph)
    expected = {"conv2d": lambda: ref.conv2d_approx(*inputs, **attrs), "dense": lambda: ref.dense_approx(*inputs),
                "matmul": lambda: ref.matmul_approx(*inputs)}[op]()
    check_serial_and_split(tmp_path, lowered, region, graph, inputs, expected)


HOST_SPLIT_CASES = [  # host ops that run as tasks: depthwise/direct conv planes, pool planes, elementwise blocks
    ("conv2d", [(4, 32, 16, 16), (32, 1, 3, 3), (32,)], (1, 2), {"groups": 32, "pads": [1, 1, 1, 1]}),
    ("conv2d", [(16, 16, 24, 24), (16, 1, 3, 3)], (1,), {"groups": 16, "strides": [2, 2], "pads": [0, 1, 1, 0]}),
    ("maxpool2d", [(64, 96, 9, 9)], (), {"kernel": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("avgpool2d", [(64, 32, 16, 16)], (), {"kernel": [2, 2], "strides": [2, 2]}),
    ("relu", [(64, 32, 16, 17)], (), {}),
    ("leaky_relu", [(300001,)], (), {"alpha": 0.1}),
]


HOST_EXPECTED = {  # op -> its bounded reference
    "conv2d": ref.conv2d_approx,
    "maxpool2d": ref.maxpool_approx,
    "avgpool2d": ref.avgpool_approx,
    "relu": lambda x: ref.Approx(ref.relu(x)),
    "leaky_relu": lambda x, alpha: ref.unary_approx(lambda v: ref.leaky_relu(v, alpha), x, ulps=1),
}


@pytest.mark.parametrize("op, shapes, weights, attrs", HOST_SPLIT_CASES)
def test_host_tasks_split_over_threads_match_numpy(tmp_path, op, shapes, weights, attrs):
    import kernel_harness as kh

    rng = np.random.default_rng(9)
    inputs = [rand(rng, *s) for s in shapes]
    backend, region, graph = kh.lower_node(op, inputs, weights, **attrs)
    lowered = backend.lower(region, graph)
    check_serial_and_split(tmp_path, lowered, region, graph, inputs, HOST_EXPECTED[op](*inputs, **attrs))


def test_small_ops_stay_on_the_calling_thread():
    import kernel_harness as kh
    from packager.backends.cblas import CblasBackend

    rng = np.random.default_rng(8)
    for op, shapes, weights in [("conv2d", [(1, 3, 8, 8), (4, 3, 3, 3)], (1,)), ("dense", [(1, 64), (32, 64)], (1,)),
                                ("matmul", [(8, 16), (16, 8)], ())]:
        _, region, graph = kh.lower_node(op, [rand(rng, *s) for s in shapes], weights, backend=CblasBackend())
        source = CblasBackend().lower(region, graph).source
        assert "dpk_host_parallel(" not in source and f"{region.name}_task(&(dpk_host_task)" in source, op


DIRECT_CONVS = [  # (name, x shape, w shape, attrs, bias, activation): convs the direct kernel takes
    ("rows16_b1", (1, 16, 32, 32), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}, True, "relu"),
    ("rows16x2_b3", (3, 3, 30, 31), (8, 3, 3, 3), {"pads": [2, 0, 0, 3]}, False, None),       # OW 32: 2 vectors
    ("rows8_b2", (2, 32, 8, 8), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}, True, "clip"),       # OW 8: ymm
    ("k5_b2", (2, 4, 20, 20), (12, 4, 5, 5), {"pads": [0, 0, 0, 0]}, True, "leaky_relu"),    # OW 16, 12 channels
    ("s2_b2", (2, 16, 32, 32), (32, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True, "relu"),
    ("s2_1x1_b3", (3, 16, 16, 16), (32, 16, 1, 1), {"strides": [2, 2]}, False, None),          # OW 8
    ("s2_odd_b1", (1, 3, 33, 33), (16, 3, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}, True, "tanh"),
]


def test_direct_conv_matches_numpy_on_avx512(tmp_path):
    """The direct conv (stride 1 and 2) is compiled only where the target has AVX-512 (-march=native on such a machine);
    elsewhere the same file takes the im2col path, which test_conv2d_matches_numpy covers."""
    with open("/proc/cpuinfo") as f:
        if " avx512f" not in f.read():
            pytest.skip("this machine has no AVX-512: the direct conv is not compiled here")
    from packager.backends.cblas import _direct
    from packager.ir import Node, TensorType

    for name, xs, ws, attrs, _, _ in DIRECT_CONVS:
        full = {"strides": [1, 1], "dilations": [1, 1], "groups": 1, "pads": [0, 0, 0, 0], **attrs}
        y = ref.conv2d(np.zeros(xs, np.float32), np.zeros(ws, np.float32), **attrs).shape
        assert _direct(Node("conv2d", ["x", "w"], "y", attrs=full), [TensorType(xs, F32), TensorType(ws, F32)],
                       TensorType(y, F32)), name
    inputs, weights, nodes, outputs, feed, expected = conv_graph(np.random.default_rng(11), DIRECT_CONVS)
    np.savez(tmp_path / "d.npz", **weights)
    model_spec = spec(inputs, "d.npz", nodes, outputs)
    model_spec["target"] = {"triple": "native", "cflags": ["-O3", "-march=native"]}
    out = str(tmp_path / "d.so")
    build(model_spec, out, base_dir=str(tmp_path), quiet=True, save_temps=str(tmp_path / "temps"))
    assert open(tmp_path / "temps" / "model.c").read().count("float *restrict pad = (float *)scratch;") == 7
    for threads in (1, 2):
        with loader.load(out, num_threads=threads) as model:
            got = model.run(**feed)
        for name in outputs:
            ref.assert_close(got[name], expected[name], f"{name} {threads}")


DIRECT_SPLIT_CASES = [  # (input shapes, attrs): 3 ranges that start and end inside images, or span several
    ([(1, 16, 32, 32), (16, 16, 3, 3), (16,)], {"pads": [1, 1, 1, 1]}),
    ([(2, 16, 32, 32), (32, 16, 3, 3), (32,)], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ([(3, 16, 32, 32), (32, 16, 1, 1)], {"strides": [2, 2]}),  # odd input rows are never read
    ([(2, 8, 33, 33), (16, 8, 3, 3)], {"strides": [2, 2], "pads": [0, 1, 2, 0]}),
    ([(2, 32, 8, 8), (64, 32, 3, 3), (64,)], {"pads": [1, 1, 1, 1]}),
    ([(1, 8, 31, 31), (16, 8, 5, 5)], {"strides": [2, 2], "pads": [2, 2, 2, 2]}),  # odd row, 2 columns of padding
    ([(2, 32, 15, 15), (32, 32, 3, 3)], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # 7 column pairs: masked
]


@pytest.mark.parametrize("shapes, attrs", DIRECT_SPLIT_CASES)
def test_direct_conv_split_over_threads_matches_numpy(tmp_path, shapes, attrs):
    """Each range pads only the input rows its own output rows read: serial and 3-range runs agree with NumPy."""
    with open("/proc/cpuinfo") as f:
        if " avx512f" not in f.read():
            pytest.skip("this machine has no AVX-512: the direct conv is not compiled here")
    import kernel_harness as kh
    from packager.backends.cblas import CblasBackend

    rng = np.random.default_rng(12)
    inputs = [rand(rng, *s) for s in shapes]
    _, region, graph = kh.lower_node("conv2d", inputs, tuple(range(1, len(shapes))), backend=CblasBackend(), **attrs)
    lowered = CblasBackend().lower(region, graph)
    assert "float *restrict pad = (float *)scratch;" in lowered.source
    check_serial_and_split(tmp_path, lowered, region, graph, inputs, ref.conv2d_approx(*inputs, **attrs),
                           cflags=["-march=native"])


@pytest.mark.parametrize("march", [None, "native"])
def test_residual_add_and_relu_fuse_into_the_conv(tmp_path, march):
    """A ResNet block: conv -> add(its input) -> relu is one cblas region, and so is conv -> add(a tensor made
    before it); an add whose other operand is made after the conv is fused into that later conv instead.
    Baseline builds run the im2col path; -march=native on AVX-512 the direct kernel."""
    rng = np.random.default_rng(13)
    w = {"w1": rand(rng, 16, 16, 3, 3), "b1": rand(rng, 16), "w2": rand(rng, 16, 16, 3, 3),
         "wa": rand(rng, 16, 16, 1, 1), "wb": rand(rng, 16, 16, 3, 3), "bb": rand(rng, 16)}
    w = {k: v * np.float32(0.1) for k, v in w.items()}  # keeps the values near 1 through the chain
    p1 = {"pads": [1, 1, 1, 1]}
    nodes = [{"op": "conv2d", "inputs": ["x", "w1", "b1"], "output": "c1", **p1},
             {"op": "add", "inputs": ["x", "c1"], "output": "s1"},      # residual first: either order fuses
             {"op": "relu", "inputs": ["s1"], "output": "r1"},
             {"op": "conv2d", "inputs": ["r1", "w2"], "output": "c2", **p1},
             {"op": "add", "inputs": ["c2", "r1"], "output": "s2"},     # no activation after it
             {"op": "conv2d", "inputs": ["s2", "wa"], "output": "ca"},
             {"op": "conv2d", "inputs": ["s2", "wb", "bb"], "output": "cb", **p1},
             {"op": "add", "inputs": ["ca", "cb"], "output": "s3"},     # ca is older: joins cb
             {"op": "relu", "inputs": ["s3"], "output": "y"}]
    x = rand(rng, 2, 16, 16, 16)
    np.savez(tmp_path / "m.npz", **w)
    model_spec = spec({"x": x.shape}, "m.npz", nodes, ["y"])
    if march:
        model_spec["target"] = {"triple": "native", "cflags": ["-O3", "-march=native"]}
    out = str(tmp_path / "m.so")
    report = build(model_spec, out, base_dir=str(tmp_path), quiet=True)
    assert "add_1 -> cblas (fused into conv2d_0)" in report.explain
    assert "relu_2 -> cblas (fused into conv2d_0)" in report.explain
    assert "add_4 -> cblas (fused into conv2d_3)" in report.explain
    assert "add_7 -> cblas (fused into conv2d_6)" in report.explain  # cb, not ca
    assert "relu_8 -> cblas (fused into conv2d_6)" in report.explain
    r1 = activated("relu", ref.add_approx(x, ref.conv2d_approx(x, w["w1"], w["b1"], pads=[1] * 4)))
    s2 = ref.add_approx(ref.conv2d_approx(r1, w["w2"], pads=[1] * 4), r1)
    expected = activated("relu", ref.add_approx(ref.conv2d_approx(s2, w["wa"]),
                                                ref.conv2d_approx(s2, w["wb"], w["bb"], pads=[1] * 4)))
    for threads in (1, 2):
        with loader.load(out, num_threads=threads) as model:
            ref.assert_close(model.run(x=x)["y"], expected, f"{threads} threads")


TRANSPOSED_DENSES = [  # (name, x shape, outputs, bias, activation): dense from 8 rows of x on, W in panels
    ("panels", (64, 96), 256, True, "relu"),     # 8 panels of 32 columns are the units; 8-row (6-row) tiles
    ("rows_left", (13, 40), 64, False, "tanh"),  # under 4 panels: rows are the units; 13 = 8 + 5 (6 + 6 + 1)
    ("ragged", (16, 50), 10, True, None),        # 10 outputs: fewer than a panel's 32, W kept as it is
    ("batched", (2, 8, 24), 32, True, "clip"),   # 3-D x: 16 rows
    ("deep", (9, 600), 40, True, None),          # K = 600: 3 passes of PANEL_KC; 40 = a panel and 8 columns
]


def panel_denses(rng, cases=TRANSPOSED_DENSES):
    """(inputs, weights, nodes, feed, expected) of one dense per case of TRANSPOSED_DENSES (its activation after
    it), each with its own x, W and bias, and NumPy's bounded result."""
    inputs, weights, nodes, feed, expected = {}, {}, [], {}, {}
    for name, xs, n, bias, act in cases:
        inputs[f"x_{name}"], feed[f"x_{name}"] = xs, rand(rng, *xs)
        weights[f"w_{name}"] = rand(rng, n, xs[-1])
        ins = [f"x_{name}", f"w_{name}"] + ([f"b_{name}"] if bias else [])
        if bias:
            weights[f"b_{name}"] = rand(rng, n)
        nodes += [{"op": "dense", "inputs": ins, "output": f"{name}_pre" if act else name}]
        if act:
            nodes.append({"op": act, "inputs": [f"{name}_pre"], "output": name, **ACT_ATTRS.get(act, {})})
        expected[name] = activated(act, ref.dense_approx(feed[f"x_{name}"], weights[f"w_{name}"],
                                                         weights.get(f"b_{name}")))
    return inputs, weights, nodes, feed, expected


@pytest.mark.parametrize("march", [None, "native"])
def test_dense_from_8_rows_stores_w_in_panels(tmp_path, march):
    """The file stores such a W as panels [N / 32][K][32]; a W two denses read keeps its layout. Baseline builds
    run OpenBLAS on each panel, -march=native the register kernel (AVX-512 or AVX2); both agree with NumPy on 1
    and 2 threads."""
    rng = np.random.default_rng(14)
    inputs, weights, nodes, feed, expected = panel_denses(rng)
    inputs["x_shared"], feed["x_shared"] = (16, 40), rand(rng, 16, 40)
    nodes += [{"op": "dense", "inputs": ["x_shared", "w_rows_left"], "output": "shared"}]
    expected["shared"] = ref.dense_approx(feed["x_shared"], weights["w_rows_left"])
    np.savez(tmp_path / "m.npz", **weights)
    model_spec = spec(inputs, "m.npz", nodes, list(expected))
    if march:
        model_spec["target"] = {"triple": "native", "cflags": ["-O3", "-march=native"]}
    out = str(tmp_path / "m.so")
    build(model_spec, out, base_dir=str(tmp_path), quiet=True)
    for threads in (1, 2):
        with loader.load(out, num_threads=threads) as model:
            stored = {name: t["shape"] for m in model.manifest["modules"] if m["name"] == "weights"
                      for name, t in m["tensors"].items()}
            got = model.run(**feed)
        for name in expected:
            ref.assert_close(got[name], expected[name], f"{name} {threads}")
    assert stored["w_panels"] == [8, 96, 32] and stored["w_deep"] == [2, 600, 32]
    assert stored["w_ragged"] == [10, 50]  # 10 outputs: a panel would be mostly padding
    assert stored["w_rows_left"] == [64, 40]  # read by two denses: kept as it is


def test_only_a_dense_of_8_rows_stores_panels_of_any_size():
    from packager.backends.cblas import panels, stores_panels

    def dense(rows, n, k):
        g = Graph(name="g", inputs={"x": TensorType((rows, k), F32)}, weights={"w": np.zeros((n, k), np.float32)},
                  nodes=[Node("dense", ["x", "w"], "y", name="d")], outputs=["y"])
        return g.nodes[0], ir_check.infer(g)
    assert stores_panels(*dense(8, 1024, 1024))
    assert not stores_panels(*dense(7, 1024, 1024))    # batch 7: OpenBLAS on W
    assert stores_panels(*dense(64, 4097, 4096))       # 64 MiB: panels are read page after page
    assert not stores_panels(*dense(64, 31, 4096))     # 31 outputs: under a panel
    w = np.arange(3 * 5, dtype=np.float32).reshape(5, 3)  # N = 5, K = 3
    p = panels(w)
    assert p.shape == (1, 3, 32) and np.array_equal(p[0, :, :5], w.T) and not p[0, :, 5:].any()


RELAYOUTS = [  # (how a bad backend re-lays out every weight it reads, two denses sharing w?, outputs, error)
    (lambda a: a[::-1].copy(), True, ["y"],
     r"region 'greedy_dense_\d' re-lays out weight 'w', which greedy_dense_0, greedy_dense_1 also reads \(a backend bug"),
    (lambda a: a.astype(np.float64), False, ["y"],
     r"region 'greedy_dense_0' re-lays out weight 'w' as float64, not its float32 \(a backend bug\)"),
    (lambda a: a.tolist(), False, ["y"],
     r"backend 'greedy' region 'greedy_dense_0' \(nodes dense_0\): lower\(\) returned a CSource whose new layout of "
     r"'w' is list, not a numpy array"),
    (lambda a: a[::-1].copy(), False, ["y", "w"],
     r"region 'greedy_dense_0' re-lays out weight 'w', which a graph output also reads \(a backend bug"),
]


@pytest.mark.parametrize("relayout, shared, outputs, message", RELAYOUTS)
def test_a_backend_cannot_relay_out_a_weight_it_does_not_own(monkeypatch, tmp_path, relayout, shared, outputs, message):
    from packager.backends.cblas import CblasBackend

    class Greedy(CblasBackend):  # re-lays out every weight it reads, whoever else reads it
        name = "greedy"

        def lower(self, region, graph):
            lowered = super().lower(region, graph)
            lowered.weights = {w: relayout(graph.weights[w]) for w in region.weights}
            return lowered
    monkeypatch.setitem(partition.BACKENDS, "greedy", Greedy)
    np.savez(tmp_path / "m.npz", w=rand(np.random.default_rng(0), 8, 8))
    nodes = [{"op": "dense", "inputs": ["x", "w"], "output": "h" if shared else "y"}]
    if shared:
        nodes.append({"op": "dense", "inputs": ["h", "w"], "output": "y"})
    out = tmp_path / "m.so"
    with pytest.raises(BuildError, match=message):
        build(spec({"x": (1, 8)}, "m.npz", nodes, outputs, ("greedy",)), str(out), base_dir=str(tmp_path), quiet=True)
    assert not out.exists()


def test_an_add_that_broadcasts_is_not_fused_into_a_conv():
    g = Graph(name="g", inputs={"x": TensorType((1, 4, 6, 6), F32), "b": TensorType((1, 4, 1, 1), F32)},
              weights={"w": np.zeros((4, 4, 3, 3), np.float32)},
              nodes=[Node("conv2d", ["x", "w"], "c", attrs={"pads": [1, 1, 1, 1]}, name="conv2d_0"),
                     Node("add", ["c", "b"], "y", name="add_1")], outputs=["y"])
    ir_check.infer(g)
    assert partition.partition(g, ["cblas", "host"]).explain()[1].startswith("add_1 -> host")


def test_a_task_refuses_more_inputs_than_its_context_carries():
    from packager.backends import cgen
    from packager.ir import BuildError

    cgen.task("t", "ok", ["float"] * (cgen.TASK_MAX_INPUTS + 1), 8, "", True)  # 4 inputs + the output
    with pytest.raises(BuildError, match=r"task t: 5 inputs, more than the 4 a task carries"):
        cgen.task("t", "too many", ["float"] * (cgen.TASK_MAX_INPUTS + 2), 8, "", True)
