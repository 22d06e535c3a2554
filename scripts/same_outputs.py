"""Do two revisions of dsopack give the same bits? For a refactoring that must not change behaviour.

    .venv/bin/python scripts/same_outputs.py 698d38b            # that revision vs the working tree
    .venv/bin/python scripts/same_outputs.py A B --batches 1,7

Every bundled example (manifests/*.yaml) and every benchmark model (benchmarks/bench_models.py: the
standard models and tests/models/*.onnx) is built by each revision's packager (its packager/ on
PYTHONPATH) with each route below, and run by that revision's own dpk-run (its runtime_c built with
make) on the same seeded input. The outputs must be equal byte for byte (the manifest fields that differ,
but for the producer, are shown). Prints one line per build and exits 1 if an output differs or a build fails.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import onnx
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_models as bm  # noqa: E402  (after the sys.path entry)

WORKTREE = "worktree"
ROUTES = {  # name -> (backends, cflags) for the benchmark models
    "host": (["host"], ["-O3"]),
    "cblas-native": (["cblas", "host"], ["-O3", "-march=native"]),
    "cblas-v3": (["cblas", "host"], ["-O3", "-march=x86-64-v3"]),
}


def checkout(rev: str, dest: str) -> str:
    """The tree of `rev` with its runtime built (the working tree as it is); returns its root."""
    if rev == WORKTREE:
        subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "runtime_c")], check=True)
        return ROOT
    os.makedirs(dest)
    archive = os.path.join(dest, "tree.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", ROOT, "archive", rev, "packager", "runtime_c", "manifests"], stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest)
    subprocess.run(["make", "-s", "-C", os.path.join(dest, "runtime_c")], check=True, capture_output=True)
    return dest


def run(tree: str, so: str, inputs: dict[str, str], out_dir: str) -> dict[str, bytes]:
    os.makedirs(out_dir)
    argv = [os.path.join(tree, "runtime_c", "build", "dpk-run"), so, *(f"{k}={v}" for k, v in inputs.items()),
            "-o", out_dir]
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "DPK_NUM_THREADS": "2"})
    return {name[:-4]: np.load(os.path.join(out_dir, name)).tobytes() for name in sorted(os.listdir(out_dir))}


def build(tree: str, spec: str, so: str, *extra: str) -> str | None:
    """None, or the build's last error line."""
    r = subprocess.run([sys.executable, "-m", "packager", "build", spec, "-o", so, "-q", "--no-cache", *extra],
                       capture_output=True, text=True, check=False, cwd=os.path.dirname(spec), env={**os.environ, "PYTHONPATH": tree})
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return None if r.returncode == 0 else (lines[-1] if lines else f"exit {r.returncode}")


def manifest_of(so: str) -> dict:
    import loader

    with loader.open_package(so) as package:
        manifest = dict(package.manifest)
    manifest.pop("producer", None)
    return manifest


def cases(work: str, batches: list[int]):
    """(label, spec path, extra build args, input name -> .npy path) for every example and benchmark model."""
    for path in sorted(glob.glob(os.path.join(ROOT, "manifests", "*.yaml"))):
        with open(path) as f:
            inputs = yaml.safe_load(f)["model"]["graph"]["inputs"]
        rng = np.random.default_rng(1)
        feeds = {}
        for name, t in inputs.items():
            feeds[name] = os.path.join(work, f"{os.path.basename(path)}.{name}.npy")
            np.save(feeds[name], rng.standard_normal(t["shape"]).astype(t.get("dtype", "float32")))
        yield os.path.basename(path), path, (), feeds
    models = bm.standard_models() + bm.onnx_models(ROOT)
    for model in models:
        for batch in batches:
            for route, (backends, cflags) in ROUTES.items():
                folder = os.path.join(work, f"{model.name}_b{batch}_{route}")
                os.makedirs(folder)
                onnx_path, x_path = os.path.join(folder, "model.onnx"), os.path.join(folder, "x.npy")
                (bm.rebatch_onnx(model.onnx_path, batch, onnx_path) if model.onnx_path
                 else bm.to_onnx(model, batch, onnx_path))
                graph = onnx.load(onnx_path, load_external_data=False).graph
                first = next(i for i in graph.input if i.name not in {t.name for t in graph.initializer})
                np.save(x_path, bm.make_input(model.name, tuple(d.dim_value for d in first.type.tensor_type.shape.dim)))
                spec = bm.write_onnx_manifest(onnx_path, model.name, folder, batch, backends, cflags)
                yield f"{model.name} b{batch} {route}", spec, (), {first.name: x_path}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="the baseline revision (anything git archive takes)")
    p.add_argument("b", nargs="?", default=WORKTREE, help="the revision compared with it (default: the working tree)")
    p.add_argument("--batches", default="1,64", help="batch sizes of the benchmark models")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dsopack_same_")
    trees = {rev: checkout(rev, os.path.join(work, f"tree_{i}")) for i, rev in enumerate([args.a, args.b])}
    failed = 0
    for label, spec, extra, feeds in cases(work, [int(b) for b in args.batches.split(",")]):
        outputs, manifests, errors = [], [], []
        for i, (rev, tree) in enumerate(trees.items()):
            so = os.path.join(work, f"{label.replace(' ', '_')}.{i}.so")
            error = build(tree, spec, so, *extra)
            if error:
                errors.append(f"{rev}: {error}")
                continue
            outputs.append(run(tree, so, feeds, so + ".out"))
            manifests.append(manifest_of(so))
        if errors:
            verdict = "BUILD FAILED " + "; ".join(errors)
        elif outputs[0] != outputs[1]:
            verdict = "OUTPUTS DIFFER: " + ", ".join(k for k in outputs[0] if outputs[0][k] != outputs[1].get(k))
        else:
            verdict = f"same bits ({len(outputs[0])} output{'s' * (len(outputs[0]) > 1)})"
            changed = sorted(k for k in {*manifests[0], *manifests[1]} if manifests[0].get(k) != manifests[1].get(k))
            if changed:  # e.g. a smaller arena changes the graph payload's checksum: shown, not a failure
                verdict += f"; manifest fields differ: {', '.join(changed)}"
        failed += not verdict.startswith("same")
        print(f"{label:40s} {verdict}", flush=True)
    print(f"{failed} of the builds differ or failed" if failed else "every output is bit-identical")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
