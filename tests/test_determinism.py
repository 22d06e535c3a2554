"""Same bits for any thread count, any load on the pool and any number of concurrent runs (README,
"Same answer for any thread count"): each kernel split into 1, 2, 3 and 5 ranges by the harness's
stand-in pool, and whole models under DPK_NUM_THREADS=1, 2, 3, 5 and 8 concurrent runs, compared
with assert_array_equal. Every case is large enough that its loops really split (checked)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import kernel_harness as kh
import reference as ref
from packager.backends.cblas import CblasBackend
from packager.backends.host import HostBackend
from packager.build import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32 = "float32"
PARTS = (2, 3, 5)
# -march=native takes the AVX-512 kernels where the CPU has them; x86-64-v3 (AVX2) is the path every
# other x86-64 machine of ours runs, and it runs here too
MARCHES = ("native", "x86-64-v3")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


KERNEL_CASES = [  # (backend, op, input shapes, weight indices, attrs): each one splits into >= 5 blocks
    ("cblas", "dense", [(1, 700), (600, 700), (600,)], (1, 2), {}),                   # sgemv per block
    ("cblas", "dense", [(3, 700), (600, 700)], (1,), {}),                              # sgemm, blocks of W's rows
    ("cblas", "dense", [(50, 300), (40, 300), (40,)], (1, 2), {}),                     # blocks of rows of x
    ("cblas", "dense", [(64, 512), (384, 512), (384,)], (1, 2), {}),                   # W^T, blocks of panels
    ("cblas", "dense", [(61, 512), (96, 512)], (1,), {}),                              # W^T, blocks of rows
    ("cblas", "matmul", [(4, 30, 70), (4, 70, 50)], (), {}),
    ("cblas", "matmul", [(200, 70), (70, 50)], (), {}),
    ("cblas", "conv2d", [(1, 16, 19, 17), (24, 16, 3, 3), (24,)], (1, 2), {"pads": [1, 1, 1, 1]}),    # im2col
    ("cblas", "conv2d", [(1, 32, 28, 28), (48, 32, 1, 1), (48,)], (1, 2), {}),                         # in place
    ("cblas", "conv2d", [(1, 32, 14, 14), (32, 8, 3, 3)], (1,), {"groups": 4, "pads": [1, 1, 1, 1]}),  # grouped
    ("cblas", "conv2d", [(1, 16, 32, 32), (16, 16, 3, 3), (16,)], (1, 2), {"pads": [1, 1, 1, 1]}),    # direct
    ("cblas", "conv2d", [(2, 16, 32, 32), (32, 16, 3, 3)], (1,), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("host", "conv2d", [(4, 32, 16, 16), (32, 1, 3, 3), (32,)], (1, 2), {"groups": 32, "pads": [1, 1, 1, 1]}),
    ("host", "maxpool2d", [(64, 96, 9, 9)], (), {"kernel": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("host", "avgpool2d", [(64, 32, 16, 16)], (), {"kernel": [2, 2], "strides": [2, 2]}),
    ("host", "sigmoid", [(300001,)], (), {}),
    ("host", "reduce_mean", [(64, 96, 7, 7)], (), {"axes": [2, 3]}),                 # adaptive average pooling
    ("host", "reduce_sum", [(20, 300, 40)], (), {"axes": [1], "keepdims": 0}),        # strided: one unit per output
    ("host", "reduce_l2", [(8, 6, 50, 30)], (), {"axes": [0, -1]}),                   # alternating kept / reduced
    ("host", "reduce_max", [(500, 400)], (), {"axes": [1]}),
]


def _ids(case):
    backend, op, shapes, _, attrs = case
    return f"{backend}-{op}-{'x'.join(map(str, shapes[0]))}" + ("-s2" if attrs.get("strides") == [2, 2] else "")


@pytest.mark.parametrize("march", MARCHES)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=_ids)
def test_a_kernel_gives_the_same_bits_however_it_is_split(tmp_path, case, march):
    backend_name, op, shapes, weights, attrs = case
    backend = CblasBackend() if backend_name == "cblas" else HostBackend()
    rng = np.random.default_rng(11)
    inputs = [rand(rng, *s) for s in shapes]
    _, region, graph = kh.lower_node(op, inputs, weights, backend=backend, **attrs)
    lowered = backend.lower(region, graph)
    assert "dpk_host_parallel(" in lowered.source, "the case is meant to be above the parallel threshold"
    args = [lowered.weights.get(name, a) for name, a in zip(region.inputs, inputs)]
    cflags = [f"-march={march}"]

    def run(lib):
        out = np.full(graph.types["y"].shape, np.nan, np.float32)
        ws = [np.zeros(lowered.workspace_bytes, np.uint8)] if lowered.workspace_bytes else []
        lib.call(region.name, *args, out, *ws)
        return out

    serial = run(kh.compile_sources([lowered], tmp_path, parallel=False, cflags=cflags))
    split = kh.compile_sources([lowered], tmp_path, parallel=True, cflags=cflags)
    try:
        for parts in PARTS:
            kh.KernelLib.set_parts(parts)
            before = kh.KernelLib.ranges_run()
            got = run(split)
            assert kh.KernelLib.ranges_run() - before == parts, f"{parts} ranges: the loop did not split"
            np.testing.assert_array_equal(got, serial, err_msg=f"{parts} ranges vs serial")
    finally:
        kh.KernelLib.set_parts(3)
    assert np.isfinite(serial).all()


# ---- whole models: the runtime's pool, thread counts and concurrent runs ------------------------------

def _cnn_mlp(rng):
    """The model of the issue: conv 8 -> 32 -> 48 channels on 32x32 (cblas), depthwise (host), pointwise,
    pooling, dense 12288 -> 300 -> 10, every loop above the parallel threshold."""
    w = {"c1": rand(rng, 32, 8, 3, 3), "b1": rand(rng, 32), "dw": rand(rng, 32, 1, 3, 3),
         "pw": rand(rng, 48, 32, 1, 1), "fc": rand(rng, 300, 48 * 16 * 16) * 0.01, "fb": rand(rng, 300),
         "fc2": rand(rng, 10, 300)}
    nodes = [{"op": "conv2d", "inputs": ["x", "c1", "b1"], "output": "h1", "pads": [1, 1, 1, 1]},
             {"op": "relu", "inputs": ["h1"], "output": "a1"},
             {"op": "conv2d", "inputs": ["a1", "dw"], "output": "h2", "pads": [1, 1, 1, 1], "groups": 32},
             {"op": "conv2d", "inputs": ["h2", "pw"], "output": "h3"},
             {"op": "maxpool2d", "inputs": ["h3"], "output": "p", "kernel": [2, 2], "strides": [2, 2]},
             {"op": "flatten", "inputs": ["p"], "output": "f"},
             {"op": "dense", "inputs": ["f", "fc", "fb"], "output": "d"},
             {"op": "tanh", "inputs": ["d"], "output": "t"},
             {"op": "dense", "inputs": ["t", "fc2"], "output": "y"}]
    return w, nodes, ["y", "h3"]


def cnn_mlp_approx(x, w) -> dict[str, ref.Approx]:
    """_cnn_mlp's outputs on x as ref.Approx (the float64 value and its float32 rounding bound)."""
    pads = (1, 1, 1, 1)
    h = ref.unary_approx(ref.relu, ref.conv2d_approx(x, w["c1"], w["b1"], pads=pads))
    h3 = ref.conv2d_approx(ref.conv2d_approx(h, w["dw"], pads=pads, groups=32), w["pw"])
    p = ref.maxpool_approx(h3, (2, 2), (2, 2))
    f = ref.Approx(p.value.reshape(len(x), -1), p.err.reshape(len(x), -1))
    t = ref.unary_approx(ref.tanh, ref.dense_approx(f, w["fc"], w["fb"]))
    return {"y": ref.dense_approx(t, w["fc2"]), "h3": h3}


