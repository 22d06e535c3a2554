"""Integer, float64 and bool tensors at run time; comparisons, logic, IsNaN, IsInf and Where.

- host kernels of every elementwise op on every dtype its registry entry has C for, on edge values
  (MIN, MAX, -1, 0: integer division and remainder by 0 and MIN / -1 must not trap), against the NumPy
  references of tests/reference.py; all of one dtype compiled into one library;
- a small ONNX model with an int64 input and bool and int64 outputs against onnxruntime, through the
  loader and through the C `dpk-run` with .npy files;
- build-time folding of the new ops, and the errors for dtypes an op does not compute.
"""

from __future__ import annotations

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import loader
import reference as ref
from kernel_harness import compile_sources, lower_node
from packager import ops
from packager.backends import cblas
from packager.backends.host import HostBackend
from packager.build import build
from packager.frontends import onnx as onnx_frontend
from packager.ir import BuildError, Node, TensorType
from packager.spec import Target, from_onnx

# ---------------------------------------------------------------------------
# Host kernels, per dtype, against the references


def edge_values(dtype: str) -> np.ndarray:
    """Values that find wrap-around, truncation and trapping mistakes."""
    if dtype == "bool":
        return np.array([False, True])
    if np.dtype(dtype).kind == "f":
        return np.array([-np.inf, -7.5, -3.0, -1.0, -0.0, 0.0, 0.25, 2.0, 7.5, np.inf, np.nan], dtype)
    info = np.iinfo(dtype)
    small = [-7, -3, -1, 0, 1, 2, 3, 7] if info.min < 0 else [0, 1, 2, 3, 7, 100]
    return np.array([info.min, info.min + 1, *small, info.max - 1, info.max], dtype)


def pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every edge value against every other: a [n, 1] and b [n] broadcast to [n, n]."""
    v = edge_values(dtype)
    return v.reshape(-1, 1), v


def pow_pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Pow in range (an integer result past the type's range is undefined)."""
    if np.dtype(dtype).kind == "u":
        return np.array([0, 1, 2, 3], dtype).reshape(-1, 1), np.array([0, 1, 2, 4], dtype)
    return np.array([-3, -2, -1, 0, 1, 2, 3], dtype).reshape(-1, 1), np.array([0, 1, 2, 3, 5], dtype)


DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float64", "float32", "float16",
          "bool"]
RTOL = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-14}


def cases(dtype: str) -> list[tuple[str, list[np.ndarray], dict]]:
    """(op, inputs, attrs) of every elementwise op that computes on `dtype` (the registry says which)."""
    out = []
    a, b = pairs(dtype)
    cond = np.array([True, False, True]).reshape(3, 1, 1)
    for op in ops.elementwise(1) + ops.elementwise(2) + ops.elementwise(3):
        spec = ops.OPS[op]
        computes = ops.c_dtypes(spec.c_expr)
        if dtype not in computes or (dtype == "float32" and op in ops.elementwise(1, "float32")
                                     + ops.elementwise(2, "float32")) or (dtype == "float16" and "float64" not in computes):
            continue  # float32 math is test_ops.py's (test_unary...); float16 loads and stores around the same C
        if op == "where":
            out.append((op, [cond, a[:4], b], {}))
        elif op == "pow":
            out.extend((op, [x, e.astype(t)], {}) for x, e in [pow_pairs(dtype)]
                       for t in dict.fromkeys([dtype, "int64", "float32"]))
        elif op == "mod":
            out.extend((op, [a, b], {"fmod": f}) for f in (0, 1))
        elif op == "isinf":
            out.extend((op, [b], {"detect_positive": p, "detect_negative": n}) for p in (0, 1) for n in (0, 1))
        else:
            out.append((op, [b] if len(spec.inputs) == 1 else [a, b], {}))
    return out


def reference(op: str, inputs: list[np.ndarray], attrs: dict) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(getattr(ref, op)(*inputs, **attrs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_host_kernels_on_edge_values(dtype, tmp_path):
    backend, regions, graphs = HostBackend(), [], []
    todo = cases(dtype)
    for k, (op, inputs, attrs) in enumerate(todo):
        _, region, graph = lower_node(op, inputs, name=f"{op}_{k}", **attrs)
        region.name = f"host_{op}_{k}"
        regions.append(region)
        graphs.append(graph)
    lib = compile_sources([backend.lower(r, g) for r, g in zip(regions, graphs)], tmp_path)
    for (op, inputs, attrs), region, graph in zip(todo, regions, graphs):
        t = graph.types["y"]
        got = np.zeros(t.shape, t.dtype)
        lib.call(region.name, *inputs, got)
        want = reference(op, inputs, attrs)
        what = f"{op}{attrs or ''} on {[str(i.dtype) for i in inputs]}"
        values = inputs[1] if op == "where" else inputs[0]  # the output's dtype, unless it is bool
        assert t.dtype == ("bool" if want.dtype == bool else values.dtype.name), what
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got.astype(np.float64), want, rtol=RTOL[dtype], err_msg=what)
            # -0.0 where NumPy has it (sign keeps x's zero, "else x", where NumPy gives +0.0)
            assert np.array_equal(np.signbit(got), np.signbit(want)) or op in ("pow", "sign"), what
        else:
            np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=what)


