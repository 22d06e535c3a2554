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
import reference as ref
from section import elf_sections

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
    """relu(x @ w.T + b) as a ref.Approx (float64 value, float32 rounding bound)."""
    return ref.unary_approx(ref.relu, ref.dense_approx(x, w, b))


def assert_matches(got, want, factor: float = 1.0):
    """got == factor * want within want's bound (factor: the scale kind's 2.5, one more rounding)."""
    value = factor * want.value
    ref.assert_close(got, ref.Approx(value, factor * want.err + ref.EPS32 / 2 * np.abs(value)))


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
                patch_blob=None, add=None):
    """Write, compile and link a model; return its path.

    `add(writer, manifest)` may place more payloads and modules; `edit(manifest)`
    changes the manifest dict in place before it is written; `patch_blob(bytes)
    -> bytes` changes the blob file before it is linked."""
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
    if add:
        add(writer, manifest)
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
    assert_matches(y, reference(x, *weights()))
    assert "y: float32[1, 3] =" in out.stdout and "load:" in out.stdout and "mean over 3 runs" in out.stdout


def test_dpk_run_writes_an_output_directory(dpk_run, model, tmp_path):
    x = np.ones((1, K), np.float32)
    np.save(tmp_path / "x.npy", x)
    run(dpk_run, model, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "out")
    assert_matches(np.load(tmp_path / "out" / "y.npy"), reference(x, *weights()))


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


# ---- the C API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_api(dpk_build, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("test_api") / "test_api")
    runtime = os.path.join(ROOT, "runtime_c")
    subprocess.run([CC, "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror",
                    "-O1", "-g", "-I", os.path.join(runtime, "include"), "-I", os.path.join(runtime, "src"),
                    "-I", os.path.join(runtime, "tools"), os.path.join(ROOT, "tests", "c", "test_api.c"),
                    os.path.join(runtime, "tools", "npy.c"), os.path.join(dpk_build, "libdpk.a"),
                    "-lzstd", "-lyaml", "-lxxhash", "-lsodium", "-ldl", "-lpthread", "-lm", "-o", out], check=True)
    return out


