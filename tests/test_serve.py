"""`dsopack serve`: a real Triton server (PyTriton) serving model files over the v2 protocol.

One server for the module, started as a user would (`dsopack serve ... --pubkey`), serving
digits_mlp_batch (batch 1..64: dynamic batching), digits_mlp (one shape: no batching) and
`swap` (a copy of digits_mlp_batch that the hot-reload tests replace). Clients: plain HTTP
JSON (urllib), tritonclient HTTP and gRPC. Answers are checked against NumPy on the
manifest's weights. The last test stops the server with SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import loader
from loader import serve
from packager import signing
from packager.build import build

# CI installs the serve extra (scripts/setup.sh): a missing PyTriton is a failure here, not a skip
import pytriton  # noqa: F401
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from serving import MANIFESTS, ROOT, build_files, free_port, json_input, probs_of, reference  # noqa: E402

DSOPACK = [sys.executable, "-m", "packager.cli"]


class Server:
    def __init__(self, proc, log_path, http, grpc, files, weights):
        self.proc, self.log_path, self.http, self.grpc = proc, log_path, http, grpc
        self.files, self.weights = files, weights

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"'{text}' not in the server log within {timeout} s:\n{self.log()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def get(self, path: str):
        return request(self.url(path))

    def infer(self, model: str, body) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url(f"/v2/models/{model}/infer"), data)


def request(url: str, data: bytes | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
            body = r.read()
            return r.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The served files, signed with one key; `new.so`: digits_mlp_batch with other weights; `other.key`."""
    d = tmp_path_factory.mktemp("serve")
    weights, changed = build_files(d)
    signing.keygen(str(d / "other.key"))
    for name in ("digits_batch.so", "digits.so", "new.so", "ranged.so"):
        signing.sign(str(d / name), str(d / "release.key"))
    shutil.copy(d / "digits_batch.so", d / "swap.so")
    return d, weights, changed


