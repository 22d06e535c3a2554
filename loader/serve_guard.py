"""The HTTP port of `dsopack serve`: a small front that refuses a body over the size limit with the v2
protocol's error (`{"error": "..."}`, status 413) and forwards every other request to Triton's own HTTP port
on loopback.

Why: the tritonserver PyTriton 0.7.0 bundles has no limit on a request's size, and a JSON body of 5 million
numbers (10 MB) kills it with SIGSEGV (tests/test_serve.py, test_oversized_body_refused). One request must not
take the server down, so its bytes are counted here before Triton sees any of them.

Triton's error answers are made plain on the way back (`_plain_error`; an answer of 200 is passed on untouched,
so a good request pays nothing for it): a body that is not JSON, or JSON without the protocol's `inputs`, is the
client's fault (400, Triton says 500), and an error raised in the model's run (`RequestError`, `RunError`) reaches
the client as its own message, not inside the text of PyTriton's and the Python backend's tracebacks.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger("dsopack.serve")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
# Triton 2.51 answers 500 to a body it cannot parse: not JSON, or JSON without the protocol's shape
BAD_BODY = ("failed to parse the request JSON buffer", "Unable to parse ")


class ServedError(Exception):
    """An error of the model's run that the client should see as its message alone. PyTriton 0.7 sends the client
    `traceback.format_exception(e, e.__traceback__)` (pytriton/proxy/inference.py), and the Python backend stub
    wraps that in its own traceback (model.py, in tritonserver's child process: not ours to change). An error whose
    `__traceback__` reads None formats as `loader.serve_guard.RequestError: message`, one line that this front
    finds and answers alone; gRPC clients, who talk to Triton directly, see the stub's wrapping around that line.
    The server's log keeps the whole traceback (Python's own machinery reads the real one). Setting it does
    nothing: contextlib's context managers set it on what passes through them (Ray Serve's replica does)."""
    __traceback__ = property(lambda self: None, lambda self, value: None)
    status = 500


class RequestError(ServedError):
    """The request is wrong for the model (a size outside a range, an unknown input): 400."""
    status = 400


class RunError(ServedError):
    """The run failed for another reason (a bug, out of memory): 500."""


class _Upstream(http.client.HTTPConnection):
    """A connection to Triton without Nagle's delay (also when http.client opens it again)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Triton's own port
    disable_nagle_algorithm = True  # headers and body go out in two writes: without it, 40 ms per answer
    server: "Guard"

    def log_message(self, *_):  # one line per request would drown the log
        pass

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # the unread rest of the body must not be read as a request
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _discard(self, size: int, most: int = 1 << 30) -> None:
        left = min(size, most)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _forward(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._error(411, "a chunked request body is not accepted: send Content-Length")
        try:
            size = int(length) if length is not None else 0
        except ValueError:
            return self._error(400, f"Content-Length '{length}' is not a number")
        if size > self.server.max_body:
            self._discard(size)  # read (not kept) so that the client, still sending, gets the answer
            return self._error(413, f"the request body has {size} bytes, over the limit of {self.server.max_body} "
                                    f"(--max-body-mb; the largest valid request of the served models fits)")
        body = self.rfile.read(size) if size else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        connection = self.server.connection()
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.server.drop_connection()
            return self._error(503, f"the Triton server did not answer: {e}")
        status, reason = response.status, response.reason
        if status >= 400:
            status, data = _plain_error(status, data)
            reason = None if status != response.status else reason
        self.send_response(status, reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _forward


def _plain_error(status: int, data: bytes) -> tuple[int, bytes]:
    """Triton's error answer (status, body) as the client should get it: a ServedError's message alone with its
    status, 400 for a body Triton could not parse, anything else as it came."""
    try:
        message = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return status, data
    if not isinstance(message, str):
        return status, data
    for kind in (RequestError, RunError):
        marker = f"{kind.__module__}.{kind.__qualname__}: "
        at = message.rfind(marker)
        if at >= 0:
            plain = message[at + len(marker):].split("\n", 1)[0]
            return kind.status, json.dumps({"error": plain}).encode()
    if status == 500 and message.startswith(BAD_BODY):
        return 400, data
    return status, data


class Guard(ThreadingHTTPServer):
    """Listens on (address, port); forwards to Triton's HTTP at (address, triton_port). One connection to Triton
    per handler thread."""
    daemon_threads = True
    request_queue_size = 1024  # socketserver's listen backlog is 5: a burst of clients would be reset

    def __init__(self, address: str, port: int, triton_port: int, max_body: int):
        super().__init__((address, port), _Handler)
        self.triton = (address, triton_port)
        self.max_body = max_body
        self._local = threading.local()
        self._thread = None

    def connection(self) -> http.client.HTTPConnection:
        if getattr(self._local, "connection", None) is None:
            self._local.connection = _Upstream(*self.triton, timeout=300)
        return self._local.connection

    def drop_connection(self) -> None:
        connection, self._local.connection = getattr(self._local, "connection", None), None
        if connection is not None:
            connection.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="dsopack-serve-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread = None
        self.server_close()
