"""A tiny Python stand-in for the runtime, for packager tests: runs a built
file's graph with ctypes, calling the generated kernels of the `dso` module.

Independent of libdpk and the loader, so packager tests check numerics on
their own. Only graphs whose calls all live in `lib` (host kernels) run here.
"""

from __future__ import annotations

import ctypes
import json

import numpy as np

from packager.dpkfile import DpkFile

DL_CODES = {"f": 2, "i": 0, "u": 1, "b": 6}


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class Value(ctypes.Union):
    _fields_ = [("v_int64", ctypes.c_int64), ("v_float64", ctypes.c_double), ("v_handle", ctypes.c_void_p),
                ("v_str", ctypes.c_char_p), ("v_tensor", ctypes.POINTER(DLTensor))]


SET_ERROR = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


class Api(ctypes.Structure):
    _fields_ = [("abi_version", ctypes.c_uint32), ("set_error", SET_ERROR)]


PACKED = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(Value), ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                          ctypes.POINTER(Value), ctypes.POINTER(ctypes.c_int), ctypes.c_void_p)


class KernelError(RuntimeError):
    pass


class PyModel:
    def __init__(self, path: str) -> None:
        self.file = DpkFile(path)
        self.manifest = self.file.manifest
        modules = {m["name"]: m for m in self.manifest["modules"]}
        self.graph = json.loads(self.file.decoded(modules[self.manifest["entry"]]["payload"]))
        self.params = {}
        for m in modules.values():
            for name, d in (m.get("tensors") or {}).items():
                raw = self.file.decoded(d)
                self.params[name] = np.frombuffer(raw, dtype=d["dtype"]).reshape(d["shape"])
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        self.errors: list[str] = []
        self._cb = SET_ERROR(lambda msg: self.errors.append(msg.decode()))
        self._api = Api(1, self._cb)
        ctypes.c_void_p.in_dll(self.lib, "__dpk_api").value = ctypes.addressof(self._api)
        self.functions = set(modules["lib"].get("functions", []))

    def run(self, **inputs) -> dict[str, np.ndarray]:
        return {o["name"]: a for o, a in zip(self.manifest["outputs"], self.run_list(**inputs))}

    def run_list(self, **inputs) -> list[np.ndarray]:
        """The outputs in the manifest's order (names may repeat)."""
        g = self.graph
        arena = np.zeros(g["arena_bytes"] + 64, np.uint8)
        base = (-arena.ctypes.data) % 64
        outs = [np.empty(o["shape"], o["dtype"]) for o in self.manifest["outputs"]]
        ins = [np.ascontiguousarray(inputs[i["name"]], dtype=i["dtype"]) for i in self.manifest["inputs"]]
        arrays = []
        for t in g["tensors"]:
            if t["storage"] == "input":
                arrays.append(ins[t["index"]])
            elif t["storage"] == "output":
                arrays.append(outs[t["index"]])
            elif t["storage"] == "param":
                arrays.append(self.params[t["name"]])
            else:
                n = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize
                start = base + t["offset"]
                arrays.append(arena[start:start + n].view(t["dtype"]).reshape(t["shape"]))
        keep = []
        for call in g["calls"]:
            if call["func"] not in self.functions:
                raise NotImplementedError(f"{call['func']} is not a host kernel")
            fn = PACKED(getattr(self.lib, call["func"]))
            values = (Value * len(call["args"]))()
            codes = (ctypes.c_int * len(call["args"]))(*[7] * len(call["args"]))
            for j, idx in enumerate(call["args"]):
                a = arrays[idx]
                shape = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
                t = DLTensor(a.ctypes.data, 1, 0, a.ndim, DL_CODES[a.dtype.kind], a.dtype.itemsize * 8, 1,
                             shape, None, 0)
                keep += [shape, t]
                values[j].v_tensor = ctypes.pointer(t)
            rc = fn(values, codes, len(call["args"]), None, None, None)
            if rc != 0:
                raise KernelError(f"{call['func']}: {self.errors[-1] if self.errors else rc}")
        return outs
