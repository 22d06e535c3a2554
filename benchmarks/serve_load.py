"""A load test on loopback: `dsopack serve`'s own code serving a dsopack file, then the same model in onnxruntime
behind the same code, at 1, 8 and 32 concurrent clients (issue 17).

    .venv/bin/python benchmarks/serve_load.py            # ~6 minutes on 2 cores
    .venv/bin/python benchmarks/serve_load.py --quick    # ~1 minute
    (compare.py runs it too and puts its table in results.md; needs: .venv/bin/pip install matplotlib)

For each model (the digits MLP of manifests/digits_mlp.yaml and the ResNet of tests/models, both as an ONNX
file with a symbolic batch), one dsopack file is built with `--shape x=1..64,...`. A server process runs
loader/serve.py (Served, bind, serve: PyTriton's Triton behind the HTTP front of serve_guard.py) on that file,
then a second one on `OrtModel`: an onnxruntime session on the same ONNX file, bound to Triton with the dsopack
file's own inputs, outputs, batch dim and plans (`Served(path, opener=...)`), so both get the same dynamic
batching. Both run with the same threads (dsopack's num_threads, onnxruntime's intra_op_num_threads).

Clients: N threads (1, 8, 32), each on one keep-alive connection to the HTTP front, send batch-1 requests in
the protocol's binary tensor extension (a JSON header and the raw float32 bytes, built once before the run;
answers asked in binary too), a cycle of 16 different samples. Each level runs until it has sent its request
count or its time is up, whichever comes first, after a warm-up; every answer is checked against onnxruntime
run in this process beforehand. A request fails on a connection error, a status other than 200, or a wrong
answer; any failure is reported and the script exits 1. The client and the server share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from bench_report import cpu_line  # noqa: E402
from ort_model import OrtModel  # noqa: E402

LEVELS = (1, 8, 32)
RUNTIMES = ("dsopack", "onnxruntime")
SAMPLES = 16  # distinct request bodies per model, sent in turn
MAX_BATCH = 64
HEADING = "### Serving under load: dsopack serve against onnxruntime behind the same server"


# ------------------------------------------------------------------ models

def digits_onnx(path: str) -> None:
    """manifests/digits_mlp.yaml as ONNX with a symbolic batch: x * pixel_scale, dense, relu, dense, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = dict(np.load(os.path.join(ROOT, "manifests", "digits_mlp.npz")))
    nodes = [helper.make_node("Mul", ["x", "pixel_scale"], ["xs"]),
             helper.make_node("Gemm", ["xs", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "digits_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
                              initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dsopack-bench")
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def models(work: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, ONNX file with a symbolic batch, one sample's shape)."""
    import bench_models as bm

    digits = os.path.join(work, "digits_mlp.onnx")
    if not os.path.exists(digits):
        digits_onnx(digits)
    resnet = os.path.join(work, "tm_resnet.onnx")
    if not os.path.exists(resnet):
        bm.rebatch_onnx(os.path.join(ROOT, "tests", "models", "resnet.onnx"), "batch", resnet)
    return [("digits_mlp", digits, (64,)), ("tm_resnet", resnet, (3, 32, 32))]


def build(onnx_path: str, sample: tuple[int, ...], work: str) -> str:
    """The dsopack file of the model for batch 1..64 (reused if it is newer than the ONNX file)."""
    out = os.path.join(work, os.path.basename(onnx_path)[:-5] + ".so")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(onnx_path):
        shape = f"x=1..{MAX_BATCH}," + ",".join(map(str, sample))
        subprocess.run([sys.executable, "-m", "packager", "build", onnx_path, "-o", out, "--shape", shape, "-q"],
                       check=True, cwd=ROOT)
    return out


# ------------------------------------------------------------------ the server (a child process)

def child(args) -> int:
    """`serve_load.py --child RUNTIME ...`: serve one file with loader/serve.py until SIGTERM."""
    import logging

    from loader import serve

    logging.basicConfig(level=logging.INFO, format="dsopack serve: %(message)s")
    for noisy in ("pytriton", "tritonclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opener = (lambda _: OrtModel(args.onnx, args.threads, like=args.so)) if args.child == "onnxruntime" else None
    served = serve.Served(args.so, threads=args.threads, opener=opener)
    logging.getLogger("dsopack.serve").info("runtime: %s, %d thread(s)", args.child, args.threads)
    return serve.serve([served], http_port=args.port, grpc_port=args.grpc_port, threads=args.threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A child process serving one model file with one runtime; stopped with SIGTERM."""

    def __init__(self, runtime: str, so: str, onnx_path: str, threads: int, work: str):
        self.port, grpc = free_port(), free_port()
        self.name = os.path.basename(so)[:-3]
        self.log_path = os.path.join(work, f"serve-{self.name}-{runtime}.log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", runtime, "--so", so,
                                          "--onnx", onnx_path, "--threads", str(threads), "--port", str(self.port),
                                          "--grpc-port", str(grpc)], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {runtime} server exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if "dsopack serve: ready:" in self.log():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the {runtime} server was not ready in 180 s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stats(self) -> tuple[int, int]:
        """(requests answered, model runs) so far, from Triton's statistics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/models/{self.name}/stats", timeout=30) as r:
            s = json.loads(r.read())["model_stats"][0]
        return int(s["inference_stats"]["success"]["count"]), int(s["execution_count"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------ the client

def request_bytes(model: str, port: int, x: np.ndarray, output: str) -> bytes:
    """One whole HTTP request (headers and body) in the binary tensor extension, answer asked in binary."""
    raw = np.ascontiguousarray(x, np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
            f"Content-Length: {len(header) + len(raw)}\r\n\r\n").encode() + header + raw


class Connection:
    """A keep-alive HTTP/1.1 connection that sends prepared bytes and reads one answer: (status, headers, body).
    Plain sockets: http.client's header parsing would cost the shared CPU more than the request does."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def exchange(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(data)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end].decode("latin-1").split("\r\n"), self.buf[end + 4:]
        headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in head[1:]))
        size = int(headers.get("content-length", 0))
        while len(self.buf) < size:
            self._fill()
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(head[0].split(" ", 2)[1]), headers, body

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def level(port: int, bodies: list[bytes], expected: list[np.ndarray], concurrency: int, count: int,
          seconds: float, warm_s: float) -> dict:
    """`concurrency` clients, each on its own connection, after `warm_s` of warm-up: until `count` requests or
    `seconds`. Latency (s) of each request answered, failures with the first few reasons."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[str] = []
    tickets = itertools.count()  # next() on it is atomic under the GIL
    phase = {"measure": False, "deadline": time.monotonic() + warm_s}
    ready = threading.Barrier(concurrency + 1)
    go = threading.Barrier(concurrency + 1)

    def one(conn: Connection, i: int) -> float | None:
        k = i % len(bodies)
        start = time.perf_counter()
        try:
            status, headers, body = conn.exchange(bodies[k])
        except (OSError, ValueError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            return None
        took = time.perf_counter() - start
        if status != 200:
            failures.append(f"status {status}: {body[:300]!r}")
            return None
        got = np.frombuffer(body[int(headers.get("inference-header-content-length", 0)):], np.float32)
        want = expected[k]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            failures.append(f"wrong answer to sample {k}: max abs diff "
                            f"{np.max(np.abs(got - want)) if got.shape == want.shape else got.shape}")
            return None
        return took

    def worker(w: int) -> None:
        try:
            conn = Connection(port)
        except OSError as e:
            failures.append(f"connect: {e}")
            ready.wait()
            go.wait()
            return
        i = w
        while time.monotonic() < phase["deadline"]:  # warm-up: answers checked, not timed
            one(conn, i)
            i += concurrency
        ready.wait()
        go.wait()
        deadline = phase["deadline"]
        while time.monotonic() < deadline:
            ticket = next(tickets)
            if ticket >= count:
                break
            took = one(conn, ticket)
            if took is not None:
                latencies[w].append(took)
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    warm_failures = len(failures)
    phase["deadline"] = time.monotonic() + seconds
    start = time.perf_counter()
    go.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array([x for per in latencies for x in per])
    return {"concurrency": concurrency, "answered": len(lat), "wall_s": wall, "failed": len(failures),
            "warm_failed": warm_failures, "reasons": failures[:3], "rps": len(lat) / wall,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "timed_out": len(lat) + len(failures) - warm_failures < count}


def reference(onnx_path: str, sample: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """SAMPLES seeded inputs of batch 1, onnxruntime's answers to them (run here, once), the output's name."""
    import onnxruntime as ort

    rng = np.random.default_rng(17)
    xs = [rng.standard_normal((1, *sample)).astype(np.float32) for _ in range(SAMPLES)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return xs, [session.run([output], {"x": x})[0].ravel() for x in xs], output


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants (tritonserver, the backend stubs)."""
    hz, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz  # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


class OthersMeter:
    """The share of all CPUs used by processes other than this one and the servers' process trees."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[float, float]:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:2]) + sum(tree_cpu(p) for p in self.pids)
        return busy - own, time.monotonic()

    def others(self) -> float:
        now = self._read()
        return max(0.0, now[0] - self.start[0]) / ((now[1] - self.start[1]) * len(os.sched_getaffinity(0)))


def measure(name: str, onnx_path: str, sample: tuple[int, ...], work: str, threads: int, count: int,
            seconds: float, warm_s: float, rounds: int, log=print) -> list[dict]:
    """Both servers up at once; each level run for one runtime then the other (the order swapped each round),
    `rounds` times; each runtime's best round by throughput is kept (a burst of load from other processes on a
    shared machine hits one round), the failures of every round counted."""
    so = build(onnx_path, sample, work)
    xs, expected, output = reference(onnx_path, sample)
    servers: dict[str, Server] = {}
    best: dict[tuple[str, int], dict] = {}
    try:
        for runtime in RUNTIMES:
            servers[runtime] = Server(runtime, so, onnx_path, threads, work)
        bodies = {rt: [request_bytes(s.name, s.port, x, output) for x in xs] for rt, s in servers.items()}
        for r in range(rounds):
            for c in LEVELS:
                for runtime in RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]:
                    server = servers[runtime]
                    before, meter = server.stats(), OthersMeter([s.proc.pid for s in servers.values()])
                    row = level(server.port, bodies[runtime], expected, c, count, seconds, warm_s)
                    after = server.stats()
                    row.update(model=name, runtime=runtime, threads=threads, others=meter.others(), round=r,
                               batch=(after[0] - before[0]) / max(1, after[1] - before[1]))
                    log(f"  {name:10s} {runtime:11s} c={c:2d} round {r + 1}: {row['rps']:7.0f} req/s, "
                        f"p50 {row['p50'] * 1e3:6.2f} ms, p99 {row['p99'] * 1e3:6.2f} ms, {row['answered']} answered "
                        f"in {row['wall_s']:.1f} s{' (time limit)' if row['timed_out'] else ''}, mean batch run "
                        f"{row['batch']:.1f}, others {row['others']:.0%} of the CPUs, failed {row['failed']}"
                        + "".join(f"\n      {why}" for why in row["reasons"]))
                    key = (runtime, c)
                    failed = row["failed"] + (best[key]["failed"] if key in best else 0)
                    if key not in best or row["rps"] > best[key]["rps"]:
                        best[key] = row
                    best[key]["failed"] = failed
    finally:
        for runtime, server in servers.items():
            server.stop()
            if server.proc.returncode not in (0, None):
                log(f"  the {runtime} server exited with {server.proc.returncode}:\n{server.log()[-2000:]}")
    return [best[(rt, c)] for rt in RUNTIMES for c in LEVELS if (rt, c) in best]


# ------------------------------------------------------------------ report

def versions() -> str:
    from importlib.metadata import version

    return f"PyTriton {version('nvidia-pytriton')}, onnxruntime {version('onnxruntime')}"


def report(rows: list[dict], threads: int, count: int, seconds: float, rounds: int) -> str:
    others = [r["others"] for r in rows]
    lines = [HEADING, "",
             f"{cpu_line()}, shared by the client and the server (tritonserver, the HTTP front, the model); "
             f"{versions()}; {threads} thread(s) for each runtime; one dynamic-batch file (batch 1..{MAX_BATCH}) "
             "per model, served by loader/serve.py for both runtimes (onnxruntime: an InferenceSession on the same "
             "ONNX file behind `Served(path, opener=...)`). Clients: N threads, each with one keep-alive connection "
             "to the HTTP front, batch-1 requests in the binary tensor extension; each level runs to "
             f"{count} requests or {seconds:g} s, whichever comes first, after a warm-up; every answer checked. "
             f"Both servers up at once, the levels of the two runtimes interleaved, {rounds} round(s), each "
             "runtime's best round by throughput shown (failures: all rounds). "
             "Latency in ms as the client sees it; mean batch: requests per model run (Triton's dynamic batcher). "
             f"Other processes used {min(others, default=0):.0%} to {max(others, default=0):.0%} of the CPUs "
             "during the shown levels (`others` column).",
             "", "| model | clients | dsopack req/s | onnxruntime req/s | ratio (higher is better) | dsopack p50 / p99 ms | "
                 "onnxruntime p50 / p99 ms | p99 ratio (lower is better) | mean batch d / o | failed d / o | others d / o |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["runtime"], r["concurrency"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for c in LEVELS:
            d, o = by.get((model, "dsopack", c)), by.get((model, "onnxruntime", c))
            if not d or not o:
                continue
            lines.append(f"| {model} | {c} | {d['rps']:.0f} | {o['rps']:.0f} | {d['rps'] / o['rps']:.2f}x | "
                         f"{d['p50'] * 1e3:.2f} / {d['p99'] * 1e3:.2f} | {o['p50'] * 1e3:.2f} / {o['p99'] * 1e3:.2f} | "
                         f"{d['p99'] / o['p99']:.2f}x | {d['batch']:.1f} / {o['batch']:.1f} | "
                         f"{d['failed']} / {o['failed']} | {d['others']:.0%} / {o['others']:.0%} |")
    lines += ["", "Requests are batch 1, so samples/s equals req/s."]
    return "\n".join(lines) + "\n"


def write_png(path: str, rows: list[dict], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"dsopack": "#1f77b4", "onnxruntime": "#ff7f0e"}
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 4.2 * len(names)), squeeze=False)
    by = {(r["model"], r["runtime"], r["concurrency"]): r for r in rows}
    width = 0.38
    for row, model in enumerate(names):
        for col, (key, label) in enumerate((("rps", "requests/s (higher is better)"),
                                            ("p99", "latency ms: p50 bar, p99 whisker (lower is better)"))):
            ax = axes[row][col]
            for i, runtime in enumerate(RUNTIMES):
                xs = [k + (i - 0.5) * width for k in range(len(LEVELS))]
                got = [by.get((model, runtime, c)) for c in LEVELS]
                if key == "rps":
                    ax.bar(xs, [g["rps"] if g else np.nan for g in got], width, label=runtime, color=colors[runtime])
                else:
                    p50 = [g["p50"] * 1e3 if g else np.nan for g in got]
                    p99 = [g["p99"] * 1e3 if g else np.nan for g in got]
                    ax.bar(xs, p50, width, label=f"{runtime} p50", color=colors[runtime])
                    ax.errorbar(xs, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99)]], fmt="none",
                                ecolor="k", capsize=4, lw=1)
            ax.set_xticks(range(len(LEVELS)), [f"{c} client{'s' if c > 1 else ''}" for c in LEVELS])
            ax.set_title(f"{model}: {label}", fontsize=10)
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def append_results(md: str, path: str) -> None:
    """Put the section at the end of results.md, in place of an earlier run's (so reruns do not pile up)."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    at = text.find(HEADING)
    if at >= 0:
        end = text.find("\n### ", at + len(HEADING))
        text = text[:at].rstrip("\n") + ("\n" + text[end:] if end >= 0 else "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n\n" + md)


def run(threads: int, quick: bool, out: str | None = HERE, names: list[str] | None = None, work: str | None = None,
        log=print) -> tuple[str, int]:
    """Measure, write serve_load.png into `out`; (the markdown section, failed requests)."""
    count, seconds, warm_s, rounds = (600, 6.0, 0.5, 1) if quick else (5000, 15.0, 1.5, 2)
    log(f"serve load: {cpu_line()}; the client and the server share these CPUs; {threads} thread(s) per runtime; "
        f"{versions()}; HTTP (the serve front) with the binary tensor extension, batch-1 requests, "
        f"{count} requests or {seconds:g} s per level, {rounds} interleaved round(s)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dpk-serve-load-") as tmp:
        work = work or tmp
        os.makedirs(work, exist_ok=True)
        for name, path, sample in models(work):
            if names and name not in names:
                continue
            rows += measure(name, path, sample, work, threads, count, seconds, warm_s, rounds, log)
    md = report(rows, threads, count, seconds, rounds)
    failed = sum(r["failed"] for r in rows)
    if out and rows:
        png = os.path.join(out, "serve_load.png")
        if write_png(png, rows, f"dsopack serve vs onnxruntime behind the same server, loopback; {cpu_line()}, "
                                f"shared by client and server; {threads} thread(s) each"):
            log(f"wrote {png}")
    return md, failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="600 requests or 6 s per level, one round (~1 minute; default: 5000 or 15 s, 2 rounds)")
    p.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0)) // 2),
                   help="threads for both runtimes (default: half the CPUs, the client and Triton need the rest)")
    p.add_argument("--models", metavar="A,B", help="only these (digits_mlp, tm_resnet)")
    p.add_argument("--work", help="where the ONNX and .so files go (reused when there; default: a temporary one)")
    p.add_argument("--no-results", action="store_true", help="do not write results.md and serve_load.png")
    p.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    for hidden in ("--so", "--onnx"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    md, failed = run(args.threads, args.quick, None if args.no_results else HERE,
                     args.models.split(",") if args.models else None, args.work)
    print("\n" + md)
    if not args.no_results:
        append_results(md, os.path.join(HERE, "results.md"))
        print(f"appended to {os.path.join(HERE, 'results.md')}")
    if failed:
        print(f"serve load: {failed} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
