"""Ray Serve: a dsopack file behind a Ray Serve deployment (`pip install 'dsopack[ray]'`). Each replica loads
the one file (checksums verified; with `pubkey` the signature too) into its own process; replicas on one
machine share the file's weights through the page cache (they are mapped, never copied:
benchmarks/ray_memory.py measures it).

    serve run loader.ray_serve:build path=digits_batch.so replicas=2        # HTTP 127.0.0.1:8000, until Ctrl-C

    from ray import serve
    from loader import ray_serve
    handle = serve.run(ray_serve.app("digits_batch.so", replicas=2), route_prefix="/")
    probs = handle.infer.remote({"x": batch}).result()["probs"]             # the Python path: numpy in and out

HTTP speaks the KServe v2 / Open Inference Protocol JSON, as `dsopack serve`'s Triton does:
`POST /v2/models/NAME/infer` with {"inputs": [{"name", "datatype", "shape", "data"}]} answers
{"model_name", "model_version", "outputs": [...]}; `GET /v2/models/NAME` the inputs and outputs (-1 on the batch
axis and other ranges), `GET /v2/health/ready`. NAME is `serve.model_name(path)` (digits_batch.so:
digits_batch). A request the model cannot take gets 400 and {"error": "..."} (unknown or missing input, wrong
datatype, a shape out of range, a batch over the max, malformed JSON), a body over `max_body` bytes 413 (default:
room for the largest valid request, `serve.max_body_for`). Every answer carries the headers `dsopack-replica`
(the Ray Serve replica id) and `dsopack-pid`, an answer to infer `dsopack-batch` (the rows of the run that
gave it: more than the request's when the batcher joined it with others).

Batching is `dsopack serve`'s rule (`serve.batch_dim`): a file whose batch dim is axis 0 of every input and
output, padded and from 1, joins concurrent requests (`@serve.batch`, counted in rows) into runs of up to the
dim's max (`max_batch` for less), waiting `batch_wait_s` after the first; requests of other shapes on the
other axes run apart. Any other file runs one request per run, several at once on the executor's threads.
`app()` opens the file once in the caller to size the batcher, so the path must be the same where the replicas
run (one machine: the same file).

Hot reload is `dsopack serve`'s too: replace the file by an atomic rename and each replica switches to it within
`reload_interval` seconds (verified; a corrupted, truncated or wrongly signed file is refused, logged, and the
old model keeps serving; a run finishes on the model it started on).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time

import numpy as np

import loader
from loader import serve as dpk_serve
from loader.serve_guard import RequestError
from loader.shapes import range_str

try:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse
except ImportError as e:
    raise ImportError(f"loader.ray_serve needs Ray Serve: pip install 'dsopack[ray]' ({e})") from None

BATCH_WAIT_S = 0.002  # how long a replica's batcher waits for more requests after the first of a run
RELOAD_INTERVAL_S = 1.0  # how often a replica looks whether its file was replaced (0: never)
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
             "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}  # the v2 protocol's names
_NAMES = {np.dtype(t): name for name, t in DATATYPES.items()}
_ROUTE = re.compile(r"/v2(?:/models/(?P<model>[^/]+)(?:/versions/[^/]+)?(?P<what>/infer|/ready)?"
                    r"|/health/(?P<health>live|ready))?/?$")


class ProtocolError(ValueError):
    """A request the model cannot take. HTTP: `status` and {"error": message}; a handle call raises it."""
    status = 400


class BodyTooLarge(ProtocolError):
    status = 413


def datatype(dtype) -> str:
    """The v2 protocol's name of a numpy dtype (float32: FP32)."""
    return _NAMES.get(np.dtype(dtype), str(np.dtype(dtype)))


