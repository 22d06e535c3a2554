"""ONNX's own node conformance cases for the float elementwise ops and activations.

`onnx.backend.test.case.node.collect_testcases()` holds, per case, a model and
its expected outputs (computed by ONNX's reference implementation). Every case
whose nodes are all ops of this set (NEW_OPS, plus the elementwise ops dsopack
already had, which the "_expanded" cases use) is built with the real pipeline
into a .so, loaded with the loader and run:

- float32 cases must match the expected outputs (NaN where they have NaN);
- cases dsopack cannot run must be refused at build time with a BuildError that
  says why: the unsupported dtype (bfloat16), or Mod
  with fmod=0 on floats before opset 28. REFUSED lists them, so a case that
  starts or stops being refused fails the test until the list is updated.

Opsets: each case runs at the opset it declares (its op's newest version, up to
28; dsopack reads 7 to the installed onnx's newest), so the Mod fmod=0 float32
cases, declared at 28, run with Mod-28's floor semantics.

A second test runs a small model chaining several of the new activations on the
host and cblas backends against onnxruntime.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import loader
from packager.build import build
from packager.ir import BuildError
from packager.spec import Target, from_onnx

NEW_OPS = {"Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign",
           "Pow", "Mod", "PRelu", "Gelu", "Elu", "Selu", "Softplus", "Softsign", "HardSigmoid", "HardSwish", "Mish",
           "Celu", "ThresholdedRelu"}
OLD_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh"}

# case -> what its BuildError must say (the dtype dsopack does not compute in)
DTYPE_REFUSED = {"test_celu_bfloat16": "bfloat16"}
FMOD0_FLOAT32 = ("test_mod_float32_mixed_sign_fmod_0", "test_mod_float_edge_cases_fmod_0_float32")
RTOL, ATOL = 1e-5, 1e-6


def _cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():  # some generators of other ops' cases overflow on purpose
        warnings.simplefilter("ignore")
        everything = collect_testcases()
    ours = []
    for case in everything:
        types = {n.op_type for n in case.model.graph.node}
        if types & NEW_OPS and types <= NEW_OPS | OLD_ELEMENTWISE and all(n.domain in ("", "ai.onnx") for n in case.model.graph.node):
            ours.append(case)
    return ours


CASES = _cases()


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_the_selection_is_what_this_file_expects():
    names = {c.name for c in CASES}
    assert len(CASES) == 82, sorted(names)
    assert set(DTYPE_REFUSED) | set(FMOD0_FLOAT32) <= names
    assert {n.op_type for c in CASES for n in c.model.graph.node} == NEW_OPS | {"Mul", "Tanh"}




def _build(model, tmp_path, backends=None, log=None):
    path = str(tmp_path / "case.onnx")
    onnx.save(model, path)
    out = str(tmp_path / "case.so")
    spec = from_onnx(path, backends=backends, target=Target(cflags=["-O2"]))
    if log is None:
        build(spec, out, quiet=True)
    else:
        build(spec, out, explain=True, log=log)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance_case(case, tmp_path, cache):
    model = case.model
    refused = DTYPE_REFUSED.get(case.name)
    if refused is not None:
        with pytest.raises(BuildError) as e:
            _build(model, tmp_path)
        assert refused.lower() in str(e.value).lower(), str(e.value)
        return
    so = _build(model, tmp_path)
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    with loader.load(so) as m:
        for inputs, outputs in case.data_sets:
            got = m.run(**dict(zip(names_in, inputs)))
            for name, want in zip(names_out, outputs):
                assert got[name].shape == want.shape and got[name].dtype == want.dtype, (name, got[name], want)
                np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{case.name}: {name}")



@pytest.mark.parametrize("name", FMOD0_FLOAT32)
def test_mod_fmod0_kernel_on_the_opset_28_cases(name, tmp_path):
    """The Mod-28 fmod=0 float32 cases' IR op (mod, fmod=0) on their data, down to what test_conformance_case's
    allclose cannot see: NaN positions and the sign of zero (that of B)."""
    from kernel_harness import run_node
    (case,) = [c for c in CASES if c.name == name]
    assert case.model.graph.node[0].attribute[0].i == 0 and _opset(case.model) == 28
    for (a, b), (want,) in case.data_sets:
        got = run_node("mod", [a, b], tmp_path, fmod=0)
        np.testing.assert_array_equal(got, want)  # NaN where NaN
        assert np.array_equal(np.signbit(got), np.signbit(want)), (got, want)


def test_mod_converter_follows_the_nodes_opset():
    from packager.frontends import onnx_ops
    from packager.ir import TensorType
    t = TensorType((6,), "float32")

    def convert(opset, **attrs):
        cv = onnx_ops.Converter("m.onnx", {"a": t, "b": t}, {}, {"a": 1, "b": 1}, {"a", "b", "y"})
        cv.run([onnx_ops.OnnxNode("Mod", "", "mod0", ["a", "b"], ["y"], attrs, opset)])
        return [(n.op, n.attrs) for n in cv.nodes]

    assert convert(28) == [("mod", {"fmod": 0})]
    assert convert(13, fmod=1) == [("mod", {"fmod": 1})]
    with pytest.raises(BuildError, match=r"m.onnx: node 'mod0' \(Mod\): fmod=0 on floating-point inputs \('a' is "
                                         r"float32\[6\]\) is invalid at opset 21: Mod before opset 28 requires fmod=1"):
        convert(21)

# ---------------------------------------------------------------------------
# A chain of the new activations against onnxruntime, on host and on cblas (which fuses each one after its
# MatMul: dense + gelu and friends)


def _chain_model():
    rng = np.random.default_rng(7)
    sizes = [16, 32, 32, 32, 32, 32, 32, 8]
    acts = [("Gelu", {}), ("Elu", {"alpha": 0.7}), ("Gelu", {"approximate": "tanh"}), ("Selu", {}),
            ("HardSwish", {}), ("Mish", {}), ("Softplus", {})]
    nodes, inits, x = [], [], "x"
    for i, (op, attrs) in enumerate(acts):
        w = rng.uniform(-0.5, 0.5, (sizes[i], sizes[i + 1])).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        x = f"a{i}" if i < len(acts) - 1 else "y"
        nodes.append(helper.make_node(op, [f"h{i}"], [x], name=f"{op.lower()}{i}", **attrs))
    nodes.insert(4, helper.make_node("PRelu", ["h1b", "slope"], ["a1"], name="prelu"))
    nodes[3].output[0] = "h1b"  # elu1 -> PRelu (a per-column slope) -> a1
    inits.append(numpy_helper.from_array(rng.uniform(0, 0.5, (sizes[2],)).astype(np.float32), "slope"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, sizes[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("backends", [["host"], ["cblas", "host"]])
def test_activation_chain_matches_onnxruntime(backends, tmp_path, cache):
    model = _chain_model()
    x = np.random.default_rng(8).uniform(-3, 3, (4, 16)).astype(np.float32)
    lines = []
    so = _build(model, tmp_path, backends, log=lines.append)
    if "cblas" in backends:  # every activation rides on its MatMul (a dense); PRelu has two inputs: host
        placed = "\n".join(lines)
        for act in ("gelu0", "elu1", "gelu2", "selu3", "hardswish4", "mish5", "softplus6"):
            assert f"{act} -> cblas (fused into mm{act[-1]})" in placed, placed
    with loader.load(so) as m:
        got = m.run(x=x)["y"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
