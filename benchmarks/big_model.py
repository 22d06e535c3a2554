"""A model past 2 GiB, built, loaded, verified, signed and run (issue 18), with the build's time and peak memory.

    .venv/bin/python benchmarks/big_model.py                       # 2.5 GiB of weights in a .safetensors file
    .venv/bin/python benchmarks/big_model.py --source onnx         # ... in an ONNX model's external data
    .venv/bin/python benchmarks/big_model.py --gib 10              # needs ~3 x 10 GiB of free disk (the source,
                                                                   # the reference W, the output; ONNX: + 10 GiB of spill)

The model is one dense layer, y = x W^T + b with W [N, 16384] (float32, N from --gib), its weights written
in blocks (never whole in memory) as the source a user would hold them in (--source):
  safetensors   a YAML graph, `weights: w.safetensors`
  npz           a YAML graph, `weights: w.npz` (numpy.savez: stored)
  npz-compressed  the same with numpy.savez_compressed (decompressed into the build's spill files)
  onnx          an ONNX MatMul + Add with W^T [16384, N] in external data (transposed into a spill file)
built (YAML graphs on the host backend, the ONNX file on its default ones) in a child process (`dsopack
build`; its peak RSS from /proc: VmHWM), then: the file read once into the page cache, the floor (a fresh
mapping of as many bytes read once, as compare.py's), `loader.load` (time to ready), the first result (every
weight read once from the page cache), a second result, `dsopack verify` and `dsopack sign` + `verify --pubkey`
(each reads the whole file), and the output against NumPy on 256 rows.
Nothing is kept: the work directory is removed.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
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


def values(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """W[rows, cols]: small numbers that differ from row to row and from column to column."""
    return ((((rows * 7 + cols * 13) % 101) - 50) / 1000).astype(np.float32)


def write_weights(path: str, n: int) -> int:
    """w [n, K] and b [n] in safetensors layout, a block of rows at a time; returns the data's offset."""
    header = {"w": {"dtype": "F32", "shape": [n, K], "data_offsets": [0, n * K * 4]},
              "b": {"dtype": "F32", "shape": [n], "data_offsets": [n * K * 4, n * K * 4 + n * 4]}}
    text = json.dumps(header).encode()
    text += b" " * (-(len(text) + 8) % 64)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for r in range(0, n, 1024):
            f.write(values(np.arange(r, min(n, r + 1024))[:, None], np.arange(K)[None, :]).tobytes())
        f.write(bias(n).tobytes())
    return 8 + len(text)


def bias(n: int) -> np.ndarray:
    return (np.arange(n) % 5).astype(np.float32)


def write_source(work: str, source: str, n: int) -> tuple[str, np.ndarray]:
    """The model to build (a YAML manifest or an .onnx file) and W [n, K] mapped from where it was written."""
    weights = os.path.join(work, "w.safetensors")
    data = write_weights(weights, n)
    w = np.memmap(weights, np.float32, "r", offset=data, shape=(n, K))
    if source == "onnx":
        return write_onnx(work, n), w
    if source.startswith("npz"):
        save = np.savez_compressed if source == "npz-compressed" else np.savez
        save(os.path.join(work, "w.npz"), w=w, b=bias(n))  # numpy writes a mapped array in chunks
        weights = os.path.join(work, "w.npz")
    manifest = os.path.join(work, "m.yaml")
    with open(manifest, "w") as f:
        json.dump({"name": "big", "backends": ["host"], "model": {"graph": {
            "inputs": {"x": {"shape": [1, K]}}, "weights": weights,
            "nodes": [{"op": "dense", "inputs": ["x", "w", "b"], "output": "y"}], "outputs": ["y"]}}}, f)
    return manifest, w


def write_onnx(work: str, n: int) -> str:
    """y = x @ wt + b, wt = W^T [K, n] in external data written a block of rows at a time."""
    import onnx
    from onnx import TensorProto, helper

    with open(os.path.join(work, "big.bin"), "wb") as f:
        for r in range(0, K, 256):
            f.write(values(np.arange(n)[None, :], np.arange(r, min(K, r + 256))[:, None]).tobytes())
        f.write(bias(n).tobytes())

    def external(name: str, dims: list[int], offset: int) -> TensorProto:
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "big.bin"), ("offset", str(offset)), ("length", str(4 * np.prod(dims)))):
            t.external_data.add(key=key, value=value)
        return t

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [external("wt", [K, n], 0), external("b", [n], 4 * K * n)])
    path = os.path.join(work, "big.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def warm(path: str) -> None:
    """Read the file once (not through a mapping), so its pages are in the page cache: the sources, the build's
    spill files and the output can pass the machine's memory, and the runs below measure faults, not the disk."""
    buf = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def floor(path: str, nbytes: int) -> float:
    """Seconds to read `nbytes` of `path` once through a fresh mapping (page faults included)."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        data = np.frombuffer(mm, np.float32, count=nbytes // 4)
        start = time.perf_counter()
        with np.errstate(all="ignore"):  # the bytes are not all floats
            np.add.reduce(data, dtype=np.float32)
        took = time.perf_counter() - start
        del data
        return took
    finally:
        mm.close()


# `dsopack build` in a child that writes its peak RSS (VmHWM: of its own image; getrusage's ru_maxrss would count
# the parent's memory at the fork, which for the npz sources holds the pages numpy.savez read)
BUILD = """import re, sys
from packager.cli import main
code = main(["build", sys.argv[1], "-o", sys.argv[2], "-q", "--no-cache"])
with open("/proc/self/status") as f:
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)
with open(sys.argv[3], "w") as f:
    f.write(peak)
sys.exit(code)
"""


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.5, help="GiB of weights (default 2.5)")
    p.add_argument("--source", choices=["safetensors", "npz", "npz-compressed", "onnx"], default="safetensors",
                   help="where the weights come from (default safetensors)")
    p.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dpk-big-", dir=args.work)
    try:
        n = int(args.gib * 2**30 / (K * 4))
        start = time.monotonic()
        model_path, w = write_source(work, args.source, n)
        print(f"weights: W [{n}, {K}] float32 + bias, {w.nbytes / 2**30:.2f} GiB as {args.source}, written in "
              f"{time.monotonic() - start:.1f} s")
        so = os.path.join(work, "big.so")
        peak = os.path.join(work, "peak")
        took = timed([sys.executable, "-c", BUILD, model_path, so, peak])
        with open(peak) as f:
            rss = int(f.read()) / 1024
        print(f"build: {took:.1f} s, peak RSS {rss:.0f} MB, file {os.path.getsize(so) / 2**30:.2f} GiB")

        warm(so)
        read = floor(so, w.nbytes)  # before the runs, in the same state of the page cache
        import loader
        start = time.perf_counter()
        model = loader.load(so)
        ready = time.perf_counter() - start
        x = np.random.default_rng(1).standard_normal((1, K), np.float32)
        start = time.perf_counter()
        y = model.run(x=x)["y"][0]
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.run(x=x)
        second = time.perf_counter() - start
        rows = np.sort(np.random.default_rng(0).choice(n, 256, replace=False))
        want = w[rows].astype(np.float64) @ x[0].astype(np.float64) + bias(n)[rows]
        diff = float(np.max(np.abs(y[rows] - want)))
        print(f"load: ready in {ready * 1e3:.1f} ms; first result {first * 1e3:.0f} ms = {first / read:.2f}x the "
              f"floor (a fresh mapping read once: {read * 1e3:.0f} ms), second {second * 1e3:.0f} ms; max "
              f"|y - NumPy| over 256 rows {diff:.2e} (|y| up to {np.abs(want).max():.1f})")
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