def api(test_api, *args):
    """Run tests/c/test_api.c; its stdout (status lines), asserting it passed."""
    result = subprocess.run([test_api, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def load_error(test_api, path, verify=False):
    out = api(test_api, "load", path, *(["verify"] if verify else [])).strip()
    assert out != "OK", "the load should have failed"
    return out


def test_api_accessors_functions_run_errors_kinds_npy(test_api, model, tmp_path):
    api(test_api, "api", model, tmp_path)


def test_concurrent_runs_give_identical_outputs(test_api, model):
    api(test_api, "threads", model, 8)


def test_load_and_verify_ok(test_api, model):
    assert api(test_api, "load", model, "verify") == "OK\n"
    assert api(test_api, "open", model) == "OK\nOK\n"


# ---- errors: the file and the section ----------------------------------------------------------------


def test_missing_file(test_api, tmp_path):
    path = tmp_path / "none.so"
    assert load_error(test_api, path) == f"NOT_FOUND: cannot open '{path}': No such file or directory"


def test_not_an_elf_file(test_api, dpk_run, tmp_path):
    path = tmp_path / "text.so"
    path.write_text("hello, this is not an ELF file at all; it is long enough for a header. " * 2)
    assert load_error(test_api, path) == f"DATA_LOSS: '{path}' is not an ELF file"
    (tmp_path / "tiny.so").write_bytes(b"\x7fELF")
    assert load_error(test_api, tmp_path / "tiny.so") == f"DATA_LOSS: '{tmp_path / 'tiny.so'}' is not an ELF file"
    assert f"dpk-run: '{path}' is not an ELF file" in run_error(dpk_run, path, "--random")


def test_elf_without_dpk_section(test_api, tmp_path):
    src, out = tmp_path / "plain.c", tmp_path / "plain.so"
    src.write_text("int plain(void) { return 1; }\n")
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    assert load_error(test_api, out) == f"NOT_FOUND: '{out}' has no .dpk section: not a dsopack model"


def test_elf32_and_big_endian_are_unimplemented(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "elf32.so", lambda d, off: d.__setitem__(4, 1))
    assert load_error(test_api, path) == f"UNIMPLEMENTED: '{path}' is a 32-bit ELF file; this runtime reads ELF64 only"
    path = corrupt_copy(model, tmp_path, "be.so", lambda d, off: d.__setitem__(5, 2))
    assert "UNIMPLEMENTED: " in load_error(test_api, path) and "big-endian" in load_error(test_api, path)


def with_machine(manifest_machine: bytes | None, e_machine: int | None):
    """A corrupt_copy callback: the manifest's target.machine and/or the ELF e_machine changed."""
    def patch(data, off):
        if e_machine is not None:
            struct.pack_into("<H", data, 0x12, e_machine)
        if manifest_machine is not None:
            def edit(blob):
                h = HEADER.unpack_from(blob)
                manifest = blob[h[4]:h[4] + h[5]].replace(b"machine: x86_64", b"machine: " + manifest_machine)
                return reseal(blob, manifest=manifest)
            patch_section(edit)(data, off)
    return patch


def test_other_machine(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "arm.so", with_machine(b"aarch64", 183))
    assert load_error(test_api, path) == f"UNIMPLEMENTED: '{path}' is built for aarch64 but this machine is x86_64"


def test_manifest_machine_must_match_the_elf_header(test_api, model, tmp_path):
    """A file whose manifest and code disagree on the machine is corrupt, on any host (open, not only load)."""
    for name, patch, manifest, elf in [("elf_arm.so", with_machine(None, 183), "x86_64", "aarch64"),
                                       ("manifest_arm.so", with_machine(b"aarch64", None), "aarch64", "x86_64")]:
        path = corrupt_copy(model, tmp_path, name, patch)
        assert load_error(test_api, path) == (f"DATA_LOSS: '{path}': the manifest says target.machine {manifest} "
                                              f"but the ELF header says {elf}: the file is corrupt")


def test_wrong_magic(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "magic.so", lambda d, off: d.__setitem__(off, ord("X")))
    assert load_error(test_api, path) == (
        f"DATA_LOSS: '{path}': the .dpk section does not start with the magic \"DSOPACK\"")


def patch_section(fn):
    """A corrupt_copy callback that rewrites the blob in place with fn(blob) -> blob of the same size."""
    def patch(data, off):
        _, _, _, _, _, _, poff, psize, _ = HEADER.unpack_from(data, off)
        blob = bytes(data[off:off + poff + psize])
        new = fn(blob)
        assert len(new) == len(blob)
        data[off:off + len(new)] = new
    return patch


def test_newer_major_is_refused_naming_both_versions(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "v2.so", patch_section(lambda b: reseal(b, major=2, minor=3)))
    assert load_error(test_api, path) == f"UNIMPLEMENTED: '{path}' is format 2.3 but this runtime reads format 1.x"
    # a newer minor is fine
    path = corrupt_copy(model, tmp_path, "v1_7.so", patch_section(lambda b: reseal(b, minor=7)))
    assert api(test_api, "load", path, "verify") == "OK\n"


def test_header_and_manifest_checksums(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "hsum.so", lambda d, off: d.__setitem__(off + 12, 1))  # flags
    assert load_error(test_api, path).startswith(f"DATA_LOSS: '{path}': header checksum mismatch (stored ")

    def flip_manifest(d, off):
        d[off + 64 + 7] ^= 0x20  # "format: dsopack/1" -> "format: Dsopack/1"
    path = corrupt_copy(model, tmp_path, "msum.so", flip_manifest)
    assert load_error(test_api, path).startswith(f"DATA_LOSS: '{path}': manifest checksum mismatch (stored ")


def test_truncated_section(test_api, model, tmp_path):
    def shrink(size):
        def fn(d, off):
            struct.pack_into("<Q", d, elf_sections(bytes(d))[".dpk"].entry + 32, size)
        return fn
    path = corrupt_copy(model, tmp_path, "short.so", shrink(4096 + 100))
    message = load_error(test_api, path)
    assert message.startswith(f"OUT_OF_RANGE: '{path}': the payload area (offset 4096, ")
    assert "but the .dpk section has 4196 bytes (truncated?)" in message
    path = corrupt_copy(model, tmp_path, "tiny.so", shrink(32))
    assert load_error(test_api, path) == (
        f"OUT_OF_RANGE: '{path}': the .dpk section has 32 bytes, less than its 64-byte header")
    path = corrupt_copy(model, tmp_path, "huge.so", shrink(1 << 40))
    assert "ends past the end of the file" in load_error(test_api, path)


def test_manifest_offset_past_the_section(test_api, model, tmp_path):
    path = corrupt_copy(model, tmp_path, "moff.so", patch_section(lambda b: reseal(b, msize=1 << 50)))
    assert "OUT_OF_RANGE: " in load_error(test_api, path)
    assert "the manifest (offset 64, 1125899906842624 bytes) is outside the .dpk section" in load_error(test_api, path)


def test_malformed_yaml(test_api, model, tmp_path):
    def bad_yaml(blob):
        return reseal(blob, manifest=b"format: dsopack/1\nmodules: [unclosed, {\n")
    path = corrupt_copy(model, tmp_path, "yaml.so", patch_section(bad_yaml))
    message = load_error(test_api, path)
    assert message.startswith(f"DATA_LOSS: manifest of '{path}': the manifest is not valid YAML: ")
    assert "at line 3" in message


# ---- errors: manifest fields ---------------------------------------------------------------------


def edit_module(index, **fields):
    def edit(manifest):
        manifest["modules"][index].update(fields)
    return edit


def edit_payload(index, **fields):
    def edit(manifest):
        manifest["modules"][index]["payload"].update(fields)
    return edit


def edit_tensor(name, **fields):
    def edit(manifest):
        manifest["modules"][1]["tensors"][name].update(fields)
    return edit


@pytest.mark.parametrize("edit, expected", [
    (edit_payload(2, size="abc"),
     "FAILED_PRECONDITION: manifest of '{}': module 'main' field 'payload.size' must be a non-negative integer, "
     "not 'abc'"),
    (edit_payload(2, offset=[1]),
     "FAILED_PRECONDITION: manifest of '{}': module 'main' field 'payload.offset' must be a non-negative integer, "
     "not a sequence"),
    (edit_module(0, functions={"a": 1}),
     "FAILED_PRECONDITION: manifest of '{}': module 'lib' field 'functions' must be a sequence of names"),
    (edit_module(2, kind=["graph"]),
     "FAILED_PRECONDITION: manifest of '{}': module 'main' field 'kind' must be a string, not a sequence"),
    (edit_module(2, imports=["lib", "nowhere"]),
     "FAILED_PRECONDITION: manifest of '{}': module 'main' imports 'nowhere', which is not a module"),
    (edit_module(1, name="lib"), "FAILED_PRECONDITION: manifest of '{}': module 'lib' is declared twice"),
    (edit_tensor("fc.weight", dtype="float128"),
     "FAILED_PRECONDITION: manifest of '{}': module 'weights' tensor 'fc.weight' field 'dtype': unknown dtype "
     "'float128' (known: float32, float64, float16, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool)"),
    (edit_tensor("fc.weight", shape=[3, 5]),
     "FAILED_PRECONDITION: manifest of '{}': module 'weights' tensor 'fc.weight' is float32[3, 5] (15 elements of 4 "
     "bytes) but holds 48 bytes"),
    (edit_tensor("fc.bias", checksum="XYZ"),
     "FAILED_PRECONDITION: manifest of '{}': module 'weights' tensor 'fc.bias' field 'checksum' must be 16 lowercase hex "
     "digits, not 'XYZ'"),
    (edit_payload(2, codec="lz4"),
     "UNIMPLEMENTED: manifest of '{}': module 'main' field 'payload': codec 'lz4' is not supported (known: raw, zstd)"),
    (edit_payload(2, raw_size=None),
     "FAILED_PRECONDITION: manifest of '{}': module 'main' field 'payload.raw_size' is required for codec zstd"),
    (lambda m: m.update(entry="nothing"),
     "FAILED_PRECONDITION: manifest of '{}': field 'entry' names 'nothing', which is not a module"),
    (lambda m: m.update(inputs={"x": 1}),
     "FAILED_PRECONDITION: manifest of '{}': field 'inputs' must be a sequence of {{name, dtype, shape}}"),
    (lambda m: m["outputs"][0].update(shape=[1, -3]),
     "FAILED_PRECONDITION: manifest of '{}': output 'y' field 'shape' must be a non-negative integer, not '-3'"),
    (lambda m: m.update(target="x86"),
     "FAILED_PRECONDITION: manifest of '{}': field 'target' must be a mapping {{triple, machine}}"),
    (lambda m: m.update(format="dsopack/9"),
     "FAILED_PRECONDITION: manifest of '{}': field 'format' is 'dsopack/9' but the header says 'dsopack/1'"),
    (lambda m: m.pop("name"), "FAILED_PRECONDITION: manifest of '{}': field 'name' is missing"),
    (lambda m: m.update(checksum="md5"),
     "UNIMPLEMENTED: manifest of '{}': checksum algorithm 'md5' is not supported (known: xxh3-64)"),
])
def test_manifest_field_errors(test_api, tmp_path, edit, expected):
    def apply(manifest):
        edit(manifest)
        payload = manifest["modules"][2]["payload"]
        for key in [k for k, v in payload.items() if v is None]:
            del payload[key]
    path = build_model(tmp_path, edit=apply)
    assert load_error(test_api, path) == expected.format(path)


def test_payload_past_the_payload_area(test_api, tmp_path):
    path = build_model(tmp_path, edit=edit_payload(2, size=1 << 20))
    message = load_error(test_api, path)
    assert message.startswith(f"OUT_OF_RANGE: manifest of '{path}': module 'main' field 'payload' ends at ")
    assert "but the payload area has" in message
    path = build_model(tmp_path, name="w", edit=edit_tensor("fc.bias", offset=(1 << 64) - 64))
    assert "OUT_OF_RANGE: " in load_error(test_api, path) and "tensor 'fc.bias' ends at" in load_error(test_api, path)


def test_zstd_raw_size_mismatch(test_api, tmp_path):
    path = build_model(tmp_path, edit=lambda m: m["modules"][2]["payload"].update(
        raw_size=m["modules"][2]["payload"]["raw_size"] + 1))
    message = load_error(test_api, path)
    assert message.startswith(f"DATA_LOSS: '{path}': module 'main' payload: the zstd frame holds ")


# ---- errors: kinds, symbols, imports ---------------------------------------------------------------


def add_module(**module):
    def edit(manifest):
        manifest["modules"].append(module)
    return edit


def test_unknown_kind_lists_the_registered_kinds(test_api, tmp_path):
    path = build_model(tmp_path, edit=add_module(name="ext0", kind="foo"))
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': module 'ext0' has kind 'foo', which is not registered "
        "(registered: dso, graph, json, params)")


def test_symbol_listed_but_missing(test_api, tmp_path):
    path = build_model(tmp_path, edit=edit_module(0, functions=["host_dense_0", "host_x"]))
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': module 'lib' lists function 'host_x' but the file does not define it")
    # a symbol of a library the file links (libc's malloc) is not the file's
    path = build_model(tmp_path, name="libc", edit=edit_module(0, functions=["malloc"]))
    assert "module 'lib' lists function 'malloc' but the file does not define it" in load_error(test_api, path)


def test_graph_call_not_in_the_imports(test_api, tmp_path):
    graph = graph_payload()
    graph["calls"][1]["func"] = "host_gelu_9"
    path = build_model(tmp_path, graph=graph)
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': cannot load module 'main' (kind graph): module 'main' needs function 'host_gelu_9', "
        "which none of its imports provides")


