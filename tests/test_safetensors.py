"""Weights from .safetensors files (packager/frontends/safetensors.py): a YAML graph's `weights:` may
name one; the files are written by the safetensors package (the reference), read by dsopack's own
mapping reader, and every malformed file is refused naming the manifest field, the file and the tensor."""

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import loader
from packager.build import build
from packager.frontends import safetensors
from packager.ir import BuildError

RNG = np.random.default_rng(0)
W = {"w1": RNG.standard_normal((40, 16)).astype(np.float32), "b1": RNG.standard_normal(40).astype(np.float32),
     "w2": RNG.standard_normal((5, 40)).astype(np.float32)}
NODES = [{"op": "dense", "inputs": ["x", "w1", "b1"], "output": "h"},
         {"op": "relu", "inputs": ["h"], "output": "r"},
         {"op": "dense", "inputs": ["r", "w2"], "output": "y"}]


def spec(weights: str) -> dict:
    return {"name": "st", "backends": ["cblas", "host"],
            "model": {"graph": {"inputs": {"x": {"shape": [8, 16]}}, "weights": weights, "nodes": NODES,
                                "outputs": ["y"]}}}


def test_a_safetensors_file_builds_the_same_model_as_the_npz(tmp_path):
    save_file(W, str(tmp_path / "w.safetensors"), metadata={"format": "np"})
    np.savez(tmp_path / "w.npz", **W)
    arrays = safetensors.load(str(tmp_path / "w.safetensors"))
    assert all(isinstance(a, np.memmap) for a in arrays.values())  # mapped, not read
    for name, array in W.items():
        np.testing.assert_array_equal(arrays[name], array)
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    outs = []
    for weights in ("w.safetensors", "w.npz"):
        build(spec(str(tmp_path / weights)), tmp_path / "m.so", quiet=True)
        with loader.load(tmp_path / "m.so") as m:
            outs.append(m.run(x=x)["y"])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], np.maximum(x @ W["w1"].T + W["b1"], 0) @ W["w2"].T, rtol=1e-4, atol=1e-4)


def raw(header: dict, data: bytes = b"", size: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if size is None else size) + text + data


@pytest.mark.parametrize("content, says", [
    (b"\x01\x02", "the file has 2 bytes, fewer than the 8 of the header size"),
    (raw({}, size=1 << 40), "the header claims 1099511627776 bytes"),
    (struct.pack("<Q", 3) + b"{no", "the header is not JSON"),
    (raw([1, 2]), "the header is not a JSON object of tensors"),
    (raw({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "tensor 'w' has dtype 'BF16'"),
    (raw({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}, b"\0" * 8),
     r"tensor 'w' has shape \[2, -1\]"),
    (raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8),
     r"tensor 'w' has data_offsets \[0\], not"),
    (raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}, b"\0" * 8),
     r"tensor 'w' \(float32\[3\], 12 bytes\) has data_offsets \[0, 12\], outside the 8 bytes of data"),
    (raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8), "or of another size"),
    (raw({"w": 7}), "tensor 'w' is not a JSON object"),
])
def test_a_malformed_safetensors_file_is_refused_by_name(tmp_path, content, says):
    (tmp_path / "bad.safetensors").write_bytes(content)
    with pytest.raises(BuildError, match=r"model.graph.weights: cannot read '.*bad.safetensors' as a .safetensors "
                                         rf"file: .*{says}"):
        build(spec(str(tmp_path / "bad.safetensors")), tmp_path / "m.so", quiet=True)


def test_npz_weights_are_mapped_too_unless_compressed(tmp_path):
    """numpy.savez stores members uncompressed: they are mapped from the file (and stream into the blob);
    numpy.savez_compressed's are read; both build the same model."""
    from packager import blob as blob_mod
    from packager.spec import load
    np.savez(tmp_path / "w.npz", **W)
    np.savez_compressed(tmp_path / "c.npz", **W)
    mapped = load(spec(str(tmp_path / "w.npz"))).graph.weights
    read = load(spec(str(tmp_path / "c.npz"))).graph.weights
    assert all(isinstance(a, np.memmap) and blob_mod.file_range(a) for a in mapped.values())
    assert not any(isinstance(a, np.memmap) for a in read.values())
    for name, array in W.items():
        np.testing.assert_array_equal(mapped[name], array)
        np.testing.assert_array_equal(read[name], array)