def check_request(model, binding: dpk_serve.Binding, request: dict) -> None:
    """A ProtocolError for the first thing wrong with one request (name -> array): an input the model does not
    have or lacks, a dtype, a shape out of the file's ranges (axis 0 of a batched file: 1..binding.max_batch),
    inputs that disagree on the batch."""
    try:
        dpk_serve.check_names(binding, request)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    takes = dpk_serve.signature(model)
    for info in model.inputs:
        if info.name not in request:
            raise ProtocolError(f"{binding.name}: missing input '{info.name}' (the model takes {takes})")
        array = request[info.name]
        if array.dtype != info.dtype:
            raise ProtocolError(f"{binding.name}: input '{info.name}' is {datatype(array.dtype)} but the model "
                                f"takes {datatype(info.dtype)} ({info})")
        low, high = list(info.min_shape), list(info.shape)
        if binding.max_batch:
            high[0] = binding.max_batch
        shape = list(array.shape)
        if len(shape) != len(high) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            over = binding.max_batch and len(shape) == len(high) and shape[0] > high[0] \
                and all(lo <= s <= hi for s, lo, hi in zip(shape[1:], low[1:], high[1:]))
            why = f"batch {shape[0]} is over the max batch {binding.max_batch}" if over \
                else f"the model takes {info.dtype}{range_str(low, high)}"
            raise ProtocolError(f"{binding.name}: input '{info.name}' has shape {shape}; {why}")
    if binding.max_batch and len({request[info.name].shape[0] for info in model.inputs}) > 1:
        sizes = ", ".join(f"{info.name}: {request[info.name].shape[0]}" for info in model.inputs)
        raise ProtocolError(f"{binding.name}: the inputs disagree on the batch ({sizes})")


def parse_infer(body: bytes) -> tuple[dict[str, np.ndarray], list[str] | None, object]:
    """(inputs by name, the output names asked for or None for all, the request's "id") of a v2 JSON body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"the request body is not JSON: {e}") from None
    usage = 'a request is a JSON object {"inputs": [{"name", "datatype", "shape", "data"}, ...]}'
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ProtocolError(usage)
    arrays = {}
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict) or not {"name", "datatype", "shape", "data"} <= tensor.keys():
            raise ProtocolError(f"inputs[{i}]: {usage}")
        name, shape = tensor["name"], tensor["shape"]
        if (tensor.get("parameters") or {}).get("binary_data_size") is not None:
            raise ProtocolError(f"input '{name}': binary tensor data is not taken; send the data as JSON")
        if tensor["datatype"] not in DATATYPES:
            raise ProtocolError(f"input '{name}': datatype {tensor['datatype']!r} is not one of "
                                f"{', '.join(DATATYPES)}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise ProtocolError(f"input '{name}': shape {shape!r} is not a list of sizes")
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given twice")
        try:
            array = np.asarray(tensor["data"], dtype=DATATYPES[tensor["datatype"]])
        except (TypeError, ValueError, OverflowError) as e:
            raise ProtocolError(f"input '{name}': the data is not {tensor['datatype']}: {e}") from None
        if array.size != math.prod(shape):  # (np.prod would wrap around on huge shapes)
            raise ProtocolError(f"input '{name}': shape {shape} holds {math.prod(shape)} values, the data has "
                                f"{array.size}")
        arrays[name] = array.reshape(shape)
    wanted = doc.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and "name" in o for o in wanted):
            raise ProtocolError('"outputs" is a list of {"name": ...}')
        wanted = [o["name"] for o in wanted]
    return arrays, wanted, doc.get("id")


def _rows(requests: list[dict]) -> int:
    """@serve.batch's size of a list of requests: their rows (every input of a batched file has them on axis 0)."""
    return sum(len(next(iter(r.values()))) for r in requests)


