"""Ray Serve (loader/ray_serve.py): model files behind a Ray Serve deployment on a local Ray instance.

One Ray instance for the module (2 CPUs, no dashboard), three applications: digits_mlp_batch (batch 1..64,
signed, 2 replicas: @serve.batch onto the file's range), digits_mlp (one shape: one request, one run) and
`ranged` (batch 1..8 and n 2..16: requests of other n run apart). Clients: plain HTTP JSON (urllib) on Ray
Serve's port and deployment handles with numpy arrays. Answers are checked against NumPy on the manifest's
weights and against the loader.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import loader
from packager import signing

# CI installs Ray (scripts/setup.sh, the ray extra): a missing Ray is a failure here, not a skip
with warnings.catch_warnings():  # Ray Serve's pydantic models warn (PydanticDeprecatedSince20) at import
    warnings.simplefilter("ignore", DeprecationWarning)
    import ray
    from ray import serve

    from loader import ray_serve

from serving import build_files, free_port, json_input, probs_of, reference  # noqa: E402


class Server:
    def __init__(self, port, files, weights, handles, changed):
        self.port, self.files, self.weights, self.handles, self.changed = port, files, weights, handles, changed

    def request(self, path: str, data: bytes | None = None) -> tuple[int, dict, dict]:
        """(status, JSON body, headers)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def infer(self, model: str, body) -> tuple[int, dict, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request(f"/v2/models/{model}/infer", data)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_serve")
    weights, changed = build_files(d)
    for name in ("digits_batch.so", "new.so"):
        signing.sign(str(d / name), str(d / "release.key"))
    shutil.copy(d / "digits_batch.so", d / "swap.so")
    return d, weights, changed


@pytest.fixture(scope="module")
def server(files):
    d, weights, changed = files
    port = free_port()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = {  # deployed together (serve.run_many): start-up is most of this file's time
            "digits_batch": ray_serve.app(str(d / "digits_batch.so"), replicas=2, threads=1,
                                          pubkey=str(d / "release.key.pub"), num_cpus=0.5),
            "digits": ray_serve.app(str(d / "digits.so"), threads=1, num_cpus=0.5),
            "ranged": ray_serve.app(str(d / "ranged.so"), threads=1, num_cpus=0.5),
            "swap": ray_serve.app(str(d / "swap.so"), threads=1, pubkey=str(d / "release.key.pub"), num_cpus=0.5,
                                  reload_interval=0.2),
        }
        targets = [serve.RunTarget(app, name=name, route_prefix=f"/v2/models/{name}") for name, app in apps.items()]
        handles = dict(zip(apps, serve.run_many(targets)))
        yield Server(port, d, weights, handles, changed)
    finally:
        serve.shutdown()
        ray.shutdown()


def test_replicas_reload_a_replaced_file(server):
    """swap.so replaced by an atomic rename while a client keeps asking: the replica switches to the new weights
    with no failed request; then a copy with a flipped weight byte is refused and the new model keeps answering."""
    d = server.files
    x = np.random.default_rng(9).random((2, 64), np.float32) * 16
    old, new = reference(x, server.weights), reference(x, server.changed)

    def probs() -> np.ndarray:
        status, answer, _ = server.infer("swap", json_input(x))
        assert status == 200, answer
        return probs_of(answer)

    def replace(data: bytes) -> None:
        (d / "swap.tmp").write_bytes(data)
        os.replace(d / "swap.tmp", d / "swap.so")

    np.testing.assert_allclose(probs(), old, rtol=1e-5, atol=1e-6)
    answers, stop = [], threading.Event()

    def ask():
        while not stop.is_set():
            answers.append(server.infer("swap", json_input(x))[:2])

    client = threading.Thread(target=ask)
    client.start()
    try:
        replace((d / "new.so").read_bytes())
        deadline = time.monotonic() + 20
        while not np.allclose(probs(), new, rtol=1e-5, atol=1e-6):
            assert time.monotonic() < deadline, "the replica still answers with the old weights"
            time.sleep(0.05)
    finally:
        stop.set()
        client.join()
    assert answers and all(status == 200 for status, _ in answers), [a for s, a in answers if s != 200][:3]
    assert all(np.allclose(probs_of(a), old, rtol=1e-5, atol=1e-6) or np.allclose(probs_of(a), new, rtol=1e-5,
                                                                                     atol=1e-6) for _, a in answers)
    data = (d / "digits_batch.so").read_bytes()
    at = data.index(server.weights["fc2.weight"].astype(np.float32).tobytes()) + 40
    replace(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])  # only the checksums and the signature see it
    time.sleep(1.5)  # several reload intervals
    np.testing.assert_allclose(probs(), new, rtol=1e-5, atol=1e-6)


def assert_serving(server: Server) -> None:
    """The deployment answers right: what every bad request must leave behind."""
    x = np.random.default_rng(1).random((2, 64), np.float32) * 16
    status, answer, _ = server.infer("digits_batch", json_input(x))
    assert status == 200, answer
    np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- no Ray

