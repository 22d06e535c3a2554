"""Weights the build derives from a weight it maps from a file (a transpose, a packed layout, a decompressed
.npz member) go to a spill file, a block of rows at a time, and come back mapped: so the build never holds
them whole in memory, and the blob streams them from the spill file as it streams the source (blob.file_range).

    with spill.session(near=output):      # build.build opens one; the files go with it
        wt = spill.transposed(w)          # w a np.memmap [K, N] -> a np.memmap [N, K]

Outside a session, or from an array in memory, each function gives the same values in memory. The values and
so the built file do not depend on which: only where the bytes wait. In a session each derived array is
spilled once (a dynamic build converts the model once per plan and gets the same file back each time).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from packager.ir import BuildError

BLOCK = 64 << 20  # bytes of the result derived at a time: what the build holds of it at once
SPILL_FROM = 1 << 20  # smaller results stay in memory: a file each would cost more than it saves


@dataclass
class _Session:
    path: str
    made: dict = field(default_factory=dict)  # (what, source range, shape, dtype) -> the spilled array


_session: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("dsopack_spill", default=None)


@contextlib.contextmanager
def session(near: str | None = None):
    """A directory for the spill files of one build (in the directory of `near`, the output: the disk the
    weights are going to anyway, where /tmp may be memory), removed at the end (a file still mapped stays
    readable). Per thread: builds in two threads spill apart."""
    where = os.path.dirname(os.path.abspath(near)) if near else None
    try:
        path = tempfile.mkdtemp(prefix=".dsopack-spill-", dir=where)
    except OSError as e:
        raise BuildError(f"cannot make a directory for the build's spill files in {where or tempfile.gettempdir()}"
                         f": {e}") from None
    token = _session.set(_Session(path))
    try:
        yield path
    finally:
        _session.reset(token)
        shutil.rmtree(path, ignore_errors=True)


def source_map(array) -> np.memmap | None:
    """The read-only np.memmap `array` is (a view of), if any."""
    while isinstance(array, np.ndarray):
        if isinstance(array, np.memmap) and getattr(array, "_mmap", None) is not None:
            return array if array.mode == "r" else None
        array = array.base
    return None


def file_range(array) -> tuple[str, int] | None:
    """(path, offset) of the bytes of a C-contiguous array mapped read-only from a file (source_map)."""
    source = source_map(array)
    if source is None or not array.flags.c_contiguous or not array.nbytes:
        return None
    path = os.path.abspath(source.filename)
    if not os.path.exists(path):  # a spill file whose session ended (still mapped): read through the mapping
        return None
    first = np.frombuffer(source._mmap, np.uint8).ctypes.data  # the mapping starts at offset - offset % granularity
    start = source.offset - source.offset % mmap.ALLOCATIONGRANULARITY
    return path, start + array.ctypes.data - first


def derived(source, shape, dtype, rows, what: str) -> np.ndarray:
    """The array of `shape` and `dtype` whose rows [lo, hi) are `rows(lo, hi)` (`what`: a name for the kind of
    derivation): in memory, or, in a session with `source` mapped from a file, written to a spill file a block
    at a time and mapped back. Between blocks the source's pages are unmapped from this process (they stay in
    the page cache), so they do not add up in its memory either."""
    dtype, shape = np.dtype(dtype), tuple(shape)
    key = _key(what, source, shape, dtype)
    if key is None:
        return np.ascontiguousarray(rows(0, shape[0]), dtype)
    return _made(key, lambda: _derive(source, shape, dtype, rows))


def _derive(source, shape, dtype, rows) -> np.ndarray:
    step = max(1, BLOCK // max(1, math.prod(shape[1:]) * dtype.itemsize))
    path = _new_file()
    with _writing(path), open(path, "wb") as f:
        for lo in range(0, shape[0], step):
            block = np.ascontiguousarray(rows(lo, min(shape[0], lo + step)), dtype)
            f.write(memoryview(block).cast("B"))
            del block
            _let_go(source)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def transposed(a: np.ndarray) -> np.ndarray:
    """A 2-D array's transpose, C-contiguous."""
    k, n = a.shape
    if (k == 1 or n == 1) and a.flags.c_contiguous:
        return a.reshape(n, k)  # the same bytes (and still mapped, if `a` is)
    key = _key("transposed", a, (n, k), a.dtype)
    if key is None:
        return np.ascontiguousarray(a.T)
    return _made(key, lambda: _transpose(a, key[1]))


