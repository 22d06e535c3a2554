"""ONNX models in (packager/frontends/onnx*.py), checked against onnxruntime.

Every model is built into a .so with the real pipeline, loaded with the
loader, run, and compared with onnxruntime on the same input: single-op
models made with onnx.helper at several opsets, the PyTorch exports in
tests/models/ (made by tests/models/make_models.py; no torch needed here), an
MLP converted by skl2onnx, and the CLI. Tolerance: |got - ort| <= 1e-4 * max(1, |ort|).
"""

import os
import sys

import numpy as np
import pytest
import yaml

import onnx  # the [test] extra, which scripts/setup.sh installs: a broken install fails here, never skips
import onnxruntime as ort
import skl2onnx
from onnx import TensorProto, helper, numpy_helper

import loader
from packager.build import build
from packager.cli import main
from packager.frontends import onnx as onnx_frontend
from packager.spec import Target, from_onnx
from packager.ir import BuildError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "models")
TOL = 1e-4
RNG = np.random.default_rng(0)
ONNX_TYPE = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32,
             "float64": TensorProto.DOUBLE, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL}




def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


class C:
    """A constant (an initializer) in a single-op case."""

    def __init__(self, array):
        self.array = np.asarray(array)


def make_model(nodes, inputs: dict, inits: dict, outputs: dict, opset: int, ml: bool = False):
    """inputs: name -> (dtype, shape with None for a symbolic dim); outputs: name -> dtype."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, ONNX_TYPE[dt], [d if d is not None else "N" for d in shape])
         for n, (dt, shape) in inputs.items()],
        [helper.make_tensor_value_info(n, ONNX_TYPE[dt], None) for n, dt in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 1)] if ml else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8 if opset < 21 else 10
    model = onnx.shape_inference.infer_shapes(model)  # the checker wants output shapes
    for output in model.graph.output:
        if not output.type.tensor_type.HasField("shape"):
            output.type.tensor_type.shape.dim.add().dim_param = "unknown"
    onnx.checker.check_model(model)
    return model


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def close(got: np.ndarray, ref: np.ndarray) -> float:
    """The largest |got - ref| / max(1, |ref|), after checking shape and dtype."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    if got.dtype.kind != "f":
        np.testing.assert_array_equal(got, ref)
        return 0.0
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    err = np.abs(got[ok].astype(np.float64) - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))
    return float(err.max()) if err.size else 0.0


