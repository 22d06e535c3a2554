"""Large blobs written into the linked file instead of linked (packager/elf_place.py): forced here at
small sizes with build(place_from=0). The file must load, run, verify and sign as an `.incbin` build
does, with `.dpk` a PROGBITS section in the last load segment at a 64 KiB-aligned offset, on x86-64 and
on aarch64 (qemu). The 2+ GiB case is benchmarks/big_model.py (too slow for the suite)."""

import os
import shutil
import subprocess

import numpy as np
import pytest

import loader
from packager import elf_place, signing
from packager.build import build
from packager.ir import BuildError
from test_edge import MANIFESTS, arm_runtime, example, qemu  # noqa: F401 - arm_runtime is a fixture

SAMPLE = os.path.join(MANIFESTS, "digits_sample.npy")


def sections(path: str) -> dict:
    """name -> (type, offset, size, address) from readelf, and the load segments."""
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 6 and parts[0].startswith("[") and parts[1].startswith("."):
            found[parts[1]] = (parts[2], int(parts[4], 16), int(parts[5], 16), int(parts[3], 16))
    return found


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("placed")
    build(os.path.join(MANIFESTS, "digits_mlp.yaml"), tmp / "placed.so", quiet=True, place_from=0)
    build(os.path.join(MANIFESTS, "digits_mlp.yaml"), tmp / "linked.so", quiet=True)
    return tmp


def test_a_placed_blob_is_the_last_segment_and_runs_as_the_linked_one(placed, dpk_run, tmp_path):
    dpk = sections(str(placed / "placed.so"))[".dpk"]
    assert dpk[0] == "PROGBITS" and dpk[1] % elf_place.ALIGN == 0 and dpk[3] % elf_place.ALIGN == 0
    assert os.path.getsize(placed / "placed.so") == dpk[1] + dpk[2]  # the blob ends the file
    segments = subprocess.run(["readelf", "-lW", str(placed / "placed.so")], capture_output=True, text=True).stdout
    last_load = [line.split() for line in segments.splitlines() if line.strip().startswith("LOAD")][-1]
    assert int(last_load[1], 16) == dpk[1] and int(last_load[4], 16) == dpk[2]
    x = np.load(SAMPLE)
    outs = []
    for name in ("placed.so", "linked.so"):
        with loader.load(placed / name, verify=True) as m:
            outs.append(m.run(x=x)["probs"])
        subprocess.run([dpk_run, placed / name, f"x={SAMPLE}", "-o", tmp_path / f"{name}.npy"], check=True,
                       capture_output=True)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(np.load(tmp_path / "placed.so.npy"), outs[1])


def test_a_placed_blob_is_verified_and_signed_byte_for_byte(placed, tmp_path):
    path = tmp_path / "m.so"
    shutil.copy(placed / "placed.so", path)
    signing.keygen(str(tmp_path / "k"))
    signing.sign(str(path), str(tmp_path / "k"))
    with loader.load(path, pubkey=str(tmp_path / "k.pub")) as m:
        assert int(m.run(x=np.load(SAMPLE))["probs"].argmax()) == 7
    offset = sections(str(placed / "placed.so"))[".dpk"][1]
    data = bytearray(path.read_bytes())
    data[offset + 8192 + 100] ^= 1  # a weight byte, in the placed blob
    path.write_bytes(bytes(data))
    with pytest.raises(loader.UnauthenticatedError):
        loader.load(path, pubkey=str(tmp_path / "k.pub"))
    unsigned = tmp_path / "u.so"
    shutil.copy(placed / "placed.so", unsigned)
    data = bytearray(unsigned.read_bytes())
    data[offset + 8192 + 100] ^= 1
    unsigned.write_bytes(bytes(data))
    with pytest.raises(loader.DataLossError):
        loader.open_package(unsigned).verify()


def test_a_library_without_the_reserved_section_is_refused(placed, tmp_path):
    from packager.blob import BlobWriter
    blob = BlobWriter().finish({"format": "dsopack/1"})
    with pytest.raises(BuildError, match="the link left no reserved .dpk section of"):
        elf_place.place(str(placed / "linked.so"), blob)


@pytest.mark.parametrize("page", [None, 65536], ids=["4k-pages", "64k-pages"])
def test_aarch64_runs_a_placed_blob(arm_runtime, dpk_run, tmp_path, page):  # noqa: F811 - the fixture
    """Also with 64 KiB pages (some aarch64 kernels'; qemu's -p, which the dynamic loader sees as the page
    size, so a segment whose file offset is not a multiple of it cannot be mapped)."""
    arm = tmp_path / "arm.so"
    build(example("digits_mlp"), arm, quiet=True, base_dir=MANIFESTS, target="aarch64-linux-gnu", place_from=0)
    assert sections(str(arm))[".dpk"][0] == "PROGBITS"
    qemu(os.path.join(arm_runtime, "dpk-run"), arm, f"x={SAMPLE}", "-o", tmp_path / "arm.npy",
         env={"QEMU_PAGESIZE": str(page)} if page else None)
    assert int(np.load(tmp_path / "arm.npy").argmax()) == 7


def test_a_mapped_weight_streams_from_its_file_into_the_blob(tmp_path):
    """A weight mapped from a .safetensors file is checksummed and copied from the file in chunks (blob.FileRange),
    not read through the mapping: the same checksums and the same bytes as from memory."""
    from safetensors.numpy import save_file

    from packager import blob as blob_mod
    from packager.frontends import safetensors
    w = np.random.default_rng(0).standard_normal((300, 70)).astype(np.float32)
    save_file({"a": np.ones(3, np.float32), "w": w}, str(tmp_path / "w.safetensors"))
    mapped = safetensors.load(str(tmp_path / "w.safetensors"))["w"]
    ranged = blob_mod.file_range(mapped)
    assert ranged is not None and ranged.nbytes == w.nbytes
    with open(tmp_path / "w.safetensors", "rb") as f:
        f.seek(ranged.offset)
        assert f.read(ranged.nbytes) == w.tobytes()
    assert blob_mod.file_range(mapped[::2]) is None and blob_mod.file_range(w) is None  # strided; in memory
    streamed, in_memory = blob_mod.BlobWriter(), blob_mod.BlobWriter()
    assert streamed.add(mapped, align=4096) == in_memory.add(w, align=4096)
    streamed.write(str(tmp_path / "s.blob"), {"m": 1})
    in_memory.write(str(tmp_path / "m.blob"), {"m": 1})
    assert (tmp_path / "s.blob").read_bytes() == (tmp_path / "m.blob").read_bytes()