@serve.deployment
class Deployment:
    """One replica: one loaded file. HTTP (`__call__`) and handle calls (`infer`, `metadata`, `stats`,
    `replica`) share the batcher."""

    def __init__(self, path: str, *, pubkey=None, threads: int | None = None, max_batch: int | None = None,
                 batch_wait_s: float = BATCH_WAIT_S, max_body: int | None = None, opener=None,
                 reload_interval: float = RELOAD_INTERVAL_S):
        self.served = dpk_serve.Served(path, pubkey=pubkey, threads=threads, max_batch=max_batch, opener=opener)
        self.binding = self.served.binding
        self.max_body = max_body or dpk_serve.max_body_for([self.model])
        if self.binding.max_batch:
            self._batched.set_max_batch_size(self.binding.max_batch)
            self._batched.set_batch_wait_timeout_s(batch_wait_s)
        self.id = serve.get_replica_context().replica_id.unique_id
        self.headers = {"dsopack-replica": self.id, "dsopack-pid": str(os.getpid())}
        self.requests = self.runs = 0
        # one run at start: the first request does not pay for the weights' page faults, and a file that
        # cannot run fails here, at deployment, not on a client's request
        self.model.run(**{i.name: np.zeros(i.min_shape, i.dtype) for i in self.model.inputs})
        if reload_interval > 0:  # `dsopack serve`'s hot reload, in each replica (Served.reload)
            threading.Thread(target=self._watch, args=(reload_interval,), name="dsopack-reload", daemon=True).start()

    @property
    def model(self):
        """The model requests run on now: a reload replaces it (a run already started keeps its own)."""
        return self.served.model

    def _watch(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            self.served.poll()

    # ------------------------------------------------------------------ the Python path (deployment handle)

    async def infer(self, inputs: dict) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name (numpy arrays, or anything np.asarray takes). A request the model
        cannot take raises ProtocolError; a failed run, the runtime's error."""
        request = {name: np.asarray(value) for name, value in inputs.items()}
        check_request(self.model, self.binding, request)
        return (await self._run(request))[0]

    def metadata(self) -> dict:
        """The v2 protocol's model metadata: inputs and outputs, -1 on the batch axis and other ranges."""
        b = self.binding

        def tensors(specs):
            return [{"name": s.name, "datatype": datatype(s.dtype),
                     "shape": ([-1] if b.max_batch else []) + list(s.shape)} for s in specs]

        return {"name": b.name, "versions": ["1"], "platform": "dsopack", "inputs": tensors(b.inputs),
                "outputs": tensors(b.outputs), "max_batch_size": b.max_batch}

    def stats(self) -> dict:
        """This replica's requests and runs (fewer runs than requests: the batcher joined some)."""
        return {"replica": self.id, "pid": os.getpid(), "requests": self.requests, "runs": self.runs}

    def replica(self) -> dict:
        return {"replica": self.id, "pid": os.getpid()}

    # ------------------------------------------------------------------ HTTP

    async def __call__(self, http: Request) -> JSONResponse:
        try:
            return await self._http(http)
        except ProtocolError as e:
            return self._answer({"error": str(e)}, e.status)

    async def _http(self, http: Request) -> JSONResponse:
        route = _ROUTE.search(http.url.path)
        if route is None:
            return self._answer({"error": f"no such endpoint: {http.url.path}"}, 404)
        model, what = route["model"], route["what"]
        if model is not None and model != self.binding.name:
            return self._answer({"error": f"unknown model '{model}' (this deployment serves "
                                          f"'{self.binding.name}')"}, 404)
        infer = what == "/infer"
        if http.method != ("POST" if infer else "GET"):
            return self._answer({"error": f"{http.method} {http.url.path}: use {'POST' if infer else 'GET'}"}, 405)
        if not infer:
            if route["health"] or what == "/ready":
                return self._answer({}, 200)
            if model is None:
                return self._answer({"name": "dsopack", "version": _version(), "extensions": []}, 200)
            return self._answer(self.metadata(), 200)
        request, wanted, request_id = parse_infer(await self._body(http))
        check_request(self.model, self.binding, request)
        outputs, rows = await self._run(request)
        names = [spec.name for spec in self.binding.outputs]
        for name in wanted or ():
            if name not in names:
                raise ProtocolError(f"{self.binding.name}: unknown output '{name}' (outputs: {', '.join(names)})")
        answer = {"model_name": self.binding.name, "model_version": "1",
                  "outputs": [{"name": name, "datatype": datatype(outputs[name].dtype),
                               "shape": list(outputs[name].shape), "data": outputs[name].ravel().tolist()}
                              for name in (wanted or names)]}
        if request_id is not None:
            answer["id"] = request_id
        return self._answer(answer, 200, {"dsopack-batch": str(rows)})

    async def _body(self, http: Request) -> bytes:
        """The body, or BodyTooLarge once it passes max_body bytes (by Content-Length before any is read). The
        rest of a body over the limit is read and dropped: a client still sending then gets the answer."""
        length = http.headers.get("content-length")
        limit = f"over the limit of {self.max_body} (max_body; the largest valid request of the model fits)"
        if length is not None and length.isdigit() and int(length) > self.max_body:
            async for _ in http.stream():
                pass
            raise BodyTooLarge(f"the request body has {length} bytes, {limit}")
        chunks, size = [], 0
        async for chunk in http.stream():
            size += len(chunk)
            if size <= self.max_body:
                chunks.append(chunk)
        if size > self.max_body:
            raise BodyTooLarge(f"the request body has {size} bytes, {limit}")
        return b"".join(chunks)

    def _answer(self, doc: dict, status: int, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(doc, status_code=status, headers=dict(self.headers, **(headers or {})))

    # ------------------------------------------------------------------ runs

    async def _run(self, request: dict) -> tuple[dict[str, np.ndarray], int]:
        """(outputs, the rows of the run that gave them: more than the request's when the batcher joined it)."""
        self.requests += 1
        if self.binding.max_batch:
            ok, value, rows = await self._batched(request)
        else:
            (ok, value, rows), = await asyncio.get_running_loop().run_in_executor(None, self._run_groups, [request])
            self.runs += 1
        if not ok:
            if isinstance(value, RequestError):  # Served.infer's: a shape the runtime refused
                raise ProtocolError(f"{self.binding.name}: {value}") from None
            raise value
        return value, rows

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=_rows)  # sized in __init__
    async def _batched(self, requests: list[dict]) -> list[tuple[bool, object, int]]:
        results = await asyncio.get_running_loop().run_in_executor(None, self._run_groups, requests)
        self.runs += len({_shape_key(r) for r in requests})
        return results

    def _run_groups(self, requests: list[dict]) -> list[tuple[bool, object, int]]:
        """(True, outputs, the run's rows) or (False, the exception, 0) per request; requests of one shape past the batch axis run
        as one (Served.infer joins and splits them), a failed run fails only its own requests."""
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(_shape_key(request), []).append(i)
        results: list = [None] * len(requests)
        for indices in groups.values():
            try:
                group = [requests[i] for i in indices]
                rows = _rows(group) if self.binding.max_batch else 1
                for i, out in zip(indices, self.served.infer(group)):
                    results[i] = (True, out, rows)
            except Exception as e:  # noqa: BLE001 - handed to each caller of the group
                for i in indices:
                    results[i] = (False, e, 0)
        return results


def _shape_key(request: dict) -> tuple:
    return tuple((name, array.shape[1:]) for name, array in sorted(request.items()))


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("dsopack")
    except Exception:  # noqa: BLE001 - a source checkout without an install
        return "unknown"


def app(path: str, replicas: int = 1, *, pubkey=None, threads: int | None = None, max_batch: int | None = None,
        batch_wait_s: float = BATCH_WAIT_S, max_body: int | None = None, num_cpus: float | None = None,
        max_ongoing_requests: int | None = None, opener=None, reload_interval: float = RELOAD_INTERVAL_S):
    """The Ray Serve application of one file: `serve.run(app(path, replicas=2), route_prefix="/")`.

    `replicas` processes each load the file (`threads` each: give them fewer than the cores); `num_cpus` is
    each replica's Ray CPU reservation (Ray Serve's default otherwise). `max_ongoing_requests` per replica
    defaults to the max batch (a run can join that many one-row requests), 8 for a file served without
    batching. The file is opened here once (checks it and learns its batch range); a `max_batch` over the
    range, or for a file served without batching, is a ValueError. Each replica looks every `reload_interval`
    seconds (0: never) whether the file was replaced (an atomic rename) and switches to the new one as
    `dsopack serve` does (Served.reload: verified, signed with `pubkey`, the same inputs and outputs, else
    refused with a log line in the replica's log and the old model kept)."""
    path = os.path.abspath(path)
    model = opener(path) if opener is not None else loader.load(path)
    try:
        b = dpk_serve.binding(model, dpk_serve.model_name(path), max_batch)
    finally:
        getattr(model, "close", lambda: None)()
    options = {"name": b.name, "num_replicas": replicas,
               "max_ongoing_requests": max_ongoing_requests or max(b.max_batch, 8)}
    if num_cpus is not None:
        options["ray_actor_options"] = {"num_cpus": num_cpus}
    return Deployment.options(**options).bind(path, pubkey=pubkey, threads=threads, max_batch=max_batch,
                                              batch_wait_s=batch_wait_s, max_body=max_body, opener=opener,
                                              reload_interval=reload_interval)


def build(args: dict):
    """`serve run loader.ray_serve:build path=FILE [replicas=N] [threads=T] [max_batch=B] [pubkey=KEY.pub]
    [num_cpus=C]`: app() from the command line's strings."""
    known = {"path": str, "replicas": int, "threads": int, "max_batch": int, "pubkey": str, "num_cpus": float,
             "batch_wait_s": float, "max_body": int, "max_ongoing_requests": int, "reload_interval": float}
    unknown = sorted(set(args) - set(known))
    if unknown or "path" not in args:
        problem = f"unknown argument '{unknown[0]}'" if unknown else "no path"
        raise ValueError(f"serve run loader.ray_serve:build path=FILE [...]: {problem} (arguments: {', '.join(known)})")
    return app(**{key: known[key](value) for key, value in args.items()})
