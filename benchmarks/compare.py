"""dsopack side by side with onnxruntime (and a NumPy forward pass as a floor), in one run.

    .venv/bin/python benchmarks/compare.py            # full run, ~3-5 minutes on 2 cores
    .venv/bin/python benchmarks/compare.py --quick    # smoke run, ~1 minute
    (needs: .venv/bin/pip install onnx onnxruntime matplotlib)

The models: MLPs, LeNet and a small CNN (bench_models.py), the ONNX files of tests/models, and those issue 15
names (torchvision ResNet-18, MobileNet v2, EfficientNet-B0 at 224x224; a BERT of 2 layers, hidden 128, at
sequence 32: bench_models.issue_models). Every model is made once from seeded weights, as an ONNX file for onnxruntime
and as a dsopack build (from the ONNX file when the ONNX frontend builds it,
else from an equivalent YAML graph manifest with the same weights in an .npz),
in a temporary work directory. Outputs are checked against each other (max abs
diff printed) before anything is timed. Then, each in fresh child processes:
start-up phases (interpreter, imports, load to ready, first result; plus
dpk-run's own load for the C-only path and a page-cache read floor), steady
latency at batch 1 and 64 (warm-up excluded; median, p90), Python call
overhead on a trivial model, peak RSS, and the PSS of 4 processes serving the
100 MB model against one; then dynamic_batch.py and serve_load.py (the load test of dsopack serve against
onnxruntime behind the same server: serve_load.png). Writes benchmarks/results.md and results.png and
prints the targets as PASS/MISS; for each MISS a profile note (perf top
symbols or a timing breakdown) says where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(HERE, "bench_child.py")
DPK_RUN = os.path.join(ROOT, "runtime_c", "build", "dpk-run")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)


def _require() -> None:
    missing = []
    for module, package in (("numpy", "numpy"), ("yaml", "pyyaml"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    try:
        import loader  # noqa: F401
    except (ImportError, OSError) as e:
        sys.exit(f"compare.py: the dsopack loader does not import ({e}); run `bash scripts/setup.sh` first")
    if missing:
        sys.exit(f"compare.py: missing Python packages: {' '.join(missing)}\n"
                 f"  install them with: .venv/bin/pip install {' '.join(missing)} matplotlib")


_require()

import numpy as np  # noqa: E402

import bench_models as bm  # noqa: E402
import bench_report  # noqa: E402

RUNTIMES = ("dsopack", "onnxruntime", "numpy")


def log(msg: str) -> None:
    print(msg, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def p90(xs):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


# ------------------------------------------------------------------ environment

class CpuMeter:
    """The share of all CPUs that processes other than this run (and its children) used since `start`."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read():
        import resource

        try:
            with open("/proc/stat") as f:
                vals = [int(x) for x in f.readline().split()[1:9]]
        except OSError:
            return None
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            ours += ru.ru_utime + ru.ru_stime
        return sum(vals), vals[3] + vals[4], ours, time.monotonic()

    def others(self) -> float:
        now = self._read()
        if not now or not self.start:
            return float("nan")
        hz = os.sysconf("SC_CLK_TCK")
        busy = ((now[0] - self.start[0]) - (now[1] - self.start[1])) / hz
        wall = (now[3] - self.start[3]) * (os.cpu_count() or 1)
        return max(0.0, busy - (now[2] - self.start[2])) / wall if wall > 0 else float("nan")


