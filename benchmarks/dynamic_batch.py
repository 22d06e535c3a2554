"""One dynamic-batch dsopack file against onnxruntime with a dynamic batch, side by side (issue 16).

    .venv/bin/python benchmarks/dynamic_batch.py            # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/dynamic_batch.py --quick    # ~1 minute
    (compare.py runs it too and puts its table in results.md)

For each model (an MLP, the ResNet of tests/models, the 2-layer BERT of compare.py), the ONNX file with
a symbolic batch is built once with `--shape x=1..64,...` (the default plans: 1, 2, 4 ... 64) and once
at batch 64 alone (the costs of the plans: build time and file size). Both runtimes run in this
process with the same thread count (dsopack's loader; an onnxruntime session with
intra_op_num_threads), one after the other:

- latency at batch 1, 7, 32 and 64 (7 runs in the batch-8 plan, padded): the median of repeated runs
  after a warm-up, and the ratio dsopack / onnxruntime;
- a mixed-batch trace: 300 requests whose sizes are drawn, with a fixed seed, from 1..64 skewed to
  small batches (a serving queue's); samples per second for each, and the ratio.

Outputs are checked against onnxruntime at every batch before anything is timed. The time to pick a
plan is benchmarks/bench_select.c's (the C API, no Python in the loop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import bench_models as bm  # noqa: E402
from bench_report import cpu_line  # noqa: E402

BATCHES = (1, 7, 32, 64)
MAX_BATCH = 64
TRACE_REQUESTS = 300


def models(work: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, ONNX file with a symbolic batch, one sample's shape)."""
    found = []
    mlp = next(m for m in bm.standard_models() if m.name == "mlp_small")
    static = os.path.join(work, "mlp_small.static.onnx")
    bm.to_onnx(mlp, 1, static)
    found.append(("mlp_small", static, mlp.input_shape[1:]))
    found.append(("tm_resnet", os.path.join(ROOT, "tests", "models", "resnet.onnx"), (3, 32, 32)))
    bert = os.path.join(work, "bert_2x128.static.onnx")
    bm.bert_onnx(bert)
    found.append(("bert_2x128", bert, (32, 128)))
    out = []
    for name, path, sample in found:
        dynamic = os.path.join(work, f"{name}.onnx")
        bm.rebatch_onnx(path, "batch", dynamic)
        out.append((name, dynamic, sample))
    return out


def build(onnx_path: str, out: str, shape: str, extra: list[str]) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "packager", "build", onnx_path, "-o", out, "--shape", shape, "-q", "--no-cache", *extra],
                   check=True)
    return time.monotonic() - start


def timed(fn, warm_s: float, measure_s: float, max_n: int = 2000) -> float:
    """The median seconds of fn() over `measure_s` after `warm_s` of warm-up."""
    end = time.monotonic() + warm_s
    while time.monotonic() < end:
        fn()
    times = []
    end = time.monotonic() + measure_s
    while time.monotonic() < end and len(times) < max_n:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def trace_sizes(seed: int = 16) -> list[int]:
    """Request batch sizes a serving queue sees: mostly small, sometimes full (a geometric skew, 1..64)."""
    rng = np.random.default_rng(seed)
    return [int(min(MAX_BATCH, 1 + rng.geometric(0.08))) for _ in range(TRACE_REQUESTS)]