def test_the_edge_cases_cover_every_op_and_dtype():
    covered = {(op, str(i[0].dtype)) for dtype in DTYPES for op, i, _ in cases(dtype)}
    assert {op for op, _ in covered} >= set(ops.elementwise(2)) - set(ops.elementwise(2, "float32")) | {
        "add", "div", "mod", "pow", "neg", "abs", "sign", "where", "isnan", "isinf", "logical_not"}
    assert ("div", "int64") in covered and ("where", "bool") in covered and ("equal", "bool") in covered


def test_integer_division_by_zero_and_overflow_are_defined(tmp_path):
    """x / 0 = 0, x % 0 = 0, MIN / -1 = MIN (wraps), MIN % -1 = 0: no SIGFPE (as NumPy defines them)."""
    lo = np.iinfo(np.int32).min
    a, b = np.array([7, -7, lo, lo, 5], np.int32), np.array([0, 0, -1, 0, -2], np.int32)
    backend = HostBackend()
    sources, names = [], []
    for k, (op, attrs) in enumerate([("div", {}), ("mod", {"fmod": 0}), ("mod", {"fmod": 1})]):
        _, region, graph = lower_node(op, [a, b], name=f"n{k}", **attrs)
        region.name = f"host_n{k}"
        sources.append(backend.lower(region, graph))
        names.append(region.name)
    lib = compile_sources(sources, tmp_path)
    got = []
    for name in names:
        y = np.full(5, 99, np.int32)
        lib.call(name, a, b, y)
        got.append(y.tolist())
    assert got == [[0, 0, lo, 0, -2], [0, 0, 0, 0, -1], [0, 0, 0, 0, 1]]


def test_float16_casts_round_once_to_nearest_even(tmp_path):
    """float16 is stored as its bits and converted in C (c/host_prelude.h): against NumPy's conversions, on
    ties, subnormals, overflow, NaN, -0.0 and random doubles of every float16 magnitude."""
    rng = np.random.default_rng(5)
    special = [1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -11 + 2.0 ** -40,  # a tie only after a float32 rounding 65504.0, 65519.99, 65520.0, 1e300, 2.0 ** -25,
               2.0 ** -25 * (1 + 2.0 ** -40), 3 * 2.0 ** -26, 2.0 ** -14 - 2.0 ** -26, 6e-8, np.nan, -0.0, -np.inf, 0.1]
    x64 = np.concatenate([special, rng.standard_normal(400) * 2.0 ** rng.integers(-26, 17, 400)])
    x64 = np.concatenate([x64, -x64])
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)  # every float16
    with np.errstate(over="ignore"):
        x32 = x64.astype(np.float32)
    todo = [(x64, "float16"), (x32, "float16"), (halves, "float32"), (halves, "float64"),
            (np.arange(-70000, 70000, 7, dtype=np.int64), "float16"), (halves[np.isfinite(halves)], "bool")]
    backend, sources, runs = HostBackend(), [], []
    for k, (x, to) in enumerate(todo):
        _, region, graph = lower_node("cast", [x], name=f"c{k}", to=to)
        region.name = f"host_c{k}"
        sources.append(backend.lower(region, graph))
        runs.append((region.name, x, to))
    lib = compile_sources(sources, tmp_path)
    for name, x, to in runs:
        got = np.zeros(x.shape, to)
        lib.call(name, x, got)
        with np.errstate(all="ignore"):
            want = x != 0 if to == "bool" else x.astype(to)
        assert got.tobytes() == want.tobytes() or (np.isnan(want) == np.isnan(got)).all() and \
            (got[~np.isnan(want)].tobytes() == want[~np.isnan(want)].tobytes()), f"{x.dtype} -> {to}"


# ---------------------------------------------------------------------------
# Registry and backends: what computes what


