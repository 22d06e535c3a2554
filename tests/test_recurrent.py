"""Recurrent ops: IR lstm, gru, rnn and the ONNX LSTM, GRU, RNN converters.

Three references: onnxruntime for ONNX models made with onnx.helper (every direction, initial states,
layout, clip, peepholes, input_forget, linear_before_reset, the activations the converter takes, each
output Y, Y_h, Y_c, and the op versions 7, 14 and 22), the NumPy references (tests/reference.py) for the
host kernels alone, and the LSTM layers of the committed real models. Few .so files: each model holds
many nodes. Then every refusal and shape error.
"""

from __future__ import annotations

import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import loader
import real_models
import reference as ref
from kernel_harness import compile_sources, lower_node
from packager import ir_check, ops
from packager.backends.base import Region
from packager.backends.host import HostBackend
from packager.build import build
from packager.frontends import onnx as onnx_frontend
from packager.ir import BuildError, Graph, Node, TensorType
from test_onnx import TOL, build_and_compare, close, error_of, make_model, save

RNG = np.random.default_rng(14)
S, B, I, H = 5, 3, 4, 6  # sequence, batch, input, hidden
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def rand(*shape, scale=0.7):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


class Model:
    """ONNX nodes of recurrent ops, all reading x (or xb, batch first), each with its own weights; every
    output a graph output."""

    def __init__(self):
        self.nodes, self.inits, self.outputs = [], {}, {}

    def add(self, op, name, inputs=(), outputs=3, **attrs):
        """`inputs`: ONNX input index -> array (B 3, sequence_lens 4, initial_h 5, initial_c 6, P 7) or "" to
        leave it out explicitly; `outputs`: how many of Y, Y_h, Y_c to name."""
        dirs = 2 if attrs.get("direction") == "bidirectional" else 1
        gates = GATES[op]
        self.inits[f"{name}.W"] = rand(dirs, gates * H, I)
        self.inits[f"{name}.R"] = rand(dirs, gates * H, H)
        names = ["xb" if attrs.get("layout") else "x", f"{name}.W", f"{name}.R"]
        for k, value in sorted(dict(inputs).items()):
            names += [""] * (k - len(names))
            if isinstance(value, np.ndarray):
                self.inits[f"{name}.in{k}"] = value
                names.append(f"{name}.in{k}")
            else:
                names.append(value)
        outs = [f"{name}.{o}" for o in ops.RNN_OUTPUTS[:min(outputs, 3 if op == "LSTM" else 2)]]
        self.nodes.append(helper.make_node(op, names, outs, name=name, hidden_size=H, **attrs))
        self.outputs.update({o: "float32" for o in outs})

    def save(self, path, opset):
        inputs = {"x": ("float32", (S, B, I))}
        if any(n.input[0] == "xb" for n in self.nodes):
            inputs["xb"] = ("float32", (B, S, I))
        return save(make_model(self.nodes, inputs, self.inits, self.outputs, opset), path), \
            {n: rand(*shape, scale=1.0) for n, (_, shape) in inputs.items()}


def states(dirs, layout=0, scale=0.5):
    return rand(*((B, dirs, H) if layout else (dirs, B, H)), scale=scale)


def biases(op, dirs):
    return rand(dirs, 2 * GATES[op] * H, scale=0.5)


def full_model() -> Model:
    m = Model()
    # LSTM: every input, clip; reverse with input_forget; bidirectional with other activations; batch first
    m.add("LSTM", "lstm_all", {3: biases("LSTM", 1), 4: np.full(B, S, np.int32), 5: states(1), 6: states(1),
                               7: rand(1, 3 * H)}, clip=0.9)
    m.add("LSTM", "lstm_rev", {3: biases("LSTM", 1)}, direction="reverse", input_forget=1)
    m.add("LSTM", "lstm_bidi", {5: states(2), 6: states(2)}, direction="bidirectional",
          activations=["HardSigmoid", "LeakyRelu", "Softsign", "sigmoid", "Elu", "Softplus"])
    m.add("LSTM", "lstm_batch_first", {3: biases("LSTM", 2), 5: states(2, 1), 6: states(2, 1), 7: rand(2, 3 * H)},
          direction="bidirectional", layout=1)
    m.add("LSTM", "lstm_h_only", {5: states(1)}, outputs=2)  # B absent before a present initial_h: zeros
    # GRU: linear_before_reset 0 and 1 in each direction
    m.add("GRU", "gru_fwd", {3: biases("GRU", 1), 5: states(1)})
    m.add("GRU", "gru_rev_lbr", {3: biases("GRU", 1)}, direction="reverse", linear_before_reset=1, clip=0.8)
    m.add("GRU", "gru_bidi", {3: biases("GRU", 2), 5: states(2)}, direction="bidirectional")
    m.add("GRU", "gru_bidi_lbr_batch_first", {3: biases("GRU", 2), 5: states(2, 1)}, direction="bidirectional",
          linear_before_reset=1, layout=1, activations=["Softsign", "Tanh", "HardSigmoid", "Relu"])
    # RNN
    m.add("RNN", "rnn_fwd", {3: biases("RNN", 1), 5: states(1)})
    m.add("RNN", "rnn_rev_relu", {}, direction="reverse", activations=["Relu"])
    m.add("RNN", "rnn_bidi_batch_first", {3: biases("RNN", 2), 5: states(2, 1)}, direction="bidirectional",
          layout=1, activations=["Tanh", "Softplus"], clip=1.5)
    return m


