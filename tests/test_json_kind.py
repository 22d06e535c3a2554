"""The `json` module kind, end to end on both sides.

Python side: JsonBackend.supports / lower (packager/backends/json.py).
C side: runtime_c/src/json.c and runtime_c/src/kernels/, driven by a small C
harness (tests/c/json_harness.c) that plays the runtime: a fake services table
whose import_tensor serves weights the test registered. Every op is compared
with an independent NumPy reference (computed in float64) over several shapes,
broadcasting cases and softmax axes; every load and call error is checked for
its status and message. A last test goes through a whole model file and
`dpk-run` when the runtime core is built.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import threading

import numpy as np
import pytest

import reference as ref

from packager.backends.base import Region
from packager.backends.json import JsonBackend
from packager.ir import Graph, Node, TensorType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "runtime_c", "src")
CC = os.environ.get("CC", "gcc")
# e.g. DPK_TEST_SANITIZE="-fsanitize=address,undefined" (run python with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
SANITIZE = os.environ.get("DPK_TEST_SANITIZE", "").split()

# dpk_status_t
INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, DATA_LOSS, UNIMPLEMENTED, FAILED_PRECONDITION = 1, 2, 3, 4, 5, 8

# ---- the harness --------------------------------------------------------------------------------------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_DL_CODES = {"f": 2, "i": 0, "u": 1, "b": 6}


class Tensor:
    """A DLTensor over a numpy array; keeps the array and the shape alive."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
        self.dl = DLTensor(array.ctypes.data, DLDevice(1, 0), array.ndim,
                           DLDataType(_DL_CODES[array.dtype.kind], array.dtype.itemsize * 8, 1),
                           self.shape, None, 0)


def _compile_harness(out_dir: str) -> str:
    """The harness and every runtime source in one .so; ours built with -Werror -pedantic."""
    kernels = os.path.join(SRC, "kernels")
    mine = [os.path.join(SRC, f) for f in ("json.c", "json_ops.c")]
    mine += sorted(os.path.join(kernels, f) for f in os.listdir(kernels) if f.endswith(".c"))
    others = sorted(os.path.join(SRC, f) for f in os.listdir(SRC)
                    if f.endswith(".c") and os.path.join(SRC, f) not in mine)
    flags = [CC, "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-O3", "-fPIC", "-pthread", "-Wall",
             "-Wextra", f"-I{ROOT}/runtime_c/include", f"-I{SRC}", *SANITIZE]
    objects = []
    harness = os.path.join(ROOT, "tests", "c", "json_harness.c")
    for i, source in enumerate([harness] + mine + others):
        obj = os.path.join(out_dir, f"{i}_{os.path.basename(source)}.o")
        strict = ["-Werror", "-pedantic"] if source in mine else ["-Werror"] if source == harness else []
        _run(flags + strict + ["-c", source, "-o", obj])
        objects.append(obj)
    lib = os.path.join(out_dir, "libjson_harness.so")
    _run([CC, "-shared", "-pthread", *SANITIZE, "-o", lib, *objects, "-lzstd", "-lyaml", "-lxxhash", "-lsodium", "-ldl", "-lm"])
    return lib


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


class Harness:
    def __init__(self, path: str):
        lib = self.lib = ctypes.CDLL(path)
        lib.th_add_weight.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int]
        lib.th_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        lib.th_get_function.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
                                        ctypes.POINTER(ctypes.c_void_p)]
        lib.th_call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                ctypes.POINTER(ctypes.POINTER(DLTensor)), ctypes.POINTER(ctypes.c_int)]
        lib.th_free.argtypes = [ctypes.c_void_p]
        lib.th_last_error.restype = ctypes.c_char_p
        lib.th_kind_name.restype = ctypes.c_char_p

    def error(self) -> str:
        return self.lib.th_last_error().decode()

    def load(self, payload: bytes, weights: dict[str, np.ndarray] | None = None, module: str = "ext0"):
        """(status, Module or None); the message is in self.error() on failure."""
        self.lib.th_clear_weights()
        kept = []
        for name, array in (weights or {}).items():
            array = np.array(array, order="C")  # (ascontiguousarray turns 0-d into 1-d)
            shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
            assert self.lib.th_add_weight(name.encode(), array.ctypes.data, array.ndim, shape,
                                          _DL_CODES[array.dtype.kind], array.dtype.itemsize * 8) == 0
            kept.append(array)
        state = ctypes.c_void_p()
        status = self.lib.th_load(module.encode(), payload, len(payload), ctypes.byref(state))
        if status:
            assert not state.value, "load failed but returned a state"
            return status, None
        return 0, Module(self, state, kept)


class Module:
    def __init__(self, harness: Harness, state: ctypes.c_void_p, kept: list):
        self.h, self.state, self.kept = harness, state, kept

    def function(self, name: str):
        fn, res = ctypes.c_void_p(), ctypes.c_void_p()
        status = self.h.lib.th_get_function(self.state, name.encode(), ctypes.byref(fn), ctypes.byref(res))
        return status, fn, res

    def call_raw(self, name: str, arrays: list[np.ndarray], codes: list[int] | None = None) -> int:
        status, fn, res = self.function(name)
        assert status == 0, f"no function {name}"
        tensors = [Tensor(a) for a in arrays]
        ptrs = (ctypes.POINTER(DLTensor) * max(len(tensors), 1))(*[ctypes.pointer(t.dl) for t in tensors])
        code_arr = (ctypes.c_int * len(codes))(*codes) if codes else None
        return self.h.lib.th_call(fn, res, len(arrays), ptrs, code_arr)

    def close(self) -> None:
        if self.state:
            self.h.lib.th_free(self.state)
            self.state = None


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Harness:
    return Harness(_compile_harness(str(tmp_path_factory.mktemp("json_harness"))))


