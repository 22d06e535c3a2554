"""Every op: host kernels against the NumPy reference, and the shape/attribute checks.

Each case lowers one node with the host backend, compiles the C the way the
build lays it out (tests/kernel_harness.py), runs it and compares with
tests/reference.py (float64 NumPy, written from the op definitions).
"""

import numpy as np
import pytest

import reference as ref
from kernel_harness import KernelError, compile_sources, dltensor, lower_node, run_node, DpkValue
from packager import ir_check, ops
from packager.backends import cgen
from packager.backends.base import Region
from packager.backends.host import HOST_PRELUDE, HostBackend
from packager.ir import BuildError, Graph, Node, TensorType

RNG = np.random.default_rng(0)


@pytest.fixture(scope="session")
def kdir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def rand(*shape, dtype=np.float32, lo=-1.0, hi=1.0):
    return np.asarray(RNG.uniform(lo, hi, size=shape), dtype=dtype)


def check(kdir, op, inputs, expected, weights=(), rtol=1e-5, atol=1e-5, **attrs):
    """Run one node; compare with `expected`: a ref.Approx (ops that reduce: within its float32 rounding
    bound, tests/reference.py), or an array (elementwise ops: rtol/atol; integers and data movement: exact)."""
    got = run_node(op, inputs, kdir, weights=weights, **attrs)
    assert got.dtype == inputs[0].dtype
    if isinstance(expected, ref.Approx):
        ref.assert_close(got, expected, op)
        return got
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, expected)
    return got


# ---- dense and matmul ------------------------------------------------------


@pytest.mark.parametrize("x_shape,out,bias", [
    ((1, 64), 10, True), ((3, 70), 13, False), ((2, 3, 5), 7, True), ((1, 3), 5, True),
    ((4, 17), 1, True), ((5, 8), 4, False), ((1, 256), 64, True),
])
def test_dense(kdir, x_shape, out, bias):
    x, w = rand(*x_shape), rand(out, x_shape[-1])
    inputs = [x, w] + ([rand(out)] if bias else [])
    check(kdir, "dense", inputs, ref.dense_approx(*inputs), weights=(1, 2))


@pytest.mark.parametrize("a_shape,b_shape", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((4,), (4, 5)), ((3, 4), (4,)),
    ((4,), (4,)), ((2, 3, 4), (2, 4, 1)), ((1, 7), (3, 7, 2)), ((6, 1, 2, 3), (1, 4, 3, 5)),
])
def test_matmul(kdir, a_shape, b_shape):
    a, b = rand(*a_shape), rand(*b_shape)
    check(kdir, "matmul", [a, b], ref.matmul_approx(a, b))


# ---- elementwise ---------------------------------------------------------------

BROADCAST_CASES = [
    ((2, 3), (2, 3)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((5,), (4, 5)), ((4, 1), (1, 5)),
    ((2, 3, 4, 5), (3, 1, 5)), ((3, 1, 5), (2, 3, 4, 5)), ((2, 3), ()), ((7, 1, 1), (1, 6, 1)),
]


@pytest.mark.parametrize("op", ops.elementwise(2, "float32"))
@pytest.mark.parametrize("a_shape,b_shape", BROADCAST_CASES)
def test_binary_broadcast(kdir, op, a_shape, b_shape):
    a = rand(*a_shape)
    b = rand(*b_shape, lo=0.5, hi=2.0) * np.where(rand(*b_shape) < 0, -1, 1).astype(np.float32)
    check(kdir, op, [a, b.astype(np.float32)], getattr(ref, op)(a, b))


def test_binary_same_tensor_twice(kdir):
    x = rand(3, 4)
    backend, region, graph = lower_node("mul", [x, x])
    node = region.nodes[0]
    node.inputs = ["x0", "x0"]
    region.inputs = ["x0"]
    lib = compile_sources([backend.lower(region, graph)], kdir)
    y = np.zeros_like(x)
    lib.call(region.name, x, y)
    np.testing.assert_allclose(y, x * x, rtol=1e-6)


# every unary elementwise op of the registry without attributes (those with attributes have tests below)
@pytest.mark.parametrize("op", [op for op in ops.elementwise(1, "float32") if not ops.OPS[op].attrs])
@pytest.mark.parametrize("shape", [(1, 10), (2, 3, 4, 5), (1000,), (1,)])
def test_unary(kdir, op, shape):
    x = rand(*shape, lo=-8, hi=8)
    check(kdir, op, [x], getattr(ref, op)(x), atol=1e-6)


def test_unary_extremes(kdir):
    x = np.array([-100.0, -20.0, 0.0, 20.0, 100.0], np.float32)
    check(kdir, "sigmoid", [x], ref.sigmoid(x), atol=1e-7)
    check(kdir, "tanh", [x], ref.tanh(x), atol=1e-7)



@pytest.mark.parametrize("op,attrs", [
    ("elu", {}), ("elu", {"alpha": 0.5}), ("selu", {}), ("selu", {"alpha": 2.0, "gamma": 3.0}),
    ("hard_sigmoid", {}), ("hard_sigmoid", {"alpha": 0.5, "beta": 0.6}), ("celu", {}), ("celu", {"alpha": 2.0}),
    ("thresholded_relu", {}), ("thresholded_relu", {"alpha": -0.5}),
])
def test_unary_with_attributes(kdir, op, attrs):
    x = np.random.default_rng(11).uniform(-8, 8, (3, 50)).astype(np.float32)  # own generator: rand's sequence stays
    check(kdir, op, [x], getattr(ref, op)(x, **attrs), atol=1e-6, **attrs)


@pytest.mark.parametrize("op", ["softplus", "mish", "gelu", "gelu_tanh", "elu", "selu", "celu", "sign", "round",
                                "hard_sigmoid", "hard_swish", "softsign", "erf", "abs", "thresholded_relu"])
def test_new_unary_extremes_and_nan(kdir, op):
    """Large |x| (softplus and mish must not overflow through expf) and NaN in, NaN out."""
    x = np.array([-100.0, -20.0, -2.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 20.0, 100.0, np.nan], np.float32)
    with np.errstate(invalid="ignore"):  # NumPy's logaddexp warns about the NaN
        want = getattr(ref, op)(x)
    got = check(kdir, op, [x], want, atol=1e-6)
    assert np.isnan(got[-1])


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod(kdir, fmod):
    a = np.array([[5.0, -5.0, 5.0, -5.0, 0.0, -0.0, 7.5, np.inf, 3.0, 3.0]], np.float32)
    b = np.array([[3.0, 3.0, -3.0, -3.0, 2.0, 2.0, 0.0, 2.0, np.inf, -np.inf]], np.float32)
    want = ref.mod(a, b, fmod)
    got = check(kdir, "mod", [a, b], want, fmod=fmod)
    assert np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))

