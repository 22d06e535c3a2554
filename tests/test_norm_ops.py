"""Normalization (LayerNormalization, InstanceNormalization, GroupNormalization), LRN, CumSum, TopK, Einsum.

Host kernels against tests/reference.py (float64 NumPy from the definitions); ONNX models holding every
converter's cases against onnxruntime (one model per opset, so few compiles); each refusal's message.
"""

import numpy as np
import onnx  # the [test] extra, which scripts/setup.sh installs: a broken install fails here, never skips
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import loader
import reference as ref
from kernel_harness import run_node
from packager import ops
from packager.build import build
from packager.ir import BuildError, Node, TensorType

RNG = np.random.default_rng(14)


def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    return tmp_path_factory.mktemp("norm_kernels")


# ---- host kernels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape,p_shape,axis,bias", [
    ((2, 3, 4, 5), (5,), -1, True),  # LayerNormalization's usual scale: along the row
    ((2, 3, 4, 5), (3, 4, 5), 1, False),
    ((3, 4, 5), (4, 1), 1, True),  # one value per segment of 5 (a channel inside the row)
    ((2, 3, 7), (3, 1), 2, True),  # InstanceNormalization: one value per row
    ((2, 2, 3, 4), (2, 3, 1), 2, True),  # GroupNormalization-21: per channel, 3 channels per row
    ((2, 3, 4), (3, 4), 2, True),  # the scale spans several rows
])
def test_layer_norm(kdir, x_shape, p_shape, axis, bias):
    x, scale = rand(*x_shape, lo=-3, hi=5), rand(*p_shape, lo=0.5, hi=2)
    inputs = [x, scale] + ([rand(*p_shape)] if bias else [])
    got = run_node("layer_norm", inputs, kdir, axis=axis, epsilon=1e-3)
    np.testing.assert_allclose(got, ref.layer_norm(*inputs, axis=axis, epsilon=1e-3), rtol=1e-5, atol=2e-5)


def test_layer_norm_keeps_precision_when_the_mean_dwarfs_the_spread(kdir):
    # mean 1e4, std 1: E[x^2] - mean^2 in float would lose every digit; the kernel shifts by x[0] first
    x = (1e4 + rand(3, 33, lo=-1.7, hi=1.7)).astype(np.float32)
    scale = np.ones(33, np.float32)
    got = run_node("layer_norm", [x, scale], kdir, axis=-1, epsilon=0.0)
    np.testing.assert_allclose(got, ref.layer_norm(x, scale, axis=-1, epsilon=0.0), atol=1e-4)


@pytest.mark.parametrize("shape,size", [((2, 5, 3, 4), 3), ((1, 4, 20, 15), 4), ((2, 6), 5)])
def test_lrn(kdir, shape, size):
    x = rand(*shape, lo=-3, hi=3)
    attrs = dict(size=size, alpha=0.2, beta=0.6, bias=1.5)
    np.testing.assert_allclose(run_node("lrn", [x], kdir, **attrs), ref.lrn(x, **attrs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis,exclusive,reverse", [(1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 1, 1), (-1, 0, 1), (0, 1, 0)])
def test_cumsum(kdir, axis, exclusive, reverse):
    x = rand(3, 4, 5)
    got = run_node("cumsum", [x], kdir, axis=axis, exclusive=exclusive, reverse=reverse)
    np.testing.assert_allclose(got, ref.cumsum(x, axis, exclusive, reverse), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["top_k", "top_k_indices"])
@pytest.mark.parametrize("k,axis,largest", [(3, 1, 1), (10, 1, 0), (2, -1, 0)])
def test_top_k(kdir, op, k, axis, largest):
    x = np.round(rand(3, 10, 4, lo=-3, hi=3))  # rounding makes ties: the lower index comes first
    x[0, 2, 1] = x[1, 7, 0] = x[2, 0, 3] = np.nan  # NaN counts as larger than any number
    got = run_node(op, [x], kdir, k=k, axis=axis, largest=largest, sorted=1)
    want = getattr(ref, op)(x, k, axis, largest)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ---- ONNX models against onnxruntime ---------------------------------------------------------------------


def _model(nodes, inputs: dict, inits: dict, outputs: list[str], opset: int, shapes: dict | None = None):
    """Float inputs and outputs (an output named *_i is int64); `shapes` gives the outputs that onnx's shape
    inference leaves without one (its checker then refuses the model): GroupNormalization-21's."""
    graph = helper.make_graph(
        nodes, "norm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.INT64 if n.endswith("_i") else TensorProto.FLOAT,
                                       (shapes or {}).get(n)) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
    for o in model.graph.output:  # onnx's checker wants every output's shape
        if o.name not in (shapes or {}):
            o.CopyFrom(inferred[o.name])
    return model


def _against_onnxruntime(model, feeds: dict, tmp_path) -> None:
    path = str(tmp_path / "model.onnx")
    onnx.save(model, path)
    report = build(path, str(tmp_path / "model.so"), quiet=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with loader.load(report.output) as m:
        got = m.run(**feeds)
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
        if value.dtype.kind == "i":
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(value).max()),
                                       err_msg=name)


def _node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=outputs[0] or op, **attrs)