def _json_mlp(rng):
    """A json payload (the runtime's interpreted kernels) between host ops."""
    w = {"w1": rand(rng, 512, 256) * 0.05, "b1": rand(rng, 512), "w2": rand(rng, 64, 512) * 0.05}
    nodes = [{"op": "dense", "inputs": ["x", "w1", "b1"], "output": "h"},
             {"op": "relu", "inputs": ["h"], "output": "a"},
             {"op": "dense", "inputs": ["a", "w2"], "output": "y"},
             {"op": "softmax", "inputs": ["y"], "output": "p", "axis": -1}]
    return w, nodes, ["p"]


MODELS = {  # name -> (graph, x shape, backends)
    "cnn_mlp_b1": (_cnn_mlp, (1, 8, 32, 32), ("cblas", "host")),
    "cnn_mlp_b3": (_cnn_mlp, (3, 8, 32, 32), ("cblas", "host")),
    "cnn_mlp_host": (_cnn_mlp, (2, 8, 32, 32), ("host",)),
    "json_mlp": (_json_mlp, (16, 256), ("json", "host")),
}

RUN_SCRIPT = """
import sys, threading, numpy as np, loader
x = np.load(sys.argv[2])
concurrent = int(sys.argv[4])
with loader.load(sys.argv[1]) as model:
    serial = model.run(x=x)
    if concurrent:  # that many threads at once, 5 runs each, every result kept
        results, start = [], threading.Barrier(concurrent)
        def work():
            start.wait()
            for _ in range(5):
                results.append(model.run(x=x))
        threads = [threading.Thread(target=work) for _ in range(concurrent)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len(results) == 5 * concurrent
        for r in results:
            for k in serial:
                np.testing.assert_array_equal(r[k], serial[k], err_msg=f"a concurrent run's {k}")
np.savez(sys.argv[3], **serial)
"""