# ---- NumPy references (float64) -----------------------------------------------------------------------


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


REFERENCE = {
    "dense": lambda x, w, b=None, **_: x @ w.T + (0 if b is None else b),
    "matmul": lambda a, b, **_: np.matmul(a, b),
    "add": lambda a, b, **_: a + b,
    "sub": lambda a, b, **_: a - b,
    "mul": lambda a, b, **_: a * b,
    "div": lambda a, b, **_: a / b,
    "relu": lambda x, **_: np.maximum(x, 0),
    "sigmoid": lambda x, **_: 1 / (1 + np.exp(-x)),
    "tanh": lambda x, **_: np.tanh(x),
    "softmax": lambda x, axis=-1, **_: _softmax(x, axis),
    "reshape": lambda x, shape, **_: x.reshape(shape),
}


def _flatten_ref(x, axis):
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


REFERENCE["flatten"] = lambda x, axis=1, **_: _flatten_ref(x, axis)


def evaluate(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph in float64 with NumPy; every tensor's value by name."""
    values = {k: v.astype(np.float64) for k, v in {**graph.weights, **feeds}.items()}
    with np.errstate(over="ignore"):  # exp(1000) = inf is the right intermediate for sigmoid
        for node in graph.nodes:
            values[node.output] = np.asarray(REFERENCE[node.op](*[values[n] for n in node.inputs], **node.attrs))
    return values


def _approx_shape(fn):
    """A data-movement op on an Approx: the same move of the value and of the bound."""
    return lambda x, **attrs: ref.Approx(fn(x.value, **attrs), fn(x.err, **attrs))


APPROX = {  # op -> the float32 rounding bound of the json kernel's result (tests/reference.py)
    "dense": lambda x, w, b=None, **_: ref.dense_approx(x, w.value, None if b is None else b.value),
    "matmul": lambda a, b, **_: ref.matmul_approx(a, b),
    "add": lambda a, b, **_: ref.add_approx(a, b),
    "sub": lambda a, b, **_: ref.sub_approx(a, b),
    "mul": lambda a, b, **_: ref.mul_approx(a, b),
    "div": lambda a, b, **_: ref.div_approx(a, b),
    "relu": lambda x, **_: ref.unary_approx(ref.relu, x, ref.LIPSCHITZ["relu"]),
    "sigmoid": lambda x, **_: ref.unary_approx(ref.sigmoid, x, ref.LIPSCHITZ["sigmoid"]),
    "tanh": lambda x, **_: ref.unary_approx(ref.tanh, x, ref.LIPSCHITZ["tanh"]),
    "softmax": lambda x, axis=-1, **_: ref.softmax_approx(x, axis),
    "reshape": _approx_shape(lambda v, shape, **_: v.reshape(shape)),
    "flatten": _approx_shape(lambda v, axis=1, **_: _flatten_ref(v, axis)),
}


def evaluate_approx(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, ref.Approx]:
    """Every tensor's float64 value with its float32 rounding bound, carried through the graph."""
    values = {k: ref.exact(np.asarray(v, np.float64)) for k, v in {**graph.weights, **feeds}.items()}
    with np.errstate(over="ignore"):
        for node in graph.nodes:
            values[node.output] = APPROX[node.op](*[values[n] for n in node.inputs], **node.attrs)
    return values


def make_graph(nodes: list[Node], inputs: dict[str, np.ndarray], weights: dict[str, np.ndarray],
               outputs: list[str]) -> Graph:
    """A graph whose `types` come from the NumPy reference (not from packager.ir_check)."""
    graph = Graph("t", {k: TensorType(v.shape, "float32") for k, v in inputs.items()}, dict(weights), nodes, outputs)
    for name, value in evaluate(graph, inputs).items():
        graph.types[name] = TensorType(tuple(value.shape), "float32")
    return graph


def whole_region(graph: Graph, name: str = "ext0") -> Region:
    produced = {n.output for n in graph.nodes}
    inputs = list(dict.fromkeys(t for n in graph.nodes for t in n.inputs if t not in produced))
    return Region(name, list(graph.nodes), inputs, list(graph.outputs), [t for t in inputs if t in graph.weights])


def run_graph(harness: Harness, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lower the whole graph to one json module, load it in the harness, call it once."""
    region = whole_region(graph)
    payload = JsonBackend().lower(region, graph)
    assert payload.kind == "json" and payload.function == "ext0"
    status, module = harness.load(payload.data, graph.weights)
    assert status == 0, harness.error()
    try:
        args = [np.array(feeds[n], dtype=np.float32, order="C") for n in region.activations]
        outs = [np.full(graph.types[n].shape, np.nan, np.float32) for n in region.outputs]
        ws = [np.zeros(payload.workspace_bytes, np.uint8)] if payload.workspace_bytes else []
        status = module.call_raw("ext0", args + outs + ws)
        assert status == 0, harness.error()
        return dict(zip(region.outputs, outs))
    finally:
        module.close()


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).uniform(low, high, shape).astype(np.float32)


def check_node(harness, op, shapes, attrs=None, weights=(), seed=0, positive=()):
    """One node; inputs at positions in `weights` are weights, the rest function inputs."""
    arrays = [rand(*s, seed=seed + i, low=0.5 if i in positive else -2.0) for i, s in enumerate(shapes)]
    names = [f"w{i}" if i in weights else f"x{i}" for i in range(len(shapes))]
    node = Node(op, names, "y", dict(attrs or {}), name=f"{op}_0")
    feeds = {n: a for n, a in zip(names, arrays) if n.startswith("x")}
    wts = {n: a for n, a in zip(names, arrays) if n.startswith("w")}
    graph = make_graph([node], feeds, wts, ["y"])
    got = run_graph(harness, graph, feeds)["y"]
    ref.assert_close(got, evaluate_approx(graph, feeds)["y"], err_msg=op)


# ---- numerics: one op at a time -----------------------------------------------------------------------


def test_harness_kind_name(harness):
    assert harness.lib.th_kind_name() == b"json"


@pytest.mark.parametrize("x,w,bias", [((1, 64), (10, 64), True), ((5, 3), (7, 3), False), ((2, 3, 17), (9, 17), True),
                                      ((4, 1), (1, 1), True), ((3, 100), (33, 100), False)])
def test_dense(harness, x, w, bias):
    shapes = [x, w] + ([(w[0],)] if bias else [])
    check_node(harness, "dense", shapes, weights=(1, 2))


def test_dense_weight_as_function_input(harness):
    check_node(harness, "dense", [(2, 8), (3, 8), (3,)], weights=())


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((2, 3, 4), (4, 5)), ((4, 5), (2, 5, 3)),
                                 ((2, 1, 3, 4), (5, 4, 6)), ((3, 2, 2, 3), (3, 1, 3, 2)), ((4,), (4, 5)),
                                 ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4,)), ((6,), (2, 6, 3)),
                                 ((3, 10), (10, 19)), ((2, 5, 7), (2, 7, 40))])
def test_matmul(harness, a, b):
    check_node(harness, "matmul", [a, b])
    check_node(harness, "matmul", [a, b], weights=(1,), seed=3)


BROADCASTS = [((5,), (5,)), ((2, 3), (3,)), ((2, 3), (2, 1)), ((4, 1, 3), (2, 1)), ((1,), (5, 4)), ((), (3, 2)),
              ((3, 2), ()), ((), ()), ((2, 3, 4, 5, 6, 7), (1, 3, 1, 5, 1, 7)), ((1, 1, 4), (3, 1, 1)),
              ((2, 1, 3, 1, 2, 1), (1, 4, 1, 5, 1, 3)), ((7, 300), (300,)), ((1, 2, 1, 2, 1, 2, 1, 2), (2, 1, 2, 1))]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("a,b", BROADCASTS)
def test_binary_broadcasting(harness, op, a, b):
    check_node(harness, op, [a, b], positive=(1,) if op == "div" else ())


@pytest.mark.parametrize("op", ["add", "div"])
def test_binary_with_weight_operand(harness, op):
    check_node(harness, op, [(3, 4), (4,)], weights=(1,), positive=(1,))
    check_node(harness, op, [(4,), (3, 4)], weights=(0,), positive=(1,))


def test_binary_same_tensor_twice(harness):
    x = rand(3, 5)
    graph = make_graph([Node("mul", ["x", "x"], "y", name="sq")], {"x": x}, {}, ["y"])
    np.testing.assert_allclose(run_graph(harness, graph, {"x": x})["y"], x * x, rtol=1e-6)


@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (10,), (3, 7), (2, 3, 4, 5), ()])
def test_unary(harness, op, shape):
    check_node(harness, op, [shape])


def test_sigmoid_tanh_extremes(harness):
    x = np.array([-1000, -90, -20, 0, 20, 90, 1000], np.float32)
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    for op, want in [("sigmoid", sigmoid), ("tanh", np.tanh(x))]:
        graph = make_graph([Node(op, ["x"], "y", name=op)], {"x": x}, {}, ["y"])
        np.testing.assert_allclose(run_graph(harness, graph, {"x": x})["y"], want, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("shape,axis", [((1, 10), -1), ((4, 10), 1), ((4, 10), 0), ((2, 3, 4), 1), ((2, 3, 4), 0),
                                       ((2, 3, 4), -1), ((2, 3, 4), -3), ((5,), 0), ((2, 5, 300), 1),
                                       ((3, 600), 0), ((2, 2, 2, 2, 3), 2)])
def test_softmax(harness, shape, axis):
    check_node(harness, "softmax", [shape], {"axis": axis})


def test_softmax_is_stable_for_large_logits(harness):
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -999.0]], np.float32)
    for axis in (0, 1):
        graph = make_graph([Node("softmax", ["x"], "y", {"axis": axis}, name="sm")], {"x": x}, {}, ["y"])
        got = run_graph(harness, graph, {"x": x})["y"]
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, _softmax(x.astype(np.float64), axis), rtol=1e-5)


def test_softmax_default_axis_is_last(harness):
    check_node(harness, "softmax", [(3, 6)], {})


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), 1), ((2, 3, 4), 0), ((2, 3, 4), 3), ((2, 3, 4), -1),
                                       ((2, 3, 4), -3), ((2, 3, 4), 2), ((5,), 1)])
def test_flatten(harness, shape, axis):
    check_node(harness, "flatten", [shape], {"axis": axis})


def test_flatten_default_axis_is_1(harness):
    check_node(harness, "flatten", [(2, 3, 4)], {})


@pytest.mark.parametrize("shape,target", [((2, 3, 4), [6, 4]), ((2, 3, 4), [-1]), ((2, 3, 4), [4, -1, 2]),
                                          ((6,), [1, 6, 1]), ((1, 12), [3, 2, 2]), ((5,), [5])])
def test_reshape(harness, shape, target):
    check_node(harness, "reshape", [shape], {"shape": target})


# ---- regions of several nodes: intermediates in the workspace -----------------------------------------


def mlp_graph(batch=2):
    rng = np.random.default_rng(1)
    weights = {"fc1.weight": rng.standard_normal((32, 64), np.float32) * 0.2,
               "fc1.bias": rng.standard_normal(32, np.float32),
               "fc2.weight": rng.standard_normal((10, 32), np.float32) * 0.2,
               "fc2.bias": rng.standard_normal(10, np.float32)}
    nodes = [Node("dense", ["x", "fc1.weight", "fc1.bias"], "h", name="dense_0"),
             Node("relu", ["h"], "a", name="relu_1"),
             Node("dense", ["a", "fc2.weight", "fc2.bias"], "logits", name="dense_2"),
             Node("softmax", ["logits"], "probs", {"axis": -1}, name="softmax_3")]
    x = rng.standard_normal((batch, 64)).astype(np.float32)
    return make_graph(nodes, {"x": x}, weights, ["probs"]), x


def test_mlp_region(harness):
    graph, x = mlp_graph()
    got = run_graph(harness, graph, {"x": x})["probs"]
    ref.assert_close(got, evaluate_approx(graph, {"x": x})["probs"])
    np.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-6)


def test_region_with_two_outputs_and_an_output_read_inside(harness):
    x, y = rand(4, 6), rand(6, seed=1)
    nodes = [Node("add", ["x", "y"], "s", name="add"), Node("tanh", ["s"], "t", name="tanh"),
             Node("mul", ["t", "s"], "m", name="mul"), Node("reshape", ["m"], "r", {"shape": [-1]}, name="rs"),
             Node("sigmoid", ["r"], "out", name="sig")]
    graph = make_graph(nodes, {"x": x, "y": y}, {}, ["s", "out"])
    got = run_graph(harness, graph, {"x": x, "y": y})
    want = evaluate_approx(graph, {"x": x, "y": y})
    for name in ("s", "out"):
        ref.assert_close(got[name], want[name], err_msg=name)


def test_workspace_is_reused_along_a_chain(harness):
    x = rand(8, 16)
    ops = ["relu", "tanh", "sigmoid", "relu", "tanh", "sigmoid", "tanh"]
    names = ["x"] + [f"t{i}" for i in range(len(ops) - 1)] + ["y"]
    nodes = [Node(op, [names[i]], names[i + 1], name=f"{op}_{i}") for i, op in enumerate(ops)]
    graph = make_graph(nodes, {"x": x}, {}, ["y"])
    payload = JsonBackend().lower(whole_region(graph), graph)
    doc = json.loads(payload.data)
    offsets = sorted({t["offset"] for t in doc["intermediates"].values()})
    assert offsets == [0, 512] and payload.workspace_bytes == 1024  # two 512-byte slots, alternating
    ref.assert_close(run_graph(harness, graph, {"x": x})["y"], evaluate_approx(graph, {"x": x})["y"])


def test_workspace_keeps_live_intermediates_apart(harness):
    x = rand(4, 8)  # every tensor 128 bytes
    nodes = [Node("relu", ["x"], "a", name="n0"), Node("relu", ["a"], "b", name="n1"),
             Node("add", ["a", "b"], "c", name="n2"), Node("relu", ["c"], "d", name="n3"),
             Node("add", ["d", "b"], "e", name="n4")]
    graph = make_graph(nodes, {"x": x}, {}, ["e"])
    payload = JsonBackend().lower(whole_region(graph), graph)
    offsets = {name: t["offset"] for name, t in json.loads(payload.data)["intermediates"].items()}
    assert all(o % 64 == 0 for o in offsets.values())
    live = {"a": (0, 2), "b": (1, 4), "c": (2, 3), "d": (3, 4)}
    for p in live:
        for q in live:
            if p < q and live[p][0] <= live[q][1] and live[q][0] <= live[p][1]:
                assert abs(offsets[p] - offsets[q]) >= 128, (p, q, offsets)
    assert payload.workspace_bytes == max(offsets.values()) + 128 == 3 * 128
    assert offsets["d"] == offsets["a"]  # a is dead by then: d reuses its bytes
    ref.assert_close(run_graph(harness, graph, {"x": x})["e"], evaluate_approx(graph, {"x": x})["e"])


def test_payload_follows_the_format():
    graph, _ = mlp_graph()
    payload = JsonBackend().lower(whole_region(graph), graph)
    doc = json.loads(payload.data)
    assert doc["version"] == 1 and doc["function"] == "ext0"
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": [2, 64]}]
    assert doc["outputs"] == [{"name": "probs", "dtype": "float32", "shape": [2, 10]}]
    assert set(doc["intermediates"]) == {"h", "a", "logits"}
    assert doc["intermediates"]["h"] == {"dtype": "float32", "shape": [2, 32], "offset": 0}
    assert doc["workspace_bytes"] == payload.workspace_bytes > 0
    assert [n["op"] for n in doc["nodes"]] == ["dense", "relu", "dense", "softmax"]
    assert doc["nodes"][0] == {"op": "dense", "inputs": ["x", "fc1.weight", "fc1.bias"], "output": "h", "attrs": {}}
    assert doc["nodes"][3]["attrs"] == {"axis": -1}


def test_calls_from_many_threads(harness):
    graph, _ = mlp_graph(batch=3)
    region = whole_region(graph)
    payload = JsonBackend().lower(region, graph)
    status, module = harness.load(payload.data, graph.weights)
    assert status == 0, harness.error()
    failures = []

    def worker(seed):
        x = rand(3, 64, seed=seed)
        want = evaluate(graph, {"x": x})["probs"]
        for _ in range(50):
            out = np.zeros((3, 10), np.float32)
            ws = np.zeros(payload.workspace_bytes, np.uint8)
            if module.call_raw("ext0", [x, out, ws]) != 0 or not np.allclose(out, want, rtol=1e-5, atol=1e-6):
                failures.append(seed)
                return

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    module.close()
    assert not failures


# ---- the op table: runtime_c/src/json_ops.c, the json backend and the registry agree ---------------------


class JsonOp(ctypes.Structure):  # dpk_json_op (json_plan.h)
    _fields_ = [("name", ctypes.c_char_p), ("min_inputs", ctypes.c_int), ("max_inputs", ctypes.c_int),
                ("build", ctypes.c_void_p)]


def test_the_c_op_table_is_the_backends(harness):
    """The runtime implements exactly the backend's OPS, each with the registry's number of inputs."""
    from packager import ops
    from packager.backends import json as json_backend

    find = harness.lib.dpk_json_find_op
    find.argtypes, find.restype = [ctypes.c_char_p], ctypes.POINTER(JsonOp)
    listed = ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(harness.lib, "dpk_json_op_names"))).decode()
    assert listed.split(", ") == list(json_backend.OPS)
    for op in sorted(set(ops.OPS) | set(json_backend.OPS) | {"gelu"}):
        entry = find(op.encode())
        assert bool(entry) == (op in json_backend.OPS), op
        if entry:
            lo, hi = ops.OPS[op].arity()
            assert (entry.contents.name.decode(), entry.contents.min_inputs, entry.contents.max_inputs) == (op, lo, hi)


def _ops_with_defaults() -> list[str]:
    from packager import ops
    from packager.backends import json as json_backend

    return [op for op in json_backend.OPS if any(a.default is not ops.REQUIRED for a in ops.OPS[op].attrs.values())]


@pytest.mark.parametrize("op", _ops_with_defaults())
def test_the_runtimes_defaults_are_the_registrys(harness, op):
    """The packager writes every attribute; a payload that leaves one out gets the registry's default."""
    from packager import ops

    defaults = {name: attr.default for name, attr in ops.OPS[op].attrs.items()}
    x = rand(2, 3, 4)
    left_out, explicit = (run_graph(harness, make_graph([Node(op, ["x"], "y", attrs, name="n")], {"x": x}, {}, ["y"]),
                                    {"x": x})["y"] for attrs in ({}, defaults))
    np.testing.assert_array_equal(left_out, explicit)


# ---- the Python side: what the backend takes ----------------------------------------------------------


def test_supports():
    graph, _ = mlp_graph()
    backend = JsonBackend()
    assert backend.name == "json"
    assert all(backend.supports(n, graph) is None for n in graph.nodes)
    conv = Node("conv2d", ["x", "fc1.weight"], "c", name="conv2d_0")
    assert backend.supports(conv, graph) == "op conv2d is not in the json kernel set"
    graph.types["i"] = TensorType((2, 64), "int64")
    graph.types["j"] = TensorType((2, 64), "int64")
    reason = backend.supports(Node("add", ["i", "i"], "j", name="add_0"), graph)
    assert reason.startswith("json kernels are float32 only")
    graph.types["k"] = TensorType((2, 0), "float32")
    assert "non-empty" in backend.supports(Node("relu", ["k"], "k2", name="relu_9"), graph)


def test_partitioner_picks_json_and_the_build_can_lower_it():
    from packager import partition

    graph, _ = mlp_graph()
    part = partition.partition(graph, ["json", "host"])
    assert [(b.name, r.name) for b, r in part.regions] == [("json", "ext0")]
    assert part.regions[0][1].activations == ["x"]


# ---- load errors: status and message ------------------------------------------------------------------


def mlp_doc():
    graph, _ = mlp_graph()
    return json.loads(JsonBackend().lower(whole_region(graph), graph).data), graph.weights


def load_error(harness, doc, weights, raw: bytes | None = None):
    status, module = harness.load(raw if raw is not None else json.dumps(doc).encode(), weights)
    if module:
        module.close()
    return status, harness.error()


def test_load_ok_baseline(harness):
    doc, weights = mlp_doc()
    assert load_error(harness, doc, weights)[0] == 0


def test_error_unknown_op(harness):
    doc, weights = mlp_doc()
    doc["nodes"][1]["op"] = "conv2d"
    status, msg = load_error(harness, doc, weights)
    assert status == UNIMPLEMENTED
    assert msg.startswith("json module 'ext0': node 1: op 'conv2d' is not implemented by the json kind")
    assert "dense, matmul" in msg


def test_error_missing_weight(harness):
    doc, weights = mlp_doc()
    del weights["fc2.bias"]
    status, msg = load_error(harness, doc, weights)
    assert status == NOT_FOUND
    assert "node 2 (dense): input 'fc2.bias' is not an input, output or intermediate of function 'ext0'" in msg


def test_error_weight_of_wrong_dtype(harness):
    doc, weights = mlp_doc()
    weights["fc1.bias"] = weights["fc1.bias"].astype(np.float64)
    status, msg = load_error(harness, doc, weights)
    assert status == UNIMPLEMENTED and "weight 'fc1.bias' is float64" in msg


def test_error_declared_shape_differs(harness):
    doc, weights = mlp_doc()
    doc["intermediates"]["a"]["shape"] = [2, 31]
    status, msg = load_error(harness, doc, weights)
    assert status == FAILED_PRECONDITION
    assert "node 1 (relu): output 'a' is declared [2, 31] but the op gives [2, 32]" in msg


def test_error_dense_weight_does_not_fit(harness):
    doc, weights = mlp_doc()
    weights["fc1.weight"] = np.zeros((32, 63), np.float32)
    status, msg = load_error(harness, doc, weights)
    assert status == FAILED_PRECONDITION
    assert "node 0 (dense): input [2, 64] does not fit weight [32, 63]" in msg


def test_error_bias_does_not_fit(harness):
    doc, weights = mlp_doc()
    weights["fc2.bias"] = np.zeros(11, np.float32)
    status, msg = load_error(harness, doc, weights)
    assert status == FAILED_PRECONDITION and "node 2 (dense): bias [11] does not fit weight [10, 32]" in msg


@pytest.mark.parametrize("op,shapes,attrs,needle", [
    ("add", [(2, 3), (4,)], {}, "node 0 (add): shapes [2, 3] and [4] do not broadcast"),
    ("matmul", [(2, 3), (4, 5)], {}, "node 0 (matmul): shapes [2, 3] and [4, 5] do not fit a matrix product"),
    ("matmul", [(2, 3, 4), (3, 4, 5)], {}, "shapes [2, 3, 4] and [3, 4, 5] do not fit a matrix product"),
    ("softmax", [(2, 3)], {"axis": 2}, "node 0 (softmax): axis 2 is out of range for a rank-2 input"),
    ("flatten", [(2, 3)], {"axis": -3}, "node 0 (flatten): axis -3 is out of range for a rank-2 input (-2..2)"),
    ("flatten", [(2, 3)], {"axis": 3}, "node 0 (flatten): axis 3 is out of range"),
    ("reshape", [(2, 3)], {"shape": [4, -1]}, "node 0 (reshape): cannot reshape [2, 3] (6 elements)"),
    ("reshape", [(2, 3)], {"shape": [7]}, "cannot reshape [2, 3] (6 elements)"),
    ("reshape", [(2, 3)], {"shape": [-1, -1]}, "reshape size -1 is not allowed"),
    ("reshape", [(2, 3)], {"shape": [0, 6]}, "reshape size 0 is not allowed"),
])
def test_error_bad_shapes_per_op(harness, op, shapes, attrs, needle):
    inputs = [{"name": f"x{i}", "dtype": "float32", "shape": list(s)} for i, s in enumerate(shapes)]
    doc = {"version": 1, "function": "ext0", "inputs": inputs,
           "outputs": [{"name": "y", "dtype": "float32", "shape": [6]}], "workspace_bytes": 0, "intermediates": {},
           "nodes": [{"op": op, "inputs": [i["name"] for i in inputs], "output": "y", "attrs": attrs}]}
    status, msg = load_error(harness, doc, {})
    assert status == FAILED_PRECONDITION, msg
    assert needle in msg


def test_error_reshape_without_shape(harness):
    doc = {"version": 1, "function": "f", "inputs": [{"name": "x", "dtype": "float32", "shape": [6]}],
           "outputs": [{"name": "y", "dtype": "float32", "shape": [6]}],
           "nodes": [{"op": "reshape", "inputs": ["x"], "output": "y"}]}
    status, msg = load_error(harness, doc, {})
    assert status == FAILED_PRECONDITION and "attribute 'shape' must be a list" in msg


@pytest.mark.parametrize("raw,needle", [
    (b'{"version": 1, "function": "ext0", "inputs": [', "the json payload is not valid YAML"),
    (b'{"version": 1, "function": "ext0", ]', "the json payload is not valid YAML"),
    (b"", "has no payload"),
])
def test_error_malformed_json(harness, raw, needle):
    status, msg = load_error(harness, None, {}, raw=raw)
    assert status in (DATA_LOSS, FAILED_PRECONDITION)
    assert needle in msg and msg.startswith("json module 'ext0': ")
    if raw:
        assert status == DATA_LOSS and ", column " in msg


@pytest.mark.parametrize("edit,status_want,needle", [
    (lambda d: d.update(version=2), UNIMPLEMENTED, "json payload version 2 is newer than this runtime's (1)"),
    (lambda d: d.pop("version"), FAILED_PRECONDITION, "field 'version' is missing"),
    (lambda d: d.update(version="one"), FAILED_PRECONDITION, "field 'version' must be an integer"),
    (lambda d: d.pop("function"), FAILED_PRECONDITION, "field 'function' is missing"),
    (lambda d: d.update(nodes=[]), FAILED_PRECONDITION, "field 'nodes' must be a non-empty list"),
    (lambda d: d.update(outputs={}), FAILED_PRECONDITION, "field 'outputs' must be a non-empty list"),
    (lambda d: d["inputs"][0].update(dtype="float64"), UNIMPLEMENTED, "inputs[0] ('x') is float64"),
    (lambda d: d["inputs"][0].update(dtype="complex"), INVALID_ARGUMENT, "unknown dtype 'complex'"),
    (lambda d: d["inputs"][0].update(shape=[2, "a"]), FAILED_PRECONDITION, "inputs[0].shape[1] must be an integer"),
    (lambda d: d["inputs"][0].update(shape=[2, 0]), FAILED_PRECONDITION, "inputs[0].shape[1] is 0"),
    (lambda d: d["inputs"][0].pop("name"), FAILED_PRECONDITION, "inputs[0].name is missing"),
    (lambda d: d["outputs"][0].update(name="x"), FAILED_PRECONDITION, "the name 'x' is declared twice"),
    (lambda d: d["intermediates"]["a"].update(offset=32), FAILED_PRECONDITION,
     "intermediates.a.offset is 32, not a multiple of 64"),
    (lambda d: d.update(workspace_bytes=100), OUT_OF_RANGE, "ends past the workspace (workspace_bytes 100)"),
    (lambda d: d["intermediates"]["a"].update(offset=0), FAILED_PRECONDITION,
     "intermediates 'h' (bytes 0..256, nodes 0..1) and 'a' (bytes 0..256, nodes 1..2) overlap"),
    (lambda d: d["nodes"][1].update(inputs=["logits"]), FAILED_PRECONDITION,
     "node 1 (relu) reads 'logits' before any node writes it"),
    (lambda d: d["nodes"][1].update(output="x"), FAILED_PRECONDITION,
     "node 1 (relu): output 'x' is not declared in 'outputs' or 'intermediates'"),
    (lambda d: d["nodes"][2].update(output="h"), FAILED_PRECONDITION,
     "node 2 (dense): output 'h' is already written by node 0"),
    (lambda d: d["nodes"][3].update(output="logits"), FAILED_PRECONDITION, "already written by node 2"),
    (lambda d: d["nodes"].pop(), FAILED_PRECONDITION, "output 'probs' is never written by a node"),
    (lambda d: d["nodes"][1].update(inputs=["h", "h"]), FAILED_PRECONDITION,
     "node 1 (relu): 'inputs' must list 1 to 1 tensor names, got 2"),
    (lambda d: d["nodes"][1].update(attrs=[1]), FAILED_PRECONDITION, "node 1 (relu): 'attrs' must be a mapping"),
    (lambda d: d["nodes"][3].update(attrs={"axis": "last"}), FAILED_PRECONDITION,
     "node 3 (softmax) attribute 'axis' must be an integer"),
    (lambda d: d["nodes"][0].pop("op"), FAILED_PRECONDITION, "nodes[0].op is missing"),
])
def test_error_payload_fields(harness, edit, status_want, needle):
    doc, weights = mlp_doc()
    edit(doc)
    status, msg = load_error(harness, doc, weights)
    assert status == status_want, msg
    assert needle in msg, msg
    assert msg.startswith("json module 'ext0': ")


# ---- call errors --------------------------------------------------------------------------------------


@pytest.fixture
def mlp_module(harness):
    graph, x = mlp_graph()
    payload = JsonBackend().lower(whole_region(graph), graph)
    status, module = harness.load(payload.data, graph.weights)
    assert status == 0, harness.error()
    yield module, x, payload.workspace_bytes
    module.close()


def test_get_function_other_name(mlp_module):
    module, _, _ = mlp_module
    assert module.function("ext0")[0] == 0
    assert module.function("main")[0] == NOT_FOUND


@pytest.mark.parametrize("case,needle", [
    ("nargs", "json function 'ext0' takes 3 arguments (1 inputs, 1 outputs, workspace), got 2"),
    ("shape", "argument 0 (input 'x') must be compact float32[2, 64], got float32[2, 63]"),
    ("dtype", "argument 1 (output 'probs') must be compact float32[2, 10], got float64[2, 10]"),
    ("rank", "argument 0 (input 'x') must be compact float32[2, 64], got float32[128]"),
    ("code", "argument 0 (input 'x') must be a tensor with data"),
    ("workspace", "the last argument must be a uint8 workspace of at least"),
    ("workspace_dtype", "the last argument must be a uint8 workspace of at least"),
])
def test_call_errors(harness, mlp_module, case, needle):
    module, x, ws_bytes = mlp_module
    out, ws = np.zeros((2, 10), np.float32), np.zeros(ws_bytes, np.uint8)
    args, codes = [x, out, ws], None
    if case == "nargs":
        args = [x, out]
    elif case == "shape":
        args[0] = np.zeros((2, 63), np.float32)
    elif case == "dtype":
        args[1] = np.zeros((2, 10), np.float64)
    elif case == "rank":
        args[0] = x.reshape(-1)
    elif case == "code":
        codes = [0, 7, 7]
    elif case == "workspace":
        args[2] = np.zeros(ws_bytes - 1, np.uint8)
    elif case == "workspace_dtype":
        args[2] = np.zeros(ws_bytes // 4, np.float32)
    status = module.call_raw("ext0", args, codes)
    assert status == INVALID_ARGUMENT
    assert needle in harness.error()
    assert np.all(out == 0), "a failed call must not write outputs"


def test_call_accepts_a_larger_workspace(harness, mlp_module):
    module, x, ws_bytes = mlp_module
    out = np.zeros((2, 10), np.float32)
    assert module.call_raw("ext0", [x, out, np.zeros(ws_bytes + 640, np.uint8)]) == 0
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)


# ---- end to end: a model file run by dpk-run (C only) -------------------------------------------------


def hand_built_model(tmp_path, graph: Graph, payload_data: bytes | None = None) -> str:
    """A model file assembled by hand (no build pipeline): params + json + graph modules.

    The json module is JsonBackend's payload for the whole graph; the graph
    module makes one call to it with the workspace in its arena."""
    import platform

    from packager.blob import BlobWriter, write_incbin_stub

    region = whole_region(graph)
    payload = JsonBackend().lower(region, graph)
    writer = BlobWriter()
    tensors = {}
    for name, array in graph.weights.items():
        desc = writer.add(np.ascontiguousarray(array), "raw", align=4096)
        tensors[name] = {"dtype": "float32", "shape": list(array.shape), **desc}
    ext0 = writer.add(payload_data if payload_data is not None else payload.data, "zstd")

    def sig(name):
        return {"name": name, "dtype": "float32", "shape": list(graph.types[name].shape)}

    table = [{**sig(n), "storage": "input", "index": i} for i, n in enumerate(region.activations)]
    table += [{**sig(n), "storage": "output", "index": i} for i, n in enumerate(region.outputs)]
    table.append({"name": "ext0.workspace", "dtype": "uint8", "shape": [payload.workspace_bytes],
                  "storage": "arena", "offset": 0})
    graph_doc = {"version": 1, "arena_bytes": payload.workspace_bytes, "tensors": table,
                 "calls": [{"func": "ext0", "args": list(range(len(table)))}]}
    main = writer.add(json.dumps(graph_doc).encode(), "zstd")
    manifest = {
        "format": "dsopack/1", "name": "json_e2e",
        "producer": {"dsopack": "0.1.0", "cc": CC, "cflags": ["-O2"]},
        "target": {"triple": f"{platform.machine()}-linux-gnu", "machine": platform.machine()},
        "requires": [], "checksum": "xxh3-64", "entry": "main",
        "inputs": [sig(n) for n in region.activations], "outputs": [sig(n) for n in region.outputs],
        "modules": [{"name": "weights", "kind": "params", "tensors": tensors},
                    {"name": "ext0", "kind": "json", "imports": ["weights"], "functions": ["ext0"], "payload": ext0},
                    {"name": "main", "kind": "graph", "imports": ["ext0"], "payload": main}],
    }
    blob, stub, api = tmp_path / "model.blob", tmp_path / "stub.s", tmp_path / "api.c"
    writer.write(str(blob), manifest)
    write_incbin_stub(str(stub), str(blob))
    api.write_text('#include "dpk_abi.h"\nDPK_EXPORT const dpk_backend_api *__dpk_api = 0;\n')
    out = str(tmp_path / "model.so")
    _run([CC, "-shared", "-fPIC", f"-I{ROOT}/runtime_c/include", "-o", out, str(api), str(stub)])
    return out


def dpk_run_outputs(dpk_run, model: str, tmp_path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    argv = [dpk_run, model]
    for name, value in feeds.items():
        np.save(tmp_path / f"in_{name}.npy", value)
        argv.append(f"{name}={tmp_path / f'in_{name}.npy'}")
    outdir = tmp_path / "outs"
    result = subprocess.run(argv + ["-o", str(outdir), "--verify"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {p[:-4]: np.load(outdir / p) for p in os.listdir(outdir)}


def test_hand_built_model_runs_in_dpk_run(dpk_run, tmp_path):
    graph, x = mlp_graph(batch=3)
    got = dpk_run_outputs(dpk_run, hand_built_model(tmp_path, graph), tmp_path, {"x": x})
    ref.assert_close(got["probs"], evaluate_approx(graph, {"x": x})["probs"])


def test_hand_built_model_with_a_bad_payload_fails_at_load(dpk_run, tmp_path):
    graph, x = mlp_graph()
    doc = json.loads(JsonBackend().lower(whole_region(graph), graph).data)
    doc["nodes"][2]["inputs"][1] = "fc9.weight"
    model = hand_built_model(tmp_path, graph, payload_data=json.dumps(doc).encode())
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, model, f"x={tmp_path / 'x.npy'}"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "json module 'ext0': node 2 (dense): input 'fc9.weight' is not an input" in result.stderr


def test_built_model_with_every_json_op_runs_in_dpk_run(dpk_run, tmp_path, monkeypatch):
    """The whole pipeline: a YAML manifest -> packager.build -> dpk-run, all nodes in one json region."""
    import yaml

    from packager.build import build

    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    weights = {"w1": rng.standard_normal((12, 6)).astype(np.float32), "b1": rng.standard_normal(12).astype(np.float32),
               "m": rng.standard_normal((2, 4, 5)).astype(np.float32),
               "s": rng.uniform(0.5, 2, (1, 5)).astype(np.float32), "k": rng.standard_normal(3).astype(np.float32)}
    np.savez(tmp_path / "w.npz", **weights)
    nodes = [{"op": "dense", "inputs": ["x", "w1", "b1"], "output": "h"},
             {"op": "tanh", "inputs": ["h"], "output": "t"},
             {"op": "reshape", "inputs": ["t"], "output": "r", "shape": [2, -1, 4]},
             {"op": "matmul", "inputs": ["r", "m"], "output": "mm"},
             {"op": "div", "inputs": ["mm", "s"], "output": "d"},
             {"op": "sigmoid", "inputs": ["d"], "output": "g"},
             {"op": "sub", "inputs": ["g", "d"], "output": "e"},
             {"op": "softmax", "inputs": ["e"], "output": "p", "axis": 1},
             {"op": "flatten", "inputs": ["p"], "output": "f", "axis": 1},
             {"op": "relu", "inputs": ["f"], "output": "y0"},
             {"op": "add", "inputs": ["z", "k"], "output": "zk"},
             {"op": "mul", "inputs": ["zk", "zk"], "output": "y1"}]
    doc = {"name": "allops", "model": {"graph": {
        "inputs": {"x": {"shape": [2, 6], "dtype": "float32"}, "z": {"shape": [4, 3], "dtype": "float32"}},
        "weights": "w.npz", "nodes": nodes, "outputs": ["y0", "y1"]}}, "backends": ["json"]}
    (tmp_path / "allops.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    model = str(tmp_path / "allops.so")
    build(str(tmp_path / "allops.yaml"), model, quiet=True)

    feeds = {"x": rng.standard_normal((2, 6)).astype(np.float32), "z": rng.standard_normal((4, 3)).astype(np.float32)}
    graph_nodes = [Node(n["op"], n["inputs"], n["output"], {k: v for k, v in n.items()
                                                            if k not in ("op", "inputs", "output")}) for n in nodes]
    graph = make_graph(graph_nodes, feeds, weights, ["y0", "y1"])
    want = evaluate_approx(graph, feeds)
    got = dpk_run_outputs(dpk_run, model, tmp_path, feeds)
    for name in ("y0", "y1"):
        ref.assert_close(got[name], want[name], err_msg=name)
