"""The xnnpack backend (packager/backends/xnnpack.py): conv2d (depthwise, grouped, strided, dilated, asymmetric
pads, bias, fused relu/clip), dense and the adds/activations between them, in NHWC regions, against onnxruntime
and tests/reference.py; bit-identical over 1, 2 and 3 threads and over concurrent runs; what it declines; the
missing XNNPACK at build and at load; a real ResNet-18 against onnxruntime."""

import os
import re
import subprocess
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import loader
import real_models
import reference as ref
from packager.backends import xnnpack
from packager.build import build
from packager.cli import main
from packager.ir import BuildError
from test_cblas import dt_needed, patched_copy, write_cc_wrapper

RNG = np.random.default_rng(15)
BACKENDS = ["xnnpack", "host"]


def weights(**shapes):
    return {name: (RNG.standard_normal(shape) * 0.2).astype(np.float32) for name, shape in shapes.items()}


W = weights(w1=(32, 8, 3, 3), b1=(32,), w2=(32, 1, 3, 3), b2=(32,), w3=(32, 8, 3, 3), w4=(32, 32, 1, 1), b4=(32,),
            wd=(10, 32), bd=(10,))


def save(tmp_path, nodes, inputs, outputs, arrays, name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(a, k) for k, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    """A residual block with every conv kind: 3x3 + relu and a max pool, depthwise stride 2 with asymmetric pads + clip, grouped
    dilated without bias, a 1x1 stride-2 shortcut, add + relu (a 4-D output), a mean over H and W without kept
    dims, then a Gemm + relu: one xnnpack region (the dense's x is the region's). Each conv and the max pool is
    split into two slices (of output channels or groups, each with its slice of W and of the bias) times three
    blocks of images (batch 3, the weights small enough for a copy per block)."""
    tmp = tmp_path_factory.mktemp("xnn_block")
    n = 3
    arrays = dict(W, lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv3x3"),
        helper.make_node("Relu", ["c1"], ["r0"], name="relu1"),
        helper.make_node("MaxPool", ["r0"], ["r1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="maxpool"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 0, 1, 2], strides=[2, 2], group=32,
                         name="depthwise"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[2, 2, 2, 2], dilations=[2, 2], group=4, name="grouped"),
        helper.make_node("Conv", ["r1", "w4", "b4"], ["c4"], strides=[2, 2], name="shortcut"),
        helper.make_node("Add", ["c3", "c4"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
        helper.make_node("ReduceMean", ["r3"], ["g"], axes=[2, 3], keepdims=0, name="pool"),
        helper.make_node("Gemm", ["g", "wd", "bd"], ["y"], transB=1, name="fc"),
        helper.make_node("Relu", ["y"], ["z"], name="relu4"),
    ]
    path = save(tmp, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 8, 15, 15])],
                [helper.make_tensor_value_info("z", TensorProto.FLOAT, [n, 10]),
                 helper.make_tensor_value_info("r3", TensorProto.FLOAT, [n, 32, 8, 8])], arrays)
    # small blocks, so that every conv here is split into several operators (output channels or groups)
    old, xnnpack.BLOCK_MIN_WORK = xnnpack.BLOCK_MIN_WORK, 1 << 12
    try:
        report = build(path, str(tmp / "m.so"), quiet=True, backends=BACKENDS, save_temps=str(tmp / "temps"))
    finally:
        xnnpack.BLOCK_MIN_WORK = old
    source = "".join(p.read_text() for p in (tmp / "temps").glob("*.c"))
    for conv in ("conv3x3", "depthwise", "grouped", "shortcut"):
        assert f"{conv}: conv2d (6 XNNPACK operators: 2 slices x 3 blocks of images)" in source, conv
    assert "maxpool: maxpool2d (6 XNNPACK operators: 2 slices x 3 blocks of images)" in source
    assert "pool: reduce_mean (1 XNNPACK operator)" in source and "fc: dense (1 XNNPACK operator)" in source
    x = RNG.standard_normal((n, 8, 15, 15)).astype(np.float32)
    return path, report, x


def test_block_matches_onnxruntime_and_the_reference(block):
    path, report, x = block
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with loader.load(report.output) as model:
        got = model.run(x=x)
    for key, value in zip(["z", "r3"], want):
        assert got[key].shape == value.shape
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5 * np.abs(value).max())
    # the first conv alone, against the NumPy reference: NHWC inside, NCHW at the boundary
    r1 = ref.maxpool2d(np.maximum(ref.conv2d(x, W["w1"], W["b1"], pads=(1, 1, 1, 1)), 0), kernel=(3, 3),
                       pads=(1, 1, 1, 1))
    r3 = np.maximum(ref.conv2d(np.clip(ref.conv2d(r1, W["w2"], W["b2"], strides=(2, 2), pads=(1, 0, 1, 2), groups=32),
                                       0, 6), W["w3"], pads=(2, 2, 2, 2), dilations=(2, 2), groups=4)
                    + ref.conv2d(r1, W["w4"], W["b4"], strides=(2, 2)), 0)
    np.testing.assert_allclose(got["r3"], r3, rtol=1e-4, atol=1e-5 * np.abs(r3).max())