def infer(op, *dtypes, **attrs):
    node = Node(op, [f"t{i}" for i in range(len(dtypes))], "y", dict(attrs), "n")
    ops.normalize(node)
    return ops.infer(node, [TensorType((2, 3), d) for d in dtypes])


def test_output_dtypes():
    assert infer("less", "int64", "int64").dtype == "bool"
    assert infer("equal", "bool", "bool").dtype == "bool"
    assert infer("isinf", "float64", detect_negative=0).dtype == "bool"
    assert infer("where", "bool", "int64", "int64").dtype == "int64"
    assert infer("pow", "int32", "float32").dtype == "int32"
    assert infer("add", "uint8", "uint8").dtype == "uint8"


@pytest.mark.parametrize("op,dtypes,message", [
    ("add", ("bool", "bool"), r"input t0 is bool\[2, 3\]: op add needs numeric inputs \(float16, float32, float64, int8"),
    ("add", ("int32", "int64"), r"input t1 is int64\[2, 3\]: all inputs must have the same dtype \(int32\)"),
    ("neg", ("uint8",), r"op neg needs floating-point or signed integer inputs"),
    ("logical_and", ("float32", "float32"), r"op logical_and needs bool inputs \(bool\)"),
    ("isnan", ("int32",), r"op isnan needs floating-point inputs"),
    ("where", ("int32", "float32", "float32"), r"condition t0 is int32\[2, 3\]: op where needs bool inputs"),
    ("where", ("bool", "float32", "int32"), r"all inputs must have the same dtype \(float32\)"),
    ("less", ("bool", "bool"), r"op less needs numeric inputs"),
    ("relu", ("int64",), r"op relu needs floating-point inputs \(float16, float32\)"),
])
def test_dtype_errors_name_node_op_and_types(op, dtypes, message):
    with pytest.raises(BuildError, match=rf"node 'n' \(op {op}\).*{message}"):
        infer(op, *dtypes)


def test_where_broadcasts_three_ways():
    node = Node("where", ["c", "x", "y"], "out", {}, "w")
    ops.normalize(node)
    t = ops.infer(node, [TensorType((2, 1, 1), "bool"), TensorType((3, 1), "int64"), TensorType((4,), "int64")])
    assert t == TensorType((2, 3, 4), "int64")
    with pytest.raises(BuildError, match=r"shapes do not broadcast"):
        ops.infer(node, [TensorType((2,), "bool"), TensorType((3,), "int64"), TensorType((3,), "int64")])


def test_cblas_fuses_float32_activations_only():
    assert "isnan" not in cblas.activations() and "logical_not" not in cblas.activations()
    assert "abs" in cblas.activations() and "sign" in cblas.activations()


# ---------------------------------------------------------------------------
# ONNX end to end: an int64 input, bool and int64 outputs, against onnxruntime