@pytest.mark.parametrize("shape,axis", [
    ((1, 10), -1), ((1, 10), 1), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), -2),
    ((5,), 0), ((3, 1), 1), ((2, 2, 3, 3), 1),
])
def test_softmax(kdir, shape, axis):
    x = rand(*shape, lo=-10, hi=10)
    want = ref.softmax_approx(x, axis)
    got = check(kdir, "softmax", [x], want, axis=axis)
    # the probabilities add to 1 within their bounds and a float32 sum of n terms (each <= 1) here
    total = got.astype(np.float32).sum(axis=axis)
    ref.assert_close(total, ref.Approx(np.ones(total.shape), want.err.sum(axis=axis) + x.shape[axis] * ref.EPS32))


def test_softmax_default_axis_and_large_values(kdir):
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]], np.float32)
    check(kdir, "softmax", [x], ref.softmax_approx(x, -1))


# ---- convolution and pooling ---------------------------------------------------

CONV_CASES = [
    # x shape, (O, C/g, KH, KW), attrs
    ((1, 1, 28, 28), (6, 1, 5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 6, 14, 14), (16, 6, 5, 5), {}),
    ((2, 3, 9, 11), (4, 3, 3, 3), {"strides": [2, 3]}),
    ((1, 4, 10, 10), (8, 2, 3, 3), {"groups": 2, "pads": 1}),
    ((1, 6, 8, 8), (6, 1, 3, 3), {"groups": 6, "pads": [1, 1]}),              # depthwise
    ((1, 4, 8, 8), (8, 1, 3, 3), {"groups": 4, "pads": [1, 1, 1, 1]}),        # depthwise x2
    ((2, 3, 9, 10), (3, 1, 3, 3), {"groups": 3, "strides": 2, "pads": [1, 0, 2, 1]}),  # depthwise, strided
    ((1, 2, 11, 9), (4, 1, 3, 2), {"groups": 2, "dilations": [2, 3], "pads": [0, 2, 1, 0]}),  # depthwise, dilated
    ((1, 2, 7, 7), (2, 1, 5, 5), {"groups": 2}),                                # depthwise, tap = input
    ((1, 3, 13, 14), (3, 1, 3, 3), {"groups": 3, "strides": 2, "dilations": 2, "pads": [2, 1, 2, 2]}),  # one phase read
    ((1, 2, 12, 13), (2, 1, 3, 4), {"groups": 2, "strides": [2, 3], "pads": 1}),  # depthwise, 3 column phases
    ((1, 1, 140, 130), (1, 1, 3, 3), {"groups": 1, "pads": 1}),               # padded plane > 64 KiB: loop kernel
    ((1, 3, 12, 12), (5, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 3, 12, 13), (5, 3, 3, 2), {"dilations": [3, 2], "strides": [2, 1]}),
    ((1, 2, 7, 9), (3, 2, 3, 3), {"pads": [0, 1, 2, 3]}),                    # asymmetric
    ((2, 2, 6, 6), (4, 2, 2, 4), {"pads": [3, 0, 1, 2], "strides": 2}),
    ((1, 8, 5, 5), (16, 8, 1, 1), {}),                                      # 1x1
    ((1, 3, 4, 4), (2, 3, 4, 4), {}),                                       # kernel = input
    ((1, 4, 9, 9), (6, 2, 3, 3), {"groups": 2, "dilations": 2, "strides": 2, "pads": [1, 2, 0, 1]}),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv2d(kdir, x_shape, w_shape, attrs, bias):
    x, w = rand(*x_shape), rand(*w_shape)
    inputs = [x, w] + ([rand(w_shape[0])] if bias else [])
    norm = dict(attrs)
    for key in ("strides", "dilations"):
        if isinstance(norm.get(key), int):
            norm[key] = [norm[key]] * 2
    if isinstance(norm.get("pads"), list) and len(norm["pads"]) == 2:
        norm["pads"] = norm["pads"] * 2
    check(kdir, "conv2d", inputs, ref.conv2d_approx(*inputs, **norm), weights=(1, 2), **attrs)


POOL_CASES = [
    ((1, 6, 28, 28), {"kernel": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 7), {"kernel": 3, "strides": 2, "pads": 1}),
    ((1, 2, 6, 9), {"kernel": [3, 2], "strides": [1, 2], "pads": [1, 0, 2, 1]}),
    ((1, 1, 5, 5), {"kernel": [2, 2]}),
    ((1, 2, 4, 4), {"kernel": [4, 4], "pads": [3, 3, 3, 3]}),  # windows mostly padding
    ((1, 3, 8, 6), {"kernel": [3, 3], "strides": [3, 2], "pads": [2, 0, 0, 2]}),
    ((1, 2, 3, 601), {"kernel": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 1]}),  # rows in chunks of 256 outputs
]