def test_onnx_ops_against_onnxruntime(cache, tmp_path):
    """Every converter in one opset-21 model: LayerNormalization (with Mean and InvStdDev, a constant scale
    that needs broadcasting), the pattern older exporters write instead, InstanceNormalization,
    GroupNormalization, LRN, CumSum, TopK (both outputs, or indices alone) and the Einsum forms."""
    nodes = [
        _node("LayerNormalization", ["t", "g16", "b16"], ["ln"]),
        _node("LayerNormalization", ["x", "w54"], ["ln2", "ln2_mean", "ln2_inv"], axis=2, epsilon=1e-3),
        _node("LayerNormalization", ["x", "w614"], ["ln3"], axis=1),
        # ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div, as exporters before opset 17 write it
        _node("ReduceMean", ["t", "last"], ["m"]), _node("Sub", ["t", "m"], ["d"]), _node("Pow", ["d", "two"], ["p"]),
        _node("ReduceMean", ["p", "last"], ["v"]), _node("Add", ["v", "eps"], ["ve"]), _node("Sqrt", ["ve"], ["sd"]),
        _node("Div", ["d", "sd"], ["old_ln"]),
        _node("InstanceNormalization", ["x", "s6", "b6"], ["inorm"], epsilon=1e-4),
        _node("GroupNormalization", ["x", "s6", "b6"], ["gnorm"], num_groups=3),
        _node("LRN", ["x"], ["lrn"], size=3, alpha=1e-2, beta=0.7, bias=1.5),
        _node("CumSum", ["t", "one"], ["cs"], exclusive=1),
        _node("CumSum", ["x", "minus1"], ["cs2"], reverse=1),
        _node("TopK", ["t", "four"], ["tk_v", "tk_i"]),
        _node("TopK", ["x", "two_k"], ["tk2_unread", "tk2_i"], axis=1, largest=0),
        _node("Einsum", ["q", "k"], ["att"], equation="bhid,bhjd->bhij"),
        _node("Einsum", ["t", "wc"], ["proj"], equation="bij,jk->bik"),  # a constant operand: a dense
        _node("Einsum", ["t", "t"], ["gram"], equation="bij,bkj->bik"),
        _node("Einsum", ["q", "wd"], ["ell"], equation="...id,de->...ie"),
        _node("Einsum", ["q"], ["qsum"], equation="bhid->hb"),
        _node("Einsum", ["t", "g16"], ["dot"], equation="bij,j"),  # implicit output: "bi"
        _node("Einsum", ["t"], ["total"], equation="bij->"),
        _node("Einsum", ["x"], ["same"], equation="nchw -> nchw"),  # nothing to compute: a copy of the input
    ]
    # s6 and b6 are inputs (their reshape happens at run time); onnx's checker also wants them typed there
    inputs = {"x": [2, 6, 5, 4], "t": [2, 7, 16], "q": [2, 3, 4, 8], "k": [2, 3, 5, 8], "s6": [6], "b6": [6]}
    inits = {"g16": rand(16, lo=0.5, hi=1.5), "b16": rand(16), "w54": rand(5, 4), "w614": rand(6, 1, 4),
             "last": np.array([-1], np.int64), "two": np.float32(2.0), "eps": np.float32(1e-5),
             "one": np.array(1, np.int64),
             "minus1": np.array(-1, np.int32), "four": np.array([4], np.int64), "two_k": np.array([2], np.int64),
             "wc": rand(16, 5), "wd": rand(8, 3)}
    outputs = ["ln", "ln2", "ln2_mean", "ln2_inv", "ln3", "old_ln", "inorm", "gnorm", "lrn", "cs", "cs2", "tk_v",
               "tk_i", "tk2_i", "att", "proj", "gram", "ell", "qsum", "dot", "total", "same"]
    feeds = {name: rand(*shape, lo=-2, hi=3) for name, shape in inputs.items()}
    feeds["t"] = np.round(feeds["t"] * 4) / 4  # ties for TopK
    feeds["s6"] = rand(6, lo=0.5, hi=1.5)
    _against_onnxruntime(_model(nodes, inputs, inits, outputs, 21, {"gnorm": inputs["x"]}), feeds, tmp_path)


