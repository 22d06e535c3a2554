"""The `lut` payload: what the backend writes and lut_kind.c reads.

Little-endian, version 1:

    offset size
    0      8    magic "DPKLUT01"
    8      4    u32 n_inputs    the function's input tensors (ids 0 .. n_inputs-1)
    12     4    u32 n_outputs   its output tensors (the next ids)
    16     4    u32 n_tensors   inputs + outputs + intermediates, at most 64
    20     4    u32 n_stages    at least 1, at most 64
    24     8    u64 numel       elements of every tensor (all have one shape)
    32     64   function name, NUL-padded (non-empty, at most 63 bytes)
    96          stages, each:
                  u32 src, u32 dst    tensor ids: dst = table(src)
                  u32 n_points (>= 2), u32 reserved (0)
                  f32 lo, f32 hi      the table samples [lo, hi] evenly
                  f32 values[n_points]

A stage reads an input or the result of an earlier stage and writes a tensor
that is not an input and that no earlier stage wrote; every output is written.
Between table points the value is interpolated linearly; below `lo` it is
values[0], above `hi` values[n-1]; NaN stays NaN.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"DPKLUT01"
HEADER = struct.Struct("<8sIIIIQ64s")
STAGE = struct.Struct("<IIIIff")
MAX_TENSORS = 64
MAX_STAGES = 64

# op -> (lo, hi, n_points): the table covers [lo, hi]; outside it the function is flat to float32
# precision. Linear interpolation error <= h^2/8 * max|f''| (h = (hi-lo)/(n-1)): sigmoid 7e-7, tanh 1.2e-6.
TABLES = {
    "sigmoid": (-16.0, 16.0, 4097, lambda x: 1.0 / (1.0 + np.exp(-x))),
    "tanh": (-8.0, 8.0, 4097, np.tanh),
}
MAX_ERROR = 1e-5  # what a user may rely on, float32 rounding included


def table(op: str) -> tuple[float, float, np.ndarray]:
    lo, hi, n, fn = TABLES[op]
    xs = np.linspace(lo, hi, n, dtype=np.float64)
    return lo, hi, fn(xs).astype(np.float32)


def pack(function: str, n_inputs: int, n_outputs: int, n_tensors: int, numel: int,
         stages: list[tuple[int, int, str]]) -> bytes:
    """The payload for `stages` [(src id, dst id, op)]."""
    name = function.encode()
    if not 0 < len(name) < 64:
        raise ValueError(f"function name '{function}' must have 1 to 63 bytes")
    if n_tensors > MAX_TENSORS or len(stages) > MAX_STAGES:
        raise ValueError(f"{n_tensors} tensors / {len(stages)} stages (at most {MAX_TENSORS} / {MAX_STAGES})")
    out = [HEADER.pack(MAGIC, n_inputs, n_outputs, n_tensors, len(stages), numel, name)]
    for src, dst, op in stages:
        lo, hi, values = table(op)
        out.append(STAGE.pack(src, dst, len(values), 0, lo, hi))
        out.append(values.astype("<f4").tobytes())
    return b"".join(out)


def unpack(data: bytes) -> dict:
    """The fields of a payload (for tests and tools); no checks beyond the layout."""
    magic, n_in, n_out, n_tensors, n_stages, numel, name = HEADER.unpack_from(data)
    offset, stages = HEADER.size, []
    for _ in range(n_stages):
        src, dst, n, _, lo, hi = STAGE.unpack_from(data, offset)
        offset += STAGE.size
        values = np.frombuffer(data, "<f4", n, offset)
        offset += 4 * n
        stages.append({"src": src, "dst": dst, "lo": lo, "hi": hi, "values": values})
    return {"magic": magic, "inputs": n_in, "outputs": n_out, "tensors": n_tensors, "numel": numel,
            "function": name.rstrip(b"\0").decode(), "stages": stages}
