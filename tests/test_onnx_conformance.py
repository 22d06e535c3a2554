"""ONNX's own node test cases through dsopack (scripts/onnx_conformance.py).

Every case (not the _expanded ones) is built, loaded and run; a case may be refused
with a BuildError (dsopack says what it does not do), never FAIL: wrong numbers,
shapes or dtypes, an error at load or run, another exception, a crash. The whole
set runs once per session (the `all_results` fixture) and must give exactly the
table in docs/onnx.md (`--write` regenerates it): the one ledger of which cases
pass and why the others are refused.
"""

import importlib.util
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("onnx_conformance", os.path.join(ROOT, "scripts", "onnx_conformance.py"))
oc = importlib.util.module_from_spec(_spec)
sys.modules["onnx_conformance"] = oc  # its dataclasses (and pickling them to the workers) look it up there
_spec.loader.exec_module(oc)

FEW = ["Relu", "Softmax", "LogSoftmax", "Gemm", "MatMul", "Add", "Conv"]




@pytest.fixture(scope="module")
def all_cases():
    return oc.collect()


@pytest.fixture(scope="module")
def all_results(cache, all_cases):
    """The CI run of the whole set, once, in 2 worker processes."""
    return oc.run_cases(all_cases, jobs=2)


def failures(results) -> str:
    return "\n".join(f"{r.name}: {r.detail}" for r in results if r.status == oc.FAILED)


def test_a_few_ops_in_process(cache):
    cases = oc.collect(FEW)
    assert {c.op for c in cases} == set(FEW)
    results = oc.run_cases(cases, jobs=0)
    assert [r.name for r in results] == [c.name for c in cases]
    assert not failures(results), failures(results)
    passed = {r.name for r in results if r.status == oc.PASS}
    assert {"test_relu", "test_softmax_axis_0", "test_logsoftmax_large_number", "test_gemm_all_attributes",
            "test_matmul_4d", "test_matmul_1d_1d", "test_add_bcast"} <= passed
    for r in results:
        assert r.status == oc.PASS or r.detail, r  # every refusal says why
    table = oc.table(results)
    assert table.splitlines()[0].startswith("| op | cases | pass | refused | failed |")
    assert "| Relu | 1 | 1 | 0 | 0 |  |" in table.splitlines()
    assert oc.summary(results).startswith(f"{len(passed)} of {len(cases)} cases pass")


def test_every_node_case_passes_or_is_refused(all_cases, all_results):
    assert len(all_cases) > 1000
    assert len(all_results) == len(all_cases)
    assert not failures(all_results), failures(all_results)


def test_the_docs_table_is_this_run(all_results):
    """docs/onnx.md's table is the ledger of what passes and why the rest is refused: a change in either
    (a case that starts or stops passing, a new refusal reason) fails here until `--write` records it."""
    import onnx
    doc = oc.read_doc()
    made_with = re.search(r"\(onnx (\S+) node tests", doc).group(1)
    if made_with != onnx.__version__:
        pytest.skip(f"docs/onnx.md's table was made with onnx {made_with}, this is {onnx.__version__}: "
                    f"its cases differ (regenerate it with scripts/onnx_conformance.py --write)")
    now = oc.report(all_results)
    changed = [f"docs: {a}\nnow:  {b}" for a, b in zip(doc.splitlines(), now.splitlines()) if a != b]
    assert doc == now, "run scripts/onnx_conformance.py --write; changed lines:\n" + "\n".join(changed[:20])


def test_wrong_numbers_are_failures(cache, all_cases):
    case = next(c for c in all_cases if c.name == "test_relu")
    (x,), (y,) = case.data_sets[0]
    wrong = oc.Case(case.name, case.op, case.model, [([x], [y + 1e-2])])
    (result,) = oc.run_cases([wrong], jobs=0)
    assert result.status == oc.FAILED and result.detail.startswith("output 'y': ") and "values differ" in result.detail


def test_a_crash_is_a_failure_and_the_worker_is_replaced(monkeypatch, all_cases):
    crash, fine = (next(c for c in all_cases if c.name == n) for n in ("test_relu", "test_xor2d"))

    def run_case(case, workdir):
        if case.name == "test_relu":
            os._exit(3)  # what a segfault in a model looks like from the parent
        return oc.Result(case.name, case.op, oc.REFUSED, "stub")

    monkeypatch.setattr(oc, "run_case", run_case)  # the forked workers inherit it
    results = oc.run_cases([crash, fine, crash], jobs=1)
    assert [r.status for r in results] == [oc.FAILED, oc.REFUSED, oc.FAILED]
    assert "the worker died (exit code 3)" in results[0].detail


def test_compare():
    a = np.array([1.0, np.nan, 3.0], np.float32)
    assert oc.compare(a, a.copy(), 1e-4, 1e-7) is None  # NaN == NaN
    assert oc.compare(a * (1 + 1e-5), a, 1e-4, 1e-7) is None
    assert oc.compare(a + 1, a, 1e-4, 1e-7) == "2 of 3 values differ (max abs diff 1)"
    assert oc.compare(a[:2], a, 1e-4, 1e-7) == "shape [2], expected [3]"
    assert oc.compare(a.astype(np.float64), a, 1e-4, 1e-7) == "dtype float64, expected float32"
    assert oc.compare(np.array(2.0, np.float32), np.float32(2.0), 1e-4, 1e-7) is None  # a 0-d result as a scalar
    assert oc.compare(np.array([1, 2]), np.array([1, 3]), 1e-4, 1e-7) == "1 of 2 values differ"
    assert oc.compare(None, a, 1e-4, 1e-7) == "missing"


def test_refusal_reasons_group():
    detail = "node 'Add_0' (Add): as IR node 'Add_0' (op add): input x is int8[3, 4, 5]: op add needs floating-point"
    assert oc._short(detail) == "input x is …[…]: op add needs floating-point"
    assert oc._short("opset 7 is not supported (dsopack reads opsets 13 to 21); export with ...") == \
        "opset 7 is not supported (dsopack reads opsets 13 to 21)"
    assert oc.refusal_reason("/tmp/x/test_abs.onnx: unsupported ONNX ops (opset 22): Abs (n)\nmore",
                             "/tmp/x/test_abs.onnx") == "unsupported ONNX ops (opset 22): Abs (n)"


def test_write_doc(tmp_path):
    doc = tmp_path / "onnx.md"
    doc.write_text(f"# T\n\nbefore\n{oc.BEGIN}\nold\n{oc.END}\nafter\n")
    oc.write_doc("new table", str(doc))
    assert doc.read_text() == f"# T\n\nbefore\n{oc.BEGIN}\nnew table\n{oc.END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        oc.write_doc("x", str(doc))
    real = open(os.path.join(ROOT, "docs", "onnx.md"), encoding="utf-8").read()
    assert real.count(oc.BEGIN) == 1 and real.count(oc.END) == 1
