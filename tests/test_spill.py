"""Weights derived from mapped ones wait in spill files, not in memory (packager/spill.py): the transpose an
ONNX MatMul's weight gets, cblas's panels, a compressed .npz member. Each gives the values it gives in memory,
so the built file does not depend on where its weights came from; and a build from an ONNX file with a
weight in external data holds less than that weight in memory."""

import os
import re
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import loader
from packager import blob, spill
from packager.backends import cblas
from packager.build import build
from packager.ir import BuildError

RNG = np.random.default_rng(0)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks and tiles of a few KiB, so small arrays spill, in several blocks with ragged ends."""
    monkeypatch.setattr(spill, "BLOCK", 4096)
    monkeypatch.setattr(spill, "SPILL_FROM", 1)


def mapped(tmp_path, array: np.ndarray) -> np.ndarray:
    path = tmp_path / "source.bin"
    path.write_bytes(b"\0" * 12 + array.tobytes())  # not at the file's start
    return blob.mapped(str(path), array.dtype, 12, array.shape)


def test_a_mapped_weights_transpose_is_spilled_in_a_session(tmp_path, small_blocks):
    a = RNG.standard_normal((70, 45)).astype(np.float32)
    with spill.session() as where:
        t = spill.transposed(mapped(tmp_path, a))
        assert isinstance(t, np.memmap) and os.path.dirname(t.filename) == where
        assert blob.file_range(t) is not None  # the blob streams it from the spill file
        np.testing.assert_array_equal(t, a.T)
    assert not os.path.exists(where)  # the session's files go with it
    assert not isinstance(spill.transposed(mapped(tmp_path, a)), np.memmap)  # outside a session: in memory
    with spill.session():
        assert not isinstance(spill.transposed(a), np.memmap)  # an array in memory stays there


def test_a_weight_file_cut_short_during_the_build_is_a_build_error(tmp_path, small_blocks):
    a = mapped(tmp_path, RNG.standard_normal((70, 45)).astype(np.float32))
    os.truncate(tmp_path / "source.bin", 12 + 4 * 45 * 30)  # 30 of its 70 rows left
    with spill.session(), pytest.raises(BuildError, match=r"source.bin ended while a weight was read \(did it "
                                                          r"change during the build\?\)"):
        spill.transposed(a)


def test_cblas_panels_of_a_mapped_weight_are_spilled_alike(tmp_path, small_blocks):
    w = RNG.standard_normal((70, 33)).astype(np.float32)  # N not a multiple of the panel width
    with spill.session():
        spilled = cblas.panels(mapped(tmp_path, w))
        assert isinstance(spilled, np.memmap)
        np.testing.assert_array_equal(spilled, cblas.panels(w))


def test_a_compressed_npz_member_is_decompressed_into_a_spill_file(tmp_path, small_blocks):
    from packager.spec import load
    w = {"w1": RNG.standard_normal((40, 16)).astype(np.float32), "b1": RNG.standard_normal(40).astype(np.float32),
         "w2": RNG.standard_normal((5, 40)).astype(np.float32)}
    np.savez_compressed(tmp_path / "c.npz", **w)
    graph = {"inputs": {"x": {"shape": [8, 16]}}, "weights": str(tmp_path / "c.npz"), "outputs": ["y"],
             "nodes": [{"op": "dense", "inputs": ["x", "w1", "b1"], "output": "h"},
                       {"op": "dense", "inputs": ["h", "w2"], "output": "y"}]}
    spec = {"name": "c", "backends": ["host"], "model": {"graph": graph}}
    with spill.session():
        weights = load(spec).graph.weights
        assert all(isinstance(a, np.memmap) for a in weights.values())
        for name, array in w.items():
            np.testing.assert_array_equal(weights[name], array)


def matmul_model(tmp_path, name: str, wt: np.ndarray, external: bool, batch=8) -> str:
    """y = Gemm(MatMul(x, wt), wt2) with wt [K, N] and wt2 [N, K]: both constants transposed into dense W."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["h"]), helper.make_node("Gemm", ["h", "wt2"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, wt.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, wt.shape[0]])],
        [onnx.numpy_helper.from_array(wt, "wt"), onnx.numpy_helper.from_array(np.ascontiguousarray(wt.T), "wt2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path, save_as_external_data=external, location=f"{name}.bin", size_threshold=0)
    return path


def test_sessions_are_per_thread_and_a_spilled_array_outlives_its_session(tmp_path, small_blocks):
    """Two builds in two threads spill into their own directories; an array spilled in a session that ended
    is still read through its mapping (the blob no longer finds its file by path)."""
    a = mapped(tmp_path, RNG.standard_normal((40, 30)).astype(np.float32))
    started, seen = threading.Barrier(2), {}

    def build_like(name):
        with spill.session() as where:
            started.wait()  # both sessions open at once
            seen[name] = (where, os.path.dirname(spill.transposed(a).filename))
            started.wait()

    threads = [threading.Thread(target=build_like, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"][0] != seen["b"][0] and all(where == spilled for where, spilled in seen.values())
    with spill.session():
        t = spill.transposed(a)
        assert blob.file_range(t) is not None
    assert blob.file_range(t) is None
    writer = blob.BlobWriter()
    writer.add(t)  # read through the mapping
    np.testing.assert_array_equal(t, np.asarray(a).T)


def test_a_dynamic_build_spills_each_derived_weight_once(tmp_path, small_blocks, monkeypatch):
    """The model is converted once per plan; each plan asks for the same transposes and gets the same files."""
    made = []
    new_file = spill._new_file
    monkeypatch.setattr(spill, "_new_file", lambda *a: made.append(new_file(*a)) or made[-1])
    wt = RNG.standard_normal((24, 70)).astype(np.float32)
    path = matmul_model(tmp_path, "dyn", wt, external=True, batch="batch")
    report = build(path, tmp_path / "d.so", quiet=True, backends="host", shapes={"x": ["1..8", 24]})
    assert len(made) == 2, made  # wt and wt2, not once per plan
    x = RNG.standard_normal((5, 24)).astype(np.float32)
    with loader.load(tmp_path / "d.so") as m:
        assert len(m.plans) > 1, report
        np.testing.assert_allclose(m.run(x=x)["y"], x @ wt @ wt.T, rtol=1e-4, atol=1e-4)


def test_an_onnx_model_builds_the_same_from_external_data(tmp_path, small_blocks, monkeypatch):
    made = []
    new_file = spill._new_file
    monkeypatch.setattr(spill, "_new_file", lambda *a: made.append(new_file(*a)) or made[-1])
    wt = RNG.standard_normal((24, 70)).astype(np.float32)
    x = RNG.standard_normal((8, 24)).astype(np.float32)
    outs = []
    for external in (False, True):
        path = matmul_model(tmp_path, f"m{int(external)}", wt, external)
        build(path, tmp_path / "m.so", quiet=True, backends="cblas,host")
        assert bool(made) == external  # only weights mapped from the external data were spilled
        with loader.load(tmp_path / "m.so") as m:
            outs.append(m.run(x=x)["y"])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[1], x @ wt @ wt.T, rtol=1e-4, atol=1e-4)


# The build of a 384 MiB weight in external data, in a child that reports its own peak RSS (VmHWM)
CHILD = """import re, sys
from packager.build import build
build(sys.argv[1], sys.argv[2], quiet=True, use_cache=False, backends="host")
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def test_a_build_holds_less_than_an_external_weight_in_memory(tmp_path):
    k, n = 4096, 24576  # 384 MiB: a transpose in memory would take that twice over
    rng = np.random.default_rng(5)
    with open(tmp_path / "big.bin", "wb") as f:
        for _ in range(0, k, 512):
            f.write(rng.standard_normal((512, n), np.float32).tobytes())
    w = TensorProto(name="wt", data_type=TensorProto.FLOAT, dims=[k, n], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(4 * k * n))):
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "wt"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "big.onnx"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "big.onnx"), str(tmp_path / "big.so")],
                         check=True, capture_output=True, text=True).stdout
    peak = int(re.findall(r"\d+", out)[-1]) * 1024
    assert peak < 4 * k * n, f"the build's peak RSS {peak >> 20} MiB is over the weight's {(4 * k * n) >> 20} MiB"
    x = rng.standard_normal((1, k), np.float32)
    with loader.load(tmp_path / "big.so") as m:
        y = m.run(x=x)["y"]
    wt = np.memmap(tmp_path / "big.bin", np.float32, "r", shape=(k, n))
    want = sum(x[:, r:r + 512].astype(np.float64) @ wt[r:r + 512] for r in range(0, k, 512))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-3)