@contextlib.contextmanager
def started(files, names: list[str], *args: str, log_name: str = "serve.log"):
    """`dsopack serve` on the files `names` with `args`, on free ports, ready; killed at the end if still up."""
    d, weights, _ = files
    http, grpc = free_port(), free_port()
    log_path = d / log_name
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LD_LIBRARY_PATH", None)  # dsopack serve must find this interpreter's libpython on its own
    with open(log_path, "w") as log:
        proc = subprocess.Popen(DSOPACK + ["serve", *(str(d / name) for name in names), "--port", str(http),
                                           "--grpc-port", str(grpc), "--threads", "1", *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    s = Server(proc, log_path, http, grpc, d, weights)
    try:
        s.wait_log("dsopack serve: ready:", timeout=120)
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(files):
    with started(files, ["digits_batch.so", "digits.so", "swap.so", "ranged.so"],
                 "--pubkey", str(files[0] / "release.key.pub"), "--reload-interval", "0.2") as s:
        yield s


def assert_serving(server: Server) -> None:
    """The server is up and answers right: what every bad request must leave behind."""
    assert server.proc.poll() is None, server.log()[-3000:]
    assert server.get("/v2/health/ready")[0] == 200
    x = np.random.default_rng(1).random((2, 64), np.float32) * 16
    status, answer = server.infer("digits_batch", json_input(x))
    assert status == 200, answer
    np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- no server

def test_stub_links_this_interpreters_libpython():
    """PyTriton's Python backend stub links libpython3.X.so.1.0; with the environment serve() gives tritonserver
    it resolves to this interpreter's (a pyenv 3.11.7 here), not the system's (Debian's 3.11.2)."""
    import sysconfig

    libdir = serve.stub_library_dir()
    assert libdir is not None, "this interpreter has no shared libpython"
    soname = sysconfig.get_config_var("INSTSONAME")
    stub = os.path.join(os.path.dirname(pytriton.__file__), "tritonserver", "python_backend_stubs",
                        sysconfig.get_python_version(), "triton_python_backend_stub")
    env = dict(os.environ, LD_LIBRARY_PATH="/usr/lib/other:/usr/lib")
    saved = os.environ.get("LD_LIBRARY_PATH")
    try:
        os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]
        serve._stub_environment()
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    finally:
        os.environ.pop("LD_LIBRARY_PATH") if saved is None else os.environ.__setitem__("LD_LIBRARY_PATH", saved)
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/usr/lib/other:/usr/lib"
    ldd = subprocess.run(["ldd", stub], env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in ldd.splitlines() if soname in line)
    assert f"{libdir}/{soname}" in line, ldd


def test_binding_batch_and_max_batch(files):
    d = files[0]
    with loader.load(d / "digits_batch.so") as model:
        b = serve.binding(model, "m")
        assert (b.max_batch, b.preferred) == (64, (1, 2, 4, 8, 16, 32, 64))
        assert [(s.name, s.dtype, s.shape) for s in b.inputs + b.outputs] == [("x", np.float32, (64,)),
                                                                              ("probs", np.float32, (10,))]
        b = serve.binding(model, "m", max_batch=20)
        assert (b.max_batch, b.preferred) == (20, (1, 2, 4, 8, 16))
        with pytest.raises(ValueError, match=r"--max-batch 65: m's batch dim 'batch' runs 1..64"):
            serve.binding(model, "m", max_batch=65)
    with loader.load(d / "digits.so") as model:
        b = serve.binding(model, "m")
        assert (b.max_batch, b.inputs[0].shape) == (0, (1, 64))
        assert "the file has one shape (x: [1, 64])" in b.why_unbatched
        with pytest.raises(ValueError, match="served without batching"):
            serve.binding(model, "m", max_batch=4)


def test_requests_joined_into_one_run_and_split_back(files):
    d, weights, _ = files
    served = serve.Served(str(d / "digits_batch.so"))
    rng = np.random.default_rng(0)
    parts = [rng.random((n, 64), np.float32) * 16 for n in (1, 3, 2)]
    answers = served.infer([{"x": p} for p in parts])
    assert [a["probs"].shape for a in answers] == [(1, 10), (3, 10), (2, 10)]
    for p, a in zip(parts, answers):
        np.testing.assert_allclose(a["probs"], reference(p, weights), rtol=1e-5, atol=1e-6)


class FakeModel:
    """Another runtime's model as Served opens it (`opener=`): the file's metadata, a run of its own."""

    def __init__(self, model, run):
        self.inputs, self.outputs, self.dims, self.plans = model.inputs, model.outputs, model.dims, model.plans
        self.run = run


def test_served_takes_another_model_object(files, tmp_path):
    """`Served(path, opener=...)` serves what the opener gives under the file's name and binding, and never
    reloads it."""
    d, weights, _ = files
    path = tmp_path / "digits_batch.so"
    shutil.copy(d / "digits_batch.so", path)
    with loader.load(path) as model:
        calls = []
        fake = FakeModel(model, lambda **inputs: calls.append(inputs["x"].shape) or {"probs": inputs["x"][:, :10] * 2})
        served = serve.Served(str(path), opener=lambda p: fake)
        assert served.model is fake and served.binding == serve.binding(model, "digits_batch")
    answers = served.infer([{"x": np.ones((1, 64), np.float32)}, {"x": np.ones((2, 64), np.float32)}])
    assert calls == [(3, 64)] and [a["probs"].shape for a in answers] == [(1, 10), (2, 10)]
    shutil.copy(d / "new.so", path)  # a replaced file is not loaded in place of the given object
    assert served.reload() is False and served.model is fake


def test_run_errors_carry_their_own_message(files):
    """A bad request raises RequestError (400 at the front), any other failure RunError (500), each with the
    error's own message; PyTriton formats them without a traceback (their __traceback__ reads None)."""
    import traceback

    from loader import serve_guard

    d = files[0]
    served = serve.Served(str(d / "ranged.so"))
    with pytest.raises(serve_guard.RequestError, match=r"^input 'x' dim 1 \(n\) is 20, outside the range 2..16") as e:
        served.infer([{"x": np.zeros((1, 20), np.float32)}])
    assert "".join(traceback.format_exception(None, e.value, e.value.__traceback__)) == \
        f"loader.serve_guard.RequestError: {e.value}\n"  # what PyTriton sends the client: the message alone
    with pytest.raises(serve_guard.RequestError, match=r"^ranged: unknown input 'y' \(inputs: x\)$"):
        served.infer([{"y": np.zeros((1, 4), np.float32)}])
    with loader.load(d / "ranged.so") as model:
        served.model = FakeModel(model, lambda **_: 1 / 0)
        with pytest.raises(serve_guard.RunError, match=r"^ranged: the run failed: ZeroDivisionError: division by zero$"):
            served.infer([{"x": np.zeros((1, 4), np.float32)}])

    @contextlib.contextmanager
    def passing():  # what Ray Serve's replica wraps each call in: contextlib sets __traceback__ on the way out
        yield

    with pytest.raises(serve_guard.RunError, match="^boom$"):
        with passing():
            raise serve_guard.RunError("boom")


@pytest.mark.parametrize("status, error, want", [
    (500, "Failed to process the request(s) for model 'm_0_0', message: TritonModelException: Model execute error: "
          "Traceback (most recent call last):\n  File \"model.py\", line 492, in execute\n"
          "c_python_backend_utils.TritonModelException: loader.serve_guard.RequestError: input 'x' is bad\n\nAt:\n",
     (400, "input 'x' is bad")),
    (500, "Failed ...: loader.serve_guard.RunError: m: the run failed: MemoryError: \n\nAt:\n",
     (500, "m: the run failed: MemoryError: ")),
    (500, "failed to parse the request JSON buffer: Invalid value. at 1", (400, None)),
    (500, "Unable to parse 'inputs': attempt to access JSON non-array as array", (400, None)),
    (500, "something else went wrong", (500, None)),
    (400, "unexpected inference input 'y' for model 'm'", (400, None)),
], ids=["request-error", "run-error", "not-json", "no-inputs-array", "other-500", "triton-400"])
def test_front_plain_errors(status, error, want):
    """The HTTP front's mapping of Triton's error answers (None: the body passes unchanged)."""
    from loader.serve_guard import _plain_error

    body = json.dumps({"error": error}).encode()
    got_status, got_body = _plain_error(status, body)
    assert got_status == want[0]
    assert json.loads(got_body) == {"error": want[1] if want[1] is not None else error}
    assert _plain_error(502, b"<html>not json</html>") == (502, b"<html>not json</html>")


def test_serve_cli_errors(files, tmp_path):
    d = files[0]
    run = lambda *args: subprocess.run(DSOPACK + ["serve", *args], capture_output=True, text=True, cwd=ROOT)
    r = run(str(tmp_path / "missing.so"))
    assert r.returncode == 1 and "dsopack: error: " in r.stderr and "missing.so' not found" in r.stderr
    r = run(str(d / "digits.so"), "--max-batch", "4")
    assert r.returncode == 1 and "--max-batch: digits is served without batching" in r.stderr
    r = run(str(d / "digits.so"), "--pubkey", str(d / "other.key.pub"))
    assert r.returncode == 1 and "digits.so' is signed by key" in r.stderr and "not by the given key" in r.stderr
    r = run(str(d / "digits.so"), "--port", "9000", "--grpc-port", "9000")
    assert r.returncode == 1 and "--port and --grpc-port are both 9000" in r.stderr


# ---------------------------------------------------------------- the protocol

def test_health_and_metadata(server):
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    status, meta = server.get("/v2/models/digits_batch")
    assert status == 200
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    status, meta = server.get("/v2/models/digits")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 64]}]
    status, config = server.get("/v2/models/digits_batch/config")
    assert config["max_batch_size"] == 64
    assert config["dynamic_batching"]["preferred_batch_size"] == [1, 2, 4, 8, 16, 32, 64]
    assert server.get("/v2/models/digits/config")[1]["max_batch_size"] == 0
    status, meta = server.get("/v2/models/ranged")  # batch 1..8 batched; n 2..16: any size, checked by the runtime
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    assert server.get("/v2/models/ranged/config")[1]["max_batch_size"] == 8