def _model() -> onnx.ModelProto:
    """Token ids -> a padding mask (bool), index math (int64) and a masked score (float32), the way
    transformer exports write them; plus a MatMul with a fused Abs and an unfused Less after it."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (5, 4)).astype(np.float32), "w")
    consts = [numpy_helper.from_array(np.array(v, dtype=d), n) for n, v, d in [
        ("zero", 0, np.int64), ("three", 3, np.int64), ("neg", -1e9, np.float32), ("seven", [7, -7, 2, -2, 5], np.int64),
        ("half", 0.5, np.float32), ("five", 5.0, np.float32)]]
    n = helper.make_node
    nodes = [
        n("Equal", ["ids", "zero"], ["pad"], name="eq"),  # bool output
        n("Not", ["pad"], ["keep"], name="not"),
        n("Greater", ["ids", "three"], ["big"], name="gt"),
        n("And", ["keep", "big"], ["keep_big"], name="and"),
        n("Xor", ["keep", "big"], ["either"], name="xor"),
        n("Or", ["pad", "either"], ["any"], name="or"),
        n("Div", ["ids", "seven"], ["q"], name="div"),
        n("Mod", ["ids", "seven"], ["r"], name="mod", fmod=0),
        n("Mul", ["q", "seven"], ["qs"], name="mul"),
        n("Add", ["qs", "r"], ["back"], name="add"),  # == ids
        n("Sub", ["back", "ids"], ["zeros"], name="sub"),
        n("Abs", ["zeros"], ["zabs"], name="abs"),
        n("Neg", ["q"], ["nq"], name="negq"),
        n("Max", ["nq", "r", "zabs"], ["mx"], name="max"),
        n("Cast", ["ids"], ["idsf"], name="cast", to=TensorProto.FLOAT),
        n("MatMul", ["idsf", "w"], ["h"], name="mm"),
        n("Abs", ["h"], ["habs"], name="absh"),
        n("Less", ["habs", "five"], ["small"], name="lt"),
        n("Where", ["small", "neg", "habs"], ["score"], name="where"),
        n("IsInf", ["score"], ["inf"], name="isinf", detect_positive=0),
        n("IsNaN", ["score"], ["nan"], name="isnan"),
        n("Pow", ["ids", "half"], ["root"], name="pow"),  # int64 ** float32
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])
    outs = [helper.make_tensor_value_info(name, t, [2, 4] if name in ("score", "inf", "nan") else [2, 5])
            for name, t in [("pad", TensorProto.BOOL), ("any", TensorProto.BOOL), ("keep_big", TensorProto.BOOL),
                            ("mx", TensorProto.INT64), ("score", TensorProto.FLOAT), ("inf", TensorProto.BOOL),
                            ("nan", TensorProto.BOOL), ("root", TensorProto.INT64)]]
    graph = helper.make_graph(nodes, "masks", [ids], outs, [w, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


IDS = np.array([[5, 0, 12, 3, -9], [0, 1, 100, 7, 2]], np.int64)


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache):
    model = _model()
    d = tmp_path_factory.mktemp("masks")
    path = str(d / "masks.onnx")
    onnx.save(model, path)
    lines = []
    build(from_onnx(path, backends=["cblas", "host"], target=Target(cflags=["-O2"])), str(d / "masks.so"),
          explain=True, log=lines.append)
    want = dict(zip([o.name for o in model.graph.output],
                    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                        None, {"ids": IDS})))
    return d / "masks.so", want, "\n".join(lines)


def test_int64_in_bool_out_matches_onnxruntime(built):
    so, want, _ = built
    with loader.load(so) as m:
        assert [(i.name, str(i.dtype)) for i in m.inputs] == [("ids", "int64")]
        got = m.run(ids=IDS)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
    assert got["pad"].any() and got["score"].min() == np.float32(-1e9)  # the data reach both branches


def test_the_float32_activation_is_fused_and_the_comparison_is_not(built):
    _, _, log = built
    assert "absh -> cblas (fused into mm)" in log, log
    assert "lt -> host" in log, log


def test_dpk_run_reads_int64_and_writes_bool_npy(built, dpk_run, tmp_path):
    so, want, _ = built
    np.save(tmp_path / "ids.npy", IDS)
    result = subprocess.run([dpk_run, str(so), f"ids={tmp_path / 'ids.npy'}", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in want:
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.dtype == want[name].dtype, name
        np.testing.assert_allclose(got, want[name], rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------
# Build-time folding: every input known at build time -> a constant, no run-time node


def test_comparisons_logic_and_where_fold_at_build_time(tmp_path, cache):
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"]),  # [2, 3]: from the type only
        n("Size", ["x"], ["size"]),
        n("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))),
        n("Range", ["zero", "size", "two"], ["r"]),  # [0, 2, 4]
        n("Reshape", ["r", "s13"], ["r13"]),
        n("LessOrEqual", ["r13", "ones"], ["le"]),  # [2, 3]: [[T, F, F]] * 2
        n("GreaterOrEqual", ["r13", "two"], ["ge"]),
        n("Xor", ["le", "ge"], ["x1"]),
        n("Or", ["x1", "le"], ["o1"]),
        n("And", ["o1", "ge"], ["a1"]),
        n("Not", ["a1"], ["n1"]),
        n("IsNaN", ["fl"], ["isn"]),
        n("IsInf", ["fl"], ["isi"], detect_negative=0),
        n("Equal", ["isn", "isi"], ["same"]),
        n("Where", ["n1", "ones", "r13"], ["w"]),
        n("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        n("Where", ["same", "x", "wf"], ["y"]),  # the one run-time node: x is an input
    ]
    inits = [numpy_helper.from_array(np.array(v, d), name) for name, v, d in [
        ("zero", 0, np.int64), ("two", 2, np.int64), ("s13", [1, 3], np.int64),
        ("fl", [[np.nan, np.inf, -np.inf]] * 2, np.float32)]]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "fold.onnx")
    onnx.save(model, path)
    g = onnx_frontend.load_graph(path)
    assert [node.op for node in g.nodes] == ["where"]
    assert g.weights[g.nodes[0].inputs[0]].dtype == bool  # the folded condition: a bool weight
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 10
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    build(from_onnx(path, target=Target(cflags=["-O1"])), str(tmp_path / "fold.so"), quiet=True)
    with loader.load(tmp_path / "fold.so") as m:
        np.testing.assert_array_equal(m.run(x=x)["y"], want)