@pytest.mark.parametrize("opset", [9, 12])
def test_older_op_versions_against_onnxruntime(cache, tmp_path, opset):
    """TopK-1 takes k as an attribute, TopK-10 as an input (11 adds largest and sorted); LRN-1,
    InstanceNormalization-6, CumSum-11 and Einsum-12 are read as their newest versions."""
    topk = (_node("TopK", ["t"], ["tk_v", "tk_i"], k=3) if opset < 10 else
            _node("TopK", ["t", "three"], ["tk_v", "tk_i"], axis=1, largest=0))
    # (an even LRN size is the spec's too, onnxruntime refuses it: test_lrn checks it against the reference)
    nodes = [topk, _node("LRN", ["x"], ["lrn"], size=5), _node("InstanceNormalization", ["x", "s4", "b4"], ["inorm"])]
    outputs = ["tk_v", "tk_i", "lrn", "inorm"]
    if opset >= 12:
        nodes += [_node("CumSum", ["t", "zero"], ["cs"], reverse=1, exclusive=1),
                  _node("Einsum", ["t", "t"], ["outer"], equation="ij,kj->jik")]
        outputs += ["cs", "outer"]
    inits = {"s4": rand(4), "b4": rand(4), **({"three": np.array([3], np.int64)} if opset >= 10 else {}),
             **({"zero": np.array([0], np.int32)} if opset >= 12 else {})}
    inputs = {"x": [2, 4, 3, 3], "t": [5, 6]}
    feeds = {name: rand(*shape, lo=-2, hi=3) for name, shape in inputs.items()}
    _against_onnxruntime(_model(nodes, inputs, inits, outputs, opset), feeds, tmp_path)


def test_the_thread_count_changes_no_bit(cache, tmp_path):
    """Work large enough to be split over threads: only rows (positions, planes) are split, each computed in
    one fixed order, so 1 and 3 threads give the same bits."""
    nodes = [_node("LayerNormalization", ["x", "g"], ["ln"]), _node("TopK", ["x", "k"], ["tk_v", "tk_i"]),
             _node("InstanceNormalization", ["x4", "s", "b"], ["inorm"]), _node("LRN", ["x4"], ["lrn"], size=3)]
    inputs = {"x": [96, 1000], "x4": [2, 8, 64, 64]}  # each above cgen.PARALLEL_MIN_WORK
    inits = {"g": rand(1000), "k": np.array([20], np.int64), "s": rand(8), "b": rand(8)}
    path = str(tmp_path / "big.onnx")
    onnx.save(_model(nodes, inputs, inits, ["ln", "tk_v", "tk_i", "inorm", "lrn"], 21), path)
    so = build(path, str(tmp_path / "big.so"), quiet=True).output
    feeds = {name: rand(*shape, lo=-2, hi=3) for name, shape in inputs.items()}
    runs = []
    for threads in (1, 3):
        with loader.load(so, num_threads=threads) as m:
            runs.append(m.run(**feeds))
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name], err_msg=name)


