"""The convolution family: 1-D Conv and pools, pooling dilations, ConvTranspose, Resize and Upsample.

- host kernels (conv_transpose2d, resize, dilated pools) against the NumPy references of
  tests/reference.py, many nodes compiled into one library;
- ONNX models against onnxruntime: a 1-D net, a 2-D net, Resize at every opset it changed and Upsample;
- ONNX's own Resize and Upsample conformance cases: their scales, sizes and roi are graph inputs fed by
  the data set, and dsopack needs them at build time, so (as test_onnx_conformance_reduce.py does for
  axes) they become initializers holding the data set's values; every case must then pass;
- every error the converters and the registry raise for these ops.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import loader
import reference as ref
from kernel_harness import compile_sources, lower_node
from packager import ops
from packager.build import build
from packager.ir import BuildError, Node, TensorType
from packager.spec import Target, from_onnx
from test_onnx import C, build_and_compare, error_of, make_model, save

RNG = np.random.default_rng(14)


def rand(*shape):
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


# ---------------------------------------------------------------------------
# Host kernels against the references: every case in one library


def run_all(cases, out_dir):
    """[(op, inputs, attrs)] lowered by the host backend, compiled together once, each run: the outputs."""
    lowered = []
    for k, (op, inputs, attrs) in enumerate(cases):
        backend, region, graph = lower_node(op, inputs, **attrs)
        region.name = f"host_{op}_{k}"
        lowered.append((region, graph, backend.lower(region, graph)))
    lib = compile_sources([c for _, _, c in lowered], str(out_dir))
    outputs = []
    for (region, graph, _), (_, inputs, _) in zip(lowered, cases):
        out = np.full(graph.types["y"].shape, np.nan, np.float32)
        lib.call(region.name, *inputs, out)
        outputs.append(out)
    return outputs


CONV_TRANSPOSE = [  # (x shape, w shape, attrs)
    ((1, 2, 3, 4), (2, 3, 2, 2), {"strides": [2, 2]}),
    ((2, 4, 5, 3), (4, 1, 3, 2), {"strides": [3, 2], "pads": [1, 0, 2, 1], "dilations": [2, 1], "groups": 2}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 1], "pads": [1, 1, -1, -2]}),  # output_padding: negative end pads
    ((1, 1, 1, 7), (1, 4, 1, 5), {"strides": [1, 3], "pads": [0, 2, 0, 2]}),  # a 1-D one, lifted
]
RESIZE = [  # (x shape, attrs without sizes and scales, scales)
    ((2, 3, 5, 4), {"mode": "linear"}, [1.0, 1.0, 2.0, 1.5]),
    ((1, 2, 6, 7), {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, [1.0, 1.0, 0.5, 1.7]),
    ((1, 1, 9), {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, [1.0, 1.0, 0.34]),
    ((2, 3, 4), {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     [1.0, 2.0, 2.5]),
    ((1, 2, 5, 5), {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, [1.0, 1.0, 1.6, 0.6]),
    ((1, 1, 3, 4), {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nearest",
                    "nearest_mode": "ceil"}, [1.0, 1.0, 2.0, 1.5]),
    ((1, 2, 8, 6), {"mode": "cubic", "antialias": 1, "exclude_outside": 1}, [1.0, 1.0, 0.5, 0.7]),
    ((1, 1, 4, 5), {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                    "roi": [0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2], "extrapolation_value": 7.0}, [1.0, 1.0, 1.5, 1.2]),
]
POOLS = [  # (op, x shape, attrs)
    ("maxpool2d", (1, 2, 7, 8), {"kernel": [2, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1], "strides": [1, 2]}),
    ("avgpool2d", (2, 1, 6, 6), {"kernel": [3, 2], "dilations": [2, 3], "pads": [1, 0, 2, 1]}),
    ("avgpool2d", (1, 1, 5, 5), {"kernel": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
]


def test_host_kernels_match_the_references(tmp_path):
    cases, want = [], []
    for x_shape, w_shape, attrs in CONV_TRANSPOSE:
        x, w, b = rand(*x_shape), rand(*w_shape), rand(w_shape[1] * attrs.get("groups", 1))
        cases.append(("conv_transpose2d", [x, w, b], attrs))
        want.append(ref.conv_transpose2d(x, w, b, **attrs))
    for x_shape, attrs, scales in RESIZE:
        x = rand(*x_shape)
        sizes = [int(np.floor(d * s)) for d, s in zip(x_shape, scales)]
        cases.append(("resize", [x], dict(attrs, sizes=sizes, scales=scales)))
        want.append(ref.resize(x, sizes, scales, **attrs))
    for op, x_shape, attrs in POOLS:
        x = rand(*x_shape) - 2.0  # all negative: padding taken as 0 would show for max
        cases.append((op, [x], attrs))
        include = attrs.get("count_include_pad")
        reduce = ref.avgpool2d if op == "avgpool2d" else ref.maxpool2d
        plain = {k: v for k, v in attrs.items() if k != "count_include_pad"}
        want.append(ref._pool(np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)]), plain["kernel"], (1, 1), 0,
                              lambda v: v.mean(axis=-1), plain["dilations"]) if include else reduce(x, **plain))
    for (op, _, attrs), got, expected in zip(cases, run_all(cases, tmp_path), want):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5, err_msg=f"{op} {attrs}")


def test_conv_transpose_scatters_each_tap_where_the_definition_puts_it(tmp_path):
    """One input pixel of 1 and a kernel of distinct values: the output is the kernel, placed at
    (ih * stride - pad), taps dilations apart; everything else is the bias."""
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 2] = 1.0
    w = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    (y,) = run_all([("conv_transpose2d", [x, w, np.array([0.5], np.float32)],
                     {"strides": [2, 2], "dilations": [1, 2], "pads": [1, 0, 0, 0]})], tmp_path)
    expected = np.full((1, 1, 5, 7), 0.5, np.float32)  # (3-1)*2 + 2 - 1 rows, (3-1)*2 + 3 columns
    for kh in range(2):
        for kw in range(2):
            expected[0, 0, 1 * 2 + kh - 1, 2 * 2 + kw * 2] += w[0, 0, kh, kw]
    np.testing.assert_array_equal(y, expected)


# ---------------------------------------------------------------------------
# ONNX models against onnxruntime


def test_a_1d_net_matches_onnxruntime(tmp_path, cache):
    """Conv1d (grouped, dilated, padded), MaxPool1d (ceil_mode), AveragePool1d (count_include_pad), a
    ConvTranspose1d (stride, output_padding, groups), GlobalAveragePool and GlobalMaxPool on N, C, L."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", group=2, pads=[2, 1], dilations=[2],
                         strides=[1]),
        helper.make_node("MaxPool", ["c"], ["m"], name="mp", kernel_shape=[3], strides=[2], ceil_mode=1, pads=[1, 0]),
        helper.make_node("AveragePool", ["m"], ["a"], name="ap", kernel_shape=[2], pads=[1, 1], count_include_pad=1),
        helper.make_node("ConvTranspose", ["a", "w2", "b2"], ["t"], name="ct", strides=[2], group=2,
                         output_padding=[1], pads=[1, 0]),
        helper.make_node("GlobalAveragePool", ["t"], ["g"], name="gap"),
        helper.make_node("GlobalMaxPool", ["t"], ["h"], name="gmp"),
    ]
    inits = {"w1": rand(4, 2, 3), "b1": rand(4), "w2": rand(4, 3, 3), "b2": rand(6)}
    model = make_model(nodes, {"x": ("float32", (2, 4, 19))}, inits, {"t": "float32", "g": "float32",
                                                                        "h": "float32"}, 17)
    build_and_compare(save(model, tmp_path / "net1d.onnx"), {"x": rand(2, 4, 19)}, tmp_path)


