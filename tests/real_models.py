"""The committed real architectures (tests/models/real, made by make_real_models.py) with their weights
filled from a seed: the graphs are the exporters' own, the numbers are ours.

A stripped initializer (doc_string STRIPPED) gets values that keep activations in range: a matrix or
kernel N(0, 1/fan_in) (fan_in: the product of all dims but the first), a vector (biases, norm scales,
running variances) uniform in [0.5, 1.5], positive so a variance stays one.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "real")
STRIPPED = "dsopack:stripped"


def names() -> list[str]:
    """'resnet18.dynamo', 'lstm.script'...: every committed model."""
    return sorted(f[:-5] for f in os.listdir(FOLDER) if f.endswith(".onnx"))


def filled(name: str, seed: int = 0) -> onnx.ModelProto:
    model = onnx.load(os.path.join(FOLDER, f"{name}.onnx"))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        if init.doc_string != STRIPPED:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        shape = tuple(init.dims)
        if len(shape) >= 2:
            values = rng.standard_normal(shape) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        else:
            values = rng.uniform(0.5, 1.5, shape)
        init.CopyFrom(numpy_helper.from_array(values.astype(dtype), init.name))
    return model


def feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input: floats N(0, 1), integers (token ids) in [0, 100)."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        out[value.name] = (rng.integers(0, 100, shape) if np.dtype(dtype).kind in "iu"
                           else rng.standard_normal(shape)).astype(dtype)
    return out
