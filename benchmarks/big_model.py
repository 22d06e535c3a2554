"""A model past 2 GiB, built, loaded, verified, signed and run (issue 18), with the build's time and peak memory.

    .venv/bin/python benchmarks/big_model.py               # 2.5 GiB of weights
    .venv/bin/python benchmarks/big_model.py --gib 10      # needs ~2 x 10 GiB of free disk in --work

The model is one dense layer [N, 16384] (float32, N from --gib) with a bias, its weights in a .safetensors
file written in blocks (never whole in memory), built from a YAML graph with the host backend in a child
process (`dsopack build`; peak RSS from getrusage), then: `loader.load` (time to ready), the first
result (every weight read once from the page cache), `dsopack verify` and `dsopack sign` + `verify
--pubkey` (each reads the whole file), and the output against NumPy on the same mapped weights.
Nothing is kept: the work directory is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

K = 16384
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def write_weights(path: str, n: int) -> int:
    """w [n, K] and b [n] in safetensors layout, a block of rows at a time; returns the data's offset."""
    header = {"w": {"dtype": "F32", "shape": [n, K], "data_offsets": [0, n * K * 4]},
              "b": {"dtype": "F32", "shape": [n], "data_offsets": [n * K * 4, n * K * 4 + n * 4]}}
    text = json.dumps(header).encode()
    text += b" " * (-(len(text) + 8) % 64)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for r in range(0, n, 1024):
            rows = np.arange(r, min(n, r + 1024))[:, None]
            f.write(((((rows * 7 + np.arange(K)[None, :] * 13) % 101) - 50) / 1000).astype(np.float32).tobytes())
        f.write((np.arange(n) % 5).astype(np.float32).tobytes())
    return 8 + len(text)


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.5, help="GiB of weights (default 2.5)")
    p.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dpk-big-", dir=args.work)
    try:
        n = int(args.gib * 2**30 / (K * 4))
        weights = os.path.join(work, "w.safetensors")
        start = time.monotonic()
        data = write_weights(weights, n)
        print(f"weights: [{n}, {K}] float32 + bias, {os.path.getsize(weights) / 2**30:.2f} GiB, written in "
              f"{time.monotonic() - start:.1f} s")
        manifest = os.path.join(work, "m.yaml")
        with open(manifest, "w") as f:
            json.dump({"name": "big", "backends": ["host"], "model": {"graph": {
                "inputs": {"x": {"shape": [1, K]}}, "weights": weights,
                "nodes": [{"op": "dense", "inputs": ["x", "w", "b"], "output": "y"}], "outputs": ["y"]}}}, f)
        so = os.path.join(work, "big.so")
        took = timed([sys.executable, "-m", "packager", "build", manifest, "-o", so, "-q", "--no-cache"])
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"build: {took:.1f} s, peak RSS {rss:.0f} MB, file {os.path.getsize(so) / 2**30:.2f} GiB")

        import loader
        start = time.perf_counter()
        model = loader.load(so)
        ready = time.perf_counter() - start
        x = np.ones((1, K), np.float32)
        start = time.perf_counter()
        y = model.run(x=x)["y"][0]
        first = time.perf_counter() - start
        w = np.memmap(weights, np.float32, "r", offset=data, shape=(n, K))
        rows = np.random.default_rng(0).choice(n, 256, replace=False)
        want = w[np.sort(rows)].sum(axis=1, dtype=np.float64) + np.sort(rows) % 5
        diff = float(np.max(np.abs(y[np.sort(rows)] - want)))
        print(f"load: ready in {ready * 1e3:.1f} ms; first result {first * 1e3:.0f} ms; max |y - NumPy| over "
              f"256 rows {diff:.2e} (|y| up to {np.abs(want).max():.1f})")
        model.close()
        print(f"verify: {timed([sys.executable, '-m', 'packager', 'verify', so]):.1f} s")
        key = os.path.join(work, "k")
        subprocess.run([sys.executable, "-m", "packager", "keygen", "-o", key], check=True, capture_output=True)
        print(f"sign: {timed([sys.executable, '-m', 'packager', 'sign', so, '--key', key]):.1f} s; verify --pubkey: "
              f"{timed([sys.executable, '-m', 'packager', 'verify', so, '--pubkey', key + '.pub']):.1f} s")
        return 0 if diff < 1e-2 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
