"""`dsopack serve`: model files behind NVIDIA Triton (the KServe v2 protocol over HTTP and gRPC), through
PyTriton (`pip install 'dsopack[serve]'`). The model runs in this process, in the loader; tritonserver (a
child process PyTriton starts) parses requests, batches them and hands them over.

    from loader import serve
    serve.serve(["digits_batch.so"], http_port=8000, grpc_port=8001)   # until SIGTERM or SIGINT

What Triton is told comes from the file (`binding`): inputs and outputs with their dtypes, -1 on a dynamic
axis; the batch is the dim that is axis 0 of every input and output, padded (never `exact`: an exact dim mixes
its rows, so requests must not share a run) and starting at 1. Such a file is served with dynamic batching up
to the dim's max, its plans' sizes as Triton's preferred batch sizes. Any other file is served without
batching: one request, one run, the request's shape checked by the runtime against the ranges (a static file
takes exactly its one shape: its code was compiled for that batch alone).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sysconfig
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

import loader
from loader.serve_guard import RequestError, RunError

LOG = logging.getLogger("dsopack.serve")
QUEUE_DELAY_US = 100  # how long Triton's batcher waits for more requests to fill a preferred batch


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # as Triton sees it: no batch axis when batched, -1 on a dynamic axis


@dataclass(frozen=True)
class Binding:
    """What Triton is told about one model file."""
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int  # 0: no batching (Triton's max_batch_size 0)
    preferred: tuple[int, ...]  # the plans' batch sizes up to max_batch
    why_unbatched: str | None = None


def model_name(path: str) -> str:
    """The Triton model name of a file: its name without .so, other characters than [A-Za-z0-9._-] as '_'."""
    stem = os.path.basename(path)
    stem = stem[:-3] if stem.endswith(".so") else stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "model"


def batch_dim(model) -> tuple[loader.Dim | None, str | None]:
    """(the dim requests are batched on, None) or (None, why the file is served without batching)."""
    tensors = list(model.inputs) + list(model.outputs)
    if not model.dims:
        shape = list(model.inputs[0].shape) if model.inputs else []
        return None, f"the file has one shape ({model.inputs[0].name}: {shape}); build it with a batch range, " \
                     "e.g. --shape x=1..64,..., to batch requests" if model.inputs else "the file has no inputs"
    first = {t.dims[0] if t.dims else None for t in tensors}
    if len(first) != 1 or None in first:
        return None, "no dim is axis 0 of every input and output"
    dim = next(d for d in model.dims if d.name == first.pop())
    if dim.exact:
        return None, f"dim '{dim.name}' is exact ({dim.exact}): its rows meet, so requests must not share a run"
    if dim.min != 1:
        return None, f"dim '{dim.name}' starts at {dim.min}, not 1"
    return dim, None


def binding(model, name: str, max_batch: int | None = None) -> Binding:
    """The Triton model of a loaded file. `max_batch` caps the batch (default: the batch dim's max); a cap over
    the dim's max, or any cap for a file served without batching, is a ValueError."""
    dim, why = batch_dim(model)
    if dim is None:
        if max_batch is not None:
            raise ValueError(f"--max-batch: {name} is served without batching: {why}")
        cap, preferred = 0, ()
    else:
        if max_batch is not None and not 1 <= max_batch <= dim.max:
            raise ValueError(f"--max-batch {max_batch}: {name}'s batch dim '{dim.name}' runs {dim.min}..{dim.max}")
        cap = dim.max if max_batch is None else max_batch
        preferred = tuple(sorted({p.sizes[dim.name] for p in model.plans if p.sizes[dim.name] <= cap}))

    def specs(infos):
        out = []
        for info in infos:
            shape = tuple(-1 if d is not None else s for s, d in zip(info.shape, info.dims))
            out.append(TensorSpec(info.name, np.dtype(info.dtype), shape[1:] if cap else shape))
        return tuple(out)

    return Binding(name, specs(model.inputs), specs(model.outputs), cap, preferred, why)


def check_names(binding: Binding, request) -> None:
    """A ValueError naming the first input of a request (name -> array) that the model does not have."""
    names = [spec.name for spec in binding.inputs]
    unknown = sorted(set(request) - set(names))
    if unknown:
        raise ValueError(f"{binding.name}: unknown input {unknown[0]!r} (inputs: {', '.join(names)})")


def signature(model) -> str:
    """inputs -> outputs, as `x: float32[1..64, 64] -> probs: float32[1..64, 10]`."""
    return f"{', '.join(map(str, model.inputs))} -> {', '.join(map(str, model.outputs))}"


class Served:
    """One model file: the model requests run on now, and its replacement when the file is replaced.

    A request (a batch of them) takes the current model once and runs on it to the end, so a reload never
    changes a run half-way; the old model is freed when its last run ends (the loader frees on collection)."""

    def __init__(self, path: str, *, pubkey=None, threads: int | None = None, max_batch: int | None = None,
                 opener=None):
        """`opener(path)`: opens the model instead of the loader (anything with the loader model's `run(**inputs)
        -> dict`, `inputs`, `outputs`, `dims` and `plans`, e.g. another runtime behind the same server for a
        comparison: benchmarks/ort_model.py); its model is named after `path` and never reloaded."""
        self.path = os.path.abspath(path)
        self.pubkey, self.threads = pubkey, threads
        self._fixed = opener is not None
        self.model = opener(self.path) if self._fixed else self._load(self.path)
        self.binding = binding(self.model, model_name(path), max_batch)
        self._stat = _identity(self.path)
        self._generation = 0
        self._links = None  # a private directory of symbolic links for reloads (see reload)

    def _load(self, path: str):
        # verify: every weight checksum too; a server loads rarely and a flipped weight would answer wrongly
        return loader.load(path, verify=True, pubkey=self.pubkey, num_threads=self.threads)

    def infer(self, requests) -> list[dict[str, np.ndarray]]:
        """PyTriton's inference callable: a list of requests (name -> array), one response each. An error is
        raised as a RequestError (a bad request: an unknown input, a size outside a range) or a RunError, which
        the client sees as the error's own message (serve_guard.ServedError)."""
        try:
            return self._infer(requests)
        except (ValueError, IndexError) as e:  # loader's InvalidArgumentError and OutOfRangeError are these too
            raise RequestError(str(e)) from None
        except Exception as e:
            LOG.exception("%s: the run failed", self.binding.name)
            raise RunError(f"{self.binding.name}: the run failed: {type(e).__name__}: {e}") from None

    def _infer(self, requests) -> list[dict[str, np.ndarray]]:
        model = self.model  # this batch finishes on the model it started on
        names = [spec.name for spec in self.binding.inputs]
        for request in requests:
            check_names(self.binding, request)
        if not self.binding.max_batch or len(requests) == 1:
            return [model.run(**{n: r[n] for n in names}) for r in requests]
        sizes = [len(r[names[0]]) for r in requests]
        outputs = model.run(**{n: np.concatenate([r[n] for r in requests]) for n in names})
        cuts = np.cumsum(sizes)[:-1]
        split = {name: np.split(value, cuts) for name, value in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(requests))]

    def reload(self) -> bool:
        """Load the file again if it was replaced; switch to it if it loads, verifies (and its signature holds,
        with a public key) and has the served inputs and outputs. Else log why and keep the old model."""
        stat, b = _identity(self.path), self.binding
        if self._fixed or stat == self._stat:
            return False
        self._stat = stat
        if stat is None:
            LOG.warning("%s: %s is gone; still serving the model loaded before", self.binding.name, self.path)
            return False
        # glibc's dlopen returns the library already loaded under the same path (and libdpk then refuses a
        # blob that is not the file's), so each reload loads through a link of its own name
        if self._links is None:
            self._links = tempfile.mkdtemp(prefix="dsopack-serve-")
        self._generation += 1
        link = os.path.join(self._links, f"{self.binding.name}.{self._generation}.so")
        os.symlink(self.path, link)
        try:
            model = self._load(link)
        except loader.DpkError as e:
            LOG.error("%s: refused the new %s: %s; still serving the model loaded before", self.binding.name,
                      self.path, str(e).replace(link, self.path))
            return False
        finally:
            os.unlink(link)
        # Triton's config cannot change while it serves: the same tensors, batched or not as before, and a batch
        # range that holds the served max batch (other plans are fine: the preferred batch sizes stay the first
        # file's, a hint to the batcher)
        new = binding(model, b.name)
        why = None
        if (new.inputs, new.outputs, bool(new.max_batch)) != (b.inputs, b.outputs, bool(b.max_batch)):
            why = f"its inputs and outputs ({signature(model)}) differ from the served ones ({signature(self.model)})" \
                  "; restart the server to serve them"
        elif new.max_batch < b.max_batch:
            why = f"its batch range ends at {new.max_batch}, under the served max batch {b.max_batch}"
        if why:
            LOG.error("%s: refused the new %s: %s; still serving the model loaded before", b.name, self.path, why)
            return False
        self.model = model
        LOG.info("%s: now serving the new %s (%s)", self.binding.name, self.path, signature(model))
        return True

    def poll(self) -> None:
        """reload(), which must never end a server: any failure is logged and the old model keeps serving."""
        try:
            self.reload()
        except Exception as e:
            LOG.error("%s: reload of %s failed (%s: %s); still serving the model loaded before",
                      self.binding.name, self.path, type(e).__name__, e)

    def close(self) -> None:
        if self._links:
            os.rmdir(self._links)
            self._links = None


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def stub_library_dir() -> str | None:
    """The directory of this interpreter's own libpython, which Triton's Python backend stub must link: the stub
    (a child of tritonserver) is linked against libpython3.X.so.1.0 and would otherwise find the system's. A
    different build of the same 3.X (Debian's 3.11.2 under a pyenv 3.11.7) fails at model start with
    "'_thread.RLock' object has no attribute '_recursion_count'". None: the interpreter has no shared libpython."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname \
            and os.path.exists(os.path.join(libdir, soname)):
        return libdir
    return None


def _stub_environment() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH, which tritonserver and the stub inherit."""
    libdir = stub_library_dir()
    if libdir is None:
        LOG.warning("this Python has no shared libpython; Triton's Python backend stub will link the system's, "
                    "which must be the same build of Python %s", sysconfig.get_python_version())
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + paths)


