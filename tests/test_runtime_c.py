"""The C runtime core (runtime_c): file, blob, manifest, registry, model, dso,
params and graph kinds, npy and dpk-run.

Model files are made by hand here: a C file of packed kernels (including only
dpk_abi.h), a params payload and a graph payload written with
packager.blob.BlobWriter and the `.incbin` stub, linked with gcc -shared.
Outputs are compared with NumPy; every error path is checked for its message.
A small C program (tests/c/test_api.c) checks the API directly, threads
included.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
import xxhash

from packager.blob import BlobWriter, write_incbin_stub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "runtime_c", "include")
CC = os.environ.get("CC", "gcc")

KERNELS = r"""
#include "dpk_abi.h"
DPK_EXPORT const dpk_backend_api *__dpk_api = 0;

/* y[1,N] = x[1,K] @ W[N,K].T + b[N] */
DPK_EXPORT int host_dense_0(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                            void *resource) {
  (void)ret; (void)ret_code; (void)resource;
  if (nargs != 4) { __dpk_api->set_error("host_dense_0 takes 4 tensors, got %d", nargs); return -1; }
  for (int i = 0; i < 4; i++) if (codes[i] != DPK_TYPE_TENSOR) { __dpk_api->set_error("arg %d is not a tensor", i); return -1; }
  const float *x = args[0].v_tensor->data, *w = args[1].v_tensor->data, *b = args[2].v_tensor->data;
  float *y = args[3].v_tensor->data;
  int64_t n = args[1].v_tensor->shape[0], k = args[1].v_tensor->shape[1];
  for (int64_t i = 0; i < n; i++) {
    float acc = b[i];
    for (int64_t j = 0; j < k; j++) acc += x[j] * w[i * k + j];
    y[i] = acc;
  }
  return 0;
}

DPK_EXPORT int host_relu_1(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                           void *resource) {
  (void)codes; (void)ret; (void)ret_code; (void)resource;
  if (nargs != 2) { __dpk_api->set_error("host_relu_1 takes 2 tensors, got %d", nargs); return -1; }
  const DLTensor *x = args[0].v_tensor;
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++) n *= x->shape[i];
  const float *in = x->data;
  float *out = args[1].v_tensor->data;
  for (int64_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : 0;
  return 0;
}

