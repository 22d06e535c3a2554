"""Chains of float32 elementwise nodes on the host backend (packager/backends/host.py: `fuses`, _steps, _chain_body):
one loop per chain, its intermediates in registers. Which nodes join a chain and which do not (an intermediate read
twice or a graph output, a follower that broadcasts the chain's value, more operands than a task carries), the flat
task split over threads and the loop nest over broadcast dims, against onnxruntime and NumPy, the same bits on 1, 2
and 3 threads."""

import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import loader
import reference as ref
from packager.cli import main

RNG = np.random.default_rng(16)
SHAPE = [2, 64, 600]  # 76800 elements: over cgen.PARALLEL_MIN_WORK, so the flat chain is split over threads


def _model(tmp_path):
    consts = {"sqrt2": np.float32(np.sqrt(2.0)), "one": np.float32(1.0), "half": np.float32(0.5),
              "scale": RNG.standard_normal(600).astype(np.float32), "shift": RNG.standard_normal(600).astype(np.float32),
              **{f"s{i}": np.float32(1.0 + 0.1 * i) for i in range(5)}}
    node = helper.make_node
    nodes = [
        # GELU as the Hugging Face export writes it: one flat chain of five
        node("Div", ["x", "sqrt2"], ["g0"], name="gelu_div"), node("Erf", ["g0"], ["g1"], name="gelu_erf"),
        node("Add", ["g1", "one"], ["g2"], name="gelu_add"), node("Mul", ["x", "g2"], ["g3"], name="gelu_mul"),
        node("Mul", ["g3", "half"], ["gelu"], name="gelu_half"),
        # a per-column scale and shift: a loop nest over the broadcast dims
        node("Mul", ["x", "scale"], ["a0"], name="affine_mul"), node("Add", ["a0", "shift"], ["a1"], name="affine_add"),
        node("Relu", ["a1"], ["affine"], name="affine_relu"),
        # r0 is read twice: it ends its step; r1 -> r2 is a chain reading r0 from outside
        node("Add", ["x", "one"], ["r0"], name="twice"), node("Mul", ["r0", "half"], ["r1"], name="after_twice"),
        node("Add", ["r1", "r0"], ["twice_out"], name="reads_twice"),
        # o0 is a graph output: the chain stops there
        node("Sigmoid", ["x"], ["o0"], name="exposed"), node("Tanh", ["o0"], ["exposed_out"], name="after_exposed"),
        # x and s0..s4: six operands, more than a task's four inputs: two chains
        node("Mul", ["x", "s0"], ["m0"], name="long0"), node("Add", ["m0", "s1"], ["m1"], name="long1"),
        node("Mul", ["m1", "s2"], ["m2"], name="long2"), node("Add", ["m2", "s3"], ["m3"], name="long3"),
        node("Mul", ["m3", "s4"], ["long"], name="long4"),
        # a follower that broadcasts the chain's value (the output grows): not a link
        node("Neg", ["scale"], ["n0"], name="small"), node("Add", ["n0", "x"], ["grown"], name="grows"),
    ]
    outputs = ["gelu", "affine", "twice_out", "o0", "exposed_out", "long", "grown"]
    graph = helper.make_graph(nodes, "chains", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, SHAPE) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    path = str(tmp_path / "chains.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, consts, outputs


def test_chains_fuse_where_they_may_and_match_onnxruntime(tmp_path, capsys):
    path, c, outputs = _model(tmp_path)
    out = str(tmp_path / "m.so")
    assert main(["build", path, "-o", out, "--backends", "host", "--explain", "--save-temps", str(tmp_path / "t")]) == 0
    text = capsys.readouterr().out
    fused = dict(re.findall(r"(\w+) -> host \(fused into (\w+)\)", text))
    assert fused == {"gelu_erf": "gelu_div", "gelu_add": "gelu_div", "gelu_mul": "gelu_div", "gelu_half": "gelu_div",
                     "affine_add": "affine_mul", "affine_relu": "affine_mul", "reads_twice": "after_twice",
                     "long1": "long0", "long2": "long0", "long3": "long0", "long4": "long0"}, fused
    source = (tmp_path / "t" / "model.c").read_text()
    assert "/* gelu_div: div -> gelu_erf: erf -> gelu_add: add -> gelu_mul: mul -> gelu_half: mul -> " in source
    assert "dpk_host_parallel(" in source.split("gelu_div: div -> gelu_erf")[1].split("return 0;")[0]
    assert "/* long0: mul -> long1: add -> long2: mul -> float32" in source  # x, s0..s2: a task's four inputs
    assert "/* long3: add -> long4: mul -> float32" in source  # s3 would be the fifth
    x = RNG.standard_normal(SHAPE).astype(np.float32)
    want = dict(zip(outputs, ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})))
    erf = ref.erf(x.astype(np.float64) / np.sqrt(2.0))
    numpy = {"gelu": x * (erf + 1) * 0.5, "affine": np.maximum(x * c["scale"] + c["shift"], 0),
             "twice_out": (x + 1) * 0.5 + (x + 1), "o0": 1 / (1 + np.exp(-x.astype(np.float64))),
             "grown": x - c["scale"]}
    numpy["exposed_out"] = np.tanh(numpy["o0"])
    numpy["long"] = (((x * c["s0"] + c["s1"]) * c["s2"]) + c["s3"]) * c["s4"]
    runs = []
    for threads in (1, 2, 3):
        with loader.load(out, num_threads=threads) as model:
            runs.append(model.run(x=x))
    for name in outputs:
        np.testing.assert_allclose(runs[0][name], want[name], rtol=2e-6, atol=2e-6, err_msg=name)
        np.testing.assert_allclose(runs[0][name], numpy[name], rtol=2e-6, atol=2e-6, err_msg=name)
        for got in runs[1:]:
            assert np.array_equal(got[name], runs[0][name]), name