def _import_pytriton():
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig
    except ImportError as e:
        raise ImportError(f"dsopack serve needs PyTriton: pip install 'dsopack[serve]' ({e})") from None
    return DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig, DEFAULT_PROTECTED_ENDPOINTS


def bind(triton, served: Served, instances: int = 1) -> None:
    DynamicBatcher, ModelConfig, Tensor, *_ = _import_pytriton()
    b = served.binding
    if b.max_batch:
        config = ModelConfig(batching=True, max_batch_size=b.max_batch, batcher=DynamicBatcher(
            max_queue_delay_microseconds=QUEUE_DELAY_US, preferred_batch_size=list(b.preferred)))
    else:
        config = ModelConfig(batching=False, max_batch_size=0)
    triton.bind(model_name=b.name, infer_func=[served.infer] * instances,
                inputs=[Tensor(name=s.name, dtype=s.dtype.type, shape=s.shape) for s in b.inputs],
                outputs=[Tensor(name=s.name, dtype=s.dtype.type, shape=s.shape) for s in b.outputs],
                config=config, strict=False)


def default_max_body(served: list[Served]) -> int:
    """Bytes of the largest request body the HTTP port takes by default (`max_body_for` the served models)."""
    return max_body_for([s.model for s in served])


def max_body_for(models) -> int:
    """32 bytes per number of the largest valid request of the models (a JSON float32 takes up to ~16), plus
    64 KiB, and at least 1 MiB."""
    largest = max(sum(int(np.prod(info.shape)) for info in model.inputs) for model in models)
    return max(1 << 20, 32 * largest + (64 << 10))


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def serve(paths: list[str | Served], *, http_port: int = 8000, grpc_port: int = 8001, max_batch: int | None = None,
          instances: int = 1, pubkey=None, threads: int | None = None, reload_interval: float = 1.0,
          max_body: int | None = None, address: str = "127.0.0.1") -> int:
    """Serve the files (or `Served` objects made by the caller) until SIGTERM or SIGINT (then stop Triton and return 0) or until Triton dies (1); called
    from another thread than the main one, until Triton dies (no signal handlers there).
    HTTP clients talk to serve_guard's front on http_port (it caps the body at max_body bytes, default
    `default_max_body`), which forwards to Triton's HTTP port on a free loopback port; gRPC is Triton's own."""
    from loader.serve_guard import Guard

    *_, Triton, TritonConfig, TritonSecurityConfig, DEFAULT_PROTECTED_ENDPOINTS = _import_pytriton()
    served = [p if isinstance(p, Served) else Served(p, pubkey=pubkey, threads=threads, max_batch=max_batch)
              for p in paths]
    names = [s.binding.name for s in served]
    if len(set(names)) != len(names):
        raise ValueError(f"two files would be served under one name: {', '.join(names)}")
    _stub_environment()
    guard = Guard(address, http_port, _free_port(address), max_body or default_max_body(served))
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python lets only the main thread set handlers
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    config = TritonConfig(http_address=address, http_port=guard.triton[1], grpc_address=address,
                          grpc_port=grpc_port, allow_metrics=False, exit_timeout_secs=10)
    # statistics open (counts and times, on loopback): they show the batcher at work; the rest as PyTriton has it
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    triton = Triton(config=config, security_config=security)
    try:
        for s in served:
            bind(triton, s, instances)
            b = s.binding
            how = f"batches up to {b.max_batch} (preferred {', '.join(map(str, b.preferred))})" if b.max_batch \
                else f"no batching: {b.why_unbatched}"
            LOG.info("%s: %s from %s; %s", b.name, signature(s.model), s.path, how)
        triton.run()
        guard.start()
        LOG.info("ready: HTTP http://%s:%d/v2 (bodies up to %d bytes), gRPC %s:%d (models: %s)", address,
                 http_port, guard.max_body, address, grpc_port, ", ".join(names))
        code = 0
        while not stop.wait(reload_interval):
            if not triton.is_alive():
                LOG.error("Triton stopped; exiting")
                code = 1
                break
            for s in served:
                s.poll()
        LOG.info("stopping")
        return code
    finally:
        guard.stop()
        triton.stop()
        for s in served:
            s.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
