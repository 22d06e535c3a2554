"""Dynamic shapes in the loader (dpk.h, "Dynamic shapes"): a file's dims and plans,
and a run on inputs of any shape in range, whose outputs get the shapes libdpk
gives them (dpk_model_output_shape). A static file never comes here: Model._run
keeps its fast path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loader import errors
from loader._native import TensorRef, check, ffi, lib


@dataclass(frozen=True)
class Dim:
    """A dynamic dim: the axes that name it take any size from `min` to `max`.
    `exact` is None for a dim that runs padded (a size between plans runs in the
    next plan up), else why the dim is never padded (a size needs its own plan)."""
    name: str
    min: int
    max: int
    exact: str | None = None


@dataclass(frozen=True)
class Plan:
    """A graph module of the file, the model at one size of each dim."""
    graph: str
    sizes: dict[str, int]

    def __str__(self) -> str:
        sizes = ", ".join(f"{name}={size}" for name, size in self.sizes.items())
        return f"{self.graph} ({sizes})" if sizes else self.graph


def range_str(low, high) -> str:
    """'[1..64, 784]': an axis 'lo..hi' where the two differ (a static shape reads '[1, 784]')."""
    return "[" + ", ".join(str(h) if lo == h else f"{lo}..{h}" for lo, h in zip(low, high)) + "]"


def _text(pointer) -> str | None:
    return ffi.string(pointer).decode() if pointer != ffi.NULL else None


def read_dims(handle) -> list[Dim]:
    name, exact = ffi.new("const char **"), ffi.new("const char **")
    low, high = ffi.new("int64_t *"), ffi.new("int64_t *")
    dims = []
    for k in range(lib.dpk_model_num_dims(handle)):
        check(lib.dpk_model_dim_info(handle, k, name, low, high, exact))
        dims.append(Dim(_text(name[0]), low[0], high[0], _text(exact[0])))
    return dims


def read_plans(handle, dims: list[Dim]) -> list[Plan]:
    graph, sizes = ffi.new("const char **"), ffi.new("const int64_t **")
    plans = []
    for p in range(lib.dpk_model_num_plans(handle)):
        check(lib.dpk_model_plan_info(handle, p, graph, sizes))
        plans.append(Plan(_text(graph[0]), {dim.name: sizes[0][k] for k, dim in enumerate(dims)}))
    return plans


def axis_dims(handle, getter, index: int, ndim: int) -> tuple[str | None, ...]:
    """The dim each axis of input/output `index` takes (None: a fixed axis)."""
    out = ffi.new("const char *const **")
    check(getter(handle, index, out))
    return tuple(_text(out[0][a]) for a in range(ndim))


def _refs(infos, arrays) -> tuple[list[TensorRef], object]:
    """The inputs as DLTensors (dtype checked here, shapes by libdpk) and the C array of them."""
    refs = []
    for info, value in zip(infos, arrays):
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=info.dtype)
        if array.dtype != info.dtype:
            raise errors.InvalidArgumentError(
                f"input '{info.name}' is {array.dtype}{list(array.shape)} but the model expects "
                f"{info.dtype}{range_str(info.min_shape, info.shape)}")
        refs.append(TensorRef(np.ascontiguousarray(array)))
    return refs, ffi.new("DLTensor *[]", [ref.struct for ref in refs] or [ffi.NULL])


def select_plan(handle, infos, arrays) -> int:
    """The index of the plan a run on `arrays` (signature order) uses."""
    refs, tensors = _refs(infos, arrays)
    out = ffi.new("size_t *")
    check(lib.dpk_model_select_plan(handle, tensors, len(refs), out))
    return out[0]


def run(handle, infos, output_infos, arrays) -> list[np.ndarray]:
    """Run on `arrays` (signature order, any shape in range); the outputs at their actual shapes."""
    refs, tensors = _refs(infos, arrays)
    outputs, out_refs = [], []
    for index, info in enumerate(output_infos):
        shape = ffi.new("int64_t[]", max(len(info.shape), 1))
        check(lib.dpk_model_output_shape(handle, tensors, len(refs), index, shape))
        output = np.empty(tuple(shape[0:len(info.shape)]), info.dtype)
        outputs.append(output)
        out_refs.append(TensorRef(output))
    out_tensors = ffi.new("DLTensor *[]", [ref.struct for ref in out_refs] or [ffi.NULL])
    check(lib.dpk_model_run(handle, tensors, len(refs), out_tensors, len(out_refs)))
    return outputs