def test_block_partition_and_requires(block):
    _, report, _ = block
    regions = [m for m in report.manifest["modules"]]
    assert report.manifest["requires"] == ["libXNNPACK.so.0"]
    assert "libXNNPACK.so.0" in dt_needed(report.output)
    assert report.functions == ["ext0"], (report.functions, regions)


def test_bit_identical_over_thread_counts_and_concurrent_runs(block):
    _, report, x = block
    runs = []
    for threads in (1, 2, 3):
        with loader.load(report.output, num_threads=threads) as model:
            runs += [model.run(x=x), model.run(x=x)]
    for got in runs[1:]:
        for key in runs[0]:
            assert np.array_equal(got[key], runs[0][key]), key
    # concurrent runs of one loaded model: each takes its own instance of the region's operators
    with loader.load(report.output, num_threads=2) as model:
        results, errors = [], []

        def worker():
            try:
                for _ in range(5):
                    results.append(model.run(x=x))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 15
    for got in results:
        for key in runs[0]:
            assert np.array_equal(got[key], runs[0][key]), key


def assert_matches_on_1_2_3_threads(path, x, output, want, reference):
    """The model's `output` for x matches onnxruntime's and the NumPy reference's, with the same bits on 1, 2
    and 3 threads."""
    runs = []
    for threads in (1, 2, 3):
        with loader.load(path, num_threads=threads) as model:
            runs.append(model.run(x=x)[output])
    np.testing.assert_allclose(runs[0], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(runs[0], reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    for got in runs[1:]:
        assert np.array_equal(got, runs[0])


def test_one_image_is_cut_into_blocks_of_rows(tmp_path, monkeypatch):
    """At batch 1 a conv is cut into blocks of output rows, each an operator with the input rows it reads and the
    pads it keeps: asymmetric pads (a top pad taller than a block's reach, a bottom pad), stride 2, dilation 2, a
    depthwise and a 1x1 conv, an odd height. Outputs match onnxruntime and the reference, the same bits on 1, 2
    and 3 threads."""
    arrays = weights(wa=(16, 8, 3, 3), ba=(16,), wb=(16, 1, 3, 3), wc=(24, 16, 1, 1))
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[3, 1, 2, 0], strides=[2, 2], dilations=[2, 2],
                              name="strided"),
             helper.make_node("Relu", ["a"], ["ar"], name="relu"),
             helper.make_node("Conv", ["ar", "wb"], ["b"], pads=[1, 1, 1, 1], group=16, name="depthwise"),
             helper.make_node("Conv", ["b", "wc"], ["y"], name="pointwise")]
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 23, 15])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 13, 7])], arrays)
    monkeypatch.setattr(xnnpack, "BLOCK_MIN_WORK", 1 << 10)
    report = build(path, str(tmp_path / "m.so"), quiet=True, backends=BACKENDS, save_temps=str(tmp_path / "temps"))
    source = "".join(p.read_text() for p in (tmp_path / "temps").glob("*.c"))
    for conv in ("strided", "depthwise", "pointwise"):
        assert re.search(rf"{conv}: conv2d \(\d+ XNNPACK operators: 1 slices x \d+ blocks of rows\)", source), conv
    x = RNG.standard_normal((1, 8, 23, 15)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    a = np.maximum(ref.conv2d(x, arrays["wa"], arrays["ba"], strides=(2, 2), pads=(3, 1, 2, 0), dilations=(2, 2)), 0)
    y = ref.conv2d(ref.conv2d(a, arrays["wb"], pads=(1, 1, 1, 1), groups=16), arrays["wc"])
    assert_matches_on_1_2_3_threads(report.output, x, "y", want, y)


@pytest.mark.parametrize("batch", [1, 2])
def test_silu_and_unary_ops_are_fused_into_the_conv_and_a_narrow_squeeze_conv_stays(tmp_path, monkeypatch, batch):
    """x * sigmoid(x) of a conv's output is computed by the conv's units (its blocks of rows at batch 1; of images
    and slices of 16 of 48 channels at batch 2: a sigmoid of strided rows), with the operands either way round; a
    SiLU whose x is also read elsewhere stays two nodes; a hard_swish and a leaky_relu after a conv run on each
    block too. An EfficientNet-style squeeze-excite's 4-channel 1x1 conv
    stays in the region (leaving it would cost two transposes). Outputs match onnxruntime and the reference, the
    same bits on 1, 2 and 3 threads; the SiLU at most a few ulps from the unfused pair's."""
    arrays = weights(wa=(48, 8, 3, 3), ba=(48,), wb=(48, 1, 3, 3), ws=(4, 48, 1, 1), bs=(4,), we=(48, 4, 1, 1),
                     wc=(16, 48, 1, 1), wh=(32, 16, 3, 3), wl=(48, 32, 1, 1))
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="expand"),
             helper.make_node("Sigmoid", ["a"], ["as"]), helper.make_node("Mul", ["a", "as"], ["am"]),
             helper.make_node("Conv", ["am", "wb"], ["b"], pads=[1, 1, 1, 1], group=48, name="depthwise"),
             helper.make_node("Sigmoid", ["b"], ["bsig"]), helper.make_node("Mul", ["bsig", "b"], ["bm"]),
             helper.make_node("ReduceMean", ["bm"], ["m"], axes=[2, 3], keepdims=1, name="squeeze"),
             helper.make_node("Conv", ["m", "ws", "bs"], ["s"], name="reduce"),
             helper.make_node("Sigmoid", ["s"], ["ss"]), helper.make_node("Mul", ["s", "ss"], ["sm"]),
             helper.make_node("Conv", ["sm", "we"], ["e"], name="excite"),
             helper.make_node("Sigmoid", ["e"], ["g"]), helper.make_node("Mul", ["bm", "g"], ["se"]),
             helper.make_node("Conv", ["se", "wc"], ["c"], name="project"),
             helper.make_node("Sigmoid", ["c"], ["cs"]), helper.make_node("Mul", ["c", "cs"], ["cm"]),
             helper.make_node("Add", ["cm", "c"], ["y"]),  # c is read by the add too: no fusion
             helper.make_node("Conv", ["y", "wh"], ["h"], pads=[1, 1, 1, 1], name="hard"),
             helper.make_node("HardSwish", ["h"], ["hs"]),
             helper.make_node("Conv", ["hs", "wl"], ["l"], name="leaky"),
             helper.make_node("LeakyRelu", ["l"], ["z"], alpha=0.1)]
    shape = [batch, 8, 19, 13]
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 48, 19, 13])], arrays)
    monkeypatch.setattr(xnnpack, "BLOCK_MIN_WORK", 1 << 10)
    monkeypatch.setattr(xnnpack, "SWISH_CHUNK", 100)  # several chunks per block
    report = build(path, str(tmp_path / "m.so"), quiet=True, backends=BACKENDS, save_temps=str(tmp_path / "temps"))
    source = "".join(p.read_text() for p in (tmp_path / "temps").glob("*.c"))
    fused = re.findall(r"/\* (\w+): conv2d \+ silu \((.*?)\) \*/", source)
    assert sorted(name for name, _ in fused) == ["depthwise", "expand", "reduce"], fused
    if batch == 2:
        assert "expand: conv2d + silu (6 XNNPACK operators: 3 slices x 2 blocks of images)" in source
    assert "project: conv2d (" in source
    assert re.search(r"hard: conv2d \+ hard_swish \(\d+ XNNPACK operators: \d+ slices x \d+ blocks", source)
    assert "leaky: conv2d + leaky_relu (" in source
    assert source.count("NCHW -> NHWC */") == 1 and source.count("NHWC -> NCHW */") == 1  # one region
    x = RNG.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def silu(v):
        return v / (1 + np.exp(-v))

    a = silu(ref.conv2d(x, arrays["wa"], arrays["ba"], pads=(1, 1, 1, 1)))
    b = silu(ref.conv2d(a, arrays["wb"], pads=(1, 1, 1, 1), groups=48))
    s = silu(ref.conv2d(b.mean(axis=(2, 3), keepdims=True), arrays["ws"], arrays["bs"]))
    c = ref.conv2d(b / (1 + np.exp(-ref.conv2d(s, arrays["we"]))), arrays["wc"])
    h = ref.conv2d(silu(c) + c, arrays["wh"], pads=(1, 1, 1, 1))
    l = ref.conv2d(h * np.clip(h + 3, 0, 6) / 6, arrays["wl"])
    y = np.where(l > 0, l, 0.1 * l)
    assert_matches_on_1_2_3_threads(report.output, x, "z", want, y)