def environment(threads: int, march: str) -> dict:
    import onnx
    import onnxruntime

    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpus": os.cpu_count(),
        "cpu": "unknown",
        "threads": threads,
        "march": march,
        "openblas_env": os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"),
        "load_before": os.getloadavg(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    env["isa"] = next((isa for isa, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"))
                                       if flag in flags), "no AVX2")
                    break
    except OSError:
        pass
    try:
        env["cc"] = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        env["cc"] = "unknown"
    try:
        env["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                    text=True).stdout.strip()
    except OSError:
        env["git"] = "unknown"
    return env


def wait_quiet(limit_s: float, share: float = 0.25, window_s: float = 3.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        m = CpuMeter()
        time.sleep(window_s)
        busy = m.others()
        if busy < share:
            log(f"other processes use {busy:.0%} of the CPUs: starting")
            return
        if time.monotonic() >= deadline:
            log(f"other processes still use {busy:.0%} of the CPUs after {limit_s:.0f} s: starting anyway")
            return
        log(f"other processes use {busy:.0%} of the CPUs: waiting (--wait-quiet)")


def blas_threads(so_path: str | None) -> list[str]:
    """The BLAS libraries in a process that loaded a dsopack model and numpy, with their thread counts."""
    code = ("import json, numpy, loader, sys\n"
            "model = loader.load(sys.argv[1]) if sys.argv[1] != '-' else None\n"
            "from threadpoolctl import threadpool_info\n"
            "print(json.dumps(threadpool_info()))")
    try:
        out = subprocess.run([sys.executable, "-c", code, so_path or "-"], capture_output=True, text=True, timeout=60)
        info = json.loads(out.stdout)
    except Exception:
        return [f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} (threadpoolctl not available)"]
    return [f"{os.path.basename(i['filepath'])} ({i.get('version')}, {i.get('threading_layer')}): {i['num_threads']} threads"
            for i in info]


# ------------------------------------------------------------------ make and build

class Variant:
    """One model at one batch size: the ONNX file, the dsopack file, the input."""

    def __init__(self, model: bm.Model, batch: int) -> None:
        self.model, self.batch = model, batch
        self.onnx = self.so = self.input = self.numpy_desc = None
        self.route = ""  # how the dsopack file was built
        self.build_s = self.onnx_write_s = float("nan")
        self.notes: list[str] = []
        self.diffs: dict[str, float] = {}
        self.ok = False


def _dsopack_build(spec: str, out: str) -> tuple[bool, float, str]:
    exe = shutil.which("dsopack", path=os.path.dirname(sys.executable)) or shutil.which("dsopack")
    argv = [exe] if exe else [sys.executable, "-m", "packager"]
    start = time.monotonic()
    r = subprocess.run([*argv, "build", spec, "-o", out, "-q", "--no-cache"], capture_output=True, text=True,
                       cwd=os.path.dirname(spec))
    took = time.monotonic() - start
    message = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return r.returncode == 0 and os.path.exists(out), took, (message[-1] if message else "")


def onnx_frontend_present() -> bool:
    return os.path.exists(os.path.join(ROOT, "packager", "frontends", "onnx.py"))


def make_variant(model: bm.Model, batch: int, work: str, backends: list[str], cflags: list[str]) -> Variant:
    v = Variant(model, batch)
    stem = os.path.join(work, f"{model.name}_b{batch}")
    if model.onnx_path:  # an ONNX-only model from tests/models
        import onnx

        v.onnx = stem + ".onnx"
        start = time.monotonic()
        try:
            bm.rebatch_onnx(model.onnx_path, batch, v.onnx)
        except Exception as e:
            v.notes.append(f"cannot set the batch dimension to {batch} ({type(e).__name__}: {e})")
            return v
        v.onnx_write_s = time.monotonic() - start
        proto = onnx.load(v.onnx, load_external_data=False)
        inits = {i.name for i in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            v.notes.append("skipped: the harness feeds models with one float32 input")
            return v
        shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim)
        model.input_shape = (1, *shape[1:])
        model.weights = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        x = bm.make_input(model.name, shape)
    else:
        v.onnx = stem + ".onnx"
        start = time.monotonic()
        bm.to_onnx(model, batch, v.onnx)
        v.onnx_write_s = time.monotonic() - start
        x = bm.make_input(model.name, bm.batched(model.input_shape, batch))
        # for the NumPy runtime in child processes: the nodes and the weights
        np.savez(os.path.join(work, f"{model.name}.npz"), **model.weights)
        v.numpy_desc = stem + ".json"
        with open(v.numpy_desc, "w") as f:
            json.dump({"name": model.name, "input_shape": list(bm.batched(model.input_shape, batch)),
                       "nodes": model.nodes, "output": model.output, "weights": f"{model.name}.npz"}, f)
    v.input = stem + ".input.npy"
    np.save(v.input, x)

    so = stem + ".so"
    attempts = []
    if onnx_frontend_present():
        attempts.append(("ONNX file, manifest " + "/".join(backends),
                         lambda: bm.write_onnx_manifest(v.onnx, model.name, work, batch, backends, cflags)))
        attempts.append(("ONNX file (dsopack build model.onnx)", lambda: v.onnx))
    if not model.onnx_path:
        attempts.append(("YAML graph + .npz, backends " + "/".join(backends),
                         lambda: bm.write_manifest(model, batch, work, backends, cflags)))
        if backends != ["host"]:
            attempts.append(("YAML graph + .npz, backends host", lambda: bm.write_manifest(model, batch, work, ["host"], cflags)))
    failures = []
    for route, spec in attempts:
        ok, took, message = _dsopack_build(spec(), so)
        if ok:
            v.so, v.route, v.build_s = so, route, took
            break
        failures.append(f"{route}: {message}")
    if failures:
        v.notes.extend(f"build route failed: {f}" for f in failures)
    if not v.so:
        v.notes.append("no dsopack build")
    return v


def check_outputs(v: Variant, ort_threads: int) -> None:
    """Run the three on the same input; record max abs differences (to NumPy, else to onnxruntime)."""
    import loader
    import onnxruntime as ort

    x = np.load(v.input)
    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    sess = ort.InferenceSession(v.onnx, options, providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    del sess
    ref = y_ort
    if not v.model.onnx_path:
        ref = bm.numpy_forward(v.model)(x)
        v.diffs["onnxruntime"] = float(np.abs(y_ort - ref).max())
    if v.so:
        with loader.load(v.so) as m:
            y = m.run(**{m.inputs[0].name: x})[m.outputs[0].name]
        if y.shape != ref.shape:
            v.notes.append(f"dsopack output shape {y.shape} != {ref.shape}")
            v.diffs["dsopack"] = float("inf")
        else:
            v.diffs["dsopack"] = float(np.abs(y - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    v.ok = all(d <= 1e-4 * scale for d in v.diffs.values())
    if not v.ok:
        v.notes.append("outputs differ: " + ", ".join(f"{k} {d:.2e}" for k, d in v.diffs.items()))


# ------------------------------------------------------------------ child processes

def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["BENCH_ORT_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_child(args: list[str], env: dict, timeout: float = 300) -> tuple[float, dict]:
    t_spawn = time.monotonic()
    r = subprocess.run([sys.executable, CHILD, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"child {' '.join(args[:3])} failed: {r.stderr.strip().splitlines()[-1:]}")
    return t_spawn, json.loads(r.stdout.strip().splitlines()[-1])


def startup_phases(runtime: str, path: str, input_path: str, env: dict) -> dict:
    t_spawn, r = run_child(["startup", runtime, path, input_path], env)
    return {
        "interpreter": r["t_main"] - t_spawn,
        "imports": r["t_imports"] - r["t_main"],
        "ready": r["t_ready"] - r["t_imports"],
        "first_run": r["t_first"] - r["t_ready"],
        "to_first": r["t_first"] - r["t_imports"],
        "total": r["t_first"] - t_spawn,
        "hwm_kib": r["hwm_kib"],
        "rss_imports_kib": r["rss_imports_kib"],
        "faults_ready": r.get("minflt_ready", 0),
        "faults_first": r.get("minflt_first", 0),
    }


def dpk_run_phases(so: str, input_path: str) -> dict | None:
    if not os.path.exists(DPK_RUN):
        return None
    start = time.monotonic()
    r = subprocess.run([DPK_RUN, so, f"x={input_path}"], capture_output=True, text=True)
    wall = time.monotonic() - start
    if r.returncode != 0:
        return None
    out = {"wall": wall}
    for line in r.stdout.splitlines():
        if line.startswith("load:"):
            out["load"] = float(line.split()[1]) / 1e3
        elif line.startswith("run:"):
            out["run"] = float(line.split()[1]) / 1e3
    return out if "load" in out else None


def compile_crun(work: str) -> str | None:
    """benchmarks/bench_crun.c against runtime_c/build/libdpk.so (the C API timing, no Python)."""
    lib = os.path.join(ROOT, "runtime_c", "build")
    if not os.path.exists(os.path.join(lib, "libdpk.so")):
        return None
    exe = os.path.join(work, "bench_crun")
    r = subprocess.run(["cc", "-O2", os.path.join(HERE, "bench_crun.c"), "-I", os.path.join(ROOT, "runtime_c", "include"),
                        "-L", lib, "-ldpk", f"-Wl,-rpath,{lib}", "-o", exe], capture_output=True, text=True)
    return exe if r.returncode == 0 else None


def crun(exe: str, v: Variant, warm_s: float, measure_s: float, max_n: int) -> dict | None:
    raw = v.input[:-4] + ".bin"
    if not os.path.exists(raw):
        np.load(v.input).tofile(raw)
    r = subprocess.run([exe, v.so, raw, str(warm_s), str(measure_s), str(max_n)], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def dlopen_cost(so: str, env: dict, reps: int) -> dict:
    """Seconds to dlopen each library the model's manifest requires, in a fresh process after the same imports."""
    import loader

    with loader.open_package(so) as package:
        requires = package.manifest.get("requires", [])
    out = {}
    for lib in requires:
        times = []
        for _ in range(reps):
            _, r = run_child(["dlopen", lib], env)
            times.append(r["dlopen"])
        out[lib] = median(times)
    return out


def measure_startup(variants: dict, floors: dict, reps: int, env: dict) -> dict:
    """Fresh processes, runtimes interleaved in each round; one unmeasured warm-up round (page cache warm)."""
    results: dict = {}
    for name, v in variants.items():
        jobs = []
        if v.so:
            jobs.append(("dsopack", v.so))
        jobs.append(("onnxruntime", v.onnx))
        if v.numpy_desc:
            jobs.append(("numpy", v.numpy_desc))
        if name in floors:
            jobs.append(("mmap", floors[name]))
        rows = {rt: [] for rt, _ in jobs}
        c_rows = []
        for rep in range(reps + 1):
            for rt, path in jobs:
                phases = startup_phases(rt, path, v.input, env)
                if rep:
                    rows[rt].append(phases)
            if v.so:
                c = dpk_run_phases(v.so, v.input)
                if rep and c:
                    c_rows.append(c)
        summary = {rt: {k: median([p[k] for p in ps]) for k in ps[0]} for rt, ps in rows.items() if ps}
        for rt, ps in rows.items():
            if ps:
                summary[rt]["to_first_all"] = sorted(p["to_first"] for p in ps)
        if c_rows:
            summary["dpk-run"] = {k: median([c[k] for c in c_rows]) for k in c_rows[0]}
        results[name] = summary
        d, o = summary.get("dsopack"), summary.get("onnxruntime")
        line = f"  {name:12s}"
        for rt, s in summary.items():
            if rt == "dpk-run":
                line += f"  dpk-run load {s['load'] * 1e3:.2f} ms"
            else:
                line += f"  {rt} ready {s['ready'] * 1e3:.2f} ms, first {s['to_first'] * 1e3:.2f} ms;"
        log(line)
        if d and o:
            log(f"  {'':12s}  ratio onnxruntime/dsopack: ready {o['ready'] / d['ready']:.1f}x, "
                f"first result {o['to_first'] / d['to_first']:.1f}x")
    return results


def measure_latency(variants: list[Variant], rounds: int, warm_s: float, measure_s: float, max_n: int, env: dict,
                    env_ort1: dict | None, crun_exe: str | None) -> dict:
    """Per model: every runtime in its own process; dsopack, onnxruntime and the C API in `rounds` interleaved
    rounds (the reference columns, onnxruntime on 1 thread and NumPy, in the first only); each reported by its best
    round (lowest median), with every round's median kept."""
    results = {}
    for v in variants:
        jobs = []
        if v.so:
            jobs.append(("dsopack", "dsopack", v.so, env))
        jobs.append(("onnxruntime", "onnxruntime", v.onnx, env))
        if env_ort1 is not None:
            jobs.append(("onnxruntime-1t", "onnxruntime", v.onnx, env_ort1))
        if v.numpy_desc:
            jobs.append(("numpy", "numpy", v.numpy_desc, env))
        rounds_of = {label: [] for label, *_ in jobs}  # per round: {"median", "p90", "n", "warmup"}
        for k in range(rounds):
            for label, rt, path, e in jobs:
                if k and label not in ("dsopack", "onnxruntime"):
                    continue  # the reference columns get one round
                _, r = run_child(["latency", rt, path, v.input, str(warm_s), str(measure_s), str(max_n)], e)
                rounds_of[label].append({"median": median(r["times"]), "p90": p90(r["times"]), "n": len(r["times"]),
                                         "warmup": r["warmup"]})
            if v.so and crun_exe:
                c = crun(crun_exe, v, warm_s, measure_s, max_n)
                if c:
                    rounds_of.setdefault("dsopack-c", []).append(c)
        # the best round (lowest median) of each: load from other processes only ever adds time
        row = {label: dict(min(rs, key=lambda r_: r_["median"]), rounds=[r_["median"] for r_ in rs])
               for label, rs in rounds_of.items() if rs}
        results[(v.model.name, v.batch)] = row
        text = ", ".join(f"{k} {s['median'] * 1e6:.1f} us" for k, s in row.items())
        ratio = row["dsopack"]["median"] / row["onnxruntime"]["median"] if "dsopack" in row else float("nan")
        log(f"  {v.model.name:12s} batch {v.batch:2d}: {text}  (dsopack/onnxruntime {ratio:.2f}x)")
    return results


def measure_overhead(v: Variant, measure_s: float, env: dict, crun_exe: str | None) -> dict:
    _, r = run_child(["overhead", v.so, v.input, str(measure_s)], env)
    c = [crun(crun_exe, v, 0.2, measure_s, 10**7) for _ in range(3)] if crun_exe else []
    r["c_run"] = min(x["median"] for x in c if x) if any(c) else float("nan")  # conservative: the fastest C
    _, ort = run_child(["latency", "onnxruntime", v.onnx, v.input, "0.2", str(measure_s), "1000000"], env)
    r["onnxruntime"] = median(ort["times"])
    r["overhead"] = r["run"] - r["c_run"]
    log(f"  model.run {r['run'] * 1e6:.2f} us, model(x) {r['call'] * 1e6:.2f} us, C dpk_model_run "
        f"{r['c_run'] * 1e6:.3f} us -> Python overhead {r['overhead'] * 1e6:.2f} us "
        f"(onnxruntime sess.run {r['onnxruntime'] * 1e6:.2f} us)")
    return r


def _smaps(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def serve_group(runtime: str, path: str, input_path: str, count: int, env: dict) -> dict:
    procs = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, CHILD, "serve", runtime, path, input_path],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        for p in procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"serve {runtime} {path}: the child exited ({p.wait()})")
        rollups = [_smaps(p.pid) for p in procs]
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.wait(timeout=60)
    keys = ("Pss", "Rss", "Pss_Anon", "Pss_File")
    return {k: sum(r.get(k, 0) for r in rollups) for k in keys}


def measure_pss(v: Variant, env: dict) -> dict:
    results = {}
    for rt, path in (("dsopack", v.so), ("onnxruntime", v.onnx)):
        if not path:
            continue
        row = {}
        for count in (1, 4):
            row[f"idle{count}"] = serve_group(rt, "-", v.input, count, env)
            row[f"serve{count}"] = serve_group(rt, path, v.input, count, env)
        for count in (1, 4):
            row[f"inc{count}"] = row[f"serve{count}"]["Pss"] - row[f"idle{count}"]["Pss"]
        results[rt] = row
        log(f"  {rt:12s} PSS total: 1 process {row['serve1']['Pss'] / 1024:.1f} MiB, 4 processes "
            f"{row['serve4']['Pss'] / 1024:.1f} MiB ({row['serve4']['Pss'] / row['serve1']['Pss']:.2f}x); "
            f"over idle interpreters: {row['inc1'] / 1024:.1f} MiB -> {row['inc4'] / 1024:.1f} MiB "
            f"({row['inc4'] / row['inc1']:.2f}x)")
    return results


# ------------------------------------------------------------------ profile notes for misses

_WAIT = ("blas_thread_server", "yield", "schedule", "finish_task_switch", "futex", "do_syscall_64", "entry_SYSCALL",
         "exit_to_user_mode", "syscall_return")
CATEGORIES = (  # (name, test on (dso lowercased, symbol)); the first that matches counts
    ("threads waiting (OpenBLAS/other thread pools: yield, futex, scheduler)", lambda d, s: any(w in s for w in _WAIT)),
    ("dsopack workers waiting (spinning for the next loop, or the caller for their ranges)",
     lambda d, s: s in ("worker_main", "wait_for_work", "parallel_for")),
    ("OpenBLAS compute (sgemm/sgemv kernels, packing)", lambda d, s: "openblas" in d),
    ("generated cblas wrappers (im2col, bias, activation)", lambda d, s: d.endswith(".so") and "cblas_" in s),
    ("generated host kernels", lambda d, s: d.endswith(".so") and "host_" in s),
    ("Python interpreter and extensions", lambda d, s: "python" in d or "_cffi" in d or "_dpk" in d or "numpy" in d),
    ("libdpk runtime", lambda d, s: "libdpk" in d),
    ("kernel (other)", lambda d, s: "kernel" in d),
)


def perf_top(args: list[str], env: dict, work: str, limit: int = 8) -> tuple[list[str], dict]:
    """`perf record` a child: the top symbols by self time, and the samples by category (empty without perf)."""
    perf = shutil.which("perf")
    if not perf:
        return [], {}
    data = os.path.join(work, "perf.data")
    r = subprocess.run([perf, "record", "-q", "-F", "2000", "-o", data, "--", sys.executable, CHILD, *args],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return [], {}
    rep = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                          "--percent-limit", "0.2"], capture_output=True, text=True)
    lines, cats = [], {}
    for line in rep.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) != 3 or not parts[0].endswith("%"):
            continue
        pct, dso, sym = float(parts[0][:-1]), parts[1], parts[2].replace("[.] ", "").replace("[k] ", "(kernel) ")
        if len(lines) < limit and pct >= 2:
            lines.append(f"{parts[0]:>7s} {dso} {sym}")
        name = next((n for n, test in CATEGORIES if test(dso.lower(), sym)), "other")
        cats[name] = cats.get(name, 0.0) + pct
    return lines, cats


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="needs: .venv/bin/pip install onnx onnxruntime matplotlib")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run (fewer repetitions)")
    p.add_argument("--out", default=HERE, help="where results.md and results.png go (default benchmarks/)")
    p.add_argument("--work", help="work directory for the built models (default: a temporary one, removed)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="threads for both runtimes: onnxruntime intra_op_num_threads and dsopack DPK_NUM_THREADS "
                   "(default: the CPUs this process may use)")
    p.add_argument("--march", help="build the dsopack models with this -march (e.g. native: they then run on this "
                   "machine only). Default: the default build, which on x86-64 carries baseline, AVX2 and AVX-512 "
                   "variants and picks one at load (the issue 15 targets are for this build)")
    p.add_argument("--backends", help="dsopack backend priority, e.g. cblas,host (default: the default build's "
                   "choice, the fastest this machine has: backend_choice.py); a model that does not build with "
                   "them falls back to host")
    p.add_argument("--models", metavar="A,B", help="only these models (names as in results.md; default: all)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="first wait up to S seconds for other processes to use under 25%% of the CPUs")
    p.add_argument("--no-profile", action="store_true", help="skip the perf profiles of misses (--quick skips them)")
    p.add_argument("--no-dynamic", action="store_true", help="skip the dynamic-batch comparison (dynamic_batch.py)")
    p.add_argument("--no-serve-load", action="store_true",
                   help="skip the load test of dsopack serve against onnxruntime behind the same server (serve_load.py)")
    args = p.parse_args(argv)
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    started = time.monotonic()
    meter = CpuMeter()
    quick = args.quick
    reps = 1 if quick else 5
    rounds = 1 if quick else 5  # interleaved, each runtime's best: a burst of load on this shared VM hits one round
    warm_s, measure_s, max_n = (0.2, 0.3, 2000) if quick else (0.2, 0.4, 20000)
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        from packager import backend_choice, spec as spec_mod, toolchain
        backends = backend_choice.choose(None, toolchain.configure(spec_mod.Target())).backends

    if args.threads < 1:
        p.error("--threads must be at least 1")
    cflags = ["-O3"] + ([f"-march={args.march}"] if args.march else [])
    os.environ["DPK_NUM_THREADS"] = str(args.threads)  # every dsopack process below: Python children, bench_crun, dpk-run
    march = args.march or "default (ISA variants)"
    env_info = environment(args.threads, march)
    log(f"dsopack {env_info['git']} vs onnxruntime {env_info['onnxruntime']} (threads "
        f"{args.threads}, -march {march}, backends {'/'.join(backends)}), numpy {env_info['numpy']}; {env_info['cpus']} CPUs ({env_info['cpu']}, {env_info.get('isa', 'ISA unknown')}); "
        f"load average {env_info['load_before'][0]:.2f}")

    work = args.work or tempfile.mkdtemp(prefix="dsopack-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        # ---------------------------------------------------------- make + build
        models = bm.standard_models() + bm.onnx_models(ROOT) + bm.issue_models(ROOT, work)
        if args.models:
            wanted = {m.strip() for m in args.models.split(",")}
            unknown = wanted - {m.name for m in models}
            if unknown:
                sys.exit(f"compare.py: unknown model(s) {', '.join(sorted(unknown))} "
                         f"(models: {', '.join(m.name for m in models)})")
            models = [m for m in models if m.name in wanted]
        log(f"[1/8] make + build {len(models)} models at batch 1 and 64 in {work}")
        variants: dict[tuple[str, int], Variant] = {}
        for m in models:
            batches = (1,) if m.roles <= {"startup", "overhead"} else (1, 64)
            for b in batches:
                v = make_variant(m, b, work, backends, cflags)
                variants[(m.name, b)] = v
                size = f"{os.path.getsize(v.so) / 2**20:.2f} MiB" if v.so else "-"
                log(f"  {m.name:12s} batch {b:2d}: {v.route or 'NOT BUILT'}; build {v.build_s:.2f} s, {size}"
                    + ("".join(f"\n      {n}" for n in v.notes)))

        # ---------------------------------------------------------- check outputs
        log("[2/8] outputs on the same inputs (max abs diff to NumPy; to onnxruntime for ONNX-only models)")
        for v in variants.values():
            if not v.onnx or not v.input:
                continue
            try:
                check_outputs(v, args.threads)
            except Exception as e:
                v.notes.append(f"output check failed: {type(e).__name__}: {e}")
                v.ok = False
            log(f"  {v.model.name:12s} batch {v.batch:2d}: " + ", ".join(f"{k} {d:.2e}" for k, d in v.diffs.items())
                + ("" if v.ok else "  -> excluded from timing"))
        ok = {k: v for k, v in variants.items() if v.ok and v.so}

        env = child_env(args.threads)
        crun_exe = compile_crun(work)
        big = ok.get(("mlp_100mb", 1))
        floors = {}
        if big:
            floors["mlp_100mb"] = os.path.join(work, "mlp_100mb.weights.bin")
            bm.write_weights_raw(big.model, floors["mlp_100mb"])

        # ---------------------------------------------------------- start-up
        log(f"[3/8] start-up in fresh processes (median of {reps}, after 1 unmeasured warm-up round; page cache warm)")
        phase = CpuMeter()
        startup = measure_startup({k[0]: v for k, v in ok.items() if k[1] == 1 and "startup" in v.model.roles},
                                  floors, reps, env)
        env_info["others_startup"] = phase.others()
        dlopen = dlopen_cost(big.so, env, reps) if big else {}
        for lib, took in dlopen.items():
            log(f"  dlopen({lib}) (a library the 100 MB model's manifest requires): {took * 1e3:.2f} ms")

        # ---------------------------------------------------------- latency
        log(f"[4/8] steady-state latency ({rounds} interleaved round{'s' if rounds > 1 else ''} of: warm-up {warm_s} s "
            f"excluded, then up to {measure_s} s of timed runs)")
        env1 = None if quick or args.threads == 1 else child_env(1)
        phase = CpuMeter()
        latency = measure_latency([v for v in ok.values() if "latency" in v.model.roles], rounds, warm_s, measure_s,
                                  max_n, env, env1, crun_exe)
        env_info["others_latency"] = phase.others()

        # ---------------------------------------------------------- call overhead
        log("[5/8] Python call overhead (tiny add model)")
        overhead = None
        tiny = ok.get(("tiny_add", 1))
        if tiny:
            overhead = measure_overhead(tiny, 0.3 if quick else 1.0, env, crun_exe)

        # ---------------------------------------------------------- PSS
        log("[6/8] proportional memory (PSS) of 1 and 4 processes serving the 100 MB model")
        pss = measure_pss(big, env) if big else {}

        # ---------------------------------------------------------- dynamic batch
        dynamic_md = ""
        if not args.no_dynamic and not args.models:
            log("[7/8] one dynamic-batch file (batch 1..64) against onnxruntime with a dynamic batch")
            import dynamic_batch

            dynamic_md = dynamic_batch.run(args.threads, quick)
            log(dynamic_md)

        # ---------------------------------------------------------- serving under load
        serve_md, serve_failed = "", 0
        if not args.no_serve_load and not args.models:
            log("[8/8] dsopack serve under load (1, 8, 32 clients on loopback) against onnxruntime behind the same server")
            import importlib.util

            import serve_load

            if importlib.util.find_spec("pytriton") is None:
                log("  skipped: needs PyTriton (.venv/bin/pip install -e '.[serve]')")
            else:
                serve_md, serve_failed = serve_load.run(args.threads, quick, args.out, log=log)
                log(serve_md)

        # ---------------------------------------------------------- targets + profiles
        targets = bench_report.targets(startup, latency, overhead, pss)
        profiles: dict[str, list[str]] = {}
        if not args.no_profile and not quick:
            for t in targets:
                if t["status"] != "MISS" or not t.get("profile"):
                    continue
                kind, key = t["profile"]
                if kind == "latency" and key in ok and key not in profiles:
                    v = ok[key]
                    top, cats = perf_top(["latency", "dsopack", v.so, v.input, "0.1", "1.0", str(max_n)], env, work)
                    profiles[f"{key[0]} batch {key[1]}"] = (top or ["(perf not available)"], cats)
        env_info["load_after"] = os.getloadavg()
        env_info["others_all"] = meter.others()
        env_info["blas"] = blas_threads(next((v.so for v in ok.values() if v.so), None))
        env_info["elapsed"] = time.monotonic() - started
        env_info["quick"] = quick
        env_info["reps"], env_info["warm_s"], env_info["measure_s"] = reps, warm_s, measure_s
        env_info["backends"] = backends
        env_info["rounds"] = rounds
        env_info["dlopen"] = dlopen

        os.makedirs(args.out, exist_ok=True)
        md = os.path.join(args.out, "results.md")
        png = os.path.join(args.out, "results.png")
        bench_report.write_markdown(md, env_info, variants, startup, latency, overhead, pss, targets, profiles)
        for section in (dynamic_md, serve_md):
            if section:
                with open(md, "a", encoding="utf-8") as f:
                    f.write("\n" + section)
        wrote_png = bench_report.write_png(png, startup, latency, pss, overhead)
        log(f"\nother processes used {env_info['others_all']:.0%} of the CPUs during the run "
            f"({env_info['others_startup']:.0%} during start-up, {env_info['others_latency']:.0%} during latency)")
        for t in targets:
            log(f"{t['status']:4s}  {t['text']}")
        log(f"\nwrote {md}" + (f" and {png}" if wrote_png else
                                " (no chart: .venv/bin/pip install matplotlib)") + f" in {env_info['elapsed']:.0f} s")
        if serve_failed:
            log(f"FAIL  serve load: {serve_failed} request(s) failed (serve_load.py must see none)")
            return 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
