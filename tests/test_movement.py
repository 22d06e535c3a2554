"""Data movement at run time: gather, gather_elements, slice (and Split), expand, tile, pad, depth_to_space,
space_to_depth, trilu.

The host kernels run against tests/reference.py on several dtypes (one compiled library for all the cases);
ONNX graphs of these ops run against onnxruntime, at a new and an old opset; ONNX's own conformance cases
whose parameters (starts, pads, repeats, k...) are graph inputs run with those made constants, against the
cases' expected outputs; an index out of range at run time is an error, not a read out of bounds; each
BuildError names what is wrong.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import loader
import reference as ref
from kernel_harness import KernelError, compile_sources, lower_node
from packager import ops
from packager.build import build
from packager.frontends.onnx import load_graph
from packager.ir import BuildError, Node, TensorType
from packager.spec import Target, from_onnx

RNG = np.random.default_rng(7)
BIG = 2 ** 62  # a bound past any dimension: clamped


def data(*shape, dtype="float32"):
    """Distinct values of `dtype` (bool: a pattern), so a misplaced element shows."""
    if dtype == "bool":
        return RNG.integers(0, 2, size=shape).astype(bool)
    values = RNG.permutation(int(np.prod(shape, dtype=np.int64))) % 120 - 60
    return values.reshape(shape).astype(dtype)


# ---- host kernels against the references -------------------------------------------------------------------

KERNEL_CASES = [  # (id, op, inputs, attrs)
    ("gather_f32_axis0", "gather", [data(5, 4), np.array([[0, -1], [4, 2]], np.int64)], {"axis": 0}),
    ("gather_u8_scalar_index", "gather", [data(3, 6, dtype="uint8"), np.array(-2, np.int32)], {"axis": 1}),
    ("gather_f16_last_axis", "gather", [data(2, 3, 4, dtype="float16"), np.array([3, 0, 0], np.int64)],
     {"axis": -1}),
    ("gather_bool", "gather", [data(4, 3, dtype="bool"), np.array([1, 3], np.int32)], {"axis": 0}),
    ("gather_elements_i64", "gather_elements", [data(3, 4, dtype="int64"), np.array([[3, -4], [0, 1], [-1, 2]],
                                                                                   np.int32)], {"axis": 1}),
    ("gather_elements_f32_axis0", "gather_elements", [data(2, 3, 4), np.array(RNG.integers(-2, 2, (3, 2, 4)),
                                                                                np.int64)], {"axis": 0}),
    ("slice_f32", "slice", [data(4, 5, 6)], {"starts": [1, -1, 0], "ends": [3, -6, BIG], "steps": [1, -2, 3]}),
    ("slice_u8_reversed", "slice", [data(3, 7, dtype="uint8")], {"starts": [BIG, 2], "ends": [-BIG, -1],
                                                                  "steps": [-1, 1]}),
    ("slice_f64_empty", "slice", [data(3, 4, dtype="float64")], {"starts": [2, 0], "ends": [1, 4], "steps": [1, 1]}),
    ("expand_i16", "expand", [data(3, 1, dtype="int16")], {"shape": [2, 1, 4]}),
    ("expand_f64_scalar", "expand", [np.array(2.5)], {"shape": [2, 2]}),
    ("tile_i8", "tile", [data(2, 3, dtype="int8")], {"repeats": [2, 3]}),
    ("tile_f32_3d", "tile", [data(2, 1, 3)], {"repeats": [1, 3, 2]}),
    ("pad_constant_value", "pad", [data(2, 3), np.array([9.5], np.float32)],
     {"pads": [1, 0, 0, 2], "mode": "constant"}),
    ("pad_constant_zero_i64", "pad", [data(2, 3, dtype="int64")], {"pads": [0, 2, 1, 1], "mode": "constant"}),
    ("pad_reflect_i32", "pad", [data(3, 4, dtype="int32")], {"pads": [2, 3, 1, 5], "mode": "reflect"}),
    ("pad_edge_u8", "pad", [data(2, 3, dtype="uint8")], {"pads": [1, 2, 3, 1], "mode": "edge"}),
    ("pad_wrap_f16", "pad", [data(2, 3, dtype="float16")], {"pads": [1, 4, 2, 1], "mode": "wrap"}),
    ("pad_crop_and_wrap", "pad", [data(3, 5)], {"pads": [-1, 2, 1, -2], "mode": "wrap"}),
    ("pad_crop_and_reflect", "pad", [data(2, 6, 3)], {"pads": [0, -2, 1, 1, 3, -1], "mode": "reflect"}),
    ("depth_to_space_dcr", "depth_to_space", [data(2, 8, 2, 3)], {"blocksize": 2, "mode": "DCR"}),
    ("depth_to_space_crd_i64", "depth_to_space", [data(1, 18, 2, 2, dtype="int64")], {"blocksize": 3, "mode": "CRD"}),
    ("space_to_depth_dcr", "space_to_depth", [data(2, 3, 4, 6)], {"blocksize": 2}),
    ("space_to_depth_crd_u8", "space_to_depth", [data(1, 2, 6, 3, dtype="uint8")], {"blocksize": 3, "mode": "CRD"}),
    ("trilu_upper", "trilu", [data(2, 3, 5)], {"upper": 1, "k": 1}),
    ("trilu_lower_bool", "trilu", [data(4, 3, dtype="bool")], {"upper": 0, "k": -1}),
]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """Every case lowered by the host backend into one library: region name -> (lib, graph)."""
    lowered = []
    for i, (_, op, inputs, attrs) in enumerate(KERNEL_CASES):
        backend, region, graph = lower_node(op, inputs, **attrs)
        region.name = f"move{i}"
        lowered.append((backend.lower(region, graph), graph))
    lib = compile_sources([c for c, _ in lowered], tmp_path_factory.mktemp("move"))
    return lib, [g for _, g in lowered]


@pytest.mark.parametrize("index", range(len(KERNEL_CASES)), ids=[c[0] for c in KERNEL_CASES])
def test_host_kernel_matches_the_reference(kernels, index):
    _, op, inputs, attrs = KERNEL_CASES[index]
    lib, graphs = kernels
    t = graphs[index].types["y"]
    got = np.zeros(t.shape, t.dtype)
    lib.call(f"move{index}", *inputs, got)
    want = getattr(ref, op)(*inputs, **attrs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op,indices,axis", [
    ("gather", np.array([0, 5, 1], np.int64), 0),  # one past the end
    ("gather", np.array([[-6]], np.int32), 0),  # one before the start
    ("gather_elements", np.array([[0, 1, 2], [4, 0, 9]], np.int64), 1),
])
def test_an_index_out_of_range_is_an_error_at_run_time(tmp_path, op, indices, axis):
    x = data(5, 5)
    backend, region, graph = lower_node(op, [x, indices], axis=axis)
    lib = compile_sources([backend.lower(region, graph)], tmp_path)
    out = np.zeros(graph.types["y"].shape, np.float32)
    with pytest.raises(KernelError, match=rf"{op}_0 \({op}\): index -?\d+ at position \d+ is out of range "
                                          rf"for axis {axis} of size 5 \(allowed -5..4\)"):
        lib.call(region.name, x, indices, out)
    assert not out.any()  # the indices are checked before anything moves


# ---- ONNX graphs against onnxruntime -------------------------------------------------------------------------


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _run_both(model, feeds, tmp_path, cache):
    path = str(tmp_path / "m.onnx")
    onnx.checker.check_model(model)
    onnx.save(model, path)
    report = build(path, str(tmp_path / "m.so"), quiet=True)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    with loader.load(report.output) as m:
        got = m.run(**feeds)
        names = [o.name for o in model.graph.output]
        for name, w in zip(names, want):
            assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
            np.testing.assert_array_equal(got[name], w, err_msg=name)
    return report.output


def _graph(nodes, inputs, outputs, inits, opset):
    """The model, its outputs typed by ONNX's shape inference."""
    g = helper.make_graph(nodes, "movement", inputs, [], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    typed = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    # a node ONNX cannot type (the bad ones below): a float output of any shape that passes the checker
    model.graph.output.extend(typed.get(o) or helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outputs)
    return model


def test_onnx_movement_ops_match_onnxruntime(tmp_path, cache):
    """An embedding lookup of run-time int64 token ids, Split by num_outputs (uneven), Slice with negative
    steps, Expand, Tile, Pad (reflect on axes, wrap, constant with a value, negative pads), DepthToSpace,
    SpaceToDepth, Trilu with k, GatherElements: opset 19."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("Split", ["x"], ["s0", "s1", "s2"], axis=3, num_outputs=3),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["sl"]),
        helper.make_node("Expand", ["v", "eshape"], ["ex"]),
        helper.make_node("Tile", ["v", "reps"], ["ti"]),
        helper.make_node("Pad", ["x", "pads_r", "", "pad_axes"], ["pr"], mode="reflect"),
        helper.make_node("Pad", ["x", "pads_w"], ["pw"], mode="wrap"),
        helper.make_node("Pad", ["ids", "pads_c", "fill"], ["pc"], mode="constant"),
        helper.make_node("DepthToSpace", ["x"], ["d2s"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["x"], ["s2d"], blocksize=2),
        helper.make_node("Trilu", ["x", "k"], ["tr"], upper=0),
        helper.make_node("GatherElements", ["x", "gidx"], ["ge"], axis=2),
    ]
    inits = [_const("table", data(10, 4)), _const("st", [5, -1]), _const("en", [0, -BIG]), _const("ax", [3, 1]),
             _const("sp", [-2, -3]), _const("eshape", [2, 1, 3]), _const("reps", [2, 3]),
             _const("pads_r", [1, 2, 2, 3]), _const("pad_axes", [2, -1]), _const("pads_w", [0, -1, 1, 2, 0, 1, 0, 3]),
             _const("pads_c", [1, -1, 0, 2]), _const("fill", np.array(-7, np.int64)), _const("k", np.array(1)),
             _const("gidx", RNG.integers(-4, 4, (1, 8, 2, 6)).astype(np.int64))]
    outputs = ["emb", "s0", "s1", "s2", "sl", "ex", "ti", "pr", "pw", "pc", "d2s", "s2d", "tr", "ge"]
    model = _graph(nodes, [helper.make_tensor_value_info("x", f, [1, 8, 4, 6]),
                           helper.make_tensor_value_info("ids", i64, [2, 3]),
                           helper.make_tensor_value_info("v", f, [3, 1])], outputs, inits, 19)
    feeds = {"x": data(1, 8, 4, 6), "ids": np.array([[0, 9, -1], [3, 3, -10]], np.int64), "v": data(3, 1)}
    so = _run_both(model, feeds, tmp_path, cache)
    with loader.load(so) as m:  # token id 10 of a 10-row table: an error, not a read past the weight
        with pytest.raises(loader.DpkError, match=r"index 10 at position 4 is out of range for axis 0 of size 10"):
            m.run(**{**feeds, "ids": np.array([[0, 1, 2], [3, 10, 5]], np.int64)})


def test_onnx_movement_ops_at_an_old_opset_match_onnxruntime(tmp_path, cache):
    """Opset 9: Slice's starts/ends/axes, Split's sizes and Pad's pads/value are attributes."""
    nodes = [
        helper.make_node("Slice", ["x"], ["sl"], starts=[1, 1], ends=[3, 100], axes=[1, 3]),
        helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[3, 5]),
        helper.make_node("Pad", ["x"], ["p"], pads=[0, 1, 2, 0, 0, 0, 1, 3], mode="constant", value=1.5),
        helper.make_node("Pad", ["x"], ["e"], pads=[0, 0, 1, 2, 0, 0, 2, 1], mode="edge"),
        helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2),
        helper.make_node("Tile", ["x", "reps"], ["t"]),
    ]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 3, 4])],
                   ["sl", "a", "b", "p", "e", "d", "t"], [_const("reps", [1, 2, 1, 2])], 9)
    _run_both(model, {"x": data(2, 8, 3, 4)}, tmp_path, cache)


