"""Signed model files: `dsopack keygen | sign | verify --pubkey`, and signed
loads through dpk-run, the C API (tests/c/sign_load.c) and the loader.

The model's code has a constructor that writes a marker file (its path in
$DSOPACK_TEST_MARKER): for a tampered, unsigned or wrongly signed file the
marker must stay absent (none of its code ran); for a properly signed one it
appears, so these tests can fail. Models are made with test_runtime_c.py's
helpers; signatures are made in Python (PyNaCl) and checked in C (libsodium).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess

import numpy as np
import pytest

import loader
from packager import cli, signing
from section import elf_sections
from test_runtime_c import CC, KERNELS, K, ROOT, assert_matches, build_model, reference, weights

MARKER_KERNELS = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
/* runs at dlopen: proves whether any code of the file ran, and says which name it was loaded by */
__attribute__((constructor)) static void touch_marker(void) {
  const char *path = getenv("DSOPACK_TEST_MARKER");
  FILE *f = path ? fopen(path, "w") : NULL;
  Dl_info info;
  if (!f) return;
  fprintf(f, "ran from %s\n", dladdr((void *)touch_marker, &info) && info.dli_fname ? info.dli_fname : "?");
  fclose(f);
}
"""
TRAILER = signing.TRAILER_SIZE


# ---- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: {"a": (secret, public), "b": (...)}."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in "ab":
        signing.keygen(str(d / name))
        out[name] = (str(d / name), str(d / f"{name}.pub"))
    return out


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("unsigned"), kernels=MARKER_KERNELS + KERNELS)


@pytest.fixture(scope="module")
def signed(unsigned, keys, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("signed") / "m.so")
    signing.sign(unsigned, keys["a"][0], path)
    return path