def test_a_2d_net_matches_onnxruntime(tmp_path, cache):
    """ConvTranspose2d with everything (strides, pads, dilations, groups, output_padding; output_shape),
    MaxPool with dilations, and the Resize forms exporters write: bilinear (half_pixel,
    pytorch_half_pixel, align_corners) by sizes and by scales, nearest (asymmetric, floor)."""
    size = lambda *v: C(np.array(v, np.int64))  # noqa: E731
    scale = lambda *v: C(np.array(v, np.float32))  # noqa: E731
    ins = {"x": rand(1, 4, 5, 6), "w": C(rand(4, 3, 3, 2)), "b": C(rand(6)), "w3": C(rand(6, 2, 2, 3)),
           "s1": size(1, 6, 17, 9), "s2": scale(1, 1, 2.5, 0.5), "s3": size(1, 6, 7, 7), "s4": scale(1, 1, 2, 3)}
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], name="ct", strides=[2, 3], pads=[1, 0, 0, 2],
                         dilations=[1, 2], group=2, output_padding=[1, 2]),
        helper.make_node("ConvTranspose", ["t", "w3"], ["t2"], name="ct2", strides=[2, 1], output_shape=[23, 20]),
        helper.make_node("MaxPool", ["t"], ["p"], name="mp", kernel_shape=[2, 3], dilations=[3, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["t", "", "", "s1"], ["r1"], name="bilinear", mode="linear"),
        helper.make_node("Resize", ["t", "", "s2"], ["r2"], name="pytorch", mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Resize", ["p", "", "", "s3"], ["r3"], name="corners", mode="linear",
                         coordinate_transformation_mode="align_corners"),
        helper.make_node("Resize", ["x", "", "s4"], ["r4"], name="nearest", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ]
    inputs = {"x": ("float32", (1, 4, 5, 6))}
    inits = {n: a.array for n, a in ins.items() if isinstance(a, C)}
    model = make_model(nodes, inputs, inits, {n: "float32" for n in ("t2", "r1", "r2", "r3", "r4")}, 13)
    build_and_compare(save(model, tmp_path / "net2d.onnx"), {"x": ins["x"]}, tmp_path)


def test_average_pool_ceil_mode_with_count_include_pad_matches_onnxruntime(tmp_path, cache):
    """A last window past the padding averages over its taps inside the padded input: the IR pool (its
    padding extended) times a constant factor per output position."""
    nodes = [
        helper.make_node("AveragePool", ["x"], ["y"], name="p2", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 0],
                         ceil_mode=1, count_include_pad=1),
        helper.make_node("AveragePool", ["v"], ["z"], name="p1", kernel_shape=[3], strides=[3], pads=[1, 1],
                         ceil_mode=1, count_include_pad=1, dilations=[1]),
    ]
    model = make_model(nodes, {"x": ("float32", (1, 2, 6, 7)), "v": ("float32", (2, 3, 9))}, {},
                       {"y": "float32", "z": "float32"}, 19)
    got = build_and_compare(save(model, tmp_path / "ceil.onnx"), {"x": rand(1, 2, 6, 7), "v": rand(2, 3, 9)}, tmp_path)
    assert got["y"].shape == (1, 2, 4, 4) and got["z"].shape == (2, 3, 4)  # the last windows do run past