def test_movement_of_constants_is_folded_at_build_time(tmp_path, cache):
    """With every input a constant, onnx_fold computes the op (no IR node), as onnxruntime would."""
    nodes = [
        helper.make_node("Split", ["c", "sizes"], ["s0", "s1"], axis=1),
        helper.make_node("Tile", ["c", "reps"], ["ti"]),
        helper.make_node("Pad", ["c", "pads", "fill"], ["pc"]),
        helper.make_node("Pad", ["c", "pads_r"], ["pr"], mode="reflect"),
        helper.make_node("DepthToSpace", ["c"], ["d2s"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["c"], ["s2d"], blocksize=2),
        helper.make_node("GatherElements", ["c", "gidx"], ["ge"], axis=3),
        helper.make_node("Trilu", ["c", "k"], ["tr"], upper=0),
        helper.make_node("Add", ["x", "s1"], ["y"]),
    ]
    inits = [_const("c", data(1, 4, 2, 4)), _const("sizes", [1, 3]), _const("reps", [1, 1, 2, 1]),
             _const("pads", [0, 0, 1, -1, 0, 1, 0, 2]), _const("fill", np.array([4.5], np.float32)),
             _const("pads_r", [0, 0, 1, 2, 0, 0, 1, 3]), _const("gidx", RNG.integers(-4, 4, (1, 4, 2, 3))),
             _const("k", np.array(-1))]
    outputs = ["s0", "ti", "pc", "pr", "d2s", "s2d", "ge", "tr", "y"]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], outputs, inits, 19)
    path = str(tmp_path / "c.onnx")
    onnx.save(model, path)
    assert [n.op for n in load_graph(path).nodes] == ["add"]
    _run_both(model, {"x": data(1)}, tmp_path, cache)