def test_graph_payload_errors(test_api, tmp_path):
    graph = graph_payload()
    graph["tensors"][1]["shape"] = [K, N]
    path = build_model(tmp_path, name="a", graph=graph)
    assert load_error(test_api, path).endswith(
        "param tensor 'fc.weight' is float32[4, 3] but the imported tensor is float32[3, 4]")
    graph = graph_payload()
    graph["tensors"][3]["offset"] = 64
    path = build_model(tmp_path, name="b", graph=graph)
    assert load_error(test_api, path).endswith("arena tensor 'h' ends at 76 but arena_bytes is 64")
    graph = graph_payload()
    graph["tensors"][4]["storage"] = "arena"
    graph["tensors"][4]["offset"] = 0
    path = build_model(tmp_path, name="c", graph=graph)
    assert load_error(test_api, path).endswith("the graph has no tensor for output 'y'")
    graph = graph_payload()
    graph["tensors"][0]["name"] = "z"
    path = build_model(tmp_path, name="d", graph=graph)
    assert load_error(test_api, path).endswith("tensor 0 ('z') is input 0, which the manifest calls 'x'")
    graph = graph_payload()
    graph["calls"][0]["args"] = [0, 1, 2, 9]
    path = build_model(tmp_path, name="e", graph=graph)
    assert load_error(test_api, path).endswith(
        "call 0 (host_dense_0) field 'args': argument 3 is tensor 9 but the graph has 5 tensors")
    graph = graph_payload()
    graph["version"] = 2
    path = build_model(tmp_path, name="f", graph=graph)
    assert load_error(test_api, path).startswith("UNIMPLEMENTED: ")