def test_infer_http_json(server):
    x = np.load(os.path.join(MANIFESTS, "digits_sample.npy")).astype(np.float32)
    for model in ("digits_batch", "digits"):
        status, answer = server.infer(model, json_input(x))
        assert status == 200, answer
        np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)
        assert probs_of(answer).argmax() == 7


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_tritonclient(server, protocol):
    client_module = httpclient if protocol == "http" else grpcclient
    port = server.http if protocol == "http" else server.grpc
    client = client_module.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_ready() and client.is_model_ready("digits_batch")
    x = np.random.default_rng(7).random((7, 64), np.float32) * 16
    given = client_module.InferInput("x", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    result = client.infer("digits_batch", [given])
    np.testing.assert_allclose(result.as_numpy("probs"), reference(x, server.weights), rtol=1e-5, atol=1e-6)


def model_stats(server: Server, model: str) -> dict:
    status, stats = server.get(f"/v2/models/{model}/stats")
    assert status == 200, stats
    return stats["model_stats"][0]


def test_concurrent_requests_batched(server):
    """64 clients at once, batch 1 to 3 each: the batcher joins them (fewer runs than requests, in Triton's
    statistics); every answer is its own rows'."""
    before = model_stats(server, "digits_batch")
    rng = np.random.default_rng(3)
    xs = [rng.random((1 + i % 3, 64), np.float32) * 16 for i in range(64)]
    answers = [None] * len(xs)

    def one(i):
        answers[i] = server.infer("digits_batch", json_input(xs[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, (status, answer) in zip(xs, answers):
        assert status == 200, answer
        np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)
    after = model_stats(server, "digits_batch")
    requests = int(after["inference_stats"]["success"]["count"]) - int(before["inference_stats"]["success"]["count"])
    runs = int(after["execution_count"]) - int(before["execution_count"])
    assert requests == len(xs) and runs < requests, (requests, runs)


def stub_processes(pid: int, model: str) -> list[int]:
    """The Python backend stubs (one per model instance) among the descendants of process `pid`."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child in os.listdir("/proc"):
            try:
                with open(f"/proc/{child}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent:
                todo.append(int(child))
                if b"stub" in os.path.basename(argv[0]) and any(model.encode() in a for a in argv):
                    found.append(int(child))
    return found


def test_instances_serve_concurrent_requests(files):
    """--instances 2: Triton runs two instances of the model (two Python backend stubs), and 16 concurrent
    requests to the unbatched file all answer right."""
    with started(files, ["digits.so"], "--instances", "2", log_name="instances.log") as s:
        status, config = s.get("/v2/models/digits/config")
        assert status == 200 and [g["count"] for g in config["instance_group"]] == [2], config
        assert len(stub_processes(s.proc.pid, "digits")) == 2, s.log()[-3000:]
        rng = np.random.default_rng(4)
        xs = [rng.random((1, 64), np.float32) * 16 for _ in range(16)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda x: s.infer("digits", json_input(x)), xs))
        for x, (status, answer) in zip(xs, answers):
            assert status == 200, answer
            np.testing.assert_allclose(probs_of(answer), reference(x, s.weights), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- bad requests: an error, and the server lives

def test_wrong_input_name(server):
    status, answer = server.infer("digits_batch", json_input(np.zeros((1, 64), np.float32), name="y"))
    assert status == 400 and answer["error"] == "unexpected inference input 'y' for model 'digits_batch'"
    assert_serving(server)


def test_wrong_dtype(server):
    status, answer = server.infer("digits_batch", json_input(np.zeros((1, 64), np.int32), datatype="INT32"))
    assert status == 400
    assert "inference input 'x' data-type is 'INT32', but model 'digits_batch' expects 'FP32'" in answer["error"]
    assert_serving(server)


def test_wrong_shape(server):
    status, answer = server.infer("digits_batch", json_input(np.zeros((1, 63), np.float32)))
    assert status == 400 and "unexpected shape for input 'x' for model 'digits_batch'. Expected [-1,64], got [1,63]" \
        in answer["error"]
    status, answer = server.infer("digits", json_input(np.zeros((2, 64), np.float32)))
    assert status == 400 and "Expected [1,64], got [2,64]" in answer["error"]  # one shape: no batching
    status, answer = server.infer("digits_batch", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                                               "data": [0.0] * 10}]})
    assert status == 400 and "Shape does not match" in answer["error"]  # data and shape disagree (Triton: 500)
    assert_serving(server)


def test_shape_outside_a_range(server):
    """n is 2..16: Triton sees -1 and passes n=20 on; the runtime refuses it, naming the input, the dim and the
    range: over HTTP that message alone with 400; over gRPC (Triton's own port) inside the Python backend stub's
    short traceback, without PyTriton's. The server keeps serving."""
    x = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    status, answer = server.infer("ranged", json_input(x))
    assert status == 200, answer
    (out,) = answer["outputs"]
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), np.maximum(x, 0))
    status, answer = server.infer("ranged", json_input(np.zeros((1, 20), np.float32)))
    assert (status, answer) == (400, {"error": f"input 'x' dim 1 (n) is 20, outside the range 2..16 of "
                                               f"'{server.files / 'ranged.so'}'"})
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    given = grpcclient.InferInput("x", [1, 20], "FP32")
    given.set_data_from_numpy(np.zeros((1, 20), np.float32))
    with pytest.raises(Exception) as e:
        client.infer("ranged", [given])
    assert "loader.serve_guard.RequestError: input 'x' dim 1 (n) is 20, outside the range 2..16" in str(e.value)
    assert "pytriton/proxy/inference.py" not in str(e.value) and "loader/model.py" not in str(e.value)
    assert_serving(server)


def test_oversized_grpc_message(server):
    """gRPC goes to Triton directly: a 64 MB message of the wrong shape is refused, and the server lives."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    given = grpcclient.InferInput("x", [1, 16 << 20], "FP32")
    given.set_data_from_numpy(np.zeros((1, 16 << 20), np.float32))
    with pytest.raises(Exception, match=r"unexpected shape for input 'x' .* got \[1,16777216\]"):
        client.infer("digits_batch", [given])
    assert_serving(server)


def test_batch_over_range(server):
    status, answer = server.infer("digits_batch", json_input(np.zeros((65, 64), np.float32)))
    assert status == 400 and "inference request batch-size must be <= 64 for 'digits_batch'" in answer["error"]
    assert_serving(server)


@pytest.mark.parametrize("body, error", [
    (b'{"inputs": [{"name": "x",', "failed to parse the request JSON buffer: Missing a name for object member."),
    (b"not json", "failed to parse the request JSON buffer: Invalid value."),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2,]}]}',
     "failed to parse the request JSON buffer: Invalid value."),
    (b"[1, 2]", "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"),
    (b'{"inputs": 5}', "Unable to parse 'inputs': attempt to access JSON non-array as array"),
], ids=["truncated", "not-json", "trailing-comma", "array-not-object", "inputs-not-array"])
def test_malformed_json(server, body, error):
    """A body that is not JSON, or not the protocol's: 400 with the protocol's error (Triton answers 500)."""
    status, answer = server.infer("digits_batch", body)
    assert status == 400 and answer["error"].startswith(error), (status, answer)
    assert_serving(server)


def test_oversized_body_refused(server):
    """A 10 MB JSON body (5 million numbers) kills the bundled tritonserver with SIGSEGV: the HTTP front
    refuses it first, with the protocol's error, and the server keeps serving."""
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [' + b"0," * 5_000_000 + b"0]}]}"
    status, answer = server.infer("digits_batch", body)
    assert status == 413
    assert answer["error"] == f"the request body has {len(body)} bytes, over the limit of 1048576 (--max-body-mb; " \
                              "the largest valid request of the served models fits)"
    assert_serving(server)


def test_unknown_model(server):
    status, answer = server.infer("nope", json_input(np.zeros((1, 64), np.float32)))
    assert status == 404 and "'nope' is not found" in answer["error"]
    assert_serving(server)


# ---------------------------------------------------------------- hot reload (the `swap` model)

def replace(server: Server, source, *, edit=None) -> None:
    """Replace swap.so by an atomic rename of a copy of `source` (edited by `edit(bytes) -> bytes`)."""
    data = open(source, "rb").read()
    tmp = server.files / "swap.so.tmp"
    tmp.write_bytes(edit(data) if edit else data)
    os.replace(tmp, server.files / "swap.so")


def swap_probs(server: Server, x: np.ndarray) -> np.ndarray:
    status, answer = server.infer("swap", json_input(x))
    assert status == 200, answer
    return probs_of(answer)


def test_reload_refuses_bad_replacements(server, files):
    """Truncated, a changed weight byte (the signature sees it before the checksums do), signed by another key,
    unsigned, other inputs: each refused with a log line naming why; the model loaded before keeps answering."""
    d, weights, _ = files
    x = np.random.default_rng(5).random((3, 64), np.float32) * 16
    good = d / "digits_batch.so"
    cases = [("truncated", good, lambda b: b[: len(b) // 2]),
             ("weight byte", good, None),
             ("other key", good, None),
             ("unsigned", good, None),
             ("other inputs", d / "digits.so", None)]
    weight = weights["fc2.weight"].astype(np.float32).tobytes()  # raw in the file: used in place

    def flip_weight(data: bytes) -> bytes:  # a byte inside the weights: only the checksums (verify) see it
        at = data.index(weight) + 40
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]

    cases[1] = ("weight byte", good, flip_weight)
    for what, source, edit in cases:
        before = server.log().count("refused the new")
        if what == "other key":
            source = d / "other.so"
            signing.sign(str(good), str(d / "other.key"), str(source))
        elif what == "unsigned":
            source = d / "unsigned.so"
            build(os.path.join(MANIFESTS, "digits_mlp_batch.yaml"), str(source), quiet=True)
        replace(server, source, edit=edit)
        deadline = time.monotonic() + 20
        while server.log().count("refused the new") == before:
            assert time.monotonic() < deadline, f"{what}: no refusal in the log:\n{server.log()[-3000:]}"
            time.sleep(0.1)
        line = server.log().split("refused the new")[-1].splitlines()[0]
        assert "still serving the model loaded before" in line, line
        assert str(server.files / "swap.so") in line
        np.testing.assert_allclose(swap_probs(server, x), reference(x, weights), rtol=1e-5, atol=1e-6)
        print(f"{what}: refused the new{line}")
    assert "differ from the served ones" in line  # the last: digits.so has x: float32[1, 64]


def test_reload_switches_with_no_failed_request(server, files):
    """Clients keep sending while swap.so is replaced by a model with other weights: no request fails, each
    answer is one model's or the other's (in-flight batches finish on the model they started on), then only
    the new model's."""
    d, weights, changed = files
    x = np.random.default_rng(9).random((2, 64), np.float32) * 16
    old, new = reference(x, weights), reference(x, changed)
    assert not np.allclose(old, new)
    replace(server, d / "digits_batch.so")
    server.wait_log("swap: now serving the new")
    per_client, stop = [[] for _ in range(4)], threading.Event()

    def client(results):
        while not stop.is_set():
            results.append(server.infer("swap", json_input(x)))

    threads = [threading.Thread(target=client, args=(results,)) for results in per_client]
    for t in threads:
        t.start()
    time.sleep(0.5)
    count = server.log().count("swap: now serving the new")
    replace(server, d / "new.so")
    deadline = time.monotonic() + 20
    while server.log().count("swap: now serving the new") == count:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    for results in per_client:  # each client's requests one after another: old answers, then new ones
        assert results and all(status == 200 for status, _ in results), [a for s, a in results if s != 200][:3]
        which = [0 if np.allclose(probs_of(a), old, rtol=1e-5, atol=1e-6) else
                 1 if np.allclose(probs_of(a), new, rtol=1e-5, atol=1e-6) else -1 for _, a in results]
        assert -1 not in which and which[0] == 0 and which[-1] == 1 and which == sorted(which), which
    np.testing.assert_allclose(swap_probs(server, x), new, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- last: SIGTERM

def test_sigterm_stops_cleanly(server):
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()[-3000:]
    log = server.log()
    assert "dsopack serve: stopping" in log
    for port in (server.http, server.grpc):  # both ports closed
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