# ---- ONNX's conformance cases with their parameters as constants ----------------------------------------------

FROZEN_OPS = {"Slice", "Split", "Expand", "Tile", "Pad", "Trilu", "Squeeze", "Unsqueeze", "Reshape"}
RUN_TIME = {"Pad": {2}}  # inputs left at run time: Pad's constant_value


def _frozen_cases():
    """The cases of FROZEN_OPS whose parameters are graph inputs, those made initializers with the data set's
    values (the conformance run refuses them as they are: dsopack needs shapes and pads at build time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        found = collect_testcases(None)
    cases = []
    for tc in found:
        node = tc.model.graph.node[0] if len(tc.model.graph.node) == 1 else None
        if node is None or node.op_type not in FROZEN_OPS or "_expanded" in tc.name or len(tc.data_sets) != 1:
            continue
        inputs, expected = tc.data_sets[0]
        names = [i.name for i in tc.model.graph.input]
        frozen = {n: a for k, (n, a) in enumerate(zip(names, inputs))
                  if k > 0 and n in node.input[1:] and list(node.input).index(n) not in RUN_TIME.get(node.op_type, ())}
        if frozen:
            cases.append((tc.name, tc.model, frozen, dict(zip(names, inputs)), expected))
    return cases


FROZEN = _frozen_cases()


@pytest.mark.parametrize("case", FROZEN, ids=[c[0] for c in FROZEN])
def test_conformance_case_with_constant_parameters(tmp_path, cache, case):
    name, model, frozen, feeds, expected = case
    model = onnx.ModelProto.FromString(model.SerializeToString())
    kept = [vi for vi in model.graph.input if vi.name not in frozen]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(_const(n, a) for n, a in frozen.items())
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    report = build(from_onnx(path, None, target=Target(cflags=["-O0"])), str(tmp_path / "m.so"), quiet=True)
    with loader.load(report.output) as m:
        got = m.run(**{n: a for n, a in feeds.items() if n not in frozen})
    for out, want in zip(model.graph.output, expected):
        assert got[out.name].dtype == want.dtype and got[out.name].shape == want.shape, out.name
        np.testing.assert_array_equal(got[out.name], want, err_msg=out.name)


def test_the_frozen_cases_cover_every_op():
    assert {c[1].graph.node[0].op_type for c in FROZEN} == FROZEN_OPS


# ---- errors ----------------------------------------------------------------------------------------------------


def _infer(op, shapes, dtypes=None, **attrs):
    node = Node(op, [f"t{i}" for i in range(len(shapes))], "y", attrs, "n")
    ops.normalize(node)
    dtypes = dtypes or ["float32"] * len(shapes)
    return ops.infer(node, [TensorType(tuple(s), d) for s, d in zip(shapes, dtypes)])


@pytest.mark.parametrize("op,shapes,dtypes,attrs,message", [
    ("gather", [(3, 4), (2,)], ["float32", "float32"], {}, r"op gather needs index inputs \(int32, int64\)"),
    ("gather", [(3, 4), (2,)], ["float32", "int64"], {"axis": 2}, r"axis 2 is out of range for 2 dimensions"),
    ("gather_elements", [(3, 4), (4, 4)], ["float32", "int64"], {"axis": 1},
     r"indices must have x's rank and dimensions no larger than x's but along axis 1"),
    ("slice", [(3, 4)], None, {"starts": [0], "ends": [1, 2], "steps": [1, 1]},
     r"starts \[0\] must have 2 values \(one per dimension\)"),
    ("slice", [(3, 4)], None, {"starts": [0, 0], "ends": [1, 2], "steps": [1, 0]}, r"steps \[1, 0\] must not be 0"),
    ("expand", [(3, 4)], None, {"shape": [2, 4]}, r"shape \[2, 4\] does not broadcast with x"),
    ("tile", [(3, 4)], None, {"repeats": [2, -1]}, r"repeats \[2, -1\] must be >= 0"),
    ("pad", [(3, 4)], None, {"pads": [1, 1, 1]}, r"pads \[1, 1, 1\] must have 4 values"),
    ("pad", [(3, 4)], None, {"pads": [-2, 0, -2, 0]}, r"crop more than the input has \(output \[-1, 4\]\)"),
    ("pad", [(3, 0)], None, {"pads": [0, 1, 0, 0], "mode": "edge"}, r"mode 'edge' cannot pad an empty dimension"),
    ("pad", [(3, 4)], None, {"pads": [0, 0, 0, 0], "mode": "mirror"},
     r"attribute 'mode' must be one of constant, reflect, edge, wrap, got mirror"),
    ("pad", [(3, 4), (2,)], None, {"pads": [0, 0, 0, 0]}, r"the pad value must be one element"),
    ("depth_to_space", [(1, 6, 2, 2)], None, {"blocksize": 2},
     r"channels \(6\) must be a multiple of blocksize\^2 \(4\)"),
    ("space_to_depth", [(1, 6, 3, 4)], None, {"blocksize": 2}, r"height \(3\) and width \(4\) must be multiples"),
    ("trilu", [(4,)], None, {}, r"x must be at least 2-D"),
])
def test_bad_nodes_are_refused(op, shapes, dtypes, attrs, message):
    with pytest.raises(BuildError, match=message) as info:
        _infer(op, shapes, dtypes, **attrs)
    assert f"node 'n' (op {op})" in str(info.value)


@pytest.mark.parametrize("node,inits,message", [
    (helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1), {"sizes": [3, 4]},
     r"split sizes \[3, 4\] must be 2 non-negative values \(one per output\) summing to 8 \(axis 1\)"),
    (helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1), {},
     r"axis 1 of size 8 does not split into 3 equal parts"),
    (helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]), {"s": [0], "e": [1], "a": [1, 2]},
     r"starts, ends, axes and steps must have one value each per sliced axis \(got 1, 1, 2, 1\)"),
    (helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]), {"s": [0, 0], "e": [1, 1], "a": [1, -3]},
     r"axes \[1, -3\] are repeated or out of range for rank 2"),
    (helper.make_node("Pad", ["x", "p", "", "a"], ["y"]), {"p": [1, 1, 1], "a": [1]},
     r"pads \[1, 1, 1\] must have 2 values per padded axis \(2\)"),
    (helper.make_node("Tile", ["x", "r"], ["y"]), None, r"repeats \('r'\) must be known at build time"),
])
def test_bad_onnx_nodes_are_refused(tmp_path, node, inits, message):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])]
    if inits is None:  # the parameter is a run-time input
        inputs.append(helper.make_tensor_value_info(node.input[1], TensorProto.INT64, [2]))
        inits = {}
    model = _graph([node], inputs, node.output, [_const(n, np.array(v, np.int64)) for n, v in inits.items()], 18)
    path = str(tmp_path / "bad.onnx")
    onnx.save(model, path)
    with pytest.raises(BuildError, match=message) as info:
        load_graph(path)
    assert f"({node.op_type})" in str(info.value)