@pytest.mark.parametrize("op", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_pool(kdir, op, x_shape, attrs):
    x = rand(*x_shape, lo=-5, hi=-1)  # all negative: padding taken as 0 would show for max
    norm = {k: ([v] * (4 if k == "pads" else 2) if isinstance(v, int) else v) for k, v in attrs.items()}
    check(kdir, op, [x], getattr(ref, op.replace("2d", "_approx"))(x, **norm), **attrs)


def test_avgpool_excludes_padding(kdir):
    x = np.ones((1, 1, 2, 2), np.float32)
    y = run_node("avgpool2d", [x], kdir, kernel=2, pads=1)
    np.testing.assert_array_equal(y, np.ones((1, 1, 3, 3), np.float32))


@pytest.mark.parametrize("shape", [(1, 16, 7, 7), (2, 3, 1, 5), (1, 1, 1, 1)])
def test_global_avgpool(kdir, shape):
    x = rand(*shape)
    check(kdir, "global_avgpool", [x], ref.mean_approx(x, (2, 3)))


# ---- data movement (any dtype) -----------------------------------------------------

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.int16, np.uint8, np.bool_, np.float16]


def values(shape, dtype):
    return (RNG.integers(0, 100, size=shape) % (2 if dtype == np.bool_ else 100)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((2, 3, 4), 1), ((2, 3, 4), 0), ((2, 3, 4), 3), ((2, 3, 4), -1),
                                        ((5,), 1)])
def test_flatten(kdir, dtype, shape, axis):
    x = values(shape, dtype)
    check(kdir, "flatten", [x], ref.flatten(x, axis), axis=axis)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("shape,new", [((2, 3, 4), [6, 4]), ((2, 3, 4), [-1]), ((2, 3, 4), [4, -1, 2]),
                                       ((1, 10), [10, 1, 1]), ((6,), [1, 2, 1, 3])])
def test_reshape(kdir, dtype, shape, new):
    x = values(shape, dtype)
    check(kdir, "reshape", [x], ref.reshape(x, new), shape=new)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
@pytest.mark.parametrize("shape,perm", [
    ((3, 4), None), ((3, 4), [1, 0]), ((2, 3, 4), [0, 2, 1]), ((2, 3, 4), [2, 0, 1]), ((2, 3, 4), None),
    ((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4, 5), [0, 1, 3, 2]), ((2, 3, 4, 5), [0, 1, 2, 3]),
    ((1, 3, 1, 5), [2, 3, 0, 1]), ((7,), [0]),
])
def test_transpose(kdir, dtype, shape, perm):
    x = values(shape, dtype)
    attrs = {} if perm is None else {"perm": perm}
    check(kdir, "transpose", [x], ref.transpose(x, perm), **attrs)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.float64])
@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3), (2, 5)], 1), ([(2, 3), (4, 3)], 0), ([(1, 2, 3, 3), (1, 4, 3, 3), (1, 1, 3, 3)], 1),
    ([(2, 3, 4), (2, 3, 1)], -1), ([(2, 3, 4), (2, 3, 4), (2, 3, 4)], 2), ([(3,)], 0),
    ([(2, 0, 4), (2, 3, 4)], 1),
])
def test_concat(kdir, dtype, shapes, axis):
    xs = [values(s, dtype) for s in shapes]
    check(kdir, "concat", xs, ref.concat(*xs, axis=axis), axis=axis)


@pytest.mark.parametrize("shape,eps", [((2, 3, 4, 5), 1e-5), ((4, 6), 1e-3), ((1, 8, 3), 0.1), ((1, 1, 1, 1), 1e-5)])
def test_batchnorm(kdir, shape, eps):
    c = shape[1]
    x, scale, bias, mean = rand(*shape), rand(c), rand(c), rand(c)
    var = rand(c, lo=0.1, hi=2.0)
    inputs = [x, scale, bias, mean, var]
    attrs = {} if eps == 1e-5 else {"epsilon": eps}
    check(kdir, "batchnorm", inputs, ref.batchnorm(*inputs, epsilon=eps), weights=(1, 2, 3, 4), **attrs)


# ---- regions and the packed call ------------------------------------------------------


def test_multi_node_region_uses_workspace(kdir):
    x, w, b = rand(2, 8), rand(6, 8), rand(6)
    nodes = [Node("dense", ["x", "w", "b"], "h", {}, "fc"), Node("relu", ["h"], "a", {}, "act"),
             Node("softmax", ["a"], "y", {"axis": -1}, "sm")]
    graph = ir_check.infer(Graph("g", {"x": TensorType((2, 8), "float32")}, {"w": w, "b": b}, nodes, ["y"]))
    region = Region("host_fused_0", nodes, ["x", "w", "b"], ["y"], ["w", "b"])
    csrc = HostBackend().lower(region, graph)
    assert csrc.workspace_bytes == 128  # h and a, 48 bytes each, 64-aligned
    lib = compile_sources([csrc], kdir)
    y = np.zeros((2, 6), np.float32)
    lib.call("host_fused_0", x, w, b, y, np.zeros(128, np.uint8))
    ref.assert_close(y, ref.softmax_approx(ref.unary_approx(ref.relu, ref.dense_approx(x, w, b))))