def test_import_cycle(test_api, tmp_path):
    def cycle(manifest):
        manifest["modules"][0]["imports"] = ["weights"]
        manifest["modules"][1]["imports"] = ["main"]
    path = build_model(tmp_path, edit=cycle)
    assert load_error(test_api, path) == (
        f"FAILED_PRECONDITION: manifest of '{path}': the imports form a cycle: lib -> weights -> main -> lib")


def test_missing_shared_library(test_api, tmp_path):
    lib_src, lib = tmp_path / "dep.c", tmp_path / "libdpkdep.so"
    lib_src.write_text("int dpk_dep(void) { return 7; }\n")
    subprocess.run([CC, "-shared", "-fPIC", str(lib_src), "-o", str(lib)], check=True)
    kernels = KERNELS + "int dpk_dep(void);\nDPK_EXPORT int use_dep(void) { return dpk_dep(); }\n"
    directory = tmp_path / "m"
    directory.mkdir()
    path = build_model(directory, kernels=kernels)
    # relink against the dependency, then remove it
    src = str(directory / "m.c")
    subprocess.run([CC, "-shared", "-fPIC", "-fvisibility=hidden", "-I", INCLUDE, src, str(directory / "m.s"),
                    "-L", str(tmp_path), "-ldpkdep", "-o", path], check=True)
    os.remove(lib)
    message = load_error(test_api, path)
    assert message.startswith(f"NOT_FOUND: cannot load '{path}': libdpkdep.so: cannot open shared object file")