def build_and_compare(path, feeds: dict, tmp_path, shapes=None, cflags=("-O2",), ort_feeds=None) -> dict:
    """Build `path`, run it and onnxruntime on `feeds`; assert every output within TOL; return the outputs."""
    out = str(tmp_path / (os.path.basename(str(path)).replace(".onnx", "") + ".so"))
    spec = from_onnx(path, shapes, target=Target(cflags=list(cflags)))
    build(spec, out, quiet=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    refs = dict(zip([o.name for o in session.get_outputs()], session.run(None, ort_feeds or feeds)))
    with loader.load(out) as model:
        got = model.run(**feeds)
    assert list(got) == list(refs)
    for name in refs:
        err = close(got[name], refs[name])
        assert err <= TOL, f"output {name}: max error {err}"
    return got


# ---------------------------------------------------------------------------
# Single-op models, each at several opsets


def case(op, ins, out="float32", min_opset=13, n_outputs=1, **attrs):
    """ins: list of (name, array or C(array) or None for an absent optional input)."""
    label = op + ("_" + "_".join(f"{k}{v}" for k, v in attrs.items()) if attrs else "")
    label += "_" + "x".join(str(d) for d in next(a for _, a in ins if isinstance(a, np.ndarray)).shape)
    return pytest.param(op, ins, out, min_opset, attrs, id=label.replace(" ", ""))


X4 = rand(2, 3, 8, 8)
CASES = [
    case("Relu", [("x", rand(2, 5))]),
    case("Sigmoid", [("x", rand(3, 4, lo=-8, hi=8))]),
    case("Tanh", [("x", rand(3, 4, lo=-4, hi=4))]),
    case("LeakyRelu", [("x", rand(3, 4))]),
    case("LeakyRelu", [("x", rand(3, 4))], alpha=0.3),
    case("Clip", [("x", rand(2, 6, lo=-9, hi=9)), ("min", C(np.float32(0))), ("max", C(np.float32(6)))]),
    case("Clip", [("x", rand(2, 6, lo=-3, hi=3)), ("min", C(np.float32(-1)))]),
    case("Clip", [("x", rand(2, 6, lo=-3, hi=3)), ("", None), ("max", C(np.float32(0.5)))]),
    case("Clip", [("x", rand(2, 6))]),
    case("Softmax", [("x", rand(2, 7, lo=-5, hi=5))]),
    case("Softmax", [("x", rand(2, 3, 4, lo=-5, hi=5))], axis=1),
    case("LogSoftmax", [("x", rand(2, 7, lo=-5, hi=5))]),
    case("LogSoftmax", [("x", rand(2, 3, 4, lo=-5, hi=5))], axis=0),
    case("Add", [("a", rand(2, 3, 4)), ("b", rand(3, 4))]),
    case("Add", [("a", rand(2, 3, 4)), ("b", C(rand(4, 1, 1)[1:2]))]),
    case("Sub", [("a", C(rand(1, 4))), ("b", rand(3, 4))]),
    case("Mul", [("a", rand(2, 3)), ("b", C(np.float32(2.5)))]),
    case("Div", [("a", rand(2, 3)), ("b", rand(2, 3, lo=0.5, hi=2))]),
    case("MatMul", [("a", rand(3, 5)), ("b", C(rand(5, 4)))]),
    case("MatMul", [("a", rand(2, 3, 5)), ("b", C(rand(5, 4)))]),
    case("MatMul", [("a", rand(2, 3, 5)), ("b", rand(2, 5, 4))]),
    case("MatMul", [("a", rand(5)), ("b", C(rand(5, 4)))]),
    case("Gemm", [("a", rand(3, 5)), ("b", C(rand(4, 5))), ("c", C(rand(4)))], transB=1),
    case("Gemm", [("a", rand(3, 5)), ("b", C(rand(5, 4))), ("c", C(rand(1, 4)))], alpha=0.5, beta=2.0),
    case("Gemm", [("a", rand(5, 3)), ("b", C(rand(5, 4))), ("c", C(rand(3, 4)))], transA=1, beta=0.5),
    case("Gemm", [("a", rand(3, 5)), ("b", C(rand(4, 5))), ("c", C(np.float32(0.7)))], transB=1, alpha=2.0),
    case("Gemm", [("a", rand(3, 5)), ("b", rand(4, 5))], transB=1, alpha=1.5),
    case("Gemm", [("a", rand(5, 3)), ("b", rand(5, 4)), ("c", rand(3, 4))], transA=1, beta=3.0),
    case("Conv", [("x", X4), ("w", C(rand(4, 3, 3, 3))), ("b", C(rand(4)))], pads=[1, 1, 1, 1]),
    case("Conv", [("x", X4), ("w", C(rand(6, 1, 3, 3)))], group=3, strides=[2, 2], auto_pad="SAME_UPPER"),
    case("Conv", [("x", rand(1, 3, 9, 8)), ("w", C(rand(3, 1, 4, 4)))], group=3, strides=[2, 3],
         auto_pad="SAME_LOWER"),
    case("Conv", [("x", X4), ("w", C(rand(4, 3, 3, 3)))], auto_pad="VALID", dilations=[2, 1]),
    case("Conv", [("x", rand(1, 4, 7, 9)), ("w", C(rand(4, 2, 3, 2))), ("b", C(rand(4)))], group=2,
         pads=[0, 1, 2, 0], dilations=[2, 2]),
    case("MaxPool", [("x", X4)], kernel_shape=[2, 2], strides=[2, 2]),
    case("MaxPool", [("x", rand(1, 2, 7, 7))], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    case("MaxPool", [("x", rand(1, 2, 7, 6))], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    case("MaxPool", [("x", rand(1, 2, 6, 6))], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    case("AveragePool", [("x", X4)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
    case("AveragePool", [("x", X4)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    case("AveragePool", [("x", rand(1, 2, 7, 7))], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    case("AveragePool", [("x", rand(1, 2, 7, 5))], kernel_shape=[3, 3], auto_pad="SAME_LOWER",
         count_include_pad=1),
    case("GlobalAveragePool", [("x", X4)]),
    case("GlobalMaxPool", [("x", X4)]),
    case("BatchNormalization", [("x", X4), ("s", C(rand(3))), ("b", C(rand(3))), ("m", C(rand(3))),
                                ("v", C(rand(3, lo=0.5, hi=2)))], epsilon=1e-3),
    case("Flatten", [("x", X4)]),
    case("Flatten", [("x", X4)], axis=0),
    case("Flatten", [("x", X4)], axis=-1),
    case("Reshape", [("x", X4), ("s", C(np.array([0, -1, 4], np.int64)))]),
    case("Reshape", [("x", X4), ("s", C(np.array([2, 0, 0, 8], np.int64)))], min_opset=14, allowzero=0),
    case("Transpose", [("x", X4)], perm=[0, 2, 3, 1]),
    case("Transpose", [("x", rand(2, 3, 4))]),
    case("Concat", [("a", rand(2, 3)), ("b", C(rand(2, 2))), ("c", rand(2, 1))], axis=1),
    case("Concat", [("a", rand(1, 3)), ("b", rand(2, 3))], axis=-2),
    case("Squeeze", [("x", rand(2, 1, 3, 1)), ("axes", C(np.array([1, -1], np.int64)))]),
    case("Squeeze", [("x", rand(1, 4, 1))]),
    case("Unsqueeze", [("x", rand(2, 3)), ("axes", C(np.array([0, 3], np.int64)))]),
    case("Identity", [("x", rand(2, 3))]),
    case("Cast", [("x", rand(2, 5, lo=-9, hi=9))], out="int64", to=TensorProto.INT64),
    case("Cast", [("x", rand(2, 5))], to=TensorProto.FLOAT),
    case("ArgMax", [("x", np.round(rand(3, 6, lo=-2, hi=2)))], out="int64", axis=1),
    case("ArgMax", [("x", np.round(rand(3, 6, lo=-2, hi=2)))], out="int64", axis=1, keepdims=0,
         select_last_index=1),
    case("ArgMax", [("x", rand(4, 3))], out="int64"),
]


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("op,ins,out,min_opset,attrs", CASES)
def test_single_op(tmp_path, cache, op, ins, out, min_opset, attrs, opset):
    if opset < min_opset:
        pytest.skip(f"{op} with these attributes needs opset {min_opset}")
    names = [name for name, _ in ins]
    inputs = {n: ("float32" if a.dtype == np.float32 else a.dtype.name, a.shape)
              for n, a in ins if isinstance(a, np.ndarray)}
    inits = {n: a.array for n, a in ins if isinstance(a, C)}
    node = helper.make_node(op, names, ["y"], name=f"{op.lower()}_0", **attrs)
    path = save(make_model([node], inputs, inits, {"y": out}, opset), tmp_path / "m.onnx")
    build_and_compare(path, {n: a for n, a in ins if isinstance(a, np.ndarray)}, tmp_path)


def test_constant_and_shape_chain_fold(tmp_path, cache):
    """Shape -> Slice -> Concat -> Reshape, Gather -> Unsqueeze, a Constant: folded to one reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Slice", ["s", "zero", "one"], ["batch"]),
        helper.make_node("Gather", ["s", "two"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["c", "zero"], ["c1"]),
        helper.make_node("Constant", [], ["minus1"], value_ints=[-1]),
        helper.make_node("Concat", ["batch", "c1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Constant", [], ["k"], value_float=0.5),
        helper.make_node("Mul", ["r", "k"], ["y"]),
    ]
    model = make_model(nodes, {"x": ("float32", (None, 3, 4, 5))}, {"two": np.array(2, np.int64)},
                       {"y": "float32"}, 17)
    path = save(model, tmp_path / "chain.onnx")
    graph = onnx_frontend.load_graph(path, {"x": [2, 3, 4, 5]})
    assert [n.op for n in graph.nodes] == ["reshape", "mul"]
    assert graph.nodes[0].attrs == {"shape": [2, 4, -1]} or graph.nodes[0].attrs["shape"] == [2, 4, 15]
    build_and_compare(path, {"x": rand(2, 3, 4, 5)}, tmp_path, shapes={"x": [2, 3, 4, 5]})


def test_matmul_add_becomes_dense_with_bias_and_conv_bn_folds(tmp_path, cache):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Flatten", ["bn"], ["f"]),
        helper.make_node("MatMul", ["f", "fw"], ["mm"]),
        helper.make_node("Add", ["fb", "mm"], ["y"]),
    ]
    inits = {"w": rand(4, 3, 3, 3), "s": rand(4, lo=0.5, hi=1.5), "b": rand(4), "m": rand(4),
             "v": rand(4, lo=0.5, hi=2), "fw": rand(4 * 6 * 6, 5), "fb": rand(5)}
    path = save(make_model(nodes, {"x": ("float32", (1, 3, 6, 6))}, inits, {"y": "float32"}, 15),
                tmp_path / "fused.onnx")
    graph = onnx_frontend.load_graph(path)
    assert [n.op for n in graph.nodes] == ["conv2d", "flatten", "dense"]
    assert len(graph.nodes[0].inputs) == 3 and len(graph.nodes[2].inputs) == 3
    assert graph.nodes[2].output == "y"
    assert "w" not in graph.weights and "s" not in graph.weights  # folded into new conv weights
    build_and_compare(path, {"x": rand(1, 3, 6, 6)}, tmp_path)


def test_identity_outputs_constant_output_and_input_passthrough(tmp_path, cache):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"]),
             helper.make_node("Identity", ["r"], ["z"]), helper.make_node("Identity", ["x"], ["same"]),
             helper.make_node("Identity", ["k"], ["kout"])]
    model = make_model(nodes, {"x": ("float32", (2, 3))}, {"k": rand(2)},
                       {"y": "float32", "z": "float32", "same": "float32", "kout": "float32"}, 17)
    path = save(model, tmp_path / "ids.onnx")
    got = build_and_compare(path, {"x": rand(2, 3)}, tmp_path)
    assert list(got) == ["y", "z", "same", "kout"]


def test_argmax_label_of_a_softmax(tmp_path, cache):
    """The tail skl2onnx writes: Softmax -> ArgMax -> ArrayFeatureExtractor(classes) -> Reshape -> Cast."""
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=1),
             helper.make_node("ArgMax", ["p"], ["i"], axis=1, keepdims=0),
             helper.make_node("ArrayFeatureExtractor", ["classes", "i"], ["l"], domain="ai.onnx.ml"),
             helper.make_node("Reshape", ["l", "shape"], ["lr"]),
             helper.make_node("Cast", ["lr"], ["label"], to=TensorProto.INT64)]
    inits = {"classes": np.arange(4, dtype=np.int64), "shape": np.array([-1], np.int64)}
    model = make_model(nodes, {"x": ("float32", (1, 4))}, inits, {"label": "int64", "p": "float32"}, 17, ml=True)
    path = save(model, tmp_path / "label.onnx")
    got = build_and_compare(path, {"x": rand(1, 4)}, tmp_path)
    assert got["label"].dtype == np.int64


# ---------------------------------------------------------------------------
# Errors


def error_of(path, shapes=None) -> str:
    with pytest.raises(BuildError) as e:
        onnx_frontend.load_graph(path, shapes)
    return str(e.value)


def test_unsupported_ops_are_listed_in_one_error(tmp_path):
    nodes = [
        helper.make_node("Det", ["x"], ["v3"], name="det_3"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms_1"),
        helper.make_node("Relu", ["x"], ["r"], name="relu_0"),
        helper.make_node("Det", ["r"], ["v9"], name="det_9"),
    ]
    model = make_model(nodes, {"x": ("float32", (1, 8, 8)), "boxes": ("float32", (1, 5, 4)),
                               "scores": ("float32", (1, 1, 5))},
                       {}, {"v9": "float32", "sel": "int64", "v3": "float32"}, 17)
    path = save(model, tmp_path / "bad.onnx")
    assert error_of(path) == (f"{path}: unsupported ONNX ops (opset 17): Det (det_3, det_9), "
                              f"NonMaxSuppression (nms_1)")


def test_unsupported_sklearn_ops_name_their_domain(tmp_path):
    from sklearn.linear_model import LogisticRegression
    x = rand(20, 4)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    model = skl2onnx.to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}},
                             target_opset={"": 17, "ai.onnx.ml": 3})
    message = error_of(save(model, tmp_path / "lr.onnx"))
    assert "unsupported ONNX ops (opset 17): ai.onnx.ml.LinearClassifier (LinearClassifier)" in message


def test_onnx_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(BuildError, match=r"needs the onnx package: pip install 'dsopack\[onnx\]'"):
        onnx_frontend.load_graph(tmp_path / "m.onnx")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf\xff\xff")
    assert error_of(str(path)).startswith(f"{path}: not a valid ONNX")
    assert error_of(str(tmp_path / "none.onnx")) == f"{tmp_path / 'none.onnx'}: ONNX file not found"


def test_checker_error(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], {"x": ("float32", (2,))}, {}, {"y": "float32"}, 17)
    model.graph.node[0].op_type = "NoSuchOp"
    path = save(model, tmp_path / "bad.onnx")
    message = error_of(path)
    assert message.startswith(f"{path}: not a valid ONNX model (onnx.checker: ") and "NoSuchOp" in message


def external_model(tmp_path):
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = make_model([node], {"x": ("float32", (2, 64))}, {"w": rand(64, 32)}, {"y": "float32"}, 17)
    path = str(tmp_path / "ext.onnx")
    onnx.save(model, path, save_as_external_data=True, location="ext.bin", size_threshold=0)
    return path


def test_external_data_is_read(tmp_path, cache):
    path = external_model(tmp_path)
    assert os.path.getsize(tmp_path / "ext.bin") >= 64 * 32 * 4
    build_and_compare(path, {"x": rand(2, 64)}, tmp_path)
    model = make_model([helper.make_node("Add", ["x", "b"], ["y"])], {"x": ("float32", (2, 64))},
                       {"b": rand(2, 64)}, {"y": "float32"}, 17)
    onnx.save(model, str(tmp_path / "add.onnx"), save_as_external_data=True, location="add.bin", size_threshold=0)
    (b,) = onnx_frontend.load_graph(str(tmp_path / "add.onnx"), name="add").weights.values()
    assert isinstance(b, np.memmap) and b.filename == str(tmp_path / "add.bin")  # mapped from its file, not read


def test_missing_external_data(tmp_path):
    path = external_model(tmp_path)
    os.remove(tmp_path / "ext.bin")
    message = error_of(path)
    assert message.startswith(f"{path}: initializer 'w' keeps its data in external file 'ext.bin', which is "
                              f"not found (looked at {tmp_path / 'ext.bin'})")


def test_opset_out_of_range(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ("float32", (2,))}, {}, {"y": "float32"}, 6)
    message = error_of(save(model, tmp_path / "old.onnx"))
    assert f"opset 6 is not supported (dsopack reads opsets 7 to {onnx.defs.onnx_opset_version()})" in message


def test_dynamic_dim_needs_a_shape(tmp_path):
    path = os.path.join(MODELS, "lenet.onnx")
    assert error_of(path) == (f"{path}: input 'x' dimension 0 ('batch') has no fixed size: give it one with "
                              f"--shape x=1,1,28,28, or a range with --shape x=1..64,1,28,28 (or in the manifest, "
                              f"model: {{shapes: {{x: [1, 1, 28, 28]}}}})")
    assert "dimension 2 of" not in error_of(path, {"x": [1, 1, 28, 29]})
    assert "input 'x' dimension 3 is 28 in the model, the shape given says 29" in error_of(path, {"x": [1, 1, 28, 29]})
    assert "input 'x' has 4 dimensions [batch, 1, 28, 28], the shape given has 3" in error_of(path, {"x": [1, 28, 28]})
    assert "shape given for 'y', which is not an input of the model (inputs: x)" in error_of(path, {"y": [1]})


def test_runtime_shape_operands_are_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["s"], ["t"]), helper.make_node("Cast", ["t"], ["ti"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "ti"], ["y"], name="reshape_7")]
    model = make_model(nodes, {"x": ("float32", (2, 3)), "s": ("float32", (2,))}, {}, {"y": "float32"}, 17)
    assert "node 'reshape_7' (Reshape): the shape ('ti') must be known at build time" in error_of(
        save(model, tmp_path / "r.onnx"))
    nodes = [helper.make_node("Range", ["x", "n", "d"], ["y"], name="range_2")]
    model = make_model(nodes, {"x": ("float32", ())}, {"n": np.array(5, np.float32), "d": np.array(1, np.float32)},
                       {"y": "float32"}, 17)
    assert ("node 'range_2' (Range): dsopack computes Range only at build time (constant folding), but input "
            "'x' is computed at run time") in error_of(save(model, tmp_path / "g.onnx"))


def test_ir_errors_name_the_onnx_node(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_5")
    model = make_model([node], {"x": ("float32", (1, 3, 2, 2))}, {"w": rand(4, 3, 3, 3)}, {"y": "float32"}, 17)
    message = error_of(save(model, tmp_path / "c.onnx"))
    assert "node 'conv_5' (Conv): as IR node 'conv_5' (op conv2d): " in message
    assert "kernel (3) is larger than the padded input (2)" in message


# ---------------------------------------------------------------------------
# Real models


@pytest.mark.parametrize("name,shape", [("lenet", (1, 1, 28, 28)), ("resnet", (1, 3, 32, 32)),
                                        ("mobilenet", (1, 3, 32, 32))])
@pytest.mark.parametrize("batch", [1, 3])
def test_pytorch_export(tmp_path, cache, name, shape, batch):
    shape = (batch,) + shape[1:]
    x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
    got = build_and_compare(os.path.join(MODELS, f"{name}.onnx"), {"x": x}, tmp_path, shapes={"x": list(shape)},
                            cflags=("-O3",))
    assert got["y"].shape == (batch, 10)


def test_committed_models_are_small_and_keep_their_structure():
    ops = {}
    for name in ("lenet", "resnet", "mobilenet"):
        path = os.path.join(MODELS, f"{name}.onnx")
        assert os.path.getsize(path) < 2 * 1024 * 1024
        ops[name] = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Gemm", "LogSoftmax"} <= ops["lenet"]
    assert {"BatchNormalization", "Add", "GlobalAveragePool", "Flatten"} <= ops["resnet"]
    assert {"Clip", "LeakyRelu", "BatchNormalization", "Shape", "Softmax"} <= ops["mobilenet"]


def test_sklearn_mlp_on_digits(tmp_path, cache):
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    import warnings
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence
        clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=60, random_state=0).fit(x[:1500], y[:1500])
    model = skl2onnx.to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = save(model, tmp_path / "mlp.onnx")
    sample = x[1500:1501]
    got = build_and_compare(path, {"X": sample}, tmp_path, shapes={"X": [1, 64]})
    assert got["label"].dtype == np.int64 and int(got["label"][0]) == int(clf.predict(sample)[0])
    np.testing.assert_allclose(got["probabilities"], clf.predict_proba(sample), atol=1e-5)


# ---------------------------------------------------------------------------
# CLI and manifest


def test_cli_build_onnx_with_shape(tmp_path, cache, capsys):
    out = str(tmp_path / "lenet.so")
    src = os.path.join(MODELS, "lenet.onnx")
    assert main(["build", src, "-o", out, "--shape", "x=2,1,28,28", "-q"]) == 0
    with loader.load(out) as model:
        assert [(i.name, tuple(i.shape)) for i in model.inputs] == [("x", (2, 1, 28, 28))]
    assert main(["build", src, "-o", out]) == 1
    err = capsys.readouterr().err
    assert err == (f"dsopack: error: {src}: input 'x' dimension 0 ('batch') has no fixed size: give it one with "
                   f"--shape x=1,1,28,28, or a range with --shape x=1..64,1,28,28 (or in the manifest, "
                   f"model: {{shapes: {{x: [1, 1, 28, 28]}}}})\n")
    assert main(["build", src, "-o", out, "--shape", "x=2,1,a"]) == 1
    assert "--shape 'x=2,1,a': expected NAME=D0,D1,..." in capsys.readouterr().err
    assert main(["build", src, "-o", out, "--shape", "x=1,1,28,28", "--shape", "x=2,1,28,28"]) == 1
    assert "--shape given twice for input 'x'" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "no.onnx"), "-o", out]) == 1
    assert "ONNX file" in capsys.readouterr().err


def test_manifest_onnx_shapes_and_cli_override(tmp_path, cache):
    doc = {"name": "lenet_deploy",
           "model": {"onnx": os.path.relpath(os.path.join(MODELS, "lenet.onnx"), tmp_path),
                     "shapes": {"x": [2, 1, 28, 28]}},
           "backends": ["json", "host"], "target": {"cflags": ["-O2"]}}
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    out = str(tmp_path / "a.so")
    report = build(str(manifest), out, quiet=True)
    assert report.name == "lenet_deploy" and report.manifest["inputs"][0]["shape"] == [2, 1, 28, 28]
    x = np.random.default_rng(3).standard_normal((2, 1, 28, 28)).astype(np.float32)
    ref = ort.InferenceSession(os.path.join(MODELS, "lenet.onnx")).run(None, {"x": x})[0]
    with loader.load(out) as model:
        assert close(model.run(x=x)["y"], ref) <= TOL
    assert main(["build", str(manifest), "-o", out, "-q", "--shape", "x=3,1,28,28"]) == 0
    with loader.load(out) as model:
        assert tuple(model.inputs[0].shape) == (3, 1, 28, 28)
    doc["model"]["shapes"] = {"x": [2, 1, 28]}
    manifest.write_text(yaml.safe_dump(doc))
    with pytest.raises(BuildError, match=r"deploy.yaml: model.onnx '.*lenet.onnx': input 'x' has 4 dimensions"):
        build(str(manifest), out, quiet=True)


@pytest.mark.parametrize("node,inputs,inits,needle", [
    (helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2, 2], auto_pad="SAME"),
     {"x": ("float32", (1, 1, 5, 5))}, {},
     "node 'p' (AveragePool): auto_pad 'SAME' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2, 2, 2]),
     {"x": ("float32", (1, 1, 5, 5, 5, 5))}, {},
     "only 1-D, 2-D and 3-D windows (3-D NCL, 4-D NCHW or 5-D NCDHW input) are supported"),
    (helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1),
     {"x": ("float32", (1, 2, 3, 3))}, {k: rand(2, lo=0.5) for k in "sbmv"}, "training_mode=1 is not supported"),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="c"), {"x": ("float32", (1, 2, 5))},
     {"w": rand(3, 2, 3, 3)}, "weight 'w' is float32[3, 2, 3, 3]: 3-D for a 1-D convolution"),
    (helper.make_node("Clip", ["x", "lo"], ["y"], name="c"), {"x": ("float32", (2,)), "lo": ("float32", ())}, {},
     "node 'c' (Clip): min ('lo') must be known at build time"),
    (helper.make_node("Squeeze", ["x", "a"], ["y"], name="s"), {"x": ("float32", (2, 3))},
     {"a": np.array([0], np.int64)}, "cannot squeeze axis 0 of shape [2, 3]"),
])
def test_conversion_errors(tmp_path, node, inputs, inits, needle):
    model = make_model([node], inputs, inits, {"y": "float32"}, 17)
    assert needle in error_of(save(model, tmp_path / "m.onnx"))


def test_shape_option_is_for_onnx_only(tmp_path):
    doc = {"model": {"graph": {"inputs": {"x": {"shape": [1, 2]}}, "nodes": [
        {"op": "relu", "inputs": ["x"], "output": "y"}], "outputs": ["y"]}}}
    manifest = tmp_path / "g.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    with pytest.raises(BuildError, match=r"g.yaml: model: input shapes \(--shape\) apply to ONNX models only"):
        build(str(manifest), str(tmp_path / "g.so"), quiet=True, shapes={"x": [1, 2]})


# ---- reductions, ArgMin, variadic Sum / Mean / Max / Min (more in test_onnx_conformance_reduce.py) ----------


@pytest.mark.parametrize("opset", [17, 18])  # axes an attribute (17), a constant input (18+)
def test_global_average_pool_as_reduce_mean_after_conv(tmp_path, cache, opset):
    """torchvision's adaptive average pooling: Conv -> Relu -> ReduceMean(axes [2, 3], keepdims=1) -> Flatten
    -> Gemm, against onnxruntime."""
    axes = {"axes": [2, 3]} if opset < 18 else {}
    mean_in = ["r"] + (["axes"] if opset >= 18 else [])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", mean_in, ["m"], keepdims=1, **axes),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w": rand(8, 3, 3, 3), "b": rand(8), "fw": rand(5, 8), "fb": rand(5)}
    if opset >= 18:
        inits["axes"] = np.array([2, 3], np.int64)
    path = save(make_model(nodes, {"x": ("float32", (None, 3, 9, 9))}, inits, {"y": "float32"}, opset),
                tmp_path / "gap.onnx")
    graph = onnx_frontend.load_graph(path, {"x": [2, 3, 9, 9]})
    assert [n.op for n in graph.nodes] == ["conv2d", "relu", "reduce_mean", "flatten", "dense"]
    assert graph.nodes[2].attrs == {"axes": [2, 3], "keepdims": 1, "noop_with_empty_axes": 0}
    build_and_compare(path, {"x": rand(2, 3, 9, 9)}, tmp_path, shapes={"x": [2, 3, 9, 9]})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                                "ReduceSumSquare"])
@pytest.mark.parametrize("axes,keepdims", [([1], 0), ([-1, 0], 1), (None, 0)])
def test_reductions_against_onnxruntime(tmp_path, cache, op, axes, keepdims):
    opset = 13 if op == "ReduceSum" else 18  # both take axes as an input
    ins = ["x"] + (["axes"] if axes is not None else [])
    inits = {"axes": np.array(axes, np.int64)} if axes is not None else {}
    node = helper.make_node(op, ins, ["y"], keepdims=keepdims)
    path = save(make_model([node], {"x": ("float32", (3, 4, 5))}, inits, {"y": "float32"}, opset),
                tmp_path / "r.onnx")
    lo = 0.7 if op == "ReduceProd" else -2.0
    build_and_compare(path, {"x": rand(3, 4, 5, lo=lo, hi=1.3 if op == "ReduceProd" else 2.0)}, tmp_path)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops_broadcast_against_onnxruntime(tmp_path, cache, op):
    node = helper.make_node(op, ["a", "b", "c"], ["y"])
    path = save(make_model([node], {"a": ("float32", (2, 1, 4)), "b": ("float32", (3, 1))}, {"c": rand(4)},
                           {"y": "float32"}, 13), tmp_path / "v.onnx")
    got = build_and_compare(path, {"a": rand(2, 1, 4), "b": rand(3, 1)}, tmp_path)
    assert got["y"].shape == (2, 3, 4)


def test_argmin_against_onnxruntime(tmp_path, cache):
    node = helper.make_node("ArgMin", ["x"], ["y"], axis=-1, keepdims=0, select_last_index=1)
    path = save(make_model([node], {"x": ("float32", (3, 6))}, {}, {"y": "int64"}, 13), tmp_path / "a.onnx")
    build_and_compare(path, {"x": np.round(rand(3, 6, lo=-2, hi=2))}, tmp_path)


def test_reduce_axes_computed_at_run_time_are_refused(tmp_path):
    node = helper.make_node("ReduceSum", ["x", "a"], ["y"], name="r")
    model = make_model([node], {"x": ("float32", (2, 3)), "a": ("int64", (1,))}, {}, {"y": "float32"}, 13)
    assert "node 'r' (ReduceSum): axes ('a') must be known at build time" in error_of(save(model, tmp_path / "m.onnx"))