@pytest.fixture(scope="module")
def sign_load(dpk_build, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sign_load") / "sign_load")
    runtime = os.path.join(ROOT, "runtime_c")
    subprocess.run([CC, "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
                    "-I", os.path.join(runtime, "include"), os.path.join(ROOT, "tests", "c", "sign_load.c"),
                    os.path.join(dpk_build, "libdpk.a"), "-lzstd", "-lyaml", "-lxxhash", "-lsodium", "-ldl",
                    "-lpthread", "-lm", "-o", out], check=True)
    return out


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """The marker path, exported for this process and its children."""
    path = tmp_path / "marker"
    monkeypatch.setenv("DSOPACK_TEST_MARKER", str(path))
    return path


def section(data: bytes, name: bytes) -> tuple[int, int]:
    """(file offset, size) of an ELF section."""
    found = elf_sections(bytes(data))[name.decode()]
    return found.offset, found.size


def edited(path, tmp_path, name, fn) -> str:
    """A copy of `path` changed by fn(bytearray) (which may return new bytes)."""
    data = bytearray(open(path, "rb").read())
    data = fn(data) or data
    out = str(tmp_path / name)
    with open(out, "wb") as f:
        f.write(data)
    return out


def flip(offset_of):
    """fn for edited(): xor one byte at offset_of(data) (negative: from the end)."""
    def fn(data):
        data[offset_of(data)] ^= 0x5A
    return fn


def c_load(sign_load, *args) -> str:
    result = subprocess.run([sign_load, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def dpk_run_err(dpk_run_path, *args) -> str:
    result = subprocess.run([dpk_run_path, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 1, result.stdout
    return result.stderr


def dsopack(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- a properly signed file ----------------------------------------------------------------------------


def test_a_signed_file_loads_everywhere_and_its_code_runs(signed, keys, marker, sign_load, dpk_run, tmp_path):
    pub = keys["a"][1]
    x = np.random.default_rng(5).standard_normal((1, K)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, signed, f"x={tmp_path / 'x.npy'}", "--pubkey", pub, "-o", tmp_path / "y.npy"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(signature checked)" in result.stdout
    assert_matches(np.load(tmp_path / "y.npy"), reference(x, *weights()))
    from_fd = re.compile(r"ran from /proc/self/fd/\d+\n")  # dlopened through the checked descriptor
    assert from_fd.fullmatch(marker.read_text())
    marker.unlink()
    assert c_load(sign_load, "load", signed, pub) == "OK"
    assert c_load(sign_load, "open", signed, pub) == "OK"
    assert from_fd.fullmatch(marker.read_text())
    marker.unlink()
    fresh = shutil.copy(signed, tmp_path / "fresh.so")  # a new inode: its constructor runs in this process
    with loader.load(fresh, pubkey=pub) as model:
        assert_matches(model.run(x=x)["y"], reference(x, *weights()))
        assert model.manifest["name"] == "m"
    assert from_fd.fullmatch(marker.read_text())
    marker.unlink()
    result = subprocess.run([dpk_run, signed, "--random"], capture_output=True, text=True)  # no key: by path
    assert result.returncode == 0 and marker.read_text() == f"ran from {signed}\n"


def test_the_signature_covers_exactly_the_unsigned_file(unsigned, signed):
    before, after = open(unsigned, "rb").read(), open(signed, "rb").read()
    assert len(after) == len(before) + TRAILER and after[:len(before)] == before
    with loader.open_package(signed) as package:
        assert package.signed_size == len(before)
    fields = signing.FIELDS.unpack_from(after, len(before))
    assert fields[:5] == (b"DSOPKSIG", 1, 1, TRAILER, len(before))


def test_a_raw_public_key_works_too(signed, keys):
    text = open(keys["a"][1]).read().split()[1]
    with loader.open_package(signed, pubkey=bytes.fromhex(text)) as package:
        assert package.manifest["name"] == "m"
    with pytest.raises(loader.InvalidArgumentError, match="a raw public key has 32 bytes, not 3"):
        loader.load(signed, pubkey=b"abc")


def test_two_signed_files_load_at_once(signed, keys, digits_so, tmp_path):
    """Each signed load dlopens /proc/self/fd/N and keeps N open while loaded: a second signed file must not get
    N again (glibc would hand back the first library, and the load be refused as a replaced file)."""
    other = str(tmp_path / "digits.so")
    signing.sign(digits_so, keys["a"][0], other)
    with loader.load(signed, pubkey=keys["a"][1]) as first, loader.load(other, pubkey=keys["a"][1]) as second:
        assert first.manifest["name"] == "m" and second.manifest["name"] == "digits_mlp"
        sample = np.load(os.path.join(ROOT, "manifests", "digits_sample.npy"))
        assert second.run(x=sample)["probs"].argmax() == 7
    with loader.load(other, pubkey=keys["a"][1]) as again:  # and after both are freed
        assert again.run(x=sample)["probs"].argmax() == 7


def test_signing_does_not_change_what_an_unsigned_reader_sees(unsigned, signed, dpk_run, capsys, tmp_path,
                                                              monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(unsigned, a / "m.so")
    shutil.copy(signed, b / "m.so")
    outputs = []
    for directory in (a, b):
        monkeypatch.chdir(directory)
        inspect = dsopack(capsys, "inspect", "m.so")
        verify = dsopack(capsys, "verify", "m.so")
        run = dsopack(capsys, "run", "m.so", "--random", "-o", "y.npz")
        c = subprocess.run([dpk_run, "m.so", "--random", "--verify", "-o", "y.npy"], capture_output=True, text=True)
        assert c.returncode == 0, c.stderr
        with loader.load("m.so", verify=True) as model:
            y = model.run(x=np.ones((1, K), np.float32))["y"]
        lines = [line for line in c.stdout.splitlines() if not line.startswith(("load:", "run:"))]
        outputs.append((inspect, verify, run[0], run[1].splitlines()[0], np.load("y.npz")["y"].tobytes(),
                        np.load("y.npy").tobytes(), lines, y.tobytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][1][0] == 0 and outputs[0][1][1].startswith("OK m.so:")


def test_re_signing_replaces_the_trailer(signed, keys, sign_load, tmp_path):
    path = shutil.copy(signed, tmp_path / "m.so")
    kid, covered = signing.sign(str(path), keys["b"][0])
    assert os.path.getsize(path) == os.path.getsize(signed) and covered == os.path.getsize(signed) - TRAILER
    assert c_load(sign_load, "open", path, keys["b"][1]) == "OK"
    a_id = signing.key_id(bytes.fromhex(open(keys["a"][1]).read().split()[1])).hex()
    assert c_load(sign_load, "open", path, keys["a"][1]) == (
        f"UNAUTHENTICATED: '{path}' is signed by key {kid.hex()}, not by the given key {a_id}")


def test_signing_keeps_the_file_mode(unsigned, keys, tmp_path):
    path = shutil.copy(unsigned, tmp_path / "m.so")
    os.chmod(path, 0o750)
    signing.sign(str(path), keys["a"][0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o750


# ---- tampered, unsigned, wrong key: no code runs ---------------------------------------------------------


def _trailer_at(data):
    return len(data) - TRAILER


TAMPER = {
    # name: (fn for edited(), status, message after "'PATH'")
    "text": (flip(lambda d: sum(section(d, b".text")) - 8), "UNAUTHENTICATED",
             ": the signature by key {a} does not match the file's bytes (changed after signing, or a forged trailer)"),
    "dpk_weights": (flip(lambda d: section(d, b".dpk")[0] + section(d, b".dpk")[1] - 1), "UNAUTHENTICATED",
                    ": the signature by key {a} does not match the file's bytes (changed after signing, or a forged "
                    "trailer)"),
    "elf_padding": (flip(lambda d: 12), "UNAUTHENTICATED",  # e_ident padding: ignored by every ELF reader
                    ": the signature by key {a} does not match the file's bytes (changed after signing, or a forged "
                    "trailer)"),
    "signature": (flip(lambda d: len(d) - 1), "UNAUTHENTICATED",
                  ": the signature by key {a} does not match the file's bytes (changed after signing, or a forged "
                  "trailer)"),
    "magic": (flip(lambda d: _trailer_at(d)), "UNAUTHENTICATED",
              ": the 128 bytes after its ELF contents (at offset {end}) are not a dsopack signature trailer"),
    "version": (lambda d: struct.pack_into("<H", d, _trailer_at(d) + 8, 0), "UNAUTHENTICATED",
                ": signature trailer version 0; this runtime reads version 1"),
    "newer_version": (lambda d: struct.pack_into("<H", d, _trailer_at(d) + 8, 2), "UNIMPLEMENTED",
                      ": signature trailer version 2; this runtime reads version 1"),
    "algorithm": (lambda d: struct.pack_into("<H", d, _trailer_at(d) + 10, 7), "UNIMPLEMENTED",
                  ": signature algorithm 7; this runtime knows 1 (Ed25519ph)"),
    "length": (lambda d: struct.pack_into("<Q", d, _trailer_at(d) + 16, 4096), "UNAUTHENTICATED",
               ": the signature trailer claims 128 bytes signing the first 4096, but it is 128 bytes at offset {end}"),
    "key_id": (flip(lambda d: _trailer_at(d) + 24), "UNAUTHENTICATED", " is signed by key {forged}, not by the given "
               "key {a}"),
    "reserved": (flip(lambda d: _trailer_at(d) + 40), "UNAUTHENTICATED",
                 ": byte 40 of the signature trailer is reserved but not zero"),
    "truncated": (lambda d: d[:-10], "UNAUTHENTICATED",
                  ": the signature trailer at offset {end} is truncated: 118 of 128 bytes"),
    "appended": (lambda d: d + b"\0", "UNAUTHENTICATED", ": the signature trailer at offset {end} is followed by 1 more byte"),
}


def _expected(case, path, signed, keys):
    end = os.path.getsize(signed) - TRAILER
    a = signing.key_id(bytes.fromhex(open(keys["a"][1]).read().split()[1]))
    forged = bytearray(a)
    forged[0] ^= 0x5A
    status, message = TAMPER[case][1:]
    return status, f"'{path}'" + message.format(a=a.hex(), end=end, forged=bytes(forged).hex())


@pytest.mark.parametrize("case", list(TAMPER))
def test_a_tampered_file_runs_none_of_its_code(case, signed, keys, marker, sign_load, dpk_run, tmp_path):
    path = edited(signed, tmp_path, f"{case}.so", TAMPER[case][0])
    status, message = _expected(case, path, signed, keys)
    pub = keys["a"][1]
    result = subprocess.run([dpk_run, path, "--random", "--pubkey", pub], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, f"dpk-run: {message}\n")
    assert c_load(sign_load, "load", path, pub) == f"{status}: {message}"
    assert c_load(sign_load, "open", path, pub) == f"{status}: {message}"
    error = loader.UnimplementedError if status == "UNIMPLEMENTED" else loader.UnauthenticatedError
    with pytest.raises(error) as info:
        loader.load(path, pubkey=pub)
    assert str(info.value) == message
    assert not marker.exists()


def test_an_unsigned_file_is_refused_when_a_key_is_required(unsigned, keys, marker, sign_load, dpk_run, capsys):
    message = (f"'{unsigned}' is not signed (nothing follows its ELF contents), and a signature by the given key "
               "is required")
    pub = keys["a"][1]
    assert c_load(sign_load, "load", unsigned, pub) == f"UNAUTHENTICATED: {message}"
    assert dpk_run_err(dpk_run, unsigned, "--random", "--pubkey", pub) == f"dpk-run: {message}\n"
    with pytest.raises(loader.UnauthenticatedError, match="is not signed"):
        loader.load(unsigned, pubkey=pub)
    assert dsopack(capsys, "verify", unsigned, "--pubkey", pub) == (1, "", f"dsopack: error: {message}\n")
    assert dsopack(capsys, "run", unsigned, "--random", "--pubkey", pub) == (1, "", f"dsopack: error: {message}\n")
    assert not marker.exists()


def test_the_wrong_key_is_refused(signed, keys, marker, sign_load, dpk_run, capsys):
    ids = [signing.key_id(bytes.fromhex(open(keys[k][1]).read().split()[1])).hex() for k in "ab"]
    message = f"'{signed}' is signed by key {ids[0]}, not by the given key {ids[1]}"
    pub = keys["b"][1]
    assert c_load(sign_load, "load", signed, pub) == f"UNAUTHENTICATED: {message}"
    assert dpk_run_err(dpk_run, signed, "--random", "--pubkey", pub) == f"dpk-run: {message}\n"
    with pytest.raises(loader.UnauthenticatedError) as info:
        loader.load(signed, pubkey=pub)
    assert str(info.value) == message
    assert dsopack(capsys, "verify", signed, "--pubkey", pub) == (1, "", f"dsopack: error: {message}\n")
    assert not marker.exists()


def test_a_null_key_is_an_invalid_argument(signed, sign_load):
    assert c_load(sign_load, "null", signed) == (
        "INVALID_ARGUMENT: dpk_model_load_signed: key is NULL (use dpk_model_load for unsigned files)")


# ---- the command line and bad input ------------------------------------------------------------------


def test_keygen_sign_verify_on_the_command_line(unsigned, capsys, tmp_path):
    key = tmp_path / "release.key"
    code, out, _ = dsopack(capsys, "keygen", "-o", key)
    public = bytes.fromhex(open(f"{key}.pub").read().split()[1])
    kid = signing.key_id(public).hex()
    assert (code, out) == (0, f"wrote {key} (secret, mode 0600) and {key}.pub (public): key {kid}\n")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert open(key).read().startswith("dsopack-ed25519-secret ") and len(open(key).read()) == 23 + 64 + 1
    path = shutil.copy(unsigned, tmp_path / "m.so")
    code, out, _ = dsopack(capsys, "sign", path, "--key", key)
    covered = os.path.getsize(unsigned)
    assert (code, out) == (0, f"signed {path} with key {kid} ({covered / 1024:.1f} KiB covered)\n")
    code, out, _ = dsopack(capsys, "verify", path, "--pubkey", f"{key}.pub")
    assert code == 0 and out.startswith(f"OK {path}: ") and out.endswith(f", signed by the key in {key}.pub\n")
    code, out, _ = dsopack(capsys, "run", path, "--random", "--pubkey", f"{key}.pub")
    assert code == 0 and out.startswith("y: float32[1, 3]")
    out_path = tmp_path / "copy.so"
    assert dsopack(capsys, "sign", unsigned, "--key", key, "-o", out_path)[0] == 0
    assert open(out_path, "rb").read() == open(path, "rb").read()  # Ed25519 is deterministic


def test_keygen_does_not_overwrite_a_key(capsys, tmp_path):
    key = tmp_path / "k"
    assert dsopack(capsys, "keygen", "-o", key)[0] == 0
    first = open(key).read()
    assert dsopack(capsys, "keygen", "-o", key) == (
        1, "", f"dsopack: error: '{key}' exists; remove it or pass --force to replace the key\n")
    assert open(key).read() == first
    assert dsopack(capsys, "keygen", "-o", key, "--force")[0] == 0
    assert open(key).read() != first and stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_missing_key_files(signed, unsigned, dpk_run, capsys, tmp_path):
    missing = tmp_path / "nope"
    assert dsopack(capsys, "sign", unsigned, "--key", missing, "-o", tmp_path / "x.so") == (
        1, "", f"dsopack: error: secret key file '{missing}' not found (make one with: dsopack keygen -o {missing})\n")
    message = f"cannot open the public key file '{missing}.pub': No such file or directory"
    assert dsopack(capsys, "verify", signed, "--pubkey", f"{missing}.pub") == (1, "", f"dsopack: error: {message}\n")
    assert dpk_run_err(dpk_run, signed, "--random", "--pubkey", f"{missing}.pub") == f"dpk-run: {message}\n"
    with pytest.raises(loader.NotFoundError, match="cannot open the public key file"):
        loader.load(signed, pubkey=f"{missing}.pub")
    assert not (tmp_path / "x.so").exists()


@pytest.mark.parametrize("text", ["", "hello\n", "dsopack-ed25519-public 1234\n",
                                  "dsopack-ed25519-public " + "g" * 64 + "\n",
                                  "dsopack-ed25519-public " + "ab" * 32 + " extra\n",
                                  "dsopack-ed25519-public " + "ab" * 32 + "\n" * 100 + "x"])
def test_malformed_public_key_files(signed, dpk_run, capsys, tmp_path, text):
    pub = tmp_path / "bad.pub"
    pub.write_text(text)
    message = f"'{pub}' is not a dsopack public key file: expected one line 'dsopack-ed25519-public <64 hex digits>'"
    assert dsopack(capsys, "verify", signed, "--pubkey", pub) == (1, "", f"dsopack: error: {message}\n")
    assert dpk_run_err(dpk_run, signed, "--random", "--pubkey", pub) == f"dpk-run: {message}\n"
    with pytest.raises(loader.InvalidArgumentError) as info:
        loader.load(signed, pubkey=pub)
    assert str(info.value) == message


def test_key_files_swapped(signed, unsigned, keys, capsys, tmp_path):
    secret, public = keys["a"]
    assert dsopack(capsys, "verify", signed, "--pubkey", secret) == (
        1, "", f"dsopack: error: '{secret}' is a dsopack secret key; give its public key (the .pub file)\n")
    assert dsopack(capsys, "sign", unsigned, "--key", public, "-o", tmp_path / "x.so") == (
        1, "", f"dsopack: error: '{public}' is a dsopack public key; signing needs the secret key "
               "(the file without .pub)\n")


@pytest.mark.parametrize("text", ["", "dsopack-ed25519-secret xyz\n", "ssh-ed25519 AAAA\n"])
def test_malformed_secret_key_files(unsigned, capsys, tmp_path, text):
    key = tmp_path / "bad.key"
    key.write_text(text)
    assert dsopack(capsys, "sign", unsigned, "--key", key, "-o", tmp_path / "x.so") == (
        1, "", f"dsopack: error: '{key}' is not a dsopack secret key file: expected one line "
               "'dsopack-ed25519-secret <64 hex digits>'\n")
    assert not (tmp_path / "x.so").exists()


def test_signing_a_file_that_is_not_a_dsopack_model(keys, dpk_build, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n" * 10)
    assert dsopack(capsys, "sign", text, "--key", keys["a"][0]) == (
        1, "", f"dsopack: error: cannot sign '{text}': '{text}' is not an ELF file\n")
    lib = shutil.copy(os.path.join(dpk_build, "libdpk.so"), tmp_path / "libdpk.so")
    before = open(lib, "rb").read()
    assert dsopack(capsys, "sign", lib, "--key", keys["a"][0]) == (
        1, "", f"dsopack: error: cannot sign '{lib}': '{lib}' has no .dpk section: not a dsopack model\n")
    assert open(lib, "rb").read() == before and open(text).read() == "not a model\n" * 10
    assert dsopack(capsys, "sign", tmp_path / "none.so", "--key", keys["a"][0]) == (
        1, "", f"dsopack: error: '{tmp_path / 'none.so'}' not found\n")


def test_signing_repairs_a_truncated_trailer_but_keeps_foreign_bytes(signed, unsigned, keys, sign_load, capsys,
                                                                     tmp_path):
    truncated = edited(signed, tmp_path, "t.so", lambda d: d[:-100])
    assert dsopack(capsys, "sign", truncated, "--key", keys["a"][0])[0] == 0
    assert open(truncated, "rb").read() == open(signed, "rb").read()
    assert c_load(sign_load, "open", truncated, keys["a"][1]) == "OK"
    foreign = edited(unsigned, tmp_path, "f.so", lambda d: d + b"appended by someone else")
    end = os.path.getsize(unsigned)
    assert dsopack(capsys, "sign", foreign, "--key", keys["a"][0]) == (
        1, "", f"dsopack: error: cannot sign '{foreign}': the 24 bytes after its ELF contents (offset {end}) are not "
               "a dsopack signature trailer; refusing to drop them\n")
    assert sorted(os.listdir(tmp_path)) == ["f.so", "t.so"]  # no temporary file left behind
