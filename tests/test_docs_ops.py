"""docs/ops.md: the worked example (a unary op, softplus), run from the doc's own snippets.

Each ```python block of the doc starts with a comment naming where it goes. The
test puts the registry entry and the ONNX converter line in place for its own
duration (monkeypatch), takes the reference from the doc too, and runs the op:
one node through the host backend, a dense + softplus fused by cblas, and an
ONNX Softplus node through the converter.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import reference as ref
from kernel_harness import compile_sources, run_node
from packager import ir_check, ops
from packager.backends import cblas
from packager.backends.base import Region
from packager.frontends import onnx_ops
from packager.ir import Graph, Node, TensorType

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "ops.md")


def snippets() -> dict[str, str]:
    """First comment line of each python block -> the rest of the block."""
    blocks = re.findall(r"^```python\n# (.*?)\n(.*?)^```$", open(DOC, encoding="utf-8").read(), flags=re.S | re.M)
    return dict(blocks)


@pytest.fixture
def softplus(monkeypatch):
    """The doc's three snippets in place: (registry entry, ONNX converters, reference function)."""
    text = snippets()
    (spec,) = eval(text["packager/ops.py, in OPS:"], vars(ops))  # the entry ends in a comma: a 1-tuple
    monkeypatch.setitem(ops.OPS, spec.name, spec)
    converters = eval("{" + text["packager/frontends/onnx_ops.py, in CONVERTERS:"] + "}", vars(onnx_ops))
    for onnx_op, convert in converters.items():
        monkeypatch.setitem(onnx_ops.CONVERTERS, onnx_op, convert)
    namespace = {"np": np}
    exec(text["tests/reference.py:"], namespace)
    return spec, converters, namespace[spec.name]


def test_the_doc_has_the_three_snippets():
    assert set(snippets()) == {"packager/ops.py, in OPS:", "packager/frontends/onnx_ops.py, in CONVERTERS:",
                               "tests/reference.py:"}


def test_the_snippets_are_the_codes_own_text():
    """softplus was added exactly as the doc says: each snippet is in its file, verbatim."""
    root = os.path.dirname(DOC)
    for where, text in snippets().items():
        path = os.path.join(root, "..", where.split(",")[0].rstrip(":"))
        assert text.strip() in open(path, encoding="utf-8").read(), f"docs/ops.md's snippet for {where} is not in it"
    (spec,) = eval(snippets()["packager/ops.py, in OPS:"], vars(ops))
    assert spec == ops.OPS["softplus"]


def test_the_host_backend_runs_it(softplus, tmp_path):
    spec, _, reference = softplus
    assert spec.name in ops.elementwise(1) and spec.name in cblas.activations()
    x = np.random.default_rng(1).uniform(-20, 20, size=(3, 1000)).astype(np.float32)
    got = run_node("softplus", [x], tmp_path)
    ref.assert_close(got, ref.unary_approx(reference, x), "softplus")


def test_cblas_fuses_it_after_a_dense(softplus, tmp_path):
    _, _, reference = softplus
    rng = np.random.default_rng(2)
    x, w = rng.uniform(-1, 1, (4, 32)).astype(np.float32), rng.uniform(-1, 1, (16, 32)).astype(np.float32)
    nodes = [Node("dense", ["x", "w"], "h", {}, "fc"), Node("softplus", ["h"], "y", {}, "act")]
    graph = ir_check.infer(Graph("g", {"x": TensorType((4, 32), "float32")}, {"w": w}, nodes, ["y"]))
    backend = cblas.CblasBackend()
    assert backend.supports(nodes[0], graph) is None and backend.can_fuse(nodes[0], nodes[1], graph)
    region = Region("cblas_fc", nodes, ["x", "w"], ["y"], ["w"])
    lib = compile_sources([backend.lower(region, graph)], tmp_path)
    y = np.zeros((4, 16), np.float32)
    lib.call("cblas_fc", x, w, y)
    ref.assert_close(y, ref.unary_approx(reference, ref.dense_approx(x, w)), "dense + softplus")


def test_the_onnx_converter_emits_it(softplus):
    _, converters, _ = softplus
    cv = onnx_ops.Converter("m.onnx", {"x": TensorType((2, 3), "float32")}, {}, {"x": 1}, {"x", "y"})
    cv.run([onnx_ops.OnnxNode("Softplus", "", "sp", ["x"], ["y"], {}, 17)])
    assert list(converters) == ["Softplus"]
    assert [(n.op, n.inputs, n.output) for n in cv.nodes] == [("softplus", ["x"], "y")]
    assert cv.types["y"] == TensorType((2, 3), "float32")