DPK_EXPORT int host_fail_2(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                           void *resource) {
  (void)args; (void)codes; (void)nargs; (void)ret; (void)ret_code; (void)resource;
  __dpk_api->set_error("the kernel refuses: code %d", 42);
  return 1;
}
"""

K, N = 4, 3


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal(N).astype(np.float32)


def reference(x, w, b):
    return np.maximum(x @ w.T + b, 0)


def graph_payload(fail=False):
    calls = [{"func": "host_dense_0", "args": [0, 1, 2, 3]}, {"func": "host_relu_1", "args": [3, 4]}]
    if fail:
        calls.append({"func": "host_fail_2", "args": [4]})
    return {
        "version": 1,
        "arena_bytes": 64,
        "tensors": [
            {"name": "x", "dtype": "float32", "shape": [1, K], "storage": "input", "index": 0},
            {"name": "fc.weight", "dtype": "float32", "shape": [N, K], "storage": "param"},
            {"name": "fc.bias", "dtype": "float32", "shape": [N], "storage": "param"},
            {"name": "h", "dtype": "float32", "shape": [1, N], "storage": "arena", "offset": 0},
            {"name": "y", "dtype": "float32", "shape": [1, N], "storage": "output", "index": 0},
        ],
        "calls": calls,
    }


def build_model(directory, name="m", *, edit=None, graph=None, weight_codec="raw", kernels=KERNELS, seed=0,
                patch_blob=None):
    """Write, compile and link a model; return its path.

    `edit(manifest)` changes the manifest dict in place before it is written;
    `patch_blob(bytes) -> bytes` changes the blob file before it is linked."""
    directory = str(directory)
    w, b = weights(seed)
    writer = BlobWriter()
    graph = graph_payload() if graph is None else graph
    graph_desc = writer.add(json.dumps(graph).encode(), codec="zstd")
    w_desc = writer.add(w, codec=weight_codec, align=4096)
    b_desc = writer.add(b, align=64)
    manifest = {
        "format": "dsopack/1",
        "name": name,
        "producer": {"dsopack": "test"},
        "target": {"triple": "x86_64-linux-gnu", "machine": "x86_64"},
        "requires": [],
        "checksum": "xxh3-64",
        "entry": "main",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [1, K]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [1, N]}],
        "modules": [
            {"name": "lib", "kind": "dso", "functions": ["host_dense_0", "host_relu_1"]},
            {"name": "weights", "kind": "params", "tensors": {
                "fc.weight": {"dtype": "float32", "shape": [N, K], **w_desc},
                "fc.bias": {"dtype": "float32", "shape": [N], **b_desc}}},
            {"name": "main", "kind": "graph", "imports": ["lib", "weights"], "payload": graph_desc},
        ],
    }
    if edit:
        edit(manifest)
    blob = os.path.join(directory, f"{name}.blob")
    writer.write(blob, manifest)
    if patch_blob:
        with open(blob, "rb") as f:
            data = f.read()
        with open(blob, "wb") as f:
            f.write(patch_blob(data))
    src, stub, out = (os.path.join(directory, f"{name}{ext}") for ext in (".c", ".s", ".so"))
    with open(src, "w") as f:
        f.write(kernels)
    write_incbin_stub(stub, blob)
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-fvisibility=hidden", "-I", INCLUDE, src, stub, "-o", out],
                   check=True, capture_output=True)
    return out


# ---- byte surgery on blobs and files ---------------------------------------------------------------

HEADER = struct.Struct("<8sHHIQQQQQ")


def reseal(blob: bytes, manifest: bytes | None = None, **fields) -> bytes:
    """Replace header fields and/or the manifest (it must fit before the payload
    area) and recompute the manifest and header checksums."""
    names = ["magic", "major", "minor", "flags", "moff", "msize", "poff", "psize", "mcheck"]
    h = dict(zip(names, HEADER.unpack_from(blob)))
    out = bytearray(blob)
    if manifest is not None:
        assert h["moff"] + len(manifest) <= h["poff"]
        out[h["moff"]:h["poff"]] = manifest + bytes(h["poff"] - h["moff"] - len(manifest))
        h["msize"] = len(manifest)
        h["mcheck"] = xxhash.xxh3_64_intdigest(manifest)
    h.update(fields)
    header = HEADER.pack(*(h[n] for n in names))
    out[:64] = header + struct.pack("<Q", xxhash.xxh3_64_intdigest(header))
    return bytes(out)


def manifest_of(blob: bytes) -> bytes:
    _, _, _, _, moff, msize, *_ = HEADER.unpack_from(blob)
    return blob[moff:moff + msize]


def section_offset(data: bytes) -> int:
    """File offset of the .dpk section (4096-aligned, starts with the magic)."""
    offset = data.find(b"DSOPACK\0")
    while offset % 4096:
        offset = data.find(b"DSOPACK\0", offset + 1)
    assert offset > 0
    return offset


def corrupt_copy(path, tmp_path, name, fn):
    """Copy the model file, let fn(bytearray, section_offset) change it."""
    data = bytearray(open(path, "rb").read())
    fn(data, section_offset(data))
    out = str(tmp_path / name)
    with open(out, "wb") as f:
        f.write(data)
    return out


def dpk_section_header(data: bytes) -> int:
    """File offset of the .dpk entry in the ELF section header table."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_off, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 24)
    for i in range(shnum):
        entry = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, entry)
        if data[names_off + name:names_off + name + 5] == b".dpk\0":
            return entry
    raise AssertionError("no .dpk section")


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("model"))


