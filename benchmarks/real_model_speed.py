"""Real architectures (tests/models/real) through dsopack and onnxruntime, side by side in one run.

    .venv/bin/python benchmarks/real_model_speed.py                        # every model dsopack builds
    .venv/bin/python benchmarks/real_model_speed.py --models resnet18.dynamo,bert.dynamo --march native

Each model is the committed exporter graph with seeded weights (tests/real_models.py). It is
built the way the README says, `dsopack build model.onnx -o m.so` (the default backends,
an x86-64 file's ISA variants picked at load unless --march), with an empty object cache, and the build time is
printed. The outputs are checked against onnxruntime (max relative difference) before
anything is timed. Then the latency at the committed input shape (batch 1) is measured in
fresh child processes (benchmarks/bench_child.py), alternating dsopack and onnxruntime for
--rounds rounds; each round's median counts and the best round is reported. Both use every
core (onnxruntime: intra-op threads = cores, sequential execution). The ratio is dsopack's
time over onnxruntime's: below 1 is faster. A model dsopack refuses is listed with the
first line of the reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

import compare  # noqa: E402  (child processes, the CPU's description)
import real_models  # noqa: E402


def max_relative_difference(got: dict, want: dict) -> float:
    worst = 0.0
    for name, w in want.items():
        g = np.asarray(got[name])
        if g.shape != w.shape or g.dtype != w.dtype:
            return float("inf")
        if w.dtype.kind in "iub":
            worst = max(worst, 0.0 if np.array_equal(g, w) else float("inf"))
            continue
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-30)
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0)) / scale)
    return worst


def build_one(name: str, work: str, march: str | None, backends: str | None = None) -> dict:
    import onnx
    import onnxruntime as ort

    import loader
    from packager.build import build
    from packager.ir import BuildError

    model = real_models.filled(name)
    onnx_path = os.path.join(work, f"{name}.onnx")
    so = os.path.join(work, f"{name}.so")
    onnx.save(model, onnx_path)
    feeds = real_models.feeds(model)
    np.savez(os.path.join(work, f"{name}.npz"), **feeds)
    os.environ["DSOPACK_CACHE"] = tempfile.mkdtemp(dir=work)  # a cold build: no cached object
    t0 = time.perf_counter()
    try:
        build(onnx_path, so, quiet=True, **({"march": march} if march else {}),
              **({"backends": backends.split(",")} if backends else {}))
    except BuildError as e:
        return {"name": name, "refused": str(e).split(": ", 1)[-1].splitlines()[0][:100]}
    build_s = time.perf_counter() - t0
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with loader.load(so) as m:
        got = m.run(**feeds)
    return {"name": name, "build_s": build_s, "diff": max_relative_difference(got, want),
            "onnx": onnx_path, "so": so, "feeds": os.path.join(work, f"{name}.npz")}


def latency(row: dict, rounds: int, measure_s: float, threads: int) -> None:
    env = compare.child_env(threads)
    best = {}
    for _ in range(rounds):
        for runtime, path in (("dsopack", row["so"]), ("onnxruntime", row["onnx"])):
            _, r = compare.run_child(["latency", runtime, path, row["feeds"], "0.5", str(measure_s), "2000"], env)
            m = statistics.median(r["times"]) * 1e3
            best[runtime] = min(best.get(runtime, m), m)
    row["dsopack_ms"], row["ort_ms"] = best["dsopack"], best["onnxruntime"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--models", metavar="A,B", help="only these (names of tests/models/real/*.onnx, e.g. "
                                                   "resnet18.dynamo); default: all")
    p.add_argument("--march", help="build with this -march (default: the packager's: on x86-64, ISA variants picked at load)")
    p.add_argument("--backends", metavar="A,B", help="build with these backends (default: the default choice)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per model (default 3)")
    p.add_argument("--measure", type=float, default=2.0, help="seconds of timed calls per child (default 2)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads for both runtimes")
    args = p.parse_args(argv)
    names = args.models.split(",") if args.models else real_models.names()
    unknown = sorted(set(names) - set(real_models.names()))
    if unknown:
        p.error(f"unknown models {', '.join(unknown)}; known: {', '.join(real_models.names())}")
    os.environ["DPK_NUM_THREADS"] = str(args.threads)
    env = compare.environment(args.threads, args.march or "baseline")
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    print(f"CPU: {env.get('cpu', platform.processor())} ({isa}), {args.threads} threads; onnxruntime {env.get('onnxruntime', '?')}; "
          f"-march {args.march or 'default (x86-64: ISA variants, DPK_ISA=' + os.environ.get('DPK_ISA', 'unset') + ')'}", flush=True)
    print(f"{'model':28} {'build s':>8} {'max rel diff':>12} {'dsopack ms':>11} {'ort ms':>9} {'ratio':>7}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dpk-real-") as work:
        for name in names:
            row = build_one(name, work, args.march, args.backends)
            if "refused" in row:
                print(f"{name:28} refused: {row['refused']}", flush=True)
                continue
            latency(row, args.rounds, args.measure, args.threads)
            print(f"{name:28} {row['build_s']:8.1f} {row['diff']:12.1e} {row['dsopack_ms']:11.2f} "
                  f"{row['ort_ms']:9.2f} {row['dsopack_ms'] / row['ort_ms']:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
