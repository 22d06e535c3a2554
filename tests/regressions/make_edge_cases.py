"""The hand-made inputs in tests/regressions/ (edge-*.elf): small model files
that each stop at one check of the reader. tests/test_fuzz.py replays every
file here through the fuzz harness and through dpk-run under ASan; inputs the
fuzzer found (crash-*, oom-*, minimized) sit next to them.

    python tests/regressions/make_edge_cases.py     # rewrites edge-*.elf

Each file is a minimal ELF64 holding only a .dpk section (no code: dpk-run
refuses it at dlopen at the latest), with a small manifest.
"""

from __future__ import annotations

import json
import os
import struct
import sys

import xxhash
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "runtime_c", "fuzz"))

from make_seeds import minimal_elf  # noqa: E402
from packager.blob import BlobWriter  # noqa: E402

GRAPH = {"version": 1, "arena_bytes": 0,
         "tensors": [{"name": "x", "dtype": "float32", "shape": [1, 4], "storage": "input", "index": 0},
                     {"name": "y", "dtype": "float32", "shape": [1, 4], "storage": "output", "index": 0}],
         "calls": [{"func": "k", "args": [0, 1]}]}


def blob(edit=None, graph=None, codec="raw"):
    writer = BlobWriter()
    g = writer.add(json.dumps(graph or GRAPH).encode(), codec=codec)
    manifest = {"format": "dsopack/1", "name": "edge", "target": {"machine": "x86_64"}, "entry": "main",
                "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
                "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}],
                "modules": [{"name": "lib", "kind": "dso", "functions": ["k"]},
                            {"name": "main", "kind": "graph", "imports": ["lib"], "payload": g}]}
    if edit:
        edit(manifest)
    path = os.path.join(HERE, ".edge.blob")
    writer.write(path, manifest)
    data = open(path, "rb").read()
    os.unlink(path)
    return data


def reseal(data: bytes, **fields) -> bytes:
    names = ["magic", "major", "minor", "flags", "moff", "msize", "poff", "psize", "mcheck"]
    h = dict(zip(names, struct.unpack_from("<8sHHIQQQQQ", data)))
    h.update(fields)
    header = struct.pack("<8sHHIQQQQQ", *(h[n] for n in names))
    return header + struct.pack("<Q", xxhash.xxh3_64_intdigest(header)) + data[64:]


def huge_zstd_frame(claimed: int) -> bytes:
    """A zstd frame whose header claims `claimed` content bytes (one RLE block of 1 byte)."""
    # magic, FHD: FCS 8 bytes + single segment, then the size, then a last RLE block of 1 byte.
    return struct.pack("<IBQ", 0xFD2FB528, 0b11100000, claimed) + bytes([0b011 | (1 << 3) & 0xFF, 0, 0]) + b"x"


def cycle(manifest):
    manifest["modules"][0]["imports"] = ["main"]


def cases():
    ok = blob()
    elf = minimal_elf(ok)
    yield "edge-valid-no-code.elf", elf                     # reads fine; dpk-run refuses at dlopen
    bad = bytearray(elf)
    struct.pack_into("<Q", bad, 0x28, len(elf) + 4096)      # section headers past the end
    yield "edge-shoff-past-end.elf", bytes(bad)
    bad = bytearray(elf)
    struct.pack_into("<H", bad, 0x3C, 0xFFFF)               # more section headers than fit
    yield "edge-shnum-too-large.elf", bytes(bad)
    bad = bytearray(elf)
    shoff, = struct.unpack_from("<Q", bad, 0x28)
    struct.pack_into("<Q", bad, shoff + 64 + 32, 1 << 62)   # .dpk size past the end of the file
    yield "edge-section-past-end.elf", bytes(bad)
    yield "edge-section-truncated.elf", minimal_elf(ok[:4096 + 10])
    yield "edge-payload-area-past-section.elf", minimal_elf(reseal(ok, psize=1 << 40))
    yield "edge-manifest-past-section.elf", minimal_elf(reseal(ok, moff=64, msize=(1 << 64) - 1))
    yield "edge-newer-major.elf", minimal_elf(reseal(ok, major=2))
    yield "edge-import-cycle.elf", minimal_elf(blob(edit=cycle))
    g = dict(GRAPH, calls=[{"func": "k", "args": [0, 99]}])
    yield "edge-graph-arg-out-of-range.elf", minimal_elf(blob(graph=g))
    g = dict(GRAPH, tensors=GRAPH["tensors"] + [{"name": "t", "dtype": "float32", "shape": [1 << 40, 1 << 40],
                                                   "storage": "arena", "offset": 0}])
    yield "edge-graph-numel-overflow.elf", minimal_elf(blob(graph=g))
    # zstd payloads whose frame claims 4 GiB / 1 TiB: raw_size agrees, the checksum is right
    for claim, label in ((1 << 32, "4gib"), (1 << 40, "1tib")):
        yield f"edge-zstd-claims-{label}.elf", minimal_elf(zstd_claiming(claim))


def zstd_claiming(claim: int) -> bytes:
    frame = huge_zstd_frame(claim)

    def huge(manifest):
        p = manifest["modules"][1]["payload"]
        p.update(codec="zstd", size=len(frame), raw_size=claim, checksum=f"{xxhash.xxh3_64_intdigest(frame):016x}")
    data = bytearray(blob(edit=huge))
    area, = struct.unpack_from("<Q", data, 32)
    data[area:area + len(frame)] = frame
    return bytes(data)


def main() -> int:
    for name, data in cases():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
