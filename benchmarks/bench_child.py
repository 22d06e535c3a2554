import time

T_MAIN = time.monotonic()  # first thing: the parent compares this with its own monotonic clock at spawn

"""One measurement in a fresh process, for benchmarks/compare.py (prints one JSON line).

    bench_child.py startup  RUNTIME MODEL INPUT.npy        phases: interpreter, imports, load, first result
    bench_child.py latency  RUNTIME MODEL INPUT.npy WARMUP_S MEASURE_S MAX_N
    bench_child.py serve    RUNTIME MODEL|- INPUT.npy      load, run once, print "ready", wait for stdin to close
    bench_child.py overhead MODEL INPUT.npy MEASURE_S      Python call overhead on a trivial model
    bench_child.py dlopen   LIBRARY                        dlopen time after the dsopack imports

INPUT is one array (.npy, fed to the first input) or every input by name (.npz).
RUNTIME is dsopack (MODEL a .so), onnxruntime (MODEL a .onnx), numpy (MODEL a
.json describing the nodes next to its .npz) or mmap (MODEL a raw weight file:
the page-cache read floor). onnxruntime's intra-op threads come from
$BENCH_ORT_THREADS (inter-op 1, sequential execution).
"""

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def import_runtime(runtime: str):
    import numpy as np

    if runtime == "dsopack":
        import loader

        return np, loader
    if runtime == "onnxruntime":
        import onnxruntime

        return np, onnxruntime
    return np, None


def load_input(np, input_path: str):
    """An array (.npy), or a dict of named arrays (.npz: every input of the model)."""
    if input_path.endswith(".npz"):
        with np.load(input_path) as z:
            return {k: z[k] for k in z.files}
    return np.load(input_path)


def open_model(runtime: str, mod, path: str):
    """Load `path`; returns fn(x) -> first output (x: the first input's array, or a dict of every input)."""
    import numpy as np

    if runtime == "dsopack":
        model = mod.load(path)
        name = model.inputs[0].name
        out = model.outputs[0].name

        def run(x):
            return model.run(**(x if isinstance(x, dict) else {name: x}))[out]
        run.keep = model
        return run
    if runtime == "onnxruntime":
        options = mod.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("BENCH_ORT_THREADS", "1"))
        options.inter_op_num_threads = 1
        options.execution_mode = mod.ExecutionMode.ORT_SEQUENTIAL
        sess = mod.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run(x):
            return sess.run(None, x if isinstance(x, dict) else {name: x})[0]
        run.keep = sess
        return run
    if runtime == "numpy":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_models

        with open(path) as f:
            desc = json.load(f)
        with np.load(os.path.join(os.path.dirname(path), desc["weights"])) as z:
            weights = {k: z[k] for k in z.files}  # read (copied) into memory, as a NumPy service would
        model = bench_models.Model(desc["name"], "", tuple(desc["input_shape"]), desc["nodes"], weights, desc["output"])
        return bench_models.numpy_forward(model)
    if runtime == "mmap":
        import mmap

        fd = os.open(path, os.O_RDONLY)
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        os.close(fd)
        data = np.frombuffer(mm, dtype=np.float32)

        def run(x):
            return np.add.reduce(data, dtype=np.float32)  # every byte read once, from the mapping
        run.keep = mm
        return run
    raise SystemExit(f"unknown runtime {runtime}")


def startup(runtime: str, path: str, input_path: str) -> dict:
    np, mod = import_runtime(runtime)
    x = load_input(np, input_path)
    t_imports = time.monotonic()
    rss_imports = _rss_kib()
    f0 = _minflt()
    run = open_model(runtime, mod, path)
    t_ready = time.monotonic()
    f1 = _minflt()
    y = run(x)
    t_first = time.monotonic()
    f2 = _minflt()
    return {"t_main": T_MAIN, "t_imports": t_imports, "t_ready": t_ready, "t_first": t_first,
            "rss_imports_kib": rss_imports, "rss_kib": _rss_kib(), "hwm_kib": _hwm_kib(),
            "minflt_ready": f1 - f0, "minflt_first": f2 - f1,
            "checksum": float(np.asarray(y, dtype=np.float64).sum())}


def latency(runtime: str, path: str, input_path: str, warmup_s: float, measure_s: float, max_n: int) -> dict:
    np, mod = import_runtime(runtime)
    x = load_input(np, input_path)
    run = open_model(runtime, mod, path)
    clock = time.perf_counter
    warm = 0
    start = clock()
    while warm < 3 or (clock() - start < warmup_s and warm < max_n):
        run(x)
        warm += 1
    times = []
    start = clock()
    while len(times) < 5 or (clock() - start < measure_s and len(times) < max_n):
        t0 = clock()
        run(x)
        times.append(clock() - t0)
    return {"times": times, "warmup": warm, "hwm_kib": _hwm_kib()}


def serve(runtime: str, path: str, input_path: str) -> None:
    np, mod = import_runtime(runtime)
    if path != "-":
        x = load_input(np, input_path)
        run = open_model(runtime, mod, path)
        run(x)  # every weight touched once
    print(json.dumps({"ready": True, "rss_kib": _rss_kib()}), flush=True)
    sys.stdin.read()


def overhead(path: str, input_path: str, measure_s: float) -> dict:
    np, loader = import_runtime("dsopack")
    x = load_input(np, input_path)
    model = loader.load(path)
    name = model.inputs[0].name
    clock = time.perf_counter
    results = {}
    calls = {
        "run": lambda: model.run(**{name: x}),
        "call": lambda: model(x),
    }
    inner = 200
    for key, fn in calls.items():
        for _ in range(2000):
            fn()
        per_call = []
        start = clock()
        while len(per_call) < 20 or clock() - start < measure_s:
            t0 = clock()
            for _ in range(inner):
                fn()
            per_call.append((clock() - t0) / inner)
        per_call.sort()
        results[key] = per_call[len(per_call) // 2]
    # what a call is made of: cProfile of model.run (its own overhead inflates every entry; the split is the point)
    import cProfile
    import pstats

    calls_n = 20000
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls_n):
        model.run(**{name: x})
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = []
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.items():
        label = func if file == "~" else f"{os.path.basename(file)}:{line} {func}"
        rows.append((tt / calls_n, label))
    rows.sort(reverse=True)
    breakdown = {label: per_call for per_call, label in rows[:6]}
    results["breakdown"] = breakdown
    return results


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "startup":
        print(json.dumps(startup(argv[1], argv[2], argv[3])))
    elif mode == "latency":
        print(json.dumps(latency(argv[1], argv[2], argv[3], float(argv[4]), float(argv[5]), int(argv[6]))))
    elif mode == "serve":
        serve(argv[1], argv[2], argv[3])
    elif mode == "dlopen":
        import ctypes

        import_runtime("dsopack")
        t0 = time.monotonic()
        ctypes.CDLL(argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
        print(json.dumps({"dlopen": time.monotonic() - t0}))
    elif mode == "overhead":
        print(json.dumps(overhead(argv[1], argv[2], float(argv[3]))))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