def _run(so, x_path, dest, threads, concurrent=0):
    env = dict(os.environ, DPK_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
    proc = subprocess.run([sys.executable, "-c", RUN_SCRIPT, so, x_path, dest, str(concurrent)], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(dest))


@pytest.mark.parametrize("march", MARCHES)
@pytest.mark.parametrize("name", MODELS)
def test_a_model_gives_the_same_bits_for_any_thread_count_and_concurrent_runs(tmp_path, name, march):
    make, x_shape, backends = MODELS[name]
    rng = np.random.default_rng(5)
    w, nodes, outputs = make(rng)
    np.savez(tmp_path / "m.npz", **w)
    so = str(tmp_path / "m.so")
    spec = {"name": name, "backends": list(backends),
            "model": {"graph": {"inputs": {"x": {"shape": list(x_shape), "dtype": F32}}, "weights": "m.npz",
                                "nodes": nodes, "outputs": outputs}}}
    build(spec, so, base_dir=str(tmp_path), quiet=True, march=march)
    x = rand(rng, *x_shape)
    np.save(tmp_path / "x.npy", x)
    one = _run(so, str(tmp_path / "x.npy"), str(tmp_path / "t1.npz"), 1)
    for threads in (2, 3, 5):
        got = _run(so, str(tmp_path / "x.npy"), str(tmp_path / f"t{threads}.npz"), threads)
        for k in one:
            np.testing.assert_array_equal(got[k], one[k], err_msg=f"{k}: {threads} threads vs 1")
    # 8 concurrent runs on a 2-thread pool: most loops find the pool busy and run inline
    got = _run(so, str(tmp_path / "x.npy"), str(tmp_path / "c.npz"), 2, concurrent=8)
    for k in one:
        np.testing.assert_array_equal(got[k], one[k], err_msg=f"{k}: 8 concurrent runs vs 1 thread")
    # and the bits are the right numbers
    if name.startswith("cnn"):
        for k, want in cnn_mlp_approx(x, w).items():
            ref.assert_close(one[k], want, err_msg=k)
    else:
        h = ref.unary_approx(ref.relu, ref.dense_approx(x, w["w1"], w["b1"]))
        ref.assert_close(one["p"], ref.softmax_approx(ref.dense_approx(h, w["w2"]), axis=-1), err_msg="p")


def test_the_models_loops_really_split():
    """Each heavy node of the model test lowers to a task the pool splits (not below the threshold)."""
    rng = np.random.default_rng(5)
    w, nodes, _ = _cnn_mlp(rng)
    x = rand(rng, 1, 8, 32, 32)
    shapes = {"c1": x, "dw": np.zeros((1, 32, 32, 32), np.float32), "pw": np.zeros((1, 32, 32, 32), np.float32),
              "fc": np.zeros((1, 48 * 16 * 16), np.float32)}
    for node in nodes:
        weight = node["inputs"][1] if len(node["inputs"]) > 1 else None
        if weight not in shapes:
            continue
        attrs = {k: v for k, v in node.items() if k not in ("op", "inputs", "output")}
        ins = [shapes[weight]] + [w[n] for n in node["inputs"][1:]]
        backend = HostBackend() if attrs.get("groups") else CblasBackend()
        _, region, graph = kh.lower_node(node["op"], ins, tuple(range(1, len(ins))), backend=backend, **attrs)
        assert "dpk_host_parallel(" in backend.lower(region, graph).source, node


def test_an_input_at_any_alignment_gives_the_same_bits(tmp_path):
    """Inputs are used in place: a numpy slice that starts 4..60 bytes into a buffer reaches sgemv/sgemm
    (whose kernels may treat an unaligned start separately) and must not change a bit."""
    import loader

    rng = np.random.default_rng(3)
    K = 1001
    np.savez(tmp_path / "m.npz", w=rand(rng, 777, K), w2=rand(rng, 130, K))
    for M in (1, 9):
        spec = {"name": "aligned", "backends": ["cblas", "host"],
                "model": {"graph": {"inputs": {"x": {"shape": [M, K], "dtype": F32}}, "weights": "m.npz",
                                    "nodes": [{"op": "dense", "inputs": ["x", "w"], "output": "y"},
                                              {"op": "dense", "inputs": ["x", "w2"], "output": "z"}],
                                    "outputs": ["y", "z"]}}}
        so = str(tmp_path / f"m{M}.so")
        build(spec, so, base_dir=str(tmp_path), quiet=True, march="native")
        x = rand(rng, M, K)
        with loader.load(so) as model:
            base = model.run(x=x)
            for offset in range(1, 16):
                buf = np.zeros(M * K + 16, np.float32)
                shifted = buf[offset:offset + M * K].reshape(M, K)
                shifted[...] = x
                got = model.run(x=shifted)
                for k in base:
                    np.testing.assert_array_equal(got[k], base[k], err_msg=f"M={M}, x {4 * offset} bytes in: {k}")