def test_multi_node_region_reuses_a_dead_intermediate(kdir):
    # h dies when a is made, so b (made after a, read by the softmax) takes h's bytes: 2 x 64, not 3 x 64
    x, w, b = rand(2, 8), rand(6, 8), rand(6)
    nodes = [Node("dense", ["x", "w", "b"], "h", {}, "fc"), Node("relu", ["h"], "a", {}, "act"),
             Node("tanh", ["a"], "t", {}, "th"), Node("softmax", ["t"], "y", {"axis": -1}, "sm")]
    graph = ir_check.infer(Graph("g", {"x": TensorType((2, 8), "float32")}, {"w": w, "b": b}, nodes, ["y"]))
    region = Region("host_fused_1", nodes, ["x", "w", "b"], ["y"], ["w", "b"])
    csrc = HostBackend().lower(region, graph)
    assert csrc.workspace_bytes == 128
    lib = compile_sources([csrc], kdir)
    y = np.zeros((2, 6), np.float32)
    lib.call("host_fused_1", x, w, b, y, np.zeros(128, np.uint8))
    h = ref.unary_approx(ref.relu, ref.dense_approx(x, w, b))
    ref.assert_close(y, ref.softmax_approx(ref.unary_approx(ref.tanh, h)))


def test_prelude_is_one_text_for_all_nodes():
    a = lower_node("relu", [rand(2, 2)])
    b = lower_node("conv2d", [rand(1, 1, 3, 3), rand(1, 1, 2, 2)], weights=(1,))
    ca, cb = a[0].lower(a[1], a[2]), b[0].lower(b[1], b[2])
    assert ca.prelude == cb.prelude == [cgen.PRELUDE, HOST_PRELUDE]
    assert ca.functions == ["host_relu_0"] and "__dpk_api =" not in ca.source + "".join(ca.prelude)


@pytest.fixture(scope="module")
def relu_lib(kdir):
    backend, region, graph = lower_node("relu", [rand(2, 3)])
    return compile_sources([backend.lower(region, graph)], kdir)


def test_wrong_argument_count(relu_lib):
    with pytest.raises(KernelError, match=r"^kernel host_relu_0 expects 2 arguments, got 1$"):
        relu_lib.call("host_relu_0", rand(2, 3))


def test_wrong_type_code(relu_lib):
    keep = []
    t = dltensor(rand(2, 3), keep)
    v0, v1 = DpkValue(), DpkValue()
    v0.v_int64 = 5
    import ctypes
    v1.v_tensor = ctypes.pointer(t)
    with pytest.raises(KernelError, match=r"kernel host_relu_0: argument 0 must be a tensor .*got type code 0"):
        relu_lib.call_values("host_relu_0", [v0, v1], [0, 7])


def test_wrong_shape_and_dtype(relu_lib):
    with pytest.raises(KernelError, match=r"argument 1 \(y\) must be compact float32\[2, 3\], got code 2 bits 32 \[3, 2\]"):
        relu_lib.call("host_relu_0", rand(2, 3), rand(3, 2))
    with pytest.raises(KernelError, match=r"argument 0 \(x0\) must be compact float32\[2, 3\], got code 2 bits 64"):
        relu_lib.call("host_relu_0", rand(2, 3, dtype=np.float64), rand(2, 3))


def test_host_supports():
    host = HostBackend()
    _, region, graph = lower_node("dense", [rand(1, 4, dtype=np.float64), rand(2, 4, dtype=np.float64)])
    assert "float32" in host.supports(region.nodes[0], graph)
    _, region, graph = lower_node("transpose", [rand(2, 4, dtype=np.float64)])
    assert host.supports(region.nodes[0], graph) is None


def test_region_name_must_be_c_identifier():
    backend, region, graph = lower_node("relu", [rand(2)])
    region.name = "host relu"
    with pytest.raises(BuildError, match="not a C identifier"):
        backend.lower(region, graph)


# ---- shape inference and attribute errors --------------------------------------------


def infer(op, shapes, names=None, dtype="float32", **attrs):
    names = names or [f"t{i}" for i in range(len(shapes))]
    node = Node(op, names, "y", dict(attrs), f"{op}_1")
    ops.normalize(node)
    return ops.infer(node, [TensorType(tuple(s), dtype) for s in shapes])


def test_dense_mismatch_names_node_op_and_shapes():
    node = Node("dense", ["x", "fc1.weight", "fc1.bias"], "h", {}, "dense_2")
    ops.normalize(node)
    types = [TensorType((1, 63), "float32"), TensorType((64, 64), "float32"), TensorType((64,), "float32")]
    with pytest.raises(BuildError) as e:
        ops.infer(node, types)
    assert str(e.value) == ("node 'dense_2' (op dense): input x is float32[1, 63] but weight fc1.weight is "
                            "float32[64, 64]: x's last dimension must equal W's second (64)")