def run_onnxruntime(path, feeds) -> dict:
    """onnxruntime's outputs; it refuses batch-first (layout 1) nodes, so each runs in layout 0 between
    Transposes (x read as xb's transpose, the initial states' initializers transposed, each output
    transposed back under its own name)."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if "layout" not in attrs or attrs["layout"].i == 0:
            nodes.append(node)
            continue
        attrs["layout"].i = 0
        xt = f"{node.name}/x"
        nodes.append(helper.make_node("Transpose", [node.input[0]], [xt], perm=[1, 0, 2]))
        node.input[0] = xt
        for k in (5, 6):  # initial_h, initial_c: [batch, directions, hidden] -> [directions, batch, hidden]
            if len(node.input) > k and node.input[k]:
                t = inits[node.input[k]]
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).transpose(1, 0, 2), t.name))
        outs = list(node.output)
        for k, out in enumerate(outs):
            if out:
                node.output[k] = f"{out}/layout0"
        nodes.append(node)
        for k, out in enumerate(outs):
            if out:
                nodes.append(helper.make_node("Transpose", [node.output[k]], [out],
                                              perm=[2, 0, 1, 3] if k == 0 else [1, 0, 2]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def build_and_run(path, feeds, tmp) -> dict:
    report = build(path, tmp / "recurrent.so", quiet=True)
    with loader.load(report.output) as m:
        return m.run(**feeds)


def assert_matches_onnxruntime(path, feeds, tmp) -> None:
    got, want = build_and_run(path, feeds, tmp), run_onnxruntime(path, feeds)
    assert list(got) == list(want)
    for name in want:
        assert close(got[name], want[name]) <= TOL, name


@pytest.fixture(scope="module")
def against_onnxruntime(tmp_path_factory, cache):
    """(dsopack's outputs, onnxruntime's) of full_model at opset 22."""
    tmp = tmp_path_factory.mktemp("recurrent")
    path, feeds = full_model().save(tmp / "recurrent.onnx", 22)
    return build_and_run(path, feeds, tmp), run_onnxruntime(path, feeds)


@pytest.mark.parametrize("output", sorted(full_model().outputs))
def test_each_output_matches_onnxruntime(against_onnxruntime, output):
    got, want = against_onnxruntime
    assert close(got[output], want[output]) <= TOL, output


@pytest.mark.parametrize("opset", [7, 14])
def test_the_op_versions_match_onnxruntime(tmp_path, cache, opset):
    """LSTM, GRU, RNN 7 (no layout) and 14 (layout, here batch first)."""
    m = Model()
    layout = {"layout": 1} if opset >= 14 else {}
    m.add("LSTM", "lstm", {3: biases("LSTM", 1), 5: states(1, opset >= 14)}, **layout)
    m.add("GRU", "gru", {3: biases("GRU", 2)}, direction="bidirectional", linear_before_reset=1, **layout)
    m.add("RNN", "rnn", {5: states(1, opset >= 14)}, direction="reverse", **layout)
    path, feeds = m.save(tmp_path / f"recurrent_{opset}.onnx", opset)
    assert_matches_onnxruntime(path, feeds, tmp_path)


def test_a_node_per_output_read(tmp_path):
    """The IR node has one output: an ONNX node gets one per output a reader uses (Y_c unread: none)."""
    m = Model()
    m.add("LSTM", "lstm", {}, outputs=2)
    path, _ = m.save(tmp_path / "two.onnx", 22)
    graph = onnx_frontend.load_graph(path)
    assert sorted((n.op, n.attrs["returns"], n.output) for n in graph.nodes) == [
        ("lstm", 0, "lstm.Y"), ("lstm", 1, "lstm.Y_h")]


@pytest.mark.parametrize("name", ["lstm.script", "lstm.dynamo"])
def test_the_real_models_lstm_layers_match_onnxruntime(tmp_path, cache, name):
    """The two stacked LSTM layers of the committed models, up to the second one's Y (the models' tails
    need run-time Gather, tests/test_real_models.py)."""
    model = real_models.filled(name)
    model = onnx.shape_inference.infer_shapes(model)
    last = [n for n in model.graph.node if n.op_type == "LSTM"][-1]
    full = tmp_path / "full.onnx"
    onnx.save(model, full)
    path = str(tmp_path / f"{name}.onnx")
    onnx.utils.extract_model(str(full), path, [i.name for i in model.graph.input], [last.output[0]])
    build_and_compare(path, real_models.feeds(onnx.load(path)), tmp_path)


# ---------------------------------------------------------------------------
# the host kernels against the NumPy references (one region of several nodes, one .so)


KERNEL_CASES = [  # (op, inputs present beyond x, W, R, attributes)
    ("lstm", ["b", "h", "c", "P"], dict(layout=1, clip=0.8, returns=0)),
    ("lstm", ["b", "h", "c"], dict(direction=2, returns=2, activations=[4, 3, 6, 0, 5, 7])),
    ("lstm", [], dict(direction=1, input_forget=1, returns=1)),
    ("gru", ["b", "h"], dict(direction=2, returns=0)),
    ("gru", ["b"], dict(direction=1, linear_before_reset=1, layout=1, returns=1, clip=0.5)),
    ("rnn", ["b", "h"], dict(direction=2, layout=1, activations=[2, 1])),
]


def _kernel_inputs(op, present, attrs):
    dirs, layout, gates = 2 if attrs.get("direction") == 2 else 1, attrs.get("layout", 0), len(ops.RNN_GATES[op])
    x = rand(*((B, S, I) if layout else (S, B, I)), scale=1.0)
    arrays = [x, rand(dirs, gates * H, I), rand(dirs, gates * H, H)]
    extra = {"b": rand(dirs, 2 * gates * H, scale=0.5), "h": states(dirs, layout), "c": states(dirs, layout),
             "P": rand(dirs, 3 * H)}
    return arrays + [extra[k] for k in present]


def test_the_host_kernels_match_the_references():
    nodes, inputs, weights = [], {}, {}
    for n, (op, present, attrs) in enumerate(KERNEL_CASES):
        arrays = _kernel_inputs(op, present, attrs)
        names = [f"k{n}_x"] + [f"k{n}_w{i}" for i in range(1, len(arrays))]
        inputs[names[0]] = arrays[0]
        weights.update(zip(names[1:], arrays[1:]))
        nodes.append(Node(op, names, f"k{n}_y", dict(attrs), f"{op}_{n}"))
    graph = ir_check.infer(Graph("g", {k: TensorType(v.shape, "float32") for k, v in inputs.items()}, weights,
                                 nodes, [n.output for n in nodes]))
    region = Region("host_recurrent", nodes, list(inputs) + list(weights), [n.output for n in nodes], list(weights))
    csrc = HostBackend().lower(region, graph)
    lib = compile_sources([csrc], tempfile.mkdtemp())
    outs = [np.full(graph.type_of(n.output).shape, np.nan, np.float32) for n in nodes]
    lib.call("host_recurrent", *inputs.values(), *weights.values(), *outs, np.zeros(csrc.workspace_bytes, np.uint8))
    for node, got in zip(nodes, outs):
        arrays = [inputs[node.inputs[0]]] + [weights[i] for i in node.inputs[1:]]
        want = getattr(ref, node.op)(*arrays, **node.attrs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=node.name)


def test_the_scratch_is_planned_in_the_workspace():
    """x W^T of all steps (S * B * 4H floats), h R^T (B * 4H), h and c (B * H each)."""
    backend, region, graph = lower_node("lstm", _kernel_inputs("lstm", [], {}), (1, 2))
    floats = S * B * 4 * H + B * 4 * H + 2 * B * H
    assert backend.lower(region, graph).workspace_bytes == -(-floats * 4 // 64) * 64


# ---------------------------------------------------------------------------
# refusals and errors


def _error(tmp_path, op, inputs=(), x_shape=(S, B, I), **attrs) -> str:
    m = Model()
    m.add(op, "r", inputs, outputs=1, **attrs)
    m.nodes[0].input[0] = "x"
    model = make_model(m.nodes, {"x": ("float32", x_shape)} | ({"lens": ("int32", (B,))}
                       if "lens" in m.nodes[0].input else {}), m.inits, m.outputs, 22)
    return error_of(save(model, tmp_path / "bad.onnx"))


@pytest.mark.parametrize("inputs,says", [
    ({4: "lens"}, "sequence_lens ('lens', computed at run time) is supported only as a constant equal to the "
                  f"sequence length ({S}) for each of the {B} batch rows"),
    ({4: np.array([S, S - 1, S], np.int32)}, f"sequence_lens ('r.in4', [{S}, {S - 1}, {S}]) is supported only"),
])
def test_sequence_lens_other_than_the_sequence_length_is_refused(tmp_path, inputs, says):
    assert says in _error(tmp_path, "LSTM", inputs)


@pytest.mark.parametrize("attrs,says", [
    (dict(activation_alpha=[0.5]), "activation_alpha not supported (activations run with their default alpha"),
    (dict(activations=["Affine"]), "activations ['Affine'] not supported (supported: Sigmoid, Tanh, Relu"),
    (dict(activations=["ThresholdedRelu"]), "activations ['ThresholdedRelu'] not supported"),
    (dict(activations=["Tanh"], direction="bidirectional"), "activations ['Tanh'] must be 2 functions"),
    (dict(direction="sideways"), "direction 'sideways' is not one of forward, reverse, bidirectional"),
])
def test_unsupported_attributes_are_refused(tmp_path, attrs, says):
    assert says in _error(tmp_path, "RNN", **attrs)


def test_hidden_size_must_match_the_weights(tmp_path):
    m = Model()
    m.add("GRU", "g", outputs=1)
    m.nodes[0].attribute[0].i = H + 1  # hidden_size
    path, _ = m.save(tmp_path / "hs.onnx", 22)
    assert f"hidden_size {H + 1} does not match W ('g.W' is float32[1, {3 * H}, {I}]: 3 gates)" in error_of(path)


@pytest.mark.parametrize("op,inputs,attrs,says", [
    ("lstm", [(S, B, I), (1, 4 * H, I + 1), (1, 4 * H, H)], {},
     f"input x0 is float32[{S}, {B}, {I}] but weight w1 is float32[1, {4 * H}, {I + 1}]: W must be [1, 4 * hidden, "
     f"{I}] (forward, lstm's 4 gates, x's input size)"),
    ("gru", [(S, B, I), (1, 3 * H, I), (1, 3 * H, H)], {"direction": 2}, "W must be [2, 3 * hidden, 4] (bidirectional"),
    ("gru", [(S, B, I), (1, 3 * H, I), (1, 3 * H, H + 1)], {}, f"R must have shape [1, {3 * H}, {H}]"),
    ("rnn", [(S, B, I), (1, H, I), (1, H, H), (1, 2 * H), (1, B, H)], {"layout": 1},
     f"initial_h must have shape [{S}, 1, {H}]"),
    ("lstm", [(S, B, I), (1, 4 * H, I), (1, 4 * H, H), (1, 8 * H), (1, B, H), (1, B, H), (1, 4 * H)], {},
     f"P must have shape [1, {3 * H}]"),
    ("rnn", [(S, B), (1, H, I), (1, H, H)], {}, "x must be 3-D"),
])
def test_shape_errors_name_the_input(op, inputs, attrs, says):
    node = Node(op, [f"w{i}" if i else "x0" for i in range(len(inputs))], "y", attrs, "n")
    ops.normalize(node)
    with pytest.raises(BuildError, match="node 'n'") as e:
        ops.infer(node, [TensorType(s, "float32") for s in inputs])
    assert says in str(e.value)


@pytest.mark.parametrize("op,attrs,says", [
    ("gru", {"returns": 2}, "attribute 'returns' must be 0 or 1, got 2"),
    ("lstm", {"activations": [0, 1]}, "activations [0, 1] must be 3 indices into ['sigmoid'"),
    ("rnn", {"activations": [len(ops.RNN_ACTIVATIONS)]}, f"activations [{len(ops.RNN_ACTIVATIONS)}] must be 1"),
    ("rnn", {"direction": 3}, "attribute 'direction' must be 0, 1 or 2, got 3"),
    ("lstm", {"clip": 0.0}, "attribute 'clip' must be > 0, got 0.0"),
])
def test_attribute_errors(op, attrs, says):
    with pytest.raises(BuildError) as e:
        ops.normalize(Node(op, ["x", "W", "R"], "y", attrs, "n"))
    assert says in str(e.value)
