"""ONNX's own node conformance cases for the reductions, ArgMin and variadic Sum / Mean / Max / Min.

`onnx.backend.test.case.node.collect_testcases()` gives each case's model (one node) and data sets
[(inputs, outputs)]. Every case whose single node is one of OPS is built with dsopack (the real
pipeline: packager.build.build, then the loader) and compared with the case's expected outputs; the
`_expanded` variants (the op rewritten as a function of other ops) have several nodes and test those
other ops, so they are not collected here. One rewrite, keeping the op's semantics: the reductions'
`axes` is a graph input in these cases (opset 18+; 13+ for ReduceSum), fed by the data set. dsopack
needs axes at build time, so the data set's value becomes an initializer. Every case runs at the opset
it declares (dsopack reads 7 to the installed onnx's newest).

Cases dsopack cannot run must fail to build with a BuildError that says why; none is skipped:
- integer, bool, float16 and float64 tensors for the reductions (the host computes them in float32), float16
  for Sum / Mean / Max / Min (their elementwise IR ops compute integers and float64 too): the error names the
  dtype;
- the `empty_set` cases feed a tensor with a dimension of 0, which the ONNX frontend reads as a
  dimension with no fixed size (packager/frontends/onnx.py `_inputs`) and refuses. The kernels' result
  over an empty axis (0, 1, -inf, +inf, NaN for a mean) is tested in test_ops.py
  (test_reduce_over_an_empty_axis_gives_the_identity).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnx
from onnx import numpy_helper

import loader
from packager import ops
from packager.build import build
from packager.ir import BuildError
from packager.spec import Target, from_onnx

OPS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare",
       "ArgMin", "Sum", "Mean", "Max", "Min"}
RTOL = 1e-5  # float32 kernels against the reference's float32 results (sums here have at most 60 terms)


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some generators (Cast, ReduceLogSum...) overflow on purpose
        from onnx.backend.test.case.node import collect_testcases
        cases = collect_testcases()
    return [c for c in cases if c.model is not None and len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in OPS]


CASES = _cases()


def _prepare(case, inputs):
    """The case's model with constant axes (from the data set); the run-time feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    node = model.graph.node[0]
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, inputs))
    if node.op_type.startswith("Reduce") and len(node.input) > 1 and node.input[1] in feeds:
        axes = node.input[1]
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds.pop(axes)), axes))
        keep = [i for i in model.graph.input if i.name != axes]
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model, feeds


VARIADIC = {"Sum": "add", "Mean": "add", "Max": "maximum", "Min": "minimum"}  # -> their IR ops


def _runnable(op, feeds) -> bool:
    """The reductions compute float32; Sum / Mean / Max / Min what their elementwise IR op computes."""
    takes = ops.OPS[VARIADIC[op]].inputs[0].dtypes if op in VARIADIC else ("float32",)
    return all(np.asarray(a).dtype.name in takes for a in feeds.values())




def test_the_cases_are_collected():
    ops = {c.model.graph.node[0].op_type for c in CASES}
    assert ops == OPS
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(tmp_path, cache, case):
    (inputs, outputs), = case.data_sets
    model, feeds = _prepare(case, inputs)
    path = str(tmp_path / "model.onnx")
    onnx.save(model, path)
    out = str(tmp_path / "model.so")
    if any(0 in np.shape(a) for a in feeds.values()):
        with pytest.raises(BuildError, match=r"input 'data' dimension \d+ has no fixed size"):
            build(from_onnx(path, target=Target(cflags=["-O1"])), out, quiet=True)
        return
    if not _runnable(case.model.graph.node[0].op_type, feeds):
        dtypes = sorted({np.asarray(a).dtype.name for a in feeds.values()} - {"float32"})
        with pytest.raises(BuildError) as e:
            build(from_onnx(path, target=Target(cflags=["-O1"])), out, quiet=True)
        message = str(e.value)
        named = {"float16": "FLOAT16", "float64": "DOUBLE", "bool": "BOOL"}
        assert any(d in message or named.get(d, d.upper()) in message for d in dtypes), message
        return
    build(from_onnx(path, target=Target(cflags=["-O1"])), out, quiet=True)
    with loader.load(out) as m:
        got = m.run(**feeds)
    names = [o.name for o in model.graph.output]
    assert list(got) == names
    for name, want in zip(names, outputs):
        want = np.asarray(want)
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, (got[name], want)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=1e-6, err_msg=case.name)
        else:
            np.testing.assert_array_equal(got[name], want, err_msg=case.name)