def test_kernel_failure_names_the_call(dpk_run, tmp_path):
    path = build_model(tmp_path, graph=graph_payload(fail=True),
                       edit=edit_module(0, functions=["host_dense_0", "host_relu_1", "host_fail_2"]))
    assert "dpk-run: call 2 (host_fail_2) failed: the kernel refuses: code 42" in run_error(dpk_run, path, "--random")


# ---- verify -----------------------------------------------------------------------------------------


def payload_area(data, off):
    _, _, _, _, _, _, poff, psize, _ = HEADER.unpack_from(data, off)
    return off + poff, psize


def test_verify_finds_a_changed_weight_naming_module_and_tensor(test_api, dpk_run, model, tmp_path):
    def flip(d, off):
        start, _ = payload_area(d, off)
        weight_at = start + 4096  # fc.weight is the first 4096-aligned payload after the graph
        d[weight_at + 5] ^= 1
    path = corrupt_copy(model, tmp_path, "w.so", flip)
    assert api(test_api, "load", path) == "OK\n"  # load does not hash weights
    message = load_error(test_api, path, verify=True)
    assert message.startswith(f"DATA_LOSS: '{path}': module 'weights' tensor 'fc.weight': checksum mismatch (manifest")
    assert "module 'weights' tensor 'fc.weight': checksum mismatch" in run_error(dpk_run, path, "--random", "--verify")
    assert api(test_api, "open", path).startswith("OK\nDATA_LOSS: ")


