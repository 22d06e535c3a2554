"""The packager of two git revisions side by side: the same benchmark models built by each, timed from C in
interleaved rounds on the same runtime, so a code-generation change is measured against what it replaced.

    .venv/bin/python benchmarks/ab_revisions.py f1b100c              # that revision vs the working tree
    .venv/bin/python benchmarks/ab_revisions.py A B --threads 1 --models tm_resnet,cnn_bn --batches 1,64

Each model (compare.py's latency set) is built at each batch by `dsopack build` with the revision's
packager/ on PYTHONPATH (the runtime, runtime_c/build, is the working tree's for both), checked to give the
same outputs within float32 rounding, then timed with bench_crun (median of single runs after a warm-up) in
`--rounds` rounds of A, B, A, B...; each is reported by its best round. Prints the CPU, then per model and
batch A's and B's best medians and B / A.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402  (its imports check the environment)

import bench_models as bm  # noqa: E402
from bench_report import cpu_line  # noqa: E402
import numpy as np  # noqa: E402

WORKTREE = "worktree"


def extract(rev: str, dest: str) -> str:
    """packager/ and runtime_c/include of `rev` (or the working tree) under dest; returns the directory to put on PYTHONPATH."""
    if rev == WORKTREE:
        return compare.ROOT
    os.makedirs(dest)
    archive = os.path.join(dest, "packager.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", compare.ROOT, "archive", rev, "packager", "runtime_c/include"], stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="the baseline revision (anything git archive takes)")
    p.add_argument("b", nargs="?", default=WORKTREE, help="the revision measured against it (default: the working tree)")
    p.add_argument("--models", default="mlp_small,lenet,cnn_bn,tm_mobilenet,tm_resnet", help="comma-separated names")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--march", default="native")
    p.add_argument("--backends", default="cblas,host")
    args = p.parse_args(argv)

    os.environ["DPK_NUM_THREADS"] = str(args.threads)
    models = {m.name: m for m in bm.standard_models() + bm.onnx_models(compare.ROOT)}
    wanted = [name for name in args.models.split(",") if name]
    unknown = [n for n in wanted if n not in models]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(models)}")
    work = tempfile.mkdtemp(prefix="dsopack_ab_")
    crun_exe = compare.compile_crun(work)
    if not crun_exe:
        sys.exit("ab_revisions.py: cannot build bench_crun (run `make -C runtime_c` first)")
    trees = {rev: extract(rev, os.path.join(work, f"tree_{i}")) for i, rev in enumerate([args.a, args.b])}
    print(f"{cpu_line()}; {args.threads} threads; -march={args.march}; A = {args.a}, B = {args.b}", flush=True)
    rows = []
    for name in wanted:
        for batch in map(int, args.batches.split(",")):
            variants = {}
            for rev, tree in trees.items():
                folder = os.path.join(work, f"{name}_b{batch}_{list(trees).index(rev)}")
                os.makedirs(folder)
                os.environ["PYTHONPATH"] = tree
                v = compare.make_variant(models[name], batch, folder, args.backends.split(","), ["-O3", f"-march={args.march}"])
                os.environ.pop("PYTHONPATH")
                if not v.so:
                    sys.exit(f"ab_revisions.py: {name} batch {batch} did not build at {rev}: {v.notes}")
                variants[rev] = v
                print(f"  {name} b{batch} at {rev}: {v.route}", flush=True)
            outs = [subprocess.run([compare.DPK_RUN, v.so, f"x={v.input}", "-o", v.so + ".out.npy"],
                                   capture_output=True, check=True) and np.load(v.so + ".out.npy")
                    for v in variants.values()]
            diff = float(np.abs(outs[0] - outs[1]).max())
            best = {rev: float("inf") for rev in variants}
            for _ in range(args.rounds):
                for rev, v in variants.items():
                    r = compare.crun(crun_exe, v, 0.3, 1.0, 20000)
                    if r:
                        best[rev] = min(best[rev], r["median"])
            a, b = best.values()
            rows.append((name, batch, a, b, diff))
            print(f"  {name:12s} b{batch:<3d} A {a * 1e6:9.1f} us   B {b * 1e6:9.1f} us   B/A {b / a:5.3f}"
                  f"   (outputs differ by {diff:.2g})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
