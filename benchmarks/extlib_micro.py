"""XNNPACK and oneDNN against dsopack's default (cblas, host) and onnxruntime on ResNet-18 / MobileNet-v2 layers.

    .venv/bin/python benchmarks/extlib_micro.py [--batches 1,64] [--reps 7] [--only 3x3]

One thread everywhere (the 2 cores are shared; a per-kernel comparison needs no pool noise):
onnxruntime intra_op_num_threads=1, the dsopack file loaded with num_threads=1, XNNPACK without
a pthreadpool, oneDNN with OMP_NUM_THREADS=1. Each shape is one ONNX Conv (bias, no activation)
or Gemm, built with `dsopack build`'s default backends. The libraries are timed by
benchmarks/extlib_micro.c in their own best layouts (XNNPACK NHWC; oneDNN its blocked choice),
so their figures leave out any layout conversion. Prints a markdown table of median ms and
each one's ratio to onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import loader  # noqa: E402
from packager.build import build  # noqa: E402

# name, C, H(=W), OC, K, stride, dilation, pad, groups
CONVS = [
    ("r18 stem 7x7 s2 3->64 @224", 3, 224, 64, 7, 2, 1, 3, 1),
    ("r18 3x3 64->64 @56", 64, 56, 64, 3, 1, 1, 1, 1),
    ("r18 3x3 s2 128->128 @56", 128, 56, 128, 3, 2, 1, 1, 1),
    ("r18 1x1 s2 64->128 @56", 64, 56, 128, 1, 2, 1, 0, 1),
    ("r18 3x3 256->256 @14", 256, 14, 256, 3, 1, 1, 1, 1),
    ("r18 3x3 512->512 @7", 512, 7, 512, 3, 1, 1, 1, 1),
    ("mbv2 1x1 24->144 @56", 24, 56, 144, 1, 1, 1, 0, 1),
    ("mbv2 dw 3x3 144 @56", 144, 56, 144, 3, 1, 1, 1, 144),
    ("mbv2 dw 3x3 s2 96 @112", 96, 112, 96, 3, 2, 1, 1, 96),
    ("mbv2 1x1 320->1280 @7", 320, 7, 1280, 1, 1, 1, 0, 1),
    ("grouped 3x3 g4 128->128 @28", 128, 28, 128, 3, 1, 1, 1, 4),
    ("dilated 3x3 d2 256->256 @14", 256, 14, 256, 3, 1, 2, 2, 1),
]
DENSES = [("dense 512->1000", 512, 1000), ("dense 1280->1000", 1280, 1000)]


def conv_model(n, c, h, oc, k, s, d, p, g):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((oc, c // g, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s], dilations=[d, d],
                            pads=[p] * 4, group=g)
    oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, oc, oh, oh])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (n, c, h, h)


def dense_model(m, k, n):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    graph = helper.make_graph([node], "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (m, k)


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ours_and_ort(model, shape, reps, tmp):
    import onnxruntime as ort

    path = os.path.join(tmp, "m.onnx")
    onnx.save(model, path)
    so = os.path.join(tmp, "m.so")
    build(path, so, quiet=True)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    ort_ms = median_ms(lambda: sess.run(None, {"x": x}), reps)
    with loader.load(so, num_threads=1) as m:
        ours = median_ms(lambda: m.run(x=x), reps)
    return ours, ort_ms


def libraries(binary, args, reps):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([binary, *map(str, [*args, reps])], env=env, check=True, capture_output=True, text=True).stdout
    f = out.split()
    return float(f[1]), float(f[3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "extlib_micro")
        subprocess.run(["cc", "-O2", os.path.join(ROOT, "benchmarks", "extlib_micro.c"), "-lXNNPACK", "-ldnnl",
                        "-o", binary], check=True)
        print(f"uptime: {os.getloadavg()}")
        print("| layer | batch | ort ms | dsopack ms | xnnpack ms | onednn ms | dsopack/ort | xnnpack/ort | onednn/ort |")
        print("|---|---|---|---|---|---|---|---|---|")
        for batch in map(int, args.batches.split(",")):
            reps = args.reps if batch == 1 else max(3, args.reps // 3)
            rows = [(name, conv_model(batch, *spec), ["conv", batch, spec[0], spec[1], spec[1], spec[2], spec[3],
                                                       spec[3], spec[4], spec[5], spec[6], spec[7]])
                    for name, *spec in CONVS]
            rows += [(name, dense_model(batch, k, n), ["dense", batch, k, n]) for name, k, n in DENSES]
            for name, (model, shape), cargs in rows:
                if args.only and args.only not in name:
                    continue
                ours, ort_ms = ours_and_ort(model, shape, reps, tmp)
                xnn, dnnl = libraries(binary, cargs, reps)
                print(f"| {name} | {batch} | {ort_ms:.3f} | {ours:.3f} | {xnn:.3f} | {dnnl:.3f} | {ours / ort_ms:.2f} | "
                      f"{xnn / ort_ms:.2f} | {dnnl / ort_ms:.2f} |", flush=True)
        print(f"uptime: {os.getloadavg()}")


if __name__ == "__main__":
    main()