def test_3d_pools_match_onnxruntime(tmp_path, cache):
    """A 3-D pool runs as a 2-D pool over (H, W), then one over D."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], name="mp", kernel_shape=[2, 3, 2], strides=[1, 2, 2],
                         pads=[1, 1, 0, 0, 1, 1], dilations=[2, 1, 1]),
        helper.make_node("AveragePool", ["x"], ["a"], name="ap", kernel_shape=[3, 2, 2], strides=[2, 1, 2],
                         pads=[1, 0, 1, 1, 1, 0], ceil_mode=1, count_include_pad=1),
        helper.make_node("AveragePool", ["x"], ["b"], name="bp", kernel_shape=[2, 2, 3], pads=[0, 1, 1, 1, 0, 1]),
    ]
    model = make_model(nodes, {"x": ("float32", (1, 2, 6, 5, 7))}, {}, {k: "float32" for k in "mab"}, 19)
    build_and_compare(save(model, tmp_path / "pool3d.onnx"), {"x": rand(1, 2, 6, 5, 7)}, tmp_path)


@pytest.mark.parametrize("opset", [10, 11, 13, 18, 19])
def test_resize_at_each_version_matches_onnxruntime(tmp_path, cache, opset):
    """Resize-10 (X, scales: asymmetric, nearest rounding down), 11 (roi, scales, sizes; the coordinate
    modes), 13, 18 (axes, keep_aspect_ratio_policy, antialias), 19."""
    x = rand(1, 2, 4, 6)
    if opset == 10:
        ins = {"x": x, "scales": C(np.array([1, 1, 0.6, 1.7], np.float32))}
        attrs = {"mode": "nearest"}
    elif opset < 18:
        ins = {"x": x, "roi": C(np.zeros(0, np.float32)), "scales": C(np.zeros(0, np.float32)),
               "sizes": C(np.array([1, 2, 7, 3], np.int64))}
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:
        ins = {"x": x, "roi": None, "scales": None, "sizes": C(np.array([9, 5], np.int64))}
        attrs = {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_larger", "antialias": 1}
    path, feeds = _single(tmp_path, "Resize", ins, opset, **attrs)
    build_and_compare(path, feeds, tmp_path)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_matches_onnxruntime(tmp_path, cache, opset):
    x = rand(1, 2, 3, 4)
    scales = np.array([1, 1, 2, 3], np.float32)
    ins = {"x": x} if opset < 9 else {"x": x, "scales": C(scales)}
    attrs = {"scales": scales.tolist()} if opset < 9 else {}
    path, feeds = _single(tmp_path, "Upsample", ins, opset, mode="nearest", **attrs)
    build_and_compare(path, feeds, tmp_path)


def _single(tmp_path, op, ins, opset, **attrs):
    names = list(ins)
    inputs = {n: (a.dtype.name, a.shape) for n, a in ins.items() if isinstance(a, np.ndarray)}
    inits = {n: a.array for n, a in ins.items() if isinstance(a, C)}
    node = helper.make_node(op, [n if ins[n] is not None else "" for n in names], ["y"], name="n", **attrs)
    path = save(make_model([node], inputs, inits, {"y": "float32"}, opset), tmp_path / f"{op}_{opset}.onnx")
    return path, {n: a for n, a in ins.items() if isinstance(a, np.ndarray)}


# ---------------------------------------------------------------------------
# ONNX's Resize and Upsample conformance cases, with their build-time inputs as initializers


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        found = collect_testcases()
    return [c for c in found if c.model is not None and "_expanded" not in c.name
            and c.model.graph.node[0].op_type in ("Resize", "Upsample")]


CASES = _cases()


def test_the_resize_cases_are_collected():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_resize_conformance_with_build_time_scales(tmp_path, cache, case):
    (inputs, outputs), = case.data_sets
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    feeds = dict(zip([i.name for i in model.graph.input], inputs))
    x = model.graph.node[0].input[0]
    for name in [n for n in feeds if n != x]:  # roi, scales, sizes
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds.pop(name)), name))
    keep = [i for i in model.graph.input if i.name == x]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    path = save(model, tmp_path / "m.onnx")
    build(from_onnx(path, target=Target(cflags=["-O1"])), str(tmp_path / "m.so"), quiet=True)
    with loader.load(str(tmp_path / "m.so")) as m:
        got = m.run(**feeds)[model.graph.output[0].name]
    assert got.shape == outputs[0].shape
    np.testing.assert_allclose(got, outputs[0], rtol=case.rtol, atol=max(case.atol, 1e-6), err_msg=case.name)


# ---------------------------------------------------------------------------
# Errors


def _error(tmp_path, nodes, inputs, inits, opset=17):
    model = make_model(nodes, inputs, inits, {"y": "float32"}, opset)
    return error_of(save(model, tmp_path / "e.onnx"))


X4 = {"x": ("float32", (1, 2, 4, 4))}


@pytest.mark.parametrize("node,inputs,inits,needle", [
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="t"), {"x": ("float32", (1, 1, 2, 3, 3))},
     {"w": rand(1, 1, 2, 2, 2)}, "only 1-D and 2-D transposed convolutions (3-D NCL or 4-D NCHW input) are supported"),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="t", kernel_shape=[3, 3]), X4, {"w": rand(2, 1, 2, 2)},
     "kernel_shape [3, 3] differs from the weight's [2, 2]"),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="t", strides=[2]), X4, {"w": rand(2, 1, 2, 2)},
     "strides [2] must have 2 values for a 2-D transposed convolution"),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="t", pads=[3, 3, 3, 3]), X4, {"w": rand(2, 1, 2, 2)},
     "pads [3, 3, 3, 3] leave an output of -1 x -1"),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="t"), X4, {"w": rand(3, 1, 2, 2)},
     "W's first dimension must be x's channels (2), a multiple of groups (1)"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], name="r"), {"x": ("float32", (1, 2, 4, 4)),
                                                                   "s": ("float32", (4,))}, {},
     "node 'r' (Resize): scales ('s') must be known at build time"),
    (helper.make_node("Resize", ["x", "", "s", "z"], ["y"], name="r"), X4,
     {"s": np.ones(4, np.float32), "z": np.array([1, 2, 4, 4], np.int64)}, "exactly one of scales and sizes"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], name="r"), X4, {"s": np.ones(3, np.float32)},
     "scales [1.0, 1.0, 1.0] must have one value per axis (4)"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", mode="area"), X4, {"s": np.ones(4, np.float32)},
     "attribute 'mode' must be one of nearest, linear, cubic, got area"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", antialias=1), X4, {"s": np.ones(4, np.float32)},
     "antialias=1 applies to modes linear and cubic, not nearest"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], name="r"), X4, {"s": np.array([1, 1, 2, -1], np.float32)},
     "must be >= 0 and scales [1.0, 1.0, 2.0, -1.0] > 0"),
    (helper.make_node("Resize", ["x", "", "", "z"], ["y"], name="r", axes=[2, 2]), X4,
     {"z": np.array([3, 3], np.int64)}, "axes [2, 2] must be distinct axes of the input's 4 dimensions"),
    (helper.make_node("Resize", ["x", "", "", "z"], ["y"], name="r", keep_aspect_ratio_policy="fit"), X4,
     {"z": np.array([1, 2, 3, 3], np.int64)}, "keep_aspect_ratio_policy 'fit' is not one of stretch"),
    (helper.make_node("Resize", ["x", "roi", "", "z"], ["y"], name="r",
                      coordinate_transformation_mode="tf_crop_and_resize"), X4,
     {"roi": np.zeros(3, np.float32), "z": np.array([1, 2, 3, 3], np.int64)}, "roi [0.0, 0.0, 0.0] must have 2 values per axis (8)"),
    (helper.make_node("Resize", ["x", "roi", "s"], ["y"], name="r", coordinate_transformation_mode="tf_crop_and_resize"),
     X4, {"roi": np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32), "s": np.ones(4, np.float32)},
     "tf_crop_and_resize with scales is not supported: the spec's output length"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2]), X4, {},
     "kernel_shape [2] must have 2 values for a 2-D window"),
])
def test_conversion_errors(tmp_path, node, inputs, inits, needle):
    opset = 19 if "axes" in str(node) or "keep_aspect" in str(node) or "antialias" in str(node) else 17
    assert needle in _error(tmp_path, [node], inputs, inits, opset)


def test_upsample_scales_must_cover_every_dimension(tmp_path):
    node = helper.make_node("Upsample", ["x"], ["y"], name="u", scales=[2.0, 2.0])
    model = make_model([node], X4, {}, {"y": "float32"}, 7)
    assert "node 'u' (Upsample): scales must have one value per dimension (4)" in error_of(save(model, tmp_path / "u.onnx"))


@pytest.mark.parametrize("op,types,attrs,needle", [
    ("conv_transpose2d", [(1, 2, 3, 3), (2, 1, 2, 2), (3,)], {}, r"b must have shape \[1\]"),
    ("conv_transpose2d", [(1, 2, 3), (2, 1, 2, 2)], {}, "x must be 4-D NCHW"),
    ("conv_transpose2d", [(1, 2, 3, 3), (2, 1, 2, 2)], {"pads": [0, 0, 0]}, r"attribute 'pads' must be 4 integers"),
    ("resize", [(1, 2, 3)], {"sizes": [1, 2], "scales": [1.0, 1.0]}, "must have one value per dimension"),
    ("resize", [(1, 2, 3)], {"sizes": [1, 2, 3], "scales": [1.0, 1.0, 1.0],
                             "coordinate_transformation_mode": "tf_crop_and_resize"},
     r"tf_crop_and_resize needs roi \[starts, ends\] of 6 values"),
    ("resize", [(1, 2, 3)], {"sizes": [1, 2, 3], "scales": [1.0, 1.0, "a"]}, "attribute 'scales' must be a list of numbers"),
    ("resize", [(1, 0, 3)], {"sizes": [1, 2, 3], "scales": [1.0, 1.0, 1.0]}, "cannot resize an empty dimension"),
])
def test_registry_errors(op, types, attrs, needle):
    node = Node(op, [f"t{i}" for i in range(len(types))], "y", dict(attrs), "n")
    with pytest.raises(BuildError, match=needle):
        ops.normalize(node)
        ops.infer(node, [TensorType(s, "float32") for s in types])


# ---------------------------------------------------------------------------
# The cblas backend's conv_transpose2d (sgemm + col2im): serial and split over threads


CBLAS_CASES = [  # (input shapes, attrs): each above the parallel threshold
    ([(2, 16, 9, 11), (16, 24, 3, 3), (24,)], {"strides": [2, 2], "pads": [1, 1, 0, -1]}),
    ([(1, 32, 8, 8), (32, 8, 2, 3)], {"strides": [2, 3], "dilations": [2, 1], "groups": 4, "pads": [0, 1, 1, 0]}),
]


@pytest.mark.parametrize("shapes,attrs", CBLAS_CASES)
def test_cblas_conv_transpose_matches_the_reference_serial_and_split(tmp_path, shapes, attrs):
    import kernel_harness as kh
    from packager.backends.cblas import CblasBackend

    inputs = [rand(*s) for s in shapes]
    weights = tuple(range(1, len(shapes)))
    _, region, graph = lower_node("conv_transpose2d", inputs, weights, backend=CblasBackend(), **attrs)
    assert CblasBackend().supports(region.nodes[0], graph) is None
    lowered = CblasBackend().lower(region, graph)
    assert "cblas_sgemm(" in lowered.source and "dpk_host_parallel(" in lowered.source
    expected = ref.conv_transpose2d_approx(*inputs, **attrs)
    for parallel in (False, True):  # the harness's stand-in pool cuts the units into 3 ranges
        lib = kh.compile_sources([lowered], str(tmp_path), parallel=parallel)
        out = np.full(graph.types["y"].shape, np.nan, np.float32)
        lib.call(region.name, *inputs, out, np.zeros(lowered.workspace_bytes, np.uint8))
        ref.assert_close(out, expected, f"cblas conv_transpose2d, {'split' if parallel else 'serial'}")


def test_cblas_leaves_small_groups_of_conv_transpose_to_host():
    from packager.backends.cblas import CblasBackend

    _, region, graph = lower_node("conv_transpose2d", [rand(1, 8, 4, 4), rand(8, 1, 3, 3)], (1,), groups=8)
    assert "host's direct loop is faster" in CblasBackend().supports(region.nodes[0], graph)


def test_host_tasks_give_the_same_bits_serial_and_split(tmp_path):
    """conv_transpose2d's planes and resize's planes are independent units: cut into 3 ranges by the
    harness's stand-in pool, the outputs are bit-identical to a serial run."""
    import kernel_harness as kh

    cases = [("conv_transpose2d", [rand(2, 8, 12, 12), rand(8, 6, 3, 3)], {"strides": [2, 2], "pads": [1, 1, 0, 0]}),
             ("resize", [rand(2, 8, 20, 20)], {"sizes": [2, 8, 50, 30], "scales": [1.0, 1.0, 2.5, 1.5],
                                               "mode": "cubic"})]
    for op, inputs, attrs in cases:
        backend, region, graph = lower_node(op, inputs, **attrs)
        lowered = backend.lower(region, graph)
        assert "dpk_host_parallel(" in lowered.source, "the case is meant to be above the threshold"
        runs = []
        for parallel in (False, True):
            before = kh.KernelLib.ranges_run()
            lib = kh.compile_sources([lowered], str(tmp_path), parallel=parallel)
            out = np.full(graph.types["y"].shape, np.nan, np.float32)
            lib.call(region.name, *inputs, out)
            assert (kh.KernelLib.ranges_run() - before == 3) == parallel
            runs.append(out)
        np.testing.assert_array_equal(runs[0], runs[1], err_msg=op)