def test_app_refuses_a_max_batch_out_of_range(files):
    with pytest.raises(ValueError, match=r"--max-batch 65: digits_batch's batch dim 'batch' runs 1..64"):
        ray_serve.app(str(files[0] / "digits_batch.so"), max_batch=65)
    with pytest.raises(ValueError, match="digits is served without batching: the file has one shape"):
        ray_serve.app(str(files[0] / "digits.so"), max_batch=2)
    with pytest.raises(ValueError, match="unknown argument 'replica'"):
        ray_serve.build({"path": str(files[0] / "digits.so"), "replica": "2"})


def test_parse_infer_errors():
    good = json_input(np.zeros((1, 64), np.float32))
    arrays, wanted, request_id = ray_serve.parse_infer(json.dumps(dict(good, id="7")).encode())
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (1, 64) and (wanted, request_id) == (None, "7")
    nested = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    np.testing.assert_array_equal(ray_serve.parse_infer(json.dumps(nested).encode())[0]["x"], [[1, 2], [3, 4]])
    cases = [
        (b"{not json", "the request body is not JSON"),
        (b"[]", "a request is a JSON object"),
        ({"inputs": [{"name": "x"}]}, r"inputs\[0\]: a request is a JSON object"),
        (json_input(np.zeros((1, 64)), datatype="FLOAT"), "datatype 'FLOAT' is not one of BOOL"),
        ({"inputs": [dict(good["inputs"][0], shape=[1, -64])]}, r"shape \[1, -64\] is not a list of sizes"),
        ({"inputs": [dict(good["inputs"][0], data=["a"] * 64)]}, "the data is not FP32"),
        ({"inputs": [dict(good["inputs"][0], shape=[2, 64])]}, r"shape \[2, 64\] holds 128 values, the data has 64"),
        ({"inputs": good["inputs"] * 2}, "input 'x' is given twice"),
        ({"inputs": [dict(good["inputs"][0], parameters={"binary_data_size": 256})]}, "binary tensor data"),
    ]
    for body, message in cases:
        with pytest.raises(ray_serve.ProtocolError, match=message):
            ray_serve.parse_infer(body if isinstance(body, bytes) else json.dumps(body).encode())


# ---------------------------------------------------------------- answers

def test_http_infer_matches_numpy(server):
    x = np.random.default_rng(2).random((3, 64), np.float32) * 16
    status, answer, headers = server.infer("digits_batch", dict(json_input(x), id="r1"))
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("digits_batch", "1", "r1")
    assert probs_of(answer).shape == (3, 10)
    np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)
    assert int(headers["dsopack-pid"]) != os.getpid() and headers["dsopack-replica"]


def test_handle_infer_matches_the_loader(server):
    x = np.random.default_rng(3).random((5, 64), np.float32) * 16
    out = server.handles["digits_batch"].infer.remote({"x": x}).result()
    with loader.load(server.files / "digits_batch.so") as model:
        np.testing.assert_array_equal(out["probs"], model.run(x=x)["probs"])


def test_both_replicas_answer(server):
    """Concurrent HTTP requests reach both replicas: two pids and two replica ids in the answers' headers, each
    other than this process; every answer right."""
    x = np.random.default_rng(4).random((1, 64), np.float32) * 16
    expected = reference(x, server.weights)

    def one(_):
        status, answer, headers = server.infer("digits_batch", json_input(x))
        assert status == 200, answer
        np.testing.assert_allclose(probs_of(answer), expected, rtol=1e-5, atol=1e-6)
        return headers["dsopack-pid"], headers["dsopack-replica"]

    seen = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            seen |= set(pool.map(one, range(16)))
            if len({pid for pid, _ in seen}) == 2:
                break
    pids, replicas = {pid for pid, _ in seen}, {replica for _, replica in seen}
    assert len(pids) == 2 and len(replicas) == 2 and str(os.getpid()) not in pids, seen


def test_concurrent_requests_are_batched(server):
    """64 concurrent one-row HTTP requests: @serve.batch joins some onto the file's batch range (an answer's
    dsopack-batch header, the rows of its run, is over 1), each answered with its own row."""
    xs = np.random.default_rng(5).random((64, 1, 64), np.float32) * 16

    def one(x):
        status, answer, headers = server.infer("digits_batch", json_input(x))
        assert status == 200, answer
        np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)
        return int(headers["dsopack-batch"])

    with ThreadPoolExecutor(16) as pool:
        rows = list(pool.map(one, xs))
    assert 1 <= min(rows) and max(rows) > 1 and max(rows) <= 64, rows