@pytest.mark.parametrize("op,shapes,attrs,pattern", [
    ("dense", [(1, 4), (3, 4), (4,)], {}, r"bias t2 is float32\[4\].*b must have shape \[3\]"),
    ("dense", [(4,), (3, 4)], {}, r"input t0 is float32\[4\]: x must be at least 2-D"),
    ("matmul", [(2, 3), (4, 5)], {}, r"A's last dimension \(3\) must equal B's second to last \(4\)"),
    ("matmul", [(2, 2, 3), (3, 3, 4)], {}, r"batch dimensions \[2\] and \[3\] do not broadcast"),
    ("add", [(2, 3), (4, 3)], {}, r"input t0 is float32\[2, 3\] but input t1 is float32\[4, 3\]: shapes do not broadcast"),
    ("softmax", [(2, 3)], {"axis": 2}, r"axis 2 is out of range for 2 dimensions"),
    ("conv2d", [(1, 4, 8, 8), (8, 3, 3, 3)], {"groups": 2}, r"W's second dimension must be x's channels / groups"),
    ("conv2d", [(1, 3, 8, 8), (8, 3, 3, 3)], {"groups": 2}, r"groups \(2\) must divide"),
    ("conv2d", [(1, 3, 8, 8), (8, 3, 3, 3), (4,)], {}, r"b must have shape \[8\]"),
    ("conv2d", [(1, 3, 2, 2), (8, 3, 3, 3)], {}, r"kernel \(3\) is larger than the padded input \(2\) along H"),
    ("conv2d", [(3, 8, 8), (8, 3, 3, 3)], {}, r"x must be 4-D NCHW"),
    ("maxpool2d", [(1, 1, 4, 4)], {"kernel": 2, "pads": 2}, r"pads \[2, 2, 2, 2\] must be smaller than the kernel"),
    ("reshape", [(2, 3)], {"shape": [4, -1]}, r"cannot reshape 6 elements to \[4, -1\]"),
    ("reshape", [(2, 3)], {"shape": [-1, -1]}, r"at most one -1"),
    ("reshape", [(2, 3)], {"shape": [5]}, r"cannot reshape 6 elements to \[5\]"),
    ("transpose", [(2, 3)], {"perm": [0, 0]}, r"perm \[0, 0\] is not a permutation of 0..1"),
    ("concat", [(2, 3), (3, 4)], {"axis": 1}, r"concat inputs must match in every dimension but axis 1"),
    ("flatten", [(2, 3)], {"axis": 3}, r"axis 3 is out of range"),
    ("batchnorm", [(1, 3, 2, 2), (3,), (3,), (4,), (3,)], {}, r"mean t3 is float32\[4\].*mean must have shape \[3\]"),
    ("global_avgpool", [(1, 3, 2)], {}, r"x must be 4-D NCHW"),
])
def test_inference_errors(op, shapes, attrs, pattern):
    with pytest.raises(BuildError, match=pattern) as e:
        infer(op, shapes, **attrs)
    assert str(e.value).startswith(f"node '{op}_1' (op {op}): ")


def test_inference_results():
    assert infer("dense", [(2, 3, 5), (7, 5)]).shape == (2, 3, 7)
    assert infer("matmul", [(2, 1, 3, 4), (5, 4, 6)]).shape == (2, 5, 3, 6)
    assert infer("matmul", [(4,), (4,)]).shape == ()
    assert infer("add", [(2, 1, 4), (3, 1)]).shape == (2, 3, 4)
    assert infer("conv2d", [(1, 3, 9, 9), (8, 3, 3, 3)], strides=2, pads=[0, 1, 2, 3]).shape == (1, 8, 5, 6)
    assert infer("maxpool2d", [(1, 3, 7, 7)], kernel=3, strides=2, pads=1).shape == (1, 3, 4, 4)
    assert infer("global_avgpool", [(2, 5, 7, 7)]).shape == (2, 5, 1, 1)
    assert infer("flatten", [(2, 3, 4)]).shape == (2, 12)
    assert infer("flatten", [(2, 3, 4)], axis=0).shape == (1, 24)
    assert infer("reshape", [(2, 3, 4)], shape=[4, -1]).shape == (4, 6)
    assert infer("transpose", [(2, 3, 4)]).shape == (4, 3, 2)
    assert infer("concat", [(2, 3), (2, 5), (2, 1)], axis=-1).shape == (2, 9)
    assert infer("transpose", [(2, 3)], dtype="int64").dtype == "int64"


def test_normalize_fills_defaults_and_canonical_forms():
    node = Node("conv2d", ["x", "w"], "y", {"strides": 2, "pads": [1, 2]}, "c")
    ops.normalize(node)
    assert node.attrs == {"strides": [2, 2], "pads": [1, 2, 1, 2], "dilations": [1, 1], "groups": 1}
    node = Node("avgpool2d", ["x"], "y", {"kernel": 3}, "p")
    ops.normalize(node)
    assert node.attrs == {"kernel": [3, 3], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
                          "count_include_pad": 0}
    for op, attrs in [("softmax", {"axis": -1}), ("flatten", {"axis": 1}), ("batchnorm", {"epsilon": 1e-5}),
                      ("transpose", {"perm": None}), ("relu", {})]:
        node = Node(op, ["x"] * (5 if op == "batchnorm" else 1), "y", {}, "n")
        ops.normalize(node)
        assert node.attrs == attrs


def test_unknown_op_lists_known_ops():
    with pytest.raises(BuildError) as e:
        ops.normalize(Node("frobnicate", ["x"], "y", {}, "act_3"))
    message = str(e.value)
    assert message.startswith("node 'act_3' (op frobnicate): unknown op 'frobnicate'; known ops: ")
    for op in ops.OPS:
        assert op in message


