"""Weights from a .safetensors file, the format Hugging Face models ship in (a YAML graph's
`weights: model.safetensors`), mapped rather than read: a tensor's bytes are read when the build
copies them into the model file, so a large file does not have to fit in memory twice.

The format: an unsigned 64-bit little-endian header size N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`, then
the data, each tensor's bytes at [begin, end) from the data's start, little-endian, row-major.
The safetensors package reads it too, but copies every tensor; this reader checks every field
against the file before mapping anything, and each failure names the file and the tensor.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from packager import blob

# safetensors dtype -> numpy's; BF16 and the float8s have no numpy dtype (and no dsopack kernel)
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
          "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool"}
MAX_HEADER = 100 << 20  # the format's own limit


class SafetensorsError(ValueError):
    """What is wrong with the file, for the frontend to prefix with the manifest's field."""


def load(path: str) -> dict[str, np.ndarray]:
    """Every tensor of the file, as read-only arrays mapped from it."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"the file has {size} bytes, fewer than the 8 of the header size")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"the header claims {n} bytes but the file has {size - 8} after the size "
                                   f"(and at most {MAX_HEADER} are allowed)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"the header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("the header is not a JSON object of tensors")
    start, arrays = 8 + n, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _entry(name, entry)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if not 0 <= begin <= end <= size - start or end - begin != nbytes:
            raise SafetensorsError(f"tensor '{name}' ({dtype}{shape}, {nbytes} bytes) has data_offsets "
                                   f"[{begin}, {end}], outside the {size - start} bytes of data or of another size")
        arrays[name] = blob.mapped(path, dtype, start + begin, shape)
    return arrays


def _entry(name: str, entry) -> tuple[str, list[int], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise SafetensorsError(f"tensor '{name}' is not a JSON object")
    dtype = DTYPES.get(entry.get("dtype"))
    if dtype is None:
        raise SafetensorsError(f"tensor '{name}' has dtype {entry.get('dtype')!r} (dsopack reads "
                               f"{', '.join(DTYPES)})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SafetensorsError(f"tensor '{name}' has shape {shape!r}, not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
        raise SafetensorsError(f"tensor '{name}' has data_offsets {offsets!r}, not [begin, end]")
    return dtype, shape, (offsets[0], offsets[1])