def test_handle_calls_are_batched(server):
    """The same through a handle: 64 concurrent calls, each its own answer (the batcher splits its runs back
    per call: a mix-up would show here); stats come from a replica process that has run."""
    handle = server.handles["digits_batch"]
    xs = np.random.default_rng(8).random((64, 1, 64), np.float32) * 16
    answers = [r.result() for r in [handle.infer.remote({"x": x}) for x in xs]]
    for x, out in zip(xs, answers):
        np.testing.assert_allclose(out["probs"], reference(x, server.weights), rtol=1e-5, atol=1e-6)
    stats = handle.stats.remote().result()
    assert stats["runs"] >= 1 and stats["pid"] != os.getpid(), stats


def test_requests_of_other_shapes_run_apart(server):
    """`ranged` batches on axis 0; concurrent requests with other n (axis 1) each get their own answer."""
    handle = server.handles["ranged"]
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((1 + i % 3, 2 + i % 5)).astype(np.float32) for i in range(20)]
    for x, r in zip(xs, [handle.infer.remote({"x": x}) for x in xs]):
        np.testing.assert_array_equal(r.result()["y"], np.maximum(x, 0))


def test_metadata_and_health(server):
    status, meta, _ = server.request("/v2/models/digits_batch")
    assert status == 200
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["max_batch_size"] == 64
    status, meta, _ = server.request("/v2/models/digits")
    assert status == 200 and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 64]}]
    assert meta["max_batch_size"] == 0
    assert server.request("/v2/models/digits_batch/ready")[0] == 200
    assert server.handles["ranged"].metadata.remote().result()["inputs"] == \
        [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]


def test_static_file_one_request_one_run(server):
    """digits.so has one shape: batch 1 answers, batch 2 is a 400 naming the shape it takes."""
    x = np.random.default_rng(7).random((1, 64), np.float32) * 16
    status, answer, _ = server.infer("digits", json_input(x))
    assert status == 200, answer
    np.testing.assert_allclose(probs_of(answer), reference(x, server.weights), rtol=1e-5, atol=1e-6)
    status, answer, _ = server.infer("digits", json_input(np.zeros((2, 64), np.float32)))
    assert status == 400 and answer["error"] == \
        "digits: input 'x' has shape [2, 64]; the model takes float32[1, 64]"


# ---------------------------------------------------------------- bad requests

def bad(server, body, status: int, message: str, model: str = "digits_batch") -> None:
    got, answer, headers = server.infer(model, body)
    assert got == status and message in answer["error"], (got, answer)
    assert headers["dsopack-replica"]
    assert_serving(server)


def test_unknown_input(server):
    bad(server, json_input(np.zeros((1, 64), np.float32), name="pixels"), 400,
        "digits_batch: unknown input 'pixels' (inputs: x)")


def test_missing_input(server):
    bad(server, {"inputs": []}, 400, "digits_batch: missing input 'x' (the model takes x: float32[1..64, 64]")


def test_wrong_datatype(server):
    bad(server, json_input(np.zeros((1, 64)), datatype="FP64"), 400,
        "digits_batch: input 'x' is FP64 but the model takes FP32 (x: float32[1..64, 64])")


def test_wrong_shape(server):
    bad(server, json_input(np.zeros((1, 63), np.float32)), 400,
        "digits_batch: input 'x' has shape [1, 63]; the model takes float32[1..64, 64]")


def test_batch_over_the_range(server):
    bad(server, json_input(np.zeros((65, 64), np.float32)), 400,
        "digits_batch: input 'x' has shape [65, 64]; batch 65 is over the max batch 64")


def test_malformed_json(server):
    bad(server, b'{"inputs": [', 400, "the request body is not JSON")


def test_unknown_output(server):
    bad(server, dict(json_input(np.zeros((1, 64), np.float32)), outputs=[{"name": "logits"}]), 400,
        "digits_batch: unknown output 'logits' (outputs: probs)")


def test_oversized_body_refused(server):
    """A body over the limit (room for 64x64 float32 in JSON: 1 MiB) is 413, read and dropped."""
    x = np.zeros((1, 64), np.float32)
    body = json.dumps(json_input(x)).encode() + b" " * (2 << 20)
    bad(server, body, 413, f"the request body has {len(body)} bytes, over the limit of {1 << 20}")


def test_unknown_model_and_endpoint(server):
    assert server.infer("digits_batch/versions/1/../../nope", json_input(np.zeros((1, 64), np.float32)))[0] == 404
    status, answer, _ = server.request("/v2/models/digits_batch/explain")
    assert status == 404 and "no such endpoint" in answer["error"]
    status, answer, _ = server.request("/v2/models/digits_batch/infer")  # GET
    assert status == 405 and "use POST" in answer["error"]


def test_handle_errors_raise_protocol_error(server):
    with pytest.raises(ray_serve.ProtocolError, match=r"has shape \[65, 64\]; batch 65 is over the max batch 64"):
        server.handles["digits_batch"].infer.remote({"x": np.zeros((65, 64), np.float32)}).result()
    with pytest.raises(ray_serve.ProtocolError, match="input 'x' is FP64 but the model takes FP32"):
        server.handles["digits"].infer.remote({"x": np.zeros((1, 64))}).result()
    assert_serving(server)