def _transpose(a: np.ndarray, at: tuple[str, int]) -> np.ndarray:
    # Square tiles, read and written with pread/pwrite, not through mappings: a fault in a file mapping maps
    # far more than the bytes asked for (fault-around, large folios), and a tile touches a little of every row.
    (k, n), item = a.shape, a.itemsize
    side = max(1, math.isqrt(BLOCK // item))
    path = _new_file(a.nbytes)
    tile, flipped = np.empty(side * side, a.dtype), np.empty(side * side, a.dtype)
    with _writing(path), open(at[0], "rb") as src, open(path, "r+b") as dst:
        for r in range(0, k, side):
            for c in range(0, n, side):
                rows, cols = min(side, k - r), min(side, n - c)
                part = tile[:rows * cols].reshape(rows, cols)
                for i in range(rows):
                    if os.preadv(src.fileno(), [part[i]], at[1] + ((r + i) * n + c) * item) != cols * item:
                        raise BuildError(f"{at[0]} ended while a weight was read (did it change during the build?)")
                out = flipped[:rows * cols].reshape(cols, rows)
                _flip(part, out)
                for j in range(cols):
                    _pwrite_all(dst.fileno(), memoryview(out[j]).cast("B"), ((c + j) * k + r) * item)
    return np.memmap(path, dtype=a.dtype, mode="r", shape=(n, k))


def _flip(a: np.ndarray, out: np.ndarray, step: int = 64) -> None:
    """out = a.T in blocks of step x step: numpy's own strided copy of a large tile misses the TLB on every
    element read (3x slower, measured on a 4096 x 4096 tile)."""
    for i in range(0, a.shape[0], step):
        for j in range(0, a.shape[1], step):
            out[j:j + step, i:i + step] = a[i:i + step, j:j + step].T


def _key(what: str, source, shape, dtype) -> tuple | None:
    """The session's key of a derived array worth spilling (its source mapped, at least SPILL_FROM bytes), or
    None: it is made in memory."""
    at = file_range(source) if _session.get() is not None else None
    if at is None or math.prod(shape) * np.dtype(dtype).itemsize < SPILL_FROM:
        return None
    return what, at, tuple(shape), np.dtype(dtype).str, source.shape, source.dtype.str


def _made(key: tuple, make) -> np.ndarray:
    made = _session.get().made
    if key not in made:
        made[key] = make()
    return made[key]


def _new_file(nbytes: int = 0) -> str:
    """A spill file in this thread's session, of `nbytes` (zero) bytes."""
    where = _session.get().path
    with _writing(where):
        fd, path = tempfile.mkstemp(suffix=".spill", dir=where)
        try:
            os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)
    return path


@contextlib.contextmanager
def _writing(path: str):
    """A failure to write a spill file (a full disk) as a BuildError that says where."""
    try:
        yield
    except OSError as e:
        raise BuildError(f"cannot write the build's spill file {path} (weights derived from mapped ones wait "
                         f"there, next to the output): {e}") from None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _let_go(array) -> None:
    """Unmap from this process the pages of the file `array` is mapped from (they stay in the page cache)."""
    mapped = source_map(array)
    if mapped is not None:
        mapped._mmap.madvise(mmap.MADV_DONTNEED)


def streamed(read, shape, dtype) -> np.ndarray:
    """An array read from a stream (`read(n)` -> up to n bytes, as a file's), in a session written to a spill
    file as it comes and mapped; outside one, read into memory."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if _session.get() is None or nbytes < SPILL_FROM:
        return np.frombuffer(b"".join(_blocks(read, nbytes)), dtype).reshape(shape).copy()
    path = _new_file()
    with _writing(path), open(path, "wb") as f:
        for data in _blocks(read, nbytes):
            f.write(data)
    return np.memmap(path, dtype=dtype, mode="r", shape=tuple(shape))


def _blocks(read, nbytes: int):
    """The stream's first `nbytes` bytes, up to BLOCK at a time; a ValueError if it ends before."""
    done = 0
    while done < nbytes:
        data = read(min(BLOCK, nbytes - done))
        if not data:
            raise ValueError(f"the data ended after {done} of its {nbytes} bytes")
        yield data
        done += len(data)
