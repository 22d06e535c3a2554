"""The reductions' ONNX node cases whose `axes` is a graph input (opset 18+; 13+ for ReduceSum).

tests/test_onnx_conformance.py runs every case as ONNX wrote it: these are refused there, since
dsopack needs axes at build time. They are most of the reductions' cases, with the interesting axes
(negative, several, empty with noop_with_empty_axes), so here each runs once more with the data set's
axes made an initializer (the op's semantics unchanged), through the same runner
(scripts/onnx_conformance.py run_cases): it must pass, or be refused with a BuildError (a dtype the host
does not compute in, or a dimension of 0 that the ONNX frontend reads as open).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from test_onnx_conformance import failures, oc

OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"]


def with_constant_axes(case):
    """`case` with its axes input (fed by its one data set) as an initializer, or None if it has none."""
    model = onnx.load_from_string(case.model)
    node = model.graph.node[0]
    names = [i.name for i in model.graph.input]
    (inputs, outputs), = case.data_sets
    if len(node.input) < 2 or node.input[1] not in names:
        return None
    axes = node.input[1]
    feeds = dict(zip(names, inputs))
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds.pop(axes)), axes))
    keep = [i for i in model.graph.input if i.name != axes]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return oc.Case(case.name, case.op, model.SerializeToString(), [(list(feeds.values()), outputs)],
                   case.rtol, case.atol)


def test_reductions_with_axes_as_constants(cache):
    cases = [c for c in map(with_constant_axes, oc.collect(OPS)) if c is not None]
    assert {c.op for c in cases} == set(OPS) and len(cases) >= 60
    results = oc.run_cases(cases, jobs=2)
    assert not failures(results), failures(results)
    passed = [r for r in results if r.status == oc.PASS]
    assert {r.op for r in passed} == set(OPS), oc.table(results)
    for r in results:
        if r.status == oc.REFUSED:
            assert "has no fixed size" in r.detail or "needs" in r.detail or "element type" in r.detail, r
