"""What the serving tests share (test_serve.py: Triton; test_ray_serve.py: Ray Serve): the served files, the
reference answer and the v2 protocol's JSON."""

from __future__ import annotations

import os
import socket

import numpy as np

from packager import signing
from packager.build import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(ROOT, "manifests")
RANGED = """name: ranged
model:
  graph:
    inputs: {x: {shape: ["batch=1..8", "n=2..16"], dtype: float32}}
    nodes: [{op: relu, inputs: [x], output: y}]
    outputs: [y]
"""
WEIGHTS = os.path.join(MANIFESTS, "digits_mlp.npz")


def build_files(d) -> tuple[dict, dict]:
    """Into directory `d`: digits_batch.so (batch 1..64), digits.so (one shape), ranged.so (batch 1..8, n
    2..16), new.so (digits_batch with other weights) and the key pair release.key / release.key.pub.
    Returns the weights of digits_batch.so and of new.so."""
    weights = dict(np.load(WEIGHTS))
    changed = dict(weights, **{"fc2.bias": weights["fc2.bias"] + np.arange(10, dtype=np.float32)})
    np.savez(d / "changed.npz", **changed)
    with open(os.path.join(MANIFESTS, "digits_mlp_batch.yaml")) as f:
        text = f.read().replace("weights: digits_mlp.npz", f"weights: {d / 'changed.npz'}")
    (d / "changed.yaml").write_text(text)
    build(str(d / "changed.yaml"), str(d / "new.so"), quiet=True)
    build(os.path.join(MANIFESTS, "digits_mlp_batch.yaml"), str(d / "digits_batch.so"), quiet=True)
    build(os.path.join(MANIFESTS, "digits_mlp.yaml"), str(d / "digits.so"), quiet=True)
    (d / "ranged.yaml").write_text(RANGED)
    build(str(d / "ranged.yaml"), str(d / "ranged.so"), quiet=True)
    signing.keygen(str(d / "release.key"))
    return weights, changed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reference(x: np.ndarray, weights: dict) -> np.ndarray:
    """digits_mlp in NumPy: scale, dense, relu, dense, softmax."""
    h = np.maximum((x * weights["pixel_scale"]) @ weights["fc1.weight"].T + weights["fc1.bias"], 0)
    logits = h @ weights["fc2.weight"].T + weights["fc2.bias"]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def json_input(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}]}


def probs_of(answer: dict) -> np.ndarray:
    (out,) = answer["outputs"]
    assert out["name"] == "probs" and out["datatype"] == "FP32"
    return np.asarray(out["data"], np.float32).reshape(out["shape"])