def test_what_it_declines_and_channel_broadcasts(tmp_path, capsys):
    """An add of two inputs (no conv to share a layout with), a spatially broadcast add, a 7x7 depthwise conv, a 3-D
    dense, a 2-D dense of an input (an MLP's: OpenBLAS's), a conv of 6 output channels and a relu of an input go elsewhere, each with the reason --explain prints; a per-channel add and a per-image,
    per-channel mul (a squeeze-excite scale: reduce_mean over H, W -> sigmoid -> mul) stay in the region and
    match onnxruntime."""
    arrays = weights(wa=(16, 8, 3, 3), wb=(4, 6), wm=(4, 5), w6=(6, 8, 3, 3), per_channel=(1, 16, 1, 1), spatial=(1, 1, 5, 5), w7=(16, 1, 7, 7))
    nodes = [
        helper.make_node("Add", ["x", "x2"], ["s"], name="lonely_add"),
        helper.make_node("Conv", ["s", "wa"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Add", ["c", "per_channel"], ["cb"], name="channel_add"),
        helper.make_node("ReduceMean", ["cb"], ["m"], axes=[2, 3], keepdims=1, name="squeeze"),
        helper.make_node("Sigmoid", ["m"], ["gate"], name="gate"),
        helper.make_node("Mul", ["cb", "gate"], ["se"], name="excite"),
        helper.make_node("Add", ["se", "spatial"], ["sp"], name="spatial_add"),
        helper.make_node("Conv", ["c", "w7"], ["dw"], pads=[3, 3, 3, 3], group=16, name="depthwise7x7"),
        helper.make_node("MatMul", ["t", "wb"], ["d"], name="dense3d"),
        helper.make_node("Relu", ["t"], ["tr"], name="relu_of_input"),
        helper.make_node("MatMul", ["v", "wm"], ["mv"], name="mlp_dense"),
        helper.make_node("Conv", ["x", "w6"], ["c6"], pads=[1, 1, 1, 1], name="narrow_conv"),
    ]
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 5, 5]),
                                  helper.make_tensor_value_info("x2", TensorProto.FLOAT, [2, 8, 5, 5]),
                                  helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3, 4]),
                                  helper.make_tensor_value_info("v", TensorProto.FLOAT, [3, 4])],
                [helper.make_tensor_value_info("sp", TensorProto.FLOAT, [2, 16, 5, 5]),
                 helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3, 6]),
                 helper.make_tensor_value_info("tr", TensorProto.FLOAT, [2, 3, 4]),
                 helper.make_tensor_value_info("dw", TensorProto.FLOAT, [2, 16, 5, 5]),
                 helper.make_tensor_value_info("mv", TensorProto.FLOAT, [3, 5]),
                 helper.make_tensor_value_info("c6", TensorProto.FLOAT, [2, 6, 5, 5])], arrays)
    out = str(tmp_path / "m.so")
    assert main(["build", path, "-o", out, "--backends", "xnnpack,host", "--explain"]) == 0
    text = capsys.readouterr().out
    assert ("lonely_add -> host (xnnpack: xnnpack takes add only of a full-size result of a node it takes (no layout "
            "change for it alone))") in text
    for name in ("conv", "channel_add", "squeeze", "gate", "excite"):
        assert f"{name} -> xnnpack" in text, name
    assert ("spatial_add -> host (xnnpack: xnnpack takes add of operands of the output's shape (computed, not "
            "weights), of one value, or of one per channel (spatial is [1, 1, 5, 5], the output [2, 16, 5, 5]))"
            ) in text
    assert ("depthwise7x7 -> host (xnnpack: a depthwise 7x7 conv: XNNPACK has depthwise kernels of at most 25 taps, "
            "and its fallback is slower than host's direct loop)") in text
    assert "dense3d -> host (xnnpack: xnnpack takes a dense of x [M, K] (rank 2), not [2, 3, 4])" in text
    assert ("mlp_dense -> host (xnnpack: xnnpack takes a dense only inside a region (x made by a node it takes, e.g. "
            "a CNN's classifier); a dense alone is cblas's or host's)") in text
    assert ("narrow_conv -> host (xnnpack: a conv of 6 output channels of an x made outside a region: XNNPACK "
            "computes them in tiles of 8 or 16") in text
    assert "relu_of_input -> host (xnnpack: xnnpack takes relu only of a full-size result of a node it takes" in text
    feeds = {"x": RNG.standard_normal((2, 8, 5, 5)).astype(np.float32),
             "x2": RNG.standard_normal((2, 8, 5, 5)).astype(np.float32),
             "t": RNG.standard_normal((2, 3, 4)).astype(np.float32),
             "v": RNG.standard_normal((3, 4)).astype(np.float32)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    with loader.load(out) as model:
        got = model.run(**feeds)
    for key, value in zip(["sp", "d", "tr", "dw", "mv", "c6"], want):
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5 * np.abs(value).max())