def test_layer_norm_rule_names_the_shapes():
    def infer(x, *params, **attrs):
        node = Node("layer_norm", ["x", "s", "b"][:1 + len(params)], "y", attrs, "ln_0")
        ops.normalize(node)
        return ops.infer(node, [TensorType(x, "float32")] + [TensorType(p, "float32") for p in params])

    assert infer((2, 3, 4), (3, 1), (3, 1), axis=1).shape == (2, 3, 4)
    with pytest.raises(BuildError, match=r"node 'ln_0' \(op layer_norm\).*scale s is float32\[4, 1, 4\].*"
                                         r"must broadcast to x"):
        infer((2, 3, 4), (4, 1, 4))
    with pytest.raises(BuildError, match=r"scale s is float32\[4\] but bias b is float32\[3, 1\]: scale and bias "
                                         r"must cover the same dimensions"):
        infer((2, 3, 4), (4,), (3, 1))
    with pytest.raises(BuildError, match=r"axis 3 is out of range for 3 dimensions"):
        infer((2, 3, 4), (4,), axis=3)


# ---- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node,inputs,inits,message", [
    (_node("LayerNormalization", ["x", "s"], ["y"], stash_type=11), {"x": [2, 4]}, {"s": np.ones(4, np.float32)},
     "stash_type 11 is not supported"),
    (_node("LayerNormalization", ["x", "s"], ["y"]), {"x": [3, 4, 5], "s": [3, 1, 5]}, {},
     "'s' of shape [3, 1, 5] covers other dimensions of x [3, 4, 5]"),
    (_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=4), {"x": [1, 6, 2]},
     {"s": np.ones(6, np.float32), "b": np.zeros(6, np.float32)}, "num_groups (4) must divide the channels"),
    (_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2), {"x": [1, 6, 2]},
     {"s": np.ones(2, np.float32), "b": np.zeros(2, np.float32)}, "GroupNormalization-21 takes one value per channel"),
    (_node("CumSum", ["x", "a"], ["y"]), {"x": [3], "a": []}, {}, "axis ('a') must be known at build time"),
    (_node("TopK", ["x", "k"], ["v", "i"]), {"x": [3], "k": [1]}, {}, "k ('k') must be known at build time"),
    (_node("TopK", ["x", "k"], ["v", "i"]), {"x": [3]}, {"k": np.array([4], np.int64)},
     "k (4) is larger than axis 0 (3 elements)"),
    (_node("Einsum", ["x", "x", "x"], ["y"], equation="i,i,i->i"), {"x": [3]}, {}, "einsum of 3 operands"),
    (_node("Einsum", ["x"], ["y"], equation="ii->i"), {"x": [3, 3]}, {}, "(a diagonal) is not supported"),
    (_node("Einsum", ["x", "z"], ["y"], equation="ij,jk->ik"), {"x": [2, 3], "z": [4, 2]}, {},
     "'j' is 3 in one operand and 4 in another"),
])
def test_refusals_name_the_feature(tmp_path, node, inputs, inits, message):
    path = str(tmp_path / "bad.onnx")
    # an output shape given: onnx's shape inference cannot give one to a node it finds wrong
    onnx.save(_model([node], inputs, inits, [node.output[0]], 21, {node.output[0]: ["n"]}), path)
    with pytest.raises(BuildError) as info:
        build(path, str(tmp_path / "bad.so"), quiet=True)
    assert message in str(info.value)
    assert node.name in str(info.value)