def test_verify_finds_a_changed_graph_payload_and_padding(test_api, model, tmp_path):
    def flip_graph(d, off):
        start, _ = payload_area(d, off)
        d[start + 10] ^= 1
    path = corrupt_copy(model, tmp_path, "g.so", flip_graph)
    assert f"DATA_LOSS: '{path}': module 'main' payload: checksum mismatch" in load_error(test_api, path, verify=True)

    def fill_gap(d, off):
        start, _ = payload_area(d, off)
        d[start + 4000] = 1  # between the graph payload and the first weight
    path = corrupt_copy(model, tmp_path, "gap.so", fill_gap)
    assert load_error(test_api, path, verify=True) == (
        f"DATA_LOSS: '{path}': byte 4000 of the payload area is outside every payload but not zero")

    def fill_padding(d, off):
        start, _ = payload_area(d, off)
        d[start - 1] = 1  # after the manifest, before the payload area
    path = corrupt_copy(model, tmp_path, "pad.so", fill_padding)
    assert load_error(test_api, path, verify=True) == (
        f"DATA_LOSS: '{path}': byte 4095 of the .dpk section is padding but not zero")


# ---- kinds carried by the model file -----------------------------------------------------------------

SCALE_KIND = r"""
#include <stdlib.h>
#include <string.h>

/* kind `scale`: the payload is a number as text; function scale_fn(x, y): y = factor * x */
static int scale_fn(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code, void *resource) {
  (void)codes; (void)ret; (void)ret_code;
  if (nargs != 2) { __dpk_api->set_error("scale_fn takes 2 tensors, got %d", nargs); return -1; }
  float factor = *(const float *)resource;
  const DLTensor *x = args[0].v_tensor;
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++) n *= x->shape[i];
  for (int64_t i = 0; i < n; i++) ((float *)args[1].v_tensor->data)[i] = factor * ((const float *)x->data)[i];
  return 0;
}
static int scale_load(const dpk_kind_load_args *args, void **out_state) {
  char text[32] = "";
  if (!args->payload || args->payload_size >= sizeof text) {
    args->services->set_error("module '%s': a scale needs a short payload", args->module_name);
    return 8;
  }
  memcpy(text, args->payload, args->payload_size);
  float *factor = malloc(sizeof *factor);
  *factor = strtof(text, NULL);
  *out_state = factor;
  return 0;
}
static int scale_get(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  if (strcmp(name, "scale_fn") != 0) return 2;
  *out_fn = scale_fn;
  *out_resource = state;
  return 0;
}
static void scale_free(void *state) { free(state); }
static const dpk_kind scale_kind = {"scale", SCALE_ABI, scale_load, scale_get, scale_free};
"""
SCALE_TABLE = """
static const dpk_kind *const kinds[] = {&scale_kind};
DPK_EXPORT const dpk_kind_table __dpk_kinds = {DPK_ABI_VERSION, 1, kinds};
"""


