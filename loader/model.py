"""A loaded model: typed inputs and outputs, run, packed functions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import yaml

from loader import errors, shapes
from loader._native import (DPK_TYPE_FLOAT, DPK_TYPE_INT, DPK_TYPE_NULL, DPK_TYPE_STR, DPK_TYPE_TENSOR,
                            Handle, TensorRef, check, dtype_from_dl, ffi, lib)
from loader.signature import public_key

# bound once: the run path looks these up on every call
_ndarray, _empty, _from_buffer, _py_run = np.ndarray, np.empty, ffi.from_buffer, lib.dpk_py_run


@dataclass(frozen=True)
class TensorInfo:
    """An input or output. `shape` is the largest a run takes (the last plan's); `dims` names the dim each
    axis takes (None: a fixed axis) and `min_shape` is the smallest shape. A static file: all None, min_shape
    == shape."""
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str | None, ...] = ()
    min_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.shape):
            object.__setattr__(self, "dims", (None,) * len(self.shape))
        if len(self.min_shape) != len(self.shape):
            object.__setattr__(self, "min_shape", tuple(self.shape))

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{shapes.range_str(self.min_shape, self.shape)}"

    __repr__ = __str__  # so print(model.inputs) reads [x: float32[1, 64]]


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    kind: str


def _thread_count(num_threads) -> int:
    """num_threads for dpk_load_options_t: None -> 0 (the runtime's default), else a positive int."""
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be an int or None, not {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive count (or None for the default), not {num_threads}")
    return num_threads


def _infos(model, count, getter, dims_getter, dims: list[shapes.Dim]) -> list[TensorInfo]:
    infos = []
    info = ffi.new("dpk_tensor_info_t *")
    low = {dim.name: dim.min for dim in dims}
    for i in range(count(model)):
        check(getter(model, i, info))
        shape = tuple(info.shape[d] for d in range(info.ndim))
        axes = shapes.axis_dims(model, dims_getter, i, info.ndim)
        min_shape = tuple(size if name is None else low[name] for size, name in zip(shape, axes))
        infos.append(TensorInfo(ffi.string(info.name).decode(), shape, dtype_from_dl(info.dtype), axes, min_shape))
    return infos


class Model(Handle):
    """`loader.load(path)`: a model file with its code loaded and modules rebuilt.

    Safe to share between threads: each concurrent `run` uses its own arena in
    the C runtime, and the GIL is released while C runs."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = False, populate: bool = False,
                 pubkey=None, num_threads: int | None = None) -> None:
        self.path = os.fspath(path)
        options = ffi.new("dpk_load_options_t *")
        lib.dpk_load_options_init(options)
        options.verify_checksums, options.populate = int(verify), int(populate)
        options.num_threads = _thread_count(num_threads)
        out = ffi.new("dpk_model_t **")
        if pubkey is None:
            check(lib.dpk_model_load(self.path.encode(), options, out))
        else:
            check(lib.dpk_model_load_signed(self.path.encode(), public_key(pubkey), options, out))
        self._handle = ffi.gc(out[0], lib.dpk_model_free)
        self.dims = shapes.read_dims(self._handle)  # the dynamic dims (a static file: none)
        self.plans = shapes.read_plans(self._handle, self.dims)  # smallest first (a static file: the entry)
        self.inputs = _infos(self._handle, lib.dpk_model_num_inputs, lib.dpk_model_input_info,
                             lib.dpk_model_input_dims, self.dims)
        self.outputs = _infos(self._handle, lib.dpk_model_num_outputs, lib.dpk_model_output_info,
                              lib.dpk_model_output_dims, self.dims)
        self._input_index = {info.name: i for i, info in enumerate(self.inputs)}
        self._input_names = [info.name for info in self.inputs]
        self._input_specs = [(info, info.shape, info.dtype) for info in self.inputs]
        self._output_names = [info.name for info in self.outputs]
        self._output_specs = [(info.shape, info.dtype) for info in self.outputs]
        name, kind = ffi.new("const char **"), ffi.new("const char **")
        self.modules = []
        for i in range(lib.dpk_model_num_modules(self._handle)):
            check(lib.dpk_model_module_info(self._handle, i, name, kind))
            self.modules.append(ModuleInfo(ffi.string(name[0]).decode(), ffi.string(kind[0]).decode()))
        self._manifest = None

    @property
    def num_threads(self) -> int:
        """Threads a run may use, as resolved at load (num_threads, DPK_NUM_THREADS, or the CPU count)."""
        return lib.dpk_model_num_threads(self._live())

    @property
    def isa(self) -> str | None:
        """The ISA variant of the file's code this load runs ("baseline", "avx2", "avx512": the CPU's best, or
        DPK_ISA's), or None for a file that carries one variant (a build with a -march, a non-x86-64 file)."""
        isa = lib.dpk_model_isa(self._live())
        return ffi.string(isa).decode() if isa != ffi.NULL else None

    @property
    def manifest(self) -> dict:
        """The embedded manifest, as a dict."""
        if self._manifest is None:  # from the bytes that were loaded, not the path again
            size = ffi.new("size_t *")
            text = lib.dpk_package_manifest(lib.dpk_model_package(self._live()), size)
            self._manifest = yaml.safe_load(ffi.unpack(text, size[0]).decode("utf-8"))
        return self._manifest

    def _live(self):
        if self._handle is None:
            raise ValueError(f"model '{self.path}' is closed")
        return self._handle

    def _prepare(self, info: TensorInfo, value) -> np.ndarray:
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=info.dtype)
        if array.dtype != info.dtype or array.shape != info.shape:
            raise errors.InvalidArgumentError(
                f"input '{info.name}' is {array.dtype}{list(array.shape)} but the model expects "
                f"{info.dtype}{list(info.shape)}")
        return np.ascontiguousarray(array)

    def _run(self, arrays) -> list[np.ndarray]:
        """Run on one value per input, in signature order; outputs in order.

        The hot path of every call (about 1 us of Python around the C call):
        checks are inlined for the common case (a matching contiguous array),
        names are bound at load, and only data pointers cross into C."""
        handle = self._handle
        if handle is None:
            self._live()
        if self.dims:  # any shape in range: libdpk checks the shapes and gives the outputs theirs
            return shapes.run(handle, self.inputs, self.outputs, arrays)
        buffers = []
        for (info, shape, dtype), value in zip(self._input_specs, arrays):
            if not (type(value) is _ndarray and value.dtype == dtype and value.shape == shape
                    and value.flags.c_contiguous):
                value = self._prepare(info, value)
            buffers.append(_from_buffer(value))  # keeps `value` alive during the call
        outputs, out_buffers = [], []
        for shape, dtype in self._output_specs:
            output = _empty(shape, dtype)
            outputs.append(output)
            out_buffers.append(_from_buffer(output))
        status = _py_run(handle, buffers, len(buffers), out_buffers, len(out_buffers))
        if status:
            check(status)
        return outputs

    def _named(self, inputs: dict) -> list:
        """Named inputs in signature order."""
        try:
            arrays = [inputs[name] for name in self._input_names]
        except KeyError:
            arrays = None
        if arrays is None or len(inputs) != len(arrays):
            unknown = [name for name in inputs if name not in self._input_index]
            missing = [info.name for info in self.inputs if info.name not in inputs]
            expected = ", ".join(str(info) for info in self.inputs)
            problem = f"unknown input '{unknown[0]}'" if unknown else f"missing input '{missing[0]}'"
            raise errors.InvalidArgumentError(f"{problem}; the model takes {expected}")
        return arrays

    def run(self, **inputs) -> dict[str, np.ndarray]:
        """Run the entry function on named inputs; returns outputs by name. In a file with dims, an input may
        take any shape in range (`str(model.inputs[0])`: x: float32[1..64, 784]) and the outputs have the
        shapes those sizes give them."""
        return dict(zip(self._output_names, self._run(self._named(inputs))))

    def select_plan(self, **inputs) -> shapes.Plan:
        """The plan a run on these inputs uses (the inputs are checked as `run` checks them)."""
        return self.plans[shapes.select_plan(self._live(), self.inputs, self._named(inputs))]

    def __call__(self, *args, **kwargs):
        """Positional inputs in signature order; one output -> an array, several -> a tuple."""
        if kwargs or len(args) != len(self.inputs):
            if len(args) > len(self.inputs):
                raise errors.InvalidArgumentError(f"the model takes {len(self.inputs)} inputs, got {len(args)}")
            kwargs.update({info.name: value for info, value in zip(self.inputs, args)})
            result = tuple(self.run(**kwargs).values())
        else:
            result = self._run(list(args))
        return result[0] if len(result) == 1 else tuple(result)

    def get_function(self, name: str) -> "PackedFunction":
        """A function of the model by name (entry module first, then its imports)."""
        fn, resource = ffi.new("dpk_packed_fn *"), ffi.new("void **")
        check(lib.dpk_model_get_function(self._live(), name.encode(), fn, resource))
        return PackedFunction(self, name, fn[0], resource[0])


    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<dsopack model {self.path!r} ({ins}) -> ({outs})>"


class PackedFunction:
    """Calls a function in the packed convention: arrays go as tensors (written
    in place), ints, floats, strings and None as tagged values."""

    def __init__(self, model: Model, name: str, fn, resource) -> None:
        self._model, self.name, self._fn, self._resource = model, name, fn, resource

    def __call__(self, *args):
        self._model._live()
        values = ffi.new("dpk_value[]", max(len(args), 1))
        codes = ffi.new("int[]", max(len(args), 1))
        keep = []  # buffers C borrows during the call
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                if not (arg.flags.c_contiguous and arg.flags.writeable):
                    raise errors.InvalidArgumentError(
                        f"argument {i} of '{self.name}' must be a C-contiguous, writable array "
                        "(use np.ascontiguousarray or .copy())")
                ref = TensorRef(arg)
                keep.append(ref)
                values[i].v_tensor, codes[i] = ref.struct, DPK_TYPE_TENSOR
            elif isinstance(arg, (bool, int, np.integer)):
                values[i].v_int64, codes[i] = int(arg), DPK_TYPE_INT
            elif isinstance(arg, (float, np.floating)):
                values[i].v_float64, codes[i] = float(arg), DPK_TYPE_FLOAT
            elif isinstance(arg, str):
                text = ffi.new("char[]", arg.encode())
                keep.append(text)
                values[i].v_str, codes[i] = text, DPK_TYPE_STR
            elif arg is None:
                codes[i] = DPK_TYPE_NULL
            else:
                raise errors.InvalidArgumentError(
                    f"argument {i} of '{self.name}' is a {type(arg).__name__}; "
                    "pass numpy arrays, ints, floats, strings or None")
        ret, ret_code = ffi.new("dpk_value *"), ffi.new("int *", DPK_TYPE_NULL)
        status = lib.dpk_py_call(self._fn, self._resource, values, codes, len(args), ret, ret_code)
        if status:
            message = ffi.string(lib.dpk_last_error()).decode("utf-8", "replace")
            raise errors.InternalError(f"'{self.name}' failed: {message}")
        code = ret_code[0]
        if code == DPK_TYPE_INT:
            return ret.v_int64
        if code == DPK_TYPE_FLOAT:
            return ret.v_float64
        if code == DPK_TYPE_STR:
            return ffi.string(ret.v_str).decode()
        return None


def load(path: str | os.PathLike, *, verify: bool = False, populate: bool = False, pubkey=None,
         num_threads: int | None = None) -> Model:
    """Load a dsopack model file. `verify` checks every checksum first (O(file size)).

    `num_threads` caps the threads a run uses; None: DPK_NUM_THREADS if set, else
    the CPUs this process may run on.

    `pubkey` (a KEY.pub path, or 32 raw Ed25519 public key bytes) requires the
    file to be signed by that key (`dsopack sign`): checked on the bytes that
    get loaded, before any code of the file runs; UnauthenticatedError if not."""
    return Model(path, verify=verify, populate=populate, pubkey=pubkey, num_threads=num_threads)
