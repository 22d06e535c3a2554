"""Targets, results.md and results.png for benchmarks/compare.py (no measuring here)."""

from __future__ import annotations

import datetime
import math
import os

# issue 15: latency / onnxruntime's in the same run, 2 threads each, the default build: (batch, at most)
LATENCY_TARGETS = ((1, 0.9), (64, 1.0))


def cpu_line() -> str:
    """The machine, as every benchmark states it: "Intel(R) Xeon(R) Processor (AVX-512), 2 CPUs"."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    isa = "AVX-512" if " avx512f" in text else "AVX2" if " avx2" in text else "no AVX2"
    return f"{name} ({isa}), {len(os.sched_getaffinity(0))} CPUs"


def _ms(s: float) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def _us(s: float) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s * 1e6:.1f}" if s < 1e-3 else f"{s * 1e6:.0f}"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def targets(startup: dict, latency: dict, overhead: dict | None, pss: dict) -> list[dict]:
    out = []

    def add(ok, text, profile=None, note=None):
        out.append({"status": "PASS" if ok else "MISS", "text": text, "profile": profile, "note": note})

    big = startup.get("mlp_100mb", {})
    small = startup.get("mlp_1mb", {})
    d, o, floor = big.get("dsopack"), big.get("onnxruntime"), big.get("mmap")
    if d and o:
        r = o["ready"] / d["ready"]
        add(r >= 50, f"100 MB model load-to-ready {r:.0f}x faster than onnxruntime (target >= 50x): "
                     f"dsopack {_ms(d['ready'])} ms, onnxruntime {_ms(o['ready'])} ms",
            note=("startup", "mlp_100mb"))
        r = o["to_first"] / d["to_first"]
        add(r >= 10, f"100 MB model load-to-first-result {r:.1f}x faster than onnxruntime (target >= 10x): "
                     f"dsopack {_ms(d['to_first'])} ms, onnxruntime {_ms(o['to_first'])} ms",
            note=("startup", "mlp_100mb"))
    if d and floor:
        r = d["to_first"] / floor["to_first"]
        add(r <= 2, f"100 MB model first result {r:.2f}x the page-cache read of its 100 MB of weights through mmap "
                    f"(target <= 2x): dsopack load+first run {_ms(d['to_first'])} ms, mmap+read "
                    f"{_ms(floor['to_first'])} ms", note=("floor", "mlp_100mb"))
    if d and small.get("dsopack"):
        s = small["dsopack"]
        r = d["ready"] / s["ready"]
        add(r <= 2, f"load-to-ready 100 MB / 1 MB of weights = {r:.2f}x (target <= 2x): "
                    f"{_ms(d['ready'])} ms vs {_ms(s['ready'])} ms", note=("scaling", None))
    for batch, limit in LATENCY_TARGETS:
        for (name, b), row in latency.items():
            if b != batch or "dsopack" not in row:
                continue
            r = row["dsopack"]["median"] / row["onnxruntime"]["median"]
            add(r <= limit, f"{name} batch {batch} latency {r:.2f}x onnxruntime (target <= {limit}x): dsopack "
                            f"{_us(row['dsopack']['median'])} us, onnxruntime {_us(row['onnxruntime']['median'])} us",
                profile=("latency", (name, b)))
    if overhead:
        add(overhead["overhead"] <= 5e-6, f"Python call overhead {overhead['overhead'] * 1e6:.2f} us per call "
                                          f"(target <= 5 us): model.run {_us(overhead['run'])} us - C dpk_model_run "
                                          f"{overhead['c_run'] * 1e6:.3f} us", note=("overhead", None))
    dp = pss.get("dsopack")
    if dp:
        r = dp["inc4"] / dp["inc1"]
        add(r <= 1.5, f"PSS of 4 processes serving the 100 MB model {r:.2f}x one (model memory over idle "
                      f"interpreters; target <= 1.5x): {_mib(dp['inc4'])} MiB vs {_mib(dp['inc1'])} MiB",
            note=("pss", None))
        r = dp["serve4"]["Pss"] / dp["serve1"]["Pss"]
        add(r <= 1.5, f"PSS of 4 processes serving the 100 MB model {r:.2f}x one (total, interpreters included; "
                      f"target <= 1.5x): {_mib(dp['serve4']['Pss'])} MiB vs {_mib(dp['serve1']['Pss'])} MiB",
            note=("pss", None))
    return out


# ------------------------------------------------------------------ notes for misses

def miss_notes(targets_: list[dict], startup: dict, latency: dict, overhead: dict | None, pss: dict,
               profiles: dict, dlopen: dict) -> list[str]:
    lines = []
    done = set()
    for t in targets_:
        if t["status"] != "MISS":
            continue
        note = t.get("note")
        prof = t.get("profile")
        if prof and prof[0] == "latency":
            name, b = prof[1]
            key = f"{name} batch {b}"
            if key in done:
                continue
            done.add(key)
            row = latency[(name, b)]
            c = row.get("dsopack-c", {}).get("median")
            o = row["onnxruntime"]["median"]
            top, cats = profiles.get(key, (["(not profiled: --quick or --no-profile)"], {}))
            why = ""
            if c:
                if c <= o:
                    why = (f" From C the executor and kernels take {_us(c)} us ({c / o:.2f}x onnxruntime through its "
                           f"Python binding): they are not the problem; the Python call path "
                           f"({_us(max(0.0, row['dsopack']['median'] - c))} us here) is.")
                else:
                    why = (f" From C the executor and kernels alone take {_us(c)} us ({c / o:.2f}x onnxruntime "
                           f"through its Python binding): the kernels are slower, not only the Python call.")
            split = ", ".join(f"{n} {p:.0f}%" for n, p in sorted(cats.items(), key=lambda kv: -kv[1]) if p >= 3)
            lines.append(f"- **{key} latency**: dsopack {_us(row['dsopack']['median'])} us vs onnxruntime {_us(o)} us"
                         + (f" (NumPy {_us(row['numpy']['median'])} us)." if "numpy" in row else ".") + why
                         + (f" perf samples of the dsopack child (imports, warm-up, 1 s of runs) by category: {split}."
                            if split else "")
                         + " Top symbols by self time:")
            lines.append("")
            lines.append("  ```")
            lines.extend(f"  {s_}" for s_ in top)
            lines.append("  ```")
            continue
        if not note or note in done:
            continue
        done.add(note)
        kind = note[0]
        if kind in ("startup", "floor", "scaling"):
            big = startup.get("mlp_100mb", {})
            d = big.get("dsopack", {})
            f = big.get("mmap", {})
            s = startup.get("mlp_1mb", {}).get("dsopack", {})
            dl = "; ".join(f"dlopen({k}) alone takes {_ms(v)} ms" for k, v in dlopen.items())
            lines.append(f"- **100 MB start-up**: dsopack load {_ms(d.get('ready'))} ms "
                         f"({d.get('faults_ready', 0):.0f} minor page faults), first run {_ms(d.get('first_run'))} ms "
                         f"({d.get('faults_first', 0):.0f} faults); the mmap floor maps in {_ms(f.get('ready'))} ms and "
                         f"reads in {_ms(f.get('first_run'))} ms ({f.get('faults_first', 0):.0f} faults); the 1 MB "
                         f"model loads in {_ms(s.get('ready'))} ms ({s.get('faults_ready', 0):.0f} faults). Load to first result in "
                         f"each fresh process: dsopack {', '.join(_ms(t) for t in d.get('to_first_all', []))} ms; mmap "
                         f"floor {', '.join(_ms(t) for t in f.get('to_first_all', []))} ms. C-only load (dpk-run): "
                         f"{_ms(big.get('dpk-run', {}).get('load'))} ms. The model's manifest requires "
                         f"{', '.join(dlopen) or 'no library'}" + (f"; {dl} in a fresh process after the same imports." if dl else "."))
        elif kind == "overhead" and overhead:
            parts = ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in overhead.get("breakdown", {}).items())
            lines.append(f"- **Python call overhead**: `model.run(x=a)` {_us(overhead['run'])} us, `model(a)` "
                         f"{_us(overhead['call'])} us, of which the C call `dpk_model_run` (graph executor + kernel, "
                         f"timed from C by benchmarks/bench_crun.c) is {overhead['c_run'] * 1e6:.3f} us. Under cProfile (which "
                         f"inflates each entry), the self time per `model.run` call: {parts}. onnxruntime's `sess.run` on the same model: "
                         f"{_us(overhead['onnxruntime'])} us.")
        elif kind == "pss":
            dp = pss.get("dsopack", {})
            if dp:
                s1, s4 = dp["serve1"], dp["serve4"]
                i1, i4 = dp["idle1"], dp["idle4"]
                lines.append(f"- **PSS**: one serving process {_mib(s1['Pss'])} MiB (anon {_mib(s1['Pss_Anon'])}, file "
                             f"{_mib(s1['Pss_File'])}), four {_mib(s4['Pss'])} MiB (anon {_mib(s4['Pss_Anon'])}, file "
                             f"{_mib(s4['Pss_File'])}); idle interpreters (numpy + loader imported) "
                             f"{_mib(i1['Pss'])} MiB for one, {_mib(i4['Pss'])} MiB for four.")
    return lines


# ------------------------------------------------------------------ markdown

def write_markdown(path, env, variants, startup, latency, overhead, pss, targets_, profiles) -> None:
    L = []
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    L.append("# dsopack vs onnxruntime: benchmark results")
    L.append("")
    L.append(f"Written by `python benchmarks/compare.py{' --quick' if env['quick'] else ''}` on {now} "
             f"({env['elapsed']:.0f} s). Do not edit by hand: run it again.")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append(f"- Machine: {env['cpus']} CPUs ({env['cpu']}, {env.get('isa', 'ISA unknown')}), shared: processes other than this benchmark used "
             f"**{env['others_all']:.0%} of the CPUs** during the run ({env['others_startup']:.0%} during the start-up "
             f"measurements, {env['others_latency']:.0%} during the latency ones; from /proc/stat minus this run's own "
             f"CPU time); load average {env['load_before'][0]:.2f} before, {env['load_after'][0]:.2f} after. That "
             "load is noise in every figure, worst for the multi-threaded runs.")
    L.append(f"- Versions: dsopack `{env['git']}`, Python {env['python']}, NumPy {env['numpy']}, onnx {env['onnx']}, "
             f"onnxruntime {env['onnxruntime']}, {env['cc']}.")
    L.append(f"- Threads: {env['threads']} for both. onnxruntime `intra_op_num_threads={env['threads']}`, "
             "`inter_op_num_threads=1`, sequential execution, default graph optimizations, CPU provider"
             + (" (latency also with 1 intra-op thread, column `ort 1t`)" if not env["quick"] and env["threads"] != 1
                else "") + f". dsopack `DPK_NUM_THREADS={env['threads']}`: the executor runs calls in order on the "
             "calling thread and kernels split large loops over the runtime's worker threads; backends "
             f"`{'/'.join(env['backends'])}`, built with `-O3 -march={env['march']}` (recorded in each file's "
             "manifest); the runtime sets OpenBLAS to 1 thread (its kernels are split by dsopack instead). "
             f"NumPy's matmul uses its bundled OpenBLAS. OPENBLAS_NUM_THREADS={env['openblas_env']}; BLAS "
             f"libraries in a process with a dsopack model and NumPy: {'; '.join(env['blas'])}.")
    L.append(f"- Same input array for every runtime (seeded); outputs compared before any timing. Start-up: "
             f"fresh processes, median of {env['reps']} (runtimes interleaved in each round, one unmeasured warm-up "
             f"round first, so every file is in the page cache). Latency: one process per runtime and model, "
             f"{env['rounds']} round(s) of dsopack, onnxruntime and the C API interleaved, each reported by its best round "
             f"(lowest median; load from other processes only adds time, and this treats every runtime alike), "
             f"onnxruntime on 1 thread and NumPy in the first round only; in each round, "
             f"{env['warm_s']} s of warm-up runs excluded, then up to {env['measure_s']} s of timed runs "
             f"(`time.perf_counter` around each Python call, so dsopack and onnxruntime both include their Python "
             f"binding).")
    L.append("- Models are written to a temporary directory and removed after the run; dsopack builds use "
             "`dsopack build ... --no-cache` (the object cache off) and the build time is the whole CLI process.")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("Ratios to onnxruntime in this same run.")
    L.append("")
    for t in targets_:
        L.append(f"- **{t['status']}** {t['text']}")
    L.append("")

    L.append("## Models and builds")
    L.append("")
    L.append("| model | batch | weights MiB | dsopack route | .so MiB | .onnx MiB | dsopack build s | ONNX write s "
             "| max abs diff dsopack | max abs diff onnxruntime |")
    L.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    import os

    for (name, b), v in variants.items():
        so = f"{os.path.getsize(v.so) / 2**20:.2f}" if v.so and os.path.exists(v.so) else "-"
        ox = f"{os.path.getsize(v.onnx) / 2**20:.2f}" if v.onnx and os.path.exists(v.onnx) else "-"
        dd = f"{v.diffs['dsopack']:.1e}" if "dsopack" in v.diffs else "-"
        do = f"{v.diffs['onnxruntime']:.1e}" if "onnxruntime" in v.diffs else "(reference)"
        L.append(f"| {name} | {b} | {v.model.weight_bytes / 2**20:.2f} | {v.route or 'not built'} | {so} | {ox} | "
                 f"{v.build_s:.2f} | {v.onnx_write_s:.2f} | {dd} | {do} |")
    L.append("")
    L.append("Max abs diff is against the NumPy forward pass (float32); for ONNX-only models against onnxruntime.")
    notes = [(k, n) for k, v in variants.items() for n in v.notes]
    if notes:
        L.append("")
        for (name, b), n in notes:
            L.append(f"- {name} batch {b}: {n}")
    L.append("")
    L.append("## Start-up: a fresh process from nothing loaded to ready and to the first result")
    L.append("")
    L.append("Times in ms, each column its own median over the rounds (so *load to first* need not equal the sum "
             "of the two medians before it). *interpreter*: spawn to the first line of the child script; *imports*: "
             "`import numpy` + the runtime module (+ reading the small input .npy); *load*: `loader.load(f)` / "
             "`InferenceSession(f)` / `np.load(npz)` into memory / `mmap` of the raw weight file; *first run*: the "
             "first call; *load to first*: load + first run. Peak RSS is the process's high-water mark "
             "(interpreter included). `dpk-run` is the C-only path: its own `load:` and `run:` lines, and the "
             "whole process wall time.")
    L.append("")
    L.append("| model | runtime | interpreter | imports | load (to ready) | first run | load to first | total | "
             "peak RSS MiB |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in startup.items():
        for rt, s in rows.items():
            if rt == "dpk-run":
                L.append(f"| {name} | dpk-run (C) | - | - | {_ms(s['load'])} | {_ms(s.get('run'))} | "
                         f"{_ms(s['load'] + s.get('run', 0))} | {_ms(s['wall'])} | - |")
                continue
            label = "mmap + read (floor)" if rt == "mmap" else rt
            L.append(f"| {name} | {label} | {_ms(s['interpreter'])} | {_ms(s['imports'])} | {_ms(s['ready'])} | "
                     f"{_ms(s['first_run'])} | {_ms(s['to_first'])} | {_ms(s['total'])} | {_mib(s['hwm_kib'])} |")
    L.append("")
    L.append("| model | onnxruntime / dsopack: load to ready | load to first result | whole process to first result |")
    L.append("|---|---:|---:|---:|")
    for name, rows in startup.items():
        d, o = rows.get("dsopack"), rows.get("onnxruntime")
        if d and o:
            L.append(f"| {name} | {o['ready'] / d['ready']:.1f}x | {o['to_first'] / d['to_first']:.1f}x | "
                     f"{o['total'] / d['total']:.2f}x |")
    L.append("")

    L.append("## Steady-state latency")
    L.append("")
    has1t = any("onnxruntime-1t" in row for row in latency.values())
    head = "| model | batch | dsopack median | dsopack p90 | dsopack C API median | onnxruntime median | onnxruntime p90 |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if has1t:
        head += " ort 1t median |"
        sep += "---:|"
    head += " NumPy median | dsopack / onnxruntime | dsopack C API / onnxruntime | dsopack / NumPy |"
    sep += "---:|---:|---:|---:|"
    L.append("Microseconds per call. dsopack and onnxruntime are timed around their Python calls (`model.run(x=a)`, "
             "`sess.run(None, {'x': a})`); *dsopack C API* is `dpk_model_run` timed from C (benchmarks/bench_crun.c, "
             "same input): the executor and kernels without Python. Ratios use the "
             "Python medians.")
    L.append("")
    L.append(head)
    L.append(sep)
    for (name, b), row in latency.items():
        d, o, n = row.get("dsopack"), row["onnxruntime"], row.get("numpy")
        c = row.get("dsopack-c")
        line = (f"| {name} | {b} | {_us(d['median']) if d else '-'} | {_us(d['p90']) if d else '-'} | "
                f"{_us(c['median']) if c else '-'} | {_us(o['median'])} | {_us(o['p90'])} |")
        if has1t:
            line += f" {_us(row['onnxruntime-1t']['median']) if 'onnxruntime-1t' in row else '-'} |"
        line += (f" {_us(n['median']) if n else '-'} | {d['median'] / o['median']:.2f}x |" if d else " - | - |")
        line += f" {c['median'] / o['median']:.2f}x |" if c else " - |"
        line += f" {d['median'] / n['median']:.2f}x |" if d and n else " - |"
        L.append(line)
    L.append("")

    if overhead:
        L.append("## Python call overhead (tiny add model, x[1,4] + c)")
        L.append("")
        L.append("| call | us per call |")
        L.append("|---|---:|")
        L.append(f"| `model.run(x=a)` (loader) | {overhead['run'] * 1e6:.2f} |")
        L.append(f"| `model(a)` (loader) | {overhead['call'] * 1e6:.2f} |")
        L.append(f"| `dpk_model_run` from C (benchmarks/bench_crun.c; best of 3 runs' medians) | "
                 f"{overhead['c_run'] * 1e6:.3f} |")
        L.append(f"| **overhead** = model.run - dpk_model_run | **{overhead['overhead'] * 1e6:.2f}** |")
        L.append(f"| onnxruntime `sess.run` on the same model | {overhead['onnxruntime'] * 1e6:.2f} |")
        L.append("")

    if pss:
        L.append("## Memory: PSS of processes serving the 100 MB model")
        L.append("")
        L.append("Each process imports its runtime, loads the model, runs it once (every weight touched) and "
                 "waits; PSS is summed from /proc/PID/smaps_rollup. *Idle* processes import the same modules "
                 "and load nothing; *over idle* = serving PSS - idle PSS for the same number of processes.")
        L.append("")
        L.append("| runtime | 1 process PSS MiB | 4 processes PSS MiB | 4 / 1 | over idle: 1 | over idle: 4 | 4 / 1 |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for rt, row in pss.items():
            L.append(f"| {rt} | {_mib(row['serve1']['Pss'])} | {_mib(row['serve4']['Pss'])} | "
                     f"{row['serve4']['Pss'] / row['serve1']['Pss']:.2f}x | {_mib(row['inc1'])} | {_mib(row['inc4'])} | "
                     f"{row['inc4'] / row['inc1']:.2f}x |")
        L.append("")

    notes = miss_notes(targets_, startup, latency, overhead, pss, profiles, env.get("dlopen", {}))
    L.append("## Notes on misses")
    L.append("")
    if notes:
        if any("by category" in n for n in notes):
            L.append("How to read the perf categories: *OpenBLAS compute* is time in sgemm/sgemv and their packing "
                     "(`*copy*`); *generated cblas wrappers* is the wrapper code around those calls, mostly im2col for "
                     "convolutions; *threads waiting* is thread-pool threads spinning in `sched_yield`/futex and the "
                     "scheduler switching them, i.e. cores not doing model work; *dsopack workers waiting* is the "
                     "runtime's own pool: a worker spinning (up to 50 us) for the next loop, or the calling thread "
                     "waiting for the workers' ranges (uneven ranges, or a worker descheduled).")
            L.append("")
        L.extend(notes)
    else:
        L.append("Every target passed.")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


# ------------------------------------------------------------------ chart

def write_png(path, startup, latency, pss, overhead=None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"dsopack": "#1f77b4", "onnxruntime": "#ff7f0e", "numpy": "#2ca02c", "mmap": "#7f7f7f"}
    fig = plt.figure(figsize=(14, 12))
    grid = fig.add_gridspec(3, 2)
    axes = [[fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])], [fig.add_subplot(grid[1, :]), None],
            [fig.add_subplot(grid[2, 0]), fig.add_subplot(grid[2, 1])]]

    names = list(startup)
    width = 0.2

    def startup_panel(ax, key: str, floor_label: str, title: str) -> None:
        for i, rt in enumerate(("dsopack", "onnxruntime", "numpy", "mmap")):
            vals = [startup[n].get(rt, {}).get(key, float("nan")) * 1e3 for n in names]
            if all(math.isnan(v) for v in vals):
                continue
            ax.bar([k + (i - 1.5) * width for k in range(len(names))], vals, width,
                   label=floor_label if rt == "mmap" else rt, color=colors[rt])
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel("ms (log)")
        ax.set_title(title)
        ax.legend(fontsize=8)

    startup_panel(axes[0][0], "ready", "mmap (floor)", "load to ready, fresh process")
    startup_panel(axes[0][1], "to_first", "mmap + read (floor)", "load to first result, fresh process")

    ax = axes[1][0]
    keys = [k for k in latency if "dsopack" in latency[k]]
    labels = [f"{n} b{b}" for n, b in keys]
    series = (("dsopack", "dsopack (Python)", colors["dsopack"]), ("dsopack-c", "dsopack (C API)", "#aec7e8"),
              ("onnxruntime-1t", "onnxruntime 1 thread", "#ffbb78"), ("numpy", "numpy", colors["numpy"]))
    series = [s_ for s_ in series if any(s_[0] in latency[k] for k in keys)]
    w = 0.8 / max(1, len(series))
    for i, (key, label, color) in enumerate(series):
        vals = [latency[k][key]["median"] / latency[k]["onnxruntime"]["median"] if key in latency[k] else float("nan")
                for k in keys]
        ax.bar([k + (i - (len(series) - 1) / 2) * w for k in range(len(keys))], vals, w, label=label, color=color)
    ax.axhline(1.0, color=colors["onnxruntime"], lw=1.5, label="onnxruntime = 1 (batch-64 target)")
    ax.axhline(LATENCY_TARGETS[0][1], color="k", lw=0.8, ls="--", label=f"batch-1 target {LATENCY_TARGETS[0][1]}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("median latency / onnxruntime (log)")
    ax.set_title("steady-state latency relative to onnxruntime (lower is better)")
    ax.legend(fontsize=8, ncol=3)

    ax = axes[2][0]
    if overhead:
        items = [("model.run", overhead["run"]), ("model(a)", overhead["call"]),
                 ("dpk_model_run (C)", overhead["c_run"]), ("onnxruntime sess.run", overhead["onnxruntime"])]
        ax.barh([k for k, _ in items], [v * 1e6 for _, v in items],
                color=[colors["dsopack"], colors["dsopack"], "#aec7e8", colors["onnxruntime"]])
        ax.axvline(5 + overhead["c_run"] * 1e6, color="k", lw=0.8, ls="--", label="target: C + 5 us")
        ax.set_xlabel("us per call")
        ax.set_title("call cost on a tiny add model")
        ax.legend(fontsize=8)
    else:
        ax.axis("off")

    ax = axes[2][1]
    rts = list(pss)
    for i, count in enumerate((1, 4)):
        vals = [pss[rt][f"serve{count}"]["Pss"] / 1024 for rt in rts]
        inc = [pss[rt][f"inc{count}"] / 1024 for rt in rts]
        xs = [k + (i - 0.5) * 0.35 for k in range(len(rts))]
        ax.bar(xs, vals, 0.35, label=f"{count} process{'es' if count > 1 else ''}: total",
               color="#9ecae1" if count == 1 else "#3182bd")
        ax.bar(xs, inc, 0.2, label=f"{count}: over idle interpreters", color="#fdae6b" if count == 1 else "#e6550d")
    ax.set_xticks(range(len(rts)), rts)
    ax.set_ylabel("PSS MiB (sum over processes)")
    ax.set_title("memory serving the 100 MB model")
    ax.legend(fontsize=8)

    fig.suptitle("dsopack vs onnxruntime (benchmarks/compare.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
