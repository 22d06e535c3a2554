"""PSS of Ray Serve replicas of the 100 MB model (bench_models' mlp_100mb): 1 replica against 4, dsopack and
onnxruntime side by side in the same deployment code (loader/ray_serve.py; onnxruntime through an adapter with the
loader's interface, benchmarks/ort_model.py, given as the deployment's `opener`).

    .venv/bin/python benchmarks/ray_memory.py          # ~1-2 minutes on 2 cores

On one local Ray instance, for each runtime and each model (the 100 MB MLP, and tiny_add as the baseline of a
replica: Ray's worker, the imports, the runtime), the deployment runs with 1 and then 4 replicas (threads 1 each);
each replica runs the model once at start (the deployment's warm-up) and answers a request; then the PSS of the
replica processes (found by asking the replicas for their pids) is summed from /proc/PID/smaps_rollup
(compare.py's reading). Model memory is the 100 MB model's PSS over the baseline's, at the same replica count.
dsopack maps the weights from the file (Pss_File: the page cache, shared by the replicas); onnxruntime reads them
onto each replica's heap (Pss_Anon).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import bench_models as bm  # noqa: E402
from bench_report import cpu_line  # noqa: E402
from compare import _smaps  # noqa: E402  (compare.py checks that onnx and onnxruntime import)
from ort_model import OrtModel  # noqa: E402

from packager.build import build  # noqa: E402

MODELS = ("tiny_add", "mlp_100mb")
COUNTS = (1, 4)


def make_files(work: str) -> dict[tuple[str, str], str]:
    """(runtime, model) -> the file a replica opens: a dsopack .so (YAML graph + .npz, cblas/host) or an .onnx."""
    models = {m.name: m for m in bm.standard_models()}
    files = {}
    for name in MODELS:
        model = models[name]
        onnx_path = os.path.join(work, f"{name}.onnx")
        bm.to_onnx(model, 1, onnx_path)
        so = os.path.join(work, f"{name}.so")
        build(bm.write_manifest(model, 1, work, ["cblas", "host"], ["-O3"]), so, quiet=True)
        files["dsopack", name], files["onnxruntime", name] = so, onnx_path
    return files


def replica_pids(handle, count: int) -> list[int]:
    pids = set()
    for _ in range(50):
        pids |= {r.result()["pid"] for r in [handle.replica.remote() for _ in range(4 * count)]}
        if len(pids) == count:
            return sorted(pids)
    raise RuntimeError(f"only {len(pids)} of {count} replicas answered")


def measure(ray_serve, serve, runtime: str, path: str, count: int) -> dict:
    opener = OrtModel if runtime == "onnxruntime" else None
    name = f"{runtime}_{os.path.basename(path).replace('.', '_')}_{count}"
    handle = serve.run(ray_serve.app(path, replicas=count, threads=1, num_cpus=0.5, opener=opener),
                       name=name, route_prefix=f"/{name}")
    try:
        pids = replica_pids(handle, count)
        meta = handle.metadata.remote().result()
        x = {t["name"]: np.ones(t["shape"], np.float32) for t in meta["inputs"]}
        for r in [handle.infer.remote(x) for _ in range(2 * count)]:
            r.result()
        time.sleep(0.5)
        rollups = [_smaps(pid) for pid in pids]
    finally:
        serve.delete(name)
    keys = ("Pss", "Rss", "Pss_Anon", "Pss_File")
    return {k: sum(r.get(k, 0) for r in rollups) for k in keys}


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def main() -> int:
    import ray
    from ray import serve

    from loader import ray_serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # one line per app started and deleted otherwise
    print(f"CPU: {cpu_line()}; Ray {ray.__version__}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="dsopack-ray-memory-") as work:
        files = make_files(work)
        size = os.path.getsize(files["dsopack", "mlp_100mb"])
        print(f"mlp_100mb: {mib(size / 1024)} MiB .so, {mib(os.path.getsize(files['onnxruntime', 'mlp_100mb']) / 1024)}"
              " MiB .onnx")
        import ort_model
        ray.cloudpickle.register_pickle_by_value(ort_model)  # the replicas cannot import benchmarks/ modules
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            with socket.socket() as sock:  # Ray Serve's HTTP port: any free one (the handles are what is used)
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            rows = {}
            for runtime in ("dsopack", "onnxruntime"):
                for model in MODELS:
                    for count in COUNTS:
                        rows[runtime, model, count] = r = measure(ray_serve, serve, runtime, files[runtime, model],
                                                                  count)
                        print(f"  {runtime:11s} {model:9s} x{count}: PSS {mib(r['Pss'])} MiB (anon {mib(r['Pss_Anon'])}"
                              f", file {mib(r['Pss_File'])}), RSS {mib(r['Rss'])} MiB", flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
    print("\nPSS of the replica processes, MiB (model = mlp_100mb's PSS over tiny_add's at the same count)")
    print(f"{'runtime':12s} {'total x1':>9s} {'total x4':>9s} {'ratio':>6s} {'model x1':>9s} {'model x4':>9s} {'ratio':>6s}")
    for runtime in ("dsopack", "onnxruntime"):
        total = {c: rows[runtime, "mlp_100mb", c]["Pss"] for c in COUNTS}
        model = {c: total[c] - rows[runtime, "tiny_add", c]["Pss"] for c in COUNTS}
        print(f"{runtime:12s} {mib(total[1]):>9s} {mib(total[4]):>9s} {total[4] / total[1]:6.2f} "
              f"{mib(model[1]):>9s} {mib(model[4]):>9s} {model[4] / model[1]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