def scaled_model(directory, abi="DPK_ABI_VERSION", name="s", table=SCALE_TABLE, carried=("scale",), kind="scale",
                 edit=None):
    """A model whose module ext0 has kind `kind` (`scale`), which the file carries (`table` is the
    C that exports __dpk_kinds; `carried` what the manifest declares in kinds.carried)."""
    graph = graph_payload()
    graph["arena_bytes"] = 128
    graph["tensors"].append({"name": "r", "dtype": "float32", "shape": [1, N], "storage": "arena", "offset": 64})
    graph["calls"] = [graph["calls"][0], {"func": "host_relu_1", "args": [3, 5]}, {"func": "scale_fn", "args": [5, 4]}]

    def add(writer, manifest):
        manifest["modules"].insert(2, {"name": "ext0", "kind": kind, "functions": ["scale_fn"],
                                       "payload": writer.add(b"2.5")})
        manifest["modules"][3]["imports"].append("ext0")
        if carried is not None:
            manifest["kinds"] = {"carried": list(carried)}
    return build_model(directory, name=name, graph=graph, add=add, edit=edit,
                       kernels=KERNELS + f"#define SCALE_ABI {abi}\n" + SCALE_KIND + table)


def test_a_kind_carried_by_the_file(dpk_run, tmp_path):
    path = scaled_model(tmp_path)
    x = np.random.default_rng(2).standard_normal((1, K)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run(dpk_run, path, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy", "--verify")
    assert_matches(np.load(tmp_path / "y.npy"), reference(x, *weights()), 2.5)


def test_a_carried_kind_of_another_abi(test_api, tmp_path):
    path = scaled_model(tmp_path, abi="7")
    assert load_error(test_api, path) == (
        f"UNIMPLEMENTED: '{path}': kind 'scale' was built for ABI version 7.0 but this runtime has ABI version 1.2")


def test_carried_kinds_stay_with_their_model(test_api, tmp_path):
    """The unknown-kind message of a plain model lists only the process's kinds."""
    path = build_model(tmp_path, edit=add_module(name="ext0", kind="scale"))
    assert "which is not registered (registered: dso, graph, json, params)" in load_error(test_api, path)


# ---- memory --------------------------------------------------------------------------------------------

VALGRIND = shutil.which("valgrind")


@pytest.mark.skipif(not VALGRIND, reason="valgrind is not installed")
def test_load_run_free_is_leak_free(dpk_run, test_api, tmp_path):
    path = scaled_model(tmp_path)
    zstd_weights = build_model(tmp_path, name="z", weight_codec="zstd")
    bad = build_model(tmp_path, name="bad", edit=edit_module(0, functions=["host_dense_0", "host_x"]))
    check = [VALGRIND, "--quiet", "--leak-check=full", "--show-leak-kinds=definite,indirect",
             "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=3"]
    for rc, argv in ((0, [dpk_run, path, "--random", "--repeat", "3", "--verify", "-o", tmp_path / "out"]),
                     (0, [dpk_run, zstd_weights, "--random", "--populate"]),
                     (1, [dpk_run, bad, "--random"]),
                     (0, [test_api, "api", build_model(tmp_path, name="api"), tmp_path]),
                     (0, [test_api, "threads", path, 4])):
        result = subprocess.run([*check, *map(str, argv)], capture_output=True, text=True)
        assert result.returncode == rc, result.stdout + result.stderr
        assert "lost" not in result.stderr and "Invalid" not in result.stderr, result.stderr
