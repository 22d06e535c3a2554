"""onnxruntime with the loader model's interface (`run(**inputs) -> dict`, `inputs`, `outputs`, `dims`, `plans`),
so that the serving benchmarks run it behind dsopack's own server code (`Served(path, opener=...)`, the Ray
deployment's `opener`) for a side-by-side comparison."""

from __future__ import annotations

import numpy as np

import loader


class OrtModel:
    """An onnxruntime session on `onnx_path` with `threads` intra-op threads. Its inputs, outputs, dims and plans
    are those of the dsopack file `like` built from the same ONNX (so a server binds both alike, batching
    included); without one, the session's own, which must be static float32 (no dims, no plans)."""

    def __init__(self, onnx_path: str, threads: int = 1, like: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        if like is not None:
            with loader.load(like) as model:
                self.inputs, self.outputs, self.dims, self.plans = model.inputs, model.outputs, model.dims, model.plans
        else:
            self.inputs, self.outputs = self._static(self.session.get_inputs()), self._static(self.session.get_outputs())
            self.dims, self.plans = [], []
        names = [i.name for i in self.session.get_inputs()]
        if names != [i.name for i in self.inputs]:
            raise ValueError(f"{onnx_path} has inputs {names}, {like} {[i.name for i in self.inputs]}")
        self._outputs = [o.name for o in self.outputs]

    def _static(self, values) -> list:
        for v in values:
            if v.type != "tensor(float)" or not all(isinstance(s, int) for s in v.shape):
                raise ValueError(f"{v.name} is {v.type}{v.shape}; without a dsopack file to follow, OrtModel takes "
                                 "static float32 tensors")
        return [loader.TensorInfo(v.name, tuple(v.shape), np.dtype(np.float32)) for v in values]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, inputs)))