def test_missing_library_at_build_says_how_to_get_it(tmp_path):
    cc = write_cc_wrapper(tmp_path / "cc", 'for a; do shift; [ "$a" = -lXNNPACK ] && a=-lXNNPACK_not_here; '
                                           'set -- "$@" "$a"; done\nexec cc "$@"\n')
    arrays = weights(w=(8, 3, 3, 3))
    path = save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], arrays)
    with pytest.raises(BuildError) as info:
        build(path, str(tmp_path / "m.so"), quiet=True, cc=cc, backends=BACKENDS)
    message = str(info.value)
    assert message.startswith("library -lXNNPACK_not_here is missing: the xnnpack backend needs the XNNPACK "
                              "headers (xnnpack.h, pthreadpool.h) and library (libXNNPACK.so)"), message
    assert "apt-get install libxnnpack-dev libpthreadpool-dev" in message


def test_missing_library_at_load_is_named(block, tmp_path, dpk_run):
    _, report, x = block
    bad = patched_copy(report.output, tmp_path / "m_requires.so", b"libXNNPACK.so.0", b"libXNNPACX.so.0", "manifest")
    with pytest.raises(loader.NotFoundError) as info:
        loader.load(bad)
    assert str(info.value).startswith(f"'{bad}' needs libXNNPACX.so.0 (manifest 'requires'), which this machine "
                                      f"cannot load: libXNNPACX.so.0: cannot open shared object file"), info.value
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, bad, f"x={tmp_path / 'x.npy'}"], capture_output=True, text=True)
    assert result.returncode != 0 and "needs libXNNPACX.so.0 (manifest 'requires')" in result.stderr


