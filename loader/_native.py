"""The compiled extension, the status check, and numpy <-> DLTensor glue."""

from __future__ import annotations

import numpy as np

from loader import errors

try:
    from loader._dpk import ffi, lib
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "loader._dpk (the compiled libdpk extension) is missing: install the package with "
        "`pip install .` (scripts/setup.sh does it) so the C runtime gets compiled"
    ) from exc

# the type codes of dpk_abi.h, as the extension was built with them
DPK_TYPE_INT, DPK_TYPE_FLOAT, DPK_TYPE_HANDLE = lib.DPK_TYPE_INT, lib.DPK_TYPE_FLOAT, lib.DPK_TYPE_HANDLE
DPK_TYPE_NULL, DPK_TYPE_TENSOR, DPK_TYPE_STR = lib.DPK_TYPE_NULL, lib.DPK_TYPE_TENSOR, lib.DPK_TYPE_STR

# DLPack type codes <-> numpy
_DL_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}
_NP_KINDS = {code: kind for kind, code in _DL_CODES.items()}


def check(status: int) -> None:
    """Raise the exception for a non-zero status, with the thread's C message."""
    if status:
        message = ffi.string(lib.dpk_last_error()).decode("utf-8", "replace")
        raise errors.BY_CODE.get(status, errors.DpkError)(message)


def dtype_from_dl(dl) -> np.dtype:
    kind = _NP_KINDS.get(dl.code)
    if kind is None:
        raise errors.UnimplementedError(f"DLPack type code {dl.code} has no numpy equivalent")
    return np.dtype(bool) if kind == "b" else np.dtype(f"{kind}{dl.bits // 8}")


class TensorRef:
    """A DLTensor describing a numpy array; keeps the array and shape alive."""

    __slots__ = ("array", "shape", "struct")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = ffi.new("int64_t[]", list(array.shape)) if array.ndim else ffi.NULL
        self.struct = ffi.new("DLTensor *")
        t = self.struct
        t.data = ffi.cast("void *", array.ctypes.data)
        t.device.device_type = 1
        t.ndim = array.ndim
        t.dtype.code = _DL_CODES[array.dtype.kind]
        t.dtype.bits = array.dtype.itemsize * 8
        t.dtype.lanes = 1
        t.shape = self.shape
        t.strides = ffi.NULL


class Handle:
    """Owns one C object (an ffi.gc pointer in `_handle`): close() and a context manager."""

    _handle = None

    def close(self) -> None:
        """Release the C object now; later calls raise ValueError. Closing twice is fine."""
        if self._handle is not None:
            ffi.release(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