@pytest.mark.parametrize("op,inputs,attrs,pattern", [
    ("relu", ["x"], {"alpha": 0.1}, r"node 'n' \(op relu\): unknown attribute alpha; op relu takes: none"),
    ("conv2d", ["x", "w"], {"stride": 2}, r"unknown attribute stride; op conv2d takes: dilations, groups, pads, strides"),
    ("softmax", ["x"], {"axis": "last"}, r"attribute 'axis' must be an integer, got 'last'"),
    ("softmax", ["x"], {"axis": True}, r"attribute 'axis' must be an integer"),
    ("conv2d", ["x", "w"], {"pads": [1, 2, 3]}, r"attribute 'pads' must be .*\[top, left, bottom, right\]"),
    ("conv2d", ["x", "w"], {"strides": 0}, r"attribute 'strides' must be a positive integer or a list of two"),
    ("conv2d", ["x", "w"], {"groups": 0}, r"attribute 'groups' must be >= 1"),
    ("maxpool2d", ["x"], {}, r"attribute 'kernel' is required"),
    ("concat", ["a", "b"], {}, r"attribute 'axis' is required"),
    ("reshape", ["x"], {"shape": [2, 1.5]}, r"attribute 'shape' must be a list of integers"),
    ("batchnorm", ["x", "s", "b", "m", "v"], {"epsilon": "small"}, r"attribute 'epsilon' must be a number"),
    ("dense", ["x"], {}, r"takes 2 or 3 inputs \(x, W, b\?\), got 1"),
    ("add", ["a", "b", "c"], {}, r"takes 2 inputs \(A, B\), got 3"),
    ("batchnorm", ["x", "s"], {}, r"takes 5 inputs"),
    ("concat", [], {"axis": 0}, r"takes 1 or more inputs"),
])
def test_attribute_and_arity_errors(op, inputs, attrs, pattern):
    with pytest.raises(BuildError, match=pattern):
        ops.normalize(Node(op, inputs, "y", attrs, "n"))


def test_dtype_errors():
    with pytest.raises(BuildError, match=r"weight t1 is float64\[3, 4\]: all inputs must have the same dtype"):
        node = Node("dense", ["t0", "t1"], "y", {}, "d")
        ops.normalize(node)
        ops.infer(node, [TensorType((1, 4), "float32"), TensorType((3, 4), "float64")])
    with pytest.raises(BuildError, match=r"op relu needs floating-point inputs"):
        infer("relu", [(2,)], dtype="int32")


def test_every_op_has_a_host_kernel():
    from packager.backends.host import emitter
    assert [op for op in ops.OPS if emitter(op) is None] == []


def test_strided_tensor_is_refused(relu_lib):
    import ctypes
    keep = []
    x, y = rand(2, 3), np.zeros((2, 3), np.float32)
    tx, ty = dltensor(x, keep), dltensor(y, keep)
    for strides, ok in [((1, 2), False), ((3, 1), True)]:
        st = (ctypes.c_int64 * 2)(*strides)
        tx.strides = ctypes.cast(st, ctypes.POINTER(ctypes.c_int64))
        v0, v1 = DpkValue(), DpkValue()
        v0.v_tensor, v1.v_tensor = ctypes.pointer(tx), ctypes.pointer(ty)
        if ok:
            relu_lib.call_values("host_relu_0", [v0, v1], [7, 7])
            np.testing.assert_array_equal(y, np.maximum(x, 0))
        else:
            with pytest.raises(KernelError, match=r"argument 0 \(x0\) must be compact float32\[2, 3\], got .* strided"):
                relu_lib.call_values("host_relu_0", [v0, v1], [7, 7])


# ---- extensions: leaky_relu, clip, log_softmax, argmax, cast, count_include_pad ----------


@pytest.mark.parametrize("alpha", [0.01, 0.2, 1.5, 0.0])
def test_leaky_relu(kdir, alpha):
    x = rand(3, 17, lo=-4, hi=4)
    check(kdir, "leaky_relu", [x], ref.leaky_relu(x, alpha), atol=1e-7, alpha=alpha)


@pytest.mark.parametrize("attrs", [{"min": 0.0, "max": 6.0}, {"min": -0.5}, {"max": 0.25}, {}, {"min": 1, "max": 1}])
def test_clip(kdir, attrs):
    x = rand(2, 3, 8, lo=-8, hi=8)
    check(kdir, "clip", [x], ref.clip(x, **attrs), atol=0, **attrs)


def test_clip_keeps_nan_and_infinities(kdir):
    x = np.array([np.nan, -np.inf, np.inf, 3.0, -3.0], np.float32)
    y = run_node("clip", [x], kdir, min=-1.0, max=1.0)
    np.testing.assert_array_equal(y, [np.nan, -1.0, 1.0, 1.0, -1.0])


@pytest.mark.parametrize("shape,axis", [((1, 10), -1), ((2, 3, 4), 0), ((2, 3, 4), 1), ((5,), 0), ((2, 2, 3, 3), 1)])
def test_log_softmax(kdir, shape, axis):
    x = rand(*shape, lo=-30, hi=30)
    check(kdir, "log_softmax", [x], ref.log_softmax_approx(x, axis), axis=axis)


