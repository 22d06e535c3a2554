"""Host kernels vs OpenBLAS (the cblas backend) on the same graphs, through the loader.

    .venv/bin/python benchmarks/blas_vs_host.py [--repeat 200] [--cflags -O3]

Cases: dense 784 -> 512 at batch 1 and 64, a 3x3 pad-1 conv 32 -> 32 on
1x32x32x32 and a 1x1 conv (no im2col). Each is built twice (backends [host] and
[cblas, host]); prints the median time per run of each and host / cblas. OpenBLAS
uses its default thread count unless OPENBLAS_NUM_THREADS is set (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import loader  # noqa: E402
from packager.build import build  # noqa: E402


def cases(rng):
    f32 = np.float32
    w784 = {"w": (rng.standard_normal((512, 784)) * 0.05).astype(f32), "b": rng.standard_normal(512).astype(f32)}
    conv3 = {"w": (rng.standard_normal((32, 32, 3, 3)) * 0.05).astype(f32), "b": rng.standard_normal(32).astype(f32)}
    conv1 = {"w": (rng.standard_normal((64, 32, 1, 1)) * 0.05).astype(f32), "b": rng.standard_normal(64).astype(f32)}
    dense = {"op": "dense", "inputs": ["x", "w", "b"], "output": "y"}
    conv = {"op": "conv2d", "inputs": ["x", "w", "b"], "output": "y"}
    return [
        ("dense 784x512 batch 1", [1, 784], w784, dense),
        ("dense 784x512 batch 64", [64, 784], w784, dense),
        ("conv 3x3 32->32 on 1x32x32x32", [1, 32, 32, 32], conv3, dict(conv, pads=[1, 1, 1, 1])),
        ("conv 1x1 32->64 on 1x32x32x32", [1, 32, 32, 32], conv1, conv),
    ]


def time_model(path: str, x: np.ndarray, repeat: int) -> float:
    with loader.load(path) as model:
        for _ in range(max(3, repeat // 10)):
            model.run(x=x)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model.run(x=x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--cflags", default="-O3")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(default)')}, cpus={os.cpu_count()}, "
          f"cflags {args.cflags}, median of {args.repeat} runs")
    print(f"{'case':34s} {'host':>10s} {'cblas':>10s} {'host/cblas':>10s}")
    with tempfile.TemporaryDirectory(prefix="blas-vs-host-") as work:
        for title, shape, weights, node in cases(rng):
            np.savez(os.path.join(work, "w.npz"), **weights)
            x = rng.standard_normal(shape).astype(np.float32)
            results, outputs = {}, {}
            for backends in (["host"], ["cblas", "host"]):
                spec = {"name": "bench", "backends": backends,
                        "target": {"triple": "native", "cflags": args.cflags.split()},
                        "model": {"graph": {"inputs": {"x": {"shape": shape, "dtype": "float32"}},
                                            "weights": "w.npz", "nodes": [node], "outputs": ["y"]}}}
                path = os.path.join(work, f"{backends[0]}.so")
                build(spec, path, base_dir=work, quiet=True)
                results[backends[0]] = time_model(path, x, args.repeat)
                with loader.load(path) as model:
                    outputs[backends[0]] = model.run(x=x)["y"]
            diff = float(np.abs(outputs["host"] - outputs["cblas"]).max())
            host_t, blas_t = results["host"], results["cblas"]
            print(f"{title:34s} {host_t * 1e6:8.1f}us {blas_t * 1e6:8.1f}us {host_t / blas_t:9.2f}x"
                  f"   (max |diff| {diff:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