def test_a_yaml_graph_uses_the_new_ops(tmp_path):
    """conv_transpose2d, resize and a dilated pool written in a manifest's graph, run against the references."""
    w = rand(3, 2, 2, 2)
    np.savez(tmp_path / "w.npz", w=w)
    nodes = [{"op": "conv_transpose2d", "inputs": ["x", "w"], "output": "t", "strides": 2, "pads": [0, 0, -1, 0]},
             {"op": "maxpool2d", "inputs": ["t"], "output": "p", "kernel": 2, "dilations": [2, 1]},
             {"op": "resize", "inputs": ["p"], "output": "y", "sizes": [1, 2, 10, 7], "scales": [1, 1, 2, 1],
              "mode": "linear", "coordinate_transformation_mode": "align_corners"}]
    spec = {"name": "yaml_conv_family", "backends": ["host"],
            "model": {"graph": {"inputs": {"x": {"shape": [1, 3, 4, 4], "dtype": "float32"}}, "weights": "w.npz",
                                "nodes": nodes, "outputs": ["y"]}}}
    build(spec, str(tmp_path / "m.so"), base_dir=str(tmp_path), quiet=True)
    x = rand(1, 3, 4, 4)
    with loader.load(str(tmp_path / "m.so")) as m:
        got = m.run(x=x)["y"]
    t = ref.conv_transpose2d(x, w, strides=(2, 2), pads=(0, 0, -1, 0))
    p = ref.maxpool2d(t, (2, 2), dilations=(2, 1))
    want = ref.resize(p, [1, 2, 10, 7], [1.0, 1.0, 2.0, 1.0], mode="linear",
                      coordinate_transformation_mode="align_corners")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