@pytest.mark.parametrize("shape,axis,keepdims", [
    ((1, 10), 1, 1), ((1, 10), -1, 0), ((2, 3, 4), 0, 1), ((2, 3, 4), 1, 0), ((2, 3, 4), 2, 1), ((7,), 0, 0),
    ((3, 1), 1, 1),
])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin(kdir, op, shape, axis, keepdims, last):
    x = np.round(rand(*shape, lo=-3, hi=3))  # rounding makes ties
    got = run_node(op, [x], kdir, axis=axis, keepdims=keepdims, select_last_index=last)
    expected = getattr(ref, op)(x, axis, keepdims, last)
    assert got.dtype == np.int64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_argmax_nan_counts_as_largest(kdir):
    x = np.array([[1.0, np.nan, 5.0, np.nan], [np.nan, 2.0, 3.0, 0.0]], np.float32)
    for last in (0, 1):
        got = run_node("argmax", [x], kdir, axis=1, keepdims=0, select_last_index=last)
        np.testing.assert_array_equal(got, ref.argmax(x, 1, 0, last))
        np.testing.assert_array_equal(got, [3, 0] if last else [1, 0])


@pytest.mark.parametrize("src,to", [
    ("float32", "int64"), ("float32", "int32"), ("float32", "uint8"), ("float32", "bool"), ("float32", "float64"),
    ("int64", "float32"), ("int32", "int64"), ("uint8", "float32"), ("bool", "float32"), ("float64", "float32"),
    ("int64", "bool"),
])
def test_cast(kdir, src, to):
    if src == "bool":
        x = RNG.integers(0, 2, size=(3, 5)).astype(bool)
    elif src.startswith("float"):
        x = (rand(3, 5, lo=-100, hi=100) * np.where(rand(3, 5) < -0.5, 0, 1)).astype(src)  # some zeros
        if to == "uint8":
            x = np.abs(x)
    else:
        x = RNG.integers(-50 if src != "uint8" else 0, 100, size=(3, 5)).astype(src)
    got = run_node("cast", [x], kdir, to=to)
    assert got.dtype == np.dtype(to)
    np.testing.assert_array_equal(got, ref.cast(x, to))


def test_cast_takes_float16_on_host():  # its rounding: test_dtypes_and_logic.py (test_float16_casts_...)
    _, region, graph = lower_node("cast", [rand(2, 3)], to="float16")
    assert HostBackend().supports(region.nodes[0], graph) is None


@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_avgpool_count_include_pad(kdir, x_shape, attrs):
    x = rand(*x_shape)
    norm = {k: ([v] * (4 if k == "pads" else 2) if isinstance(v, int) else v) for k, v in attrs.items()}
    check(kdir, "avgpool2d", [x], ref.avgpool2d_include_pad(x, **norm), count_include_pad=1, **attrs)


def test_avgpool_include_pad_counts_padding(kdir):
    y = run_node("avgpool2d", [np.ones((1, 1, 2, 2), np.float32)], kdir, kernel=2, pads=1, count_include_pad=1)
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])


def test_extension_inference_and_errors():
    assert infer("argmax", [(2, 3, 4)], axis=1).shape == (2, 1, 4)
    assert infer("argmax", [(2, 3, 4)], axis=-1, keepdims=0).dtype == "int64"
    assert infer("cast", [(2, 3)], dtype="int64", to="float32").dtype == "float32"
    assert infer("log_softmax", [(2, 3)]).shape == (2, 3)
    with pytest.raises(BuildError, match=r"attribute 'to' must be a dtype name"):
        infer("cast", [(2,)], to="complex64")
    with pytest.raises(BuildError, match=r"attribute 'keepdims' must be 0 or 1, got 2"):
        infer("argmax", [(2,)], keepdims=2)
    with pytest.raises(BuildError, match=r"attribute 'count_include_pad' must be 0 or 1"):
        infer("avgpool2d", [(1, 1, 4, 4)], kernel=2, count_include_pad=3)
    with pytest.raises(BuildError, match=r"axis 2 is out of range for 2 dimensions"):
        infer("argmax", [(2, 3)], axis=2)
    with pytest.raises(BuildError, match=r"argmax over an empty axis"):
        infer("argmax", [(2, 0)], axis=1)
    with pytest.raises(BuildError, match=r"op leaky_relu needs floating-point inputs"):
        infer("leaky_relu", [(2,)], dtype="int64")
    with pytest.raises(BuildError, match=r"'min' and 'max' must be numbers, not NaN"):
        infer("clip", [(2,)], min=float("nan"))


# ---- reductions (reduce_*), argmin, maximum / minimum ---------------------------------------------

REDUCTIONS = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l2", "reduce_sum_square"]
REDUCE_CASES = [  # shape, attrs
    ((2, 3, 4), {"axes": [1]}),
    ((2, 3, 4), {"axes": [1], "keepdims": 0}),
    ((2, 3, 4), {"axes": [-1]}),
    ((2, 3, 4), {"axes": [0, 2], "keepdims": 0}),
    ((2, 3, 4), {"axes": [-3, -2]}),
    ((2, 3, 4), {}),                                   # empty axes: all
    ((2, 3, 4), {"keepdims": 0}),                      # all, to a scalar
    ((2, 3, 4), {"noop_with_empty_axes": 1}),           # none: each element alone
    ((1, 16, 7, 7), {"axes": [2, 3]}),                  # adaptive average pooling
    ((3, 1, 5), {"axes": [1], "keepdims": 0}),          # a size-1 reduced dim
    ((1, 5, 1, 6), {"axes": [0, 2, 3]}),                # size-1 kept and reduced dims
    ((2, 3, 4, 5), {"axes": [1, 3]}),                   # alternating kept / reduced
    ((17,), {"axes": [0], "keepdims": 0}),
    ((2, 0, 3), {"axes": [1]}),                          # empty reduced axis: the initial value
    ((0, 3), {"axes": [1]}),                            # no outputs
]


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("shape,attrs", REDUCE_CASES)
def test_reduce(kdir, op, shape, attrs):
    lo = 0.5 if op == "reduce_prod" else -2.0  # products of values near 1 stay in range
    x = rand(*shape, lo=lo, hi=2.0 if op != "reduce_prod" else 1.5)
    want = ref.reduce_approx(op, x, **attrs)
    got = run_node(op, [x], kdir, **attrs)
    assert got.dtype == np.float32
    if x.size == 0:  # the identity (inf, NaN for a mean): exactly
        np.testing.assert_array_equal(got, want.value.astype(np.float32))
    else:
        ref.assert_close(got, want, op)