def measure(name: str, onnx_path: str, sample: tuple[int, ...], work: str, threads: int, quick: bool) -> dict:
    import onnxruntime as ort

    import loader

    shape = "x=1.." + str(MAX_BATCH) + "," + ",".join(map(str, sample))
    dyn, static = os.path.join(work, f"{name}.dyn.so"), os.path.join(work, f"{name}.b64.so")
    row = {"name": name, "build_dyn_s": build(onnx_path, dyn, shape, []),
           "build_static_s": build(onnx_path, static, f"x={MAX_BATCH}," + ",".join(map(str, sample)), [])}
    row["size_dyn"], row["size_static"] = os.path.getsize(dyn), os.path.getsize(static)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    model = loader.load(dyn, num_threads=threads)
    row["plans"] = len(model.plans)
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, *sample)).astype(np.float32) for b in range(1, MAX_BATCH + 1)}
    worst = 0.0
    for b in BATCHES:  # the same answer before any timing
        got = next(iter(model.run(x=xs[b]).values()))
        ref = session.run(None, {in_name: xs[b]})[0]
        worst = max(worst, float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref))))))
    row["max_rel_diff"] = worst
    warm, span = (0.1, 0.4) if quick else (0.3, 1.5)
    row["latency"] = {}
    for b in BATCHES:
        x = xs[b]
        d = timed(lambda: model.run(x=x), warm, span)
        o = timed(lambda: session.run(None, {in_name: x}), warm, span)
        row["latency"][b] = (d, o, model.select_plan(x=x).graph)
    sizes = trace_sizes()[:100 if quick else TRACE_REQUESTS]
    for label, fn in (("dsopack", lambda x: model.run(x=x)), ("onnxruntime", lambda x: session.run(None, {in_name: x}))):
        for b in sorted(set(sizes)):  # a server is warm: every plan has run once (first-call set-up excluded)
            fn(xs[b])
        start = time.perf_counter()
        for b in sizes:
            fn(xs[b])
        row[f"trace_{label}"] = sum(sizes) / (time.perf_counter() - start)
    row["trace_requests"], row["trace_samples"] = len(sizes), sum(sizes)
    model.close()
    row["pick_ns"] = pick_time(dyn, work)
    return row


def pick_time(so: str, work: str) -> float | None:
    """Nanoseconds per dpk_model_select_plan at batch 7 (bench_select.c against runtime_c/build/libdpk.so)."""
    lib, exe = os.path.join(ROOT, "runtime_c", "build"), os.path.join(work, "bench_select")
    if not os.path.exists(exe):
        r = subprocess.run(["cc", "-O2", os.path.join(HERE, "bench_select.c"), "-I",
                            os.path.join(ROOT, "runtime_c", "include"), "-L", lib, "-ldpk", f"-Wl,-rpath,{lib}",
                            "-o", exe], capture_output=True, text=True)
        if r.returncode:
            print(f"bench_select.c does not compile: {r.stderr.strip()}")
            return None
    r = subprocess.run([exe, so, "7"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["ns_per_pick"]


def report(rows: list[dict], threads: int) -> str:
    lines = [f"### Dynamic batch: one file for batch 1..{MAX_BATCH} against onnxruntime with a dynamic batch",
             "", f"{cpu_line()}; {threads} threads each; median latency in ms (dsopack / onnxruntime = ratio); the "
             f"plan that ran; a trace of {rows[0]['trace_requests'] if rows else 0} requests of mixed sizes "
             "(seeded, skewed to small batches) in samples per second.", "",
             "| model | batch | dsopack ms | onnxruntime ms | ratio | plan |", "|---|---|---|---|---|---|"]
    for r in rows:
        for b, (d, o, plan) in r["latency"].items():
            lines.append(f"| {r['name']} | {b} | {d * 1e3:.3f} | {o * 1e3:.3f} | {d / o:.2f}x | {plan} |")
    lines += ["", "| model | trace samples/s dsopack | onnxruntime | ratio (higher is better) | plans | "
                  "build s (plans / batch 64 alone) | file (plans / batch 64 alone) | pick a plan | max rel diff |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['trace_dsopack']:.0f} | {r['trace_onnxruntime']:.0f} | "
                     f"{r['trace_dsopack'] / r['trace_onnxruntime']:.2f}x | {r['plans']} | "
                     f"{r['build_dyn_s']:.1f} / {r['build_static_s']:.1f} | "
                     f"{r['size_dyn'] / 1024:.0f} KiB / {r['size_static'] / 1024:.0f} KiB | "
                     f"{'-' if r['pick_ns'] is None else format(r['pick_ns'], '.0f') + ' ns'} | {r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def run(threads: int, quick: bool, names: list[str] | None = None, work: str | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="dpk-dyn-") as tmp:
        work = work or tmp
        rows = []
        for name, path, sample in models(work):
            if names and name not in names:
                continue
            print(f"dynamic batch: {name} ...", flush=True)
            rows.append(measure(name, path, sample, work, threads, quick))
        return report(rows, threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter timings and trace (~1 minute)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads for both runtimes")
    p.add_argument("--models", metavar="A,B", help="only these (mlp_small, tm_resnet, bert_2x128)")
    args = p.parse_args(argv)
    print(run(args.threads, args.quick, args.models.split(",") if args.models else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