def test_resnet18_with_xnnpack_matches_onnxruntime(tmp_path):
    model = real_models.filled("resnet18.dynamo")
    path = str(tmp_path / "resnet18.onnx")
    onnx.save(model, path)
    feeds = real_models.feeds(model)
    report = build(path, str(tmp_path / "m.so"), quiet=True, backends=["xnnpack", "cblas", "host"], explain=True,
                   log=lambda *a: None)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert report.manifest["requires"][0] == "libXNNPACK.so.0" and len(convs) == 20
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    outs = []
    for threads in (1, 2):
        with loader.load(report.output, num_threads=threads) as m:
            outs.append(m.run(**feeds))
    for key, value in zip([o.name for o in model.graph.output], want):
        scale = max(float(np.abs(value).max()), 1e-30)
        assert float(np.abs(outs[0][key].astype(np.float64) - value).max()) / scale <= 1e-4, key
        assert np.array_equal(outs[0][key], outs[1][key]), key
    assert os.path.getsize(report.output) > 0


def test_a_model_of_xnnpack_regions_alone_builds_by_default(isa_variants_on, tmp_path):
    """A conv and its tanh are one xnnpack region and the whole model: its one unit is compiled once, not per
    ISA variant (each variant's copy defined ext0 again: the link failed), and the tanh's C finds dpk_tanhf
    (host's helpers: no host region brings them here)."""
    path = save(tmp_path, [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Tanh", ["c"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 6, 6])], {"w1": W["w1"], "b1": W["b1"]})
    report = build(path, str(tmp_path / "m.so"), quiet=True, backends=BACKENDS, use_cache=False)
    assert [m["functions"] for m in report.manifest["modules"] if m["name"] == "xnnpack"] == [["ext0"]]
    x = RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)
    (want,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with loader.load(report.output) as model:
        np.testing.assert_allclose(model.run(x=x)["y"], want, rtol=1e-4, atol=1e-5)


def test_xnnpack_code_is_compiled_once_in_a_default_build(isa_variants_on, tmp_path, monkeypatch):
    """XNNPACK picks its kernels by CPU itself, so a default x86-64 build compiles the xnnpack regions' glue
    once, in units of its own, and the host code once per ISA variant; every variant the CPU runs gives
    onnxruntime's outputs. (On a target without ISA variants, nothing changes.)"""
    arrays = {"w1": W["w1"], "b1": W["b1"], "wd": W["wd"], "bd": W["bd"]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),  # host: a unit per variant
             helper.make_node("Slice", ["f", "s0", "s1", "s2"], ["s"], name="slice"),
             helper.make_node("Gemm", ["s", "wd", "bd"], ["y"], transB=1, name="fc")]
    arrays.update(s0=np.array([0], np.int64), s1=np.array([32], np.int64), s2=np.array([1], np.int64))
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 5, 5])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], arrays)
    report = build(path, str(tmp_path / "m.so"), quiet=True, backends=BACKENDS, save_temps=str(tmp_path / "t"),
                   use_cache=False)
    variants = [v["name"] for v in report.manifest["target"].get("variants", [])]
    files = sorted(p.name for p in (tmp_path / "t").glob("*.c"))
    if not variants:
        pytest.skip("this target carries one ISA variant (not x86-64 glibc): nothing is compiled per variant")
    once = [f for f in files if f.count(".") == 1 and f != "dispatch.c"]
    varied = [f for f in files if f.count(".") == 2]
    assert once and varied and len(varied) % len(variants) == 0, files
    defines = {f: re.findall(r"DPK_EXPORT int (\w+)\(", (tmp_path / "t" / f).read_text()) for f in once + varied}
    (xnn,) = [m["functions"] for m in report.manifest["modules"] if m["name"] == "xnnpack"]
    assert sorted(fn for f in once for fn in defines[f]) == sorted(xnn), defines
    assert not any(fn in xnn for f in varied for fn in defines[f]), defines
    x = RNG.standard_normal((2, 8, 5, 5)).astype(np.float32)
    (want,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for isa in variants:
        monkeypatch.setenv("DPK_ISA", isa)
        try:
            m = loader.load(report.output)
        except Exception as e:  # a variant this CPU cannot run is refused at load, by name
            assert isa in str(e), e
            continue
        with m:
            assert m.isa == isa
            np.testing.assert_allclose(m.run(x=x)["y"], want, rtol=1e-4, atol=1e-5)