@pytest.mark.parametrize("op,expected", [("reduce_sum", 0.0), ("reduce_mean", np.nan), ("reduce_max", -np.inf),
                                         ("reduce_min", np.inf), ("reduce_prod", 1.0), ("reduce_l2", 0.0),
                                         ("reduce_sum_square", 0.0)])
def test_reduce_over_an_empty_axis_gives_the_identity(kdir, op, expected):
    got = run_node(op, [np.zeros((2, 0, 3), np.float32)], kdir, axes=[1], keepdims=0)
    np.testing.assert_array_equal(got, np.full((2, 3), expected, np.float32))


@pytest.mark.parametrize("op", ["reduce_max", "reduce_min", "reduce_sum"])
def test_reduce_propagates_nan(kdir, op):
    x = np.array([[1.0, np.nan, 3.0], [np.nan, 0.0, -1.0], [2.0, 5.0, -4.0]], np.float32)
    got = run_node(op, [x], kdir, axes=[1], keepdims=0)
    np.testing.assert_array_equal(np.isnan(got), [True, True, False])


def test_reduce_sums_in_double(kdir):
    # 1 + 2^-24 * 4096 terms: a float32 running sum stays at 1, a double one reaches 1 + 2^-12
    x = np.full((1, 4097), 2.0 ** -24, np.float32)
    x[0, 0] = 1.0
    got = run_node("reduce_sum", [x], kdir, axes=[1], keepdims=0)
    assert got[0] == np.float32(1.0 + 2.0 ** -12)


def test_argmin_nan_counts_as_smallest(kdir):
    x = np.array([[1.0, np.nan, -5.0, np.nan], [np.nan, 2.0, -3.0, 0.0]], np.float32)
    for last in (0, 1):
        got = run_node("argmin", [x], kdir, axis=1, keepdims=0, select_last_index=last)
        np.testing.assert_array_equal(got, ref.argmin(x, 1, 0, last))
        np.testing.assert_array_equal(got, [3, 0] if last else [1, 0])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(kdir, op):
    a = np.array([np.nan, 1.0, np.nan, 2.0, -np.inf], np.float32)
    b = np.array([1.0, np.nan, np.nan, 3.0, 0.0], np.float32)
    got = run_node(op, [a, b], kdir)
    np.testing.assert_array_equal(got, getattr(np, op)(a, b))


def test_reduce_inference_and_errors():
    assert infer("reduce_mean", [(2, 3, 4, 5)], axes=[2, 3]).shape == (2, 3, 1, 1)
    assert infer("reduce_sum", [(2, 3, 4)], axes=[-1], keepdims=0).shape == (2, 3)
    assert infer("reduce_max", [(2, 3, 4)], keepdims=0).shape == ()
    assert infer("reduce_max", [(2, 3, 4)]).shape == (1, 1, 1)
    assert infer("reduce_l2", [(2, 3, 4)], noop_with_empty_axes=1, keepdims=0).shape == (2, 3, 4)
    assert infer("argmin", [(2, 3, 4)], axis=-1, keepdims=0).shape == (2, 3)
    assert infer("maximum", [(2, 1, 4), (3, 1)]).shape == (2, 3, 4)
    node = Node("reduce_sum", ["x"], "y", {}, "r")
    ops.normalize(node)
    assert node.attrs == {"axes": [], "keepdims": 1, "noop_with_empty_axes": 0}
    with pytest.raises(BuildError, match=r"node 'reduce_sum_1' \(op reduce_sum\): input t0 is float32\[2, 3\]: "
                                         r"axes \[0, 2\]: axis 2 is out of range for 2 dimensions \(allowed -2..1\)"):
        infer("reduce_sum", [(2, 3)], axes=[0, 2])
    with pytest.raises(BuildError, match=r"axes \[1, -1\] name an axis twice"):
        infer("reduce_mean", [(2, 3)], axes=[1, -1])
    with pytest.raises(BuildError, match=r"attribute 'keepdims' must be 0 or 1, got 2"):
        infer("reduce_prod", [(2,)], keepdims=2)
    with pytest.raises(BuildError, match=r"attribute 'noop_with_empty_axes' must be 0 or 1, got -1"):
        infer("reduce_min", [(2,)], noop_with_empty_axes=-1)
    with pytest.raises(BuildError, match=r"attribute 'axes' must be a list of integers, got 1.5"):
        infer("reduce_min", [(2,)], axes=1.5)
    with pytest.raises(BuildError, match=r"op reduce_sum needs floating-point inputs"):
        infer("reduce_sum", [(2,)], dtype="int32")
    with pytest.raises(BuildError, match=r"argmin over an empty axis"):
        infer("argmin", [(2, 0)], axis=1)


def test_host_refuses_float64_reductions():
    _, region, graph = lower_node("reduce_sum", [rand(2, 3, dtype=np.float64)])
    assert HostBackend().supports(region.nodes[0], graph) == "op reduce_sum needs float32 inputs, x0 is float64[2, 3]"