def run(dpk_run, *args, ok=True):
    result = subprocess.run([dpk_run, *map(str, args)], capture_output=True, text=True)
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1, (result.stdout, result.stderr)
    return result


def run_error(dpk_run, *args):
    result = run(dpk_run, *args, ok=False)
    assert result.stderr.startswith("dpk-run: "), result.stderr
    return result.stderr


# ---- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_dpk_run_matches_numpy(dpk_run, tmp_path, codec):
    path = build_model(tmp_path, weight_codec=codec)
    x = np.random.default_rng(1).standard_normal((1, K)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = run(dpk_run, path, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy", "--verify", "--repeat", "3")
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (1, N)
    np.testing.assert_allclose(y, reference(x, *weights()), rtol=1e-6)
    assert "y: float32[1, 3] =" in out.stdout and "load:" in out.stdout and "mean over 3 runs" in out.stdout


def test_dpk_run_writes_an_output_directory(dpk_run, model, tmp_path):
    x = np.ones((1, K), np.float32)
    np.save(tmp_path / "x.npy", x)
    run(dpk_run, model, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "out")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), reference(x, *weights()), rtol=1e-6)


def test_dpk_run_random_inputs_are_reproducible(dpk_run, model, tmp_path):
    run(dpk_run, model, "--random", "-o", tmp_path / "a.npy")
    run(dpk_run, model, "--random", "-o", tmp_path / "b.npy", "--populate")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_dpk_run_usage_errors(dpk_run, model, tmp_path):
    assert "usage: dpk-run" in run(dpk_run, "--help").stdout
    assert "usage: dpk-run" in run(dpk_run, ok=False).stderr
    assert "unknown option '--bogus'" in run_error(dpk_run, model, "--bogus")
    assert "--repeat needs a positive integer, not 'x'" in run_error(dpk_run, model, "--random", "--repeat", "x")
    assert "missing input 'x' (float32[1, 4]): give x=FILE.npy, or --random" in run_error(dpk_run, model)
    assert "the model has no input 'z' (inputs: x)" in run_error(dpk_run, model, "z=a.npy")
    assert f"cannot open '{tmp_path}/none.npy'" in run_error(dpk_run, model, f"x={tmp_path}/none.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    assert "is not a .npy file" in run_error(dpk_run, model, f"x={tmp_path}/bad.npy")
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("array, message", [
    (np.zeros((1, K - 1), np.float32), "input 'x' has shape [1, 3] but the model expects float32[1, 4]"),
    (np.zeros((1, K), np.float64), "input 'x' has dtype float64 but the model expects float32[1, 4]"),
    (np.zeros((K,), np.float32), "input 'x' has shape [4] but the model expects float32[1, 4]"),
])
def test_wrong_input_shape_or_dtype(dpk_run, model, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    assert message in run_error(dpk_run, model, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    assert not (tmp_path / "y.npy").exists()


def test_npy_fortran_order_and_big_endian_are_refused(dpk_run, model, tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((1, K), np.float32).repeat(2, axis=0)))
    assert "is in Fortran order" in run_error(dpk_run, model, f"x={tmp_path / 'f.npy'}")
    np.save(tmp_path / "b.npy", np.zeros((1, K), ">f4"))
    assert "is big-endian (>f4)" in run_error(dpk_run, model, f"x={tmp_path / 'b.npy'}")
    np.save(tmp_path / "c.npy", np.zeros((1, K), np.complex64))
    assert "has dtype '<c8'" in run_error(dpk_run, model, f"x={tmp_path / 'c.npy'}")
    data = (tmp_path / "b.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(np.lib.format.magic(1, 0) + data[8:-4].replace(b">f4", b"<f4"))
    assert "the header promises 16 bytes of data but the file holds 12" in run_error(
        dpk_run, model, f"x={tmp_path / 't.npy'}")
