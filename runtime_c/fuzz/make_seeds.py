"""Seed corpus for fuzz_package: the bundled examples, built, in three forms.

    python runtime_c/fuzz/make_seeds.py OUT_DIR [--payloads PAYLOAD_DIR] [MANIFEST.yaml ...]

For each manifest (default: every manifests/*.yaml) it writes to OUT_DIR:
  NAME.so            the file `dsopack build` makes (the whole ELF)
  NAME.dpk.elf       a minimal ELF64 holding only the .dpk section (smaller
                     inputs: the fuzzer spends its time in the section, not
                     in .text)
  NAME.raw.elf       the same with every module payload stored raw, so the
                     graph and json payloads are JSON text the fuzzer can
                     mutate in place (zstd bytes rarely decode)
  digits_mlp.signed.so  digits_mlp signed (`dsopack sign`) with a fresh key,
                     OUT_DIR-key and OUT_DIR-key.pub (DPK_FUZZ_PUBKEY)
With --payloads, PAYLOAD_DIR gets the seeds of fuzz_payload (the graph and json
parsers fed directly, against the context DPK_FUZZ_CONTEXT=OUT_DIR/lenet.raw.elf):
for every module payload of lenet, NAME.payloadK (K its number among the
modules with a payload): the byte K then the decoded payload.
Needs the dsopack environment (`source .venv/bin/activate`).
"""

from __future__ import annotations

import glob
import os
import struct
import subprocess
import sys

import yaml
import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from packager.blob import BlobWriter, read_header  # noqa: E402


def section_of(path: str) -> bytes:
    """The .dpk section of a built file, found through the section headers."""
    data = open(path, "rb").read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 24)[0]
    for i in range(shnum):
        entry = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, entry)
        if data[names + name:names + name + 5] == b".dpk\0":
            offset, size = struct.unpack_from("<QQ", data, entry + 24)
            return data[offset:offset + size]
    raise SystemExit(f"{path} has no .dpk section")


def minimal_elf(section: bytes, machine: int = 62) -> bytes:
    """ELF64 little-endian ET_DYN with sections: null, .dpk, .shstrtab."""
    names = b"\0.dpk\0.shstrtab\0"
    dpk_off = 64
    str_off = dpk_off + len(section)
    sh_off = (str_off + len(names) + 7) // 8 * 8
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)

    def shdr(name, type_, flags, offset, size, align):
        return struct.pack("<IIQQQQIIQQ", name, type_, flags, 0, offset, size, 0, 0, align, 0)

    table = shdr(0, 0, 0, 0, 0, 0) + shdr(1, 1, 2, dpk_off, len(section), 4096) + shdr(6, 3, 0, str_off, len(names), 1)
    out = header + section + names
    return out + bytes(sh_off - len(out)) + table


def module_payloads(section: bytes) -> list[bytes]:
    """The decoded payload of every module that has one, in manifest order."""
    h = read_header(section[:64])
    manifest = yaml.safe_load(section[h["manifest_offset"]:h["manifest_offset"] + h["manifest_size"]])
    area = section[h["payload_offset"]:h["payload_offset"] + h["payload_size"]]
    out = []
    for module in manifest["modules"]:
        if "payload" in module:
            d = module["payload"]
            data = area[d["offset"]:d["offset"] + d["size"]]
            out.append(zstandard.ZstdDecompressor().decompress(data) if d.get("codec") == "zstd" else data)
    return out


def raw_payloads(section: bytes) -> bytes:
    """The blob rewritten with every module payload stored raw (tensors as they were)."""
    h = read_header(section[:64])
    manifest = yaml.safe_load(section[h["manifest_offset"]:h["manifest_offset"] + h["manifest_size"]])
    area = section[h["payload_offset"]:h["payload_offset"] + h["payload_size"]]

    def stored(desc):
        data = area[desc["offset"]:desc["offset"] + desc["size"]]
        return zstandard.ZstdDecompressor().decompress(data) if desc.get("codec") == "zstd" else data

    writer = BlobWriter()
    for module in manifest["modules"]:
        if "payload" in module:
            module["payload"] = writer.add(stored(module["payload"]), codec="raw")
        for name, desc in (module.get("tensors") or {}).items():
            new = writer.add(stored(desc), codec=desc.get("codec", "raw"), align=4096 if desc["size"] >= 4096 else 64)
            module["tensors"][name] = {"dtype": desc["dtype"], "shape": desc["shape"], **new}
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"seed-{os.getpid()}.blob")
    writer.write(path, manifest)
    blob = open(path, "rb").read()
    os.unlink(path)
    return blob


def sign_seed(so: str, signed: str, key: str) -> None:
    """`dsopack sign` the file with a fresh key KEY (KEY.pub next to it: DPK_FUZZ_PUBKEY)."""
    for argv in (["keygen", "-o", key, "--force"], ["sign", "--key", key, "-o", signed, so]):
        result = subprocess.run([sys.executable, "-m", "packager.cli", *argv], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            print(f"make_seeds: no signed seed: {result.stderr.strip()}", file=sys.stderr)
            return


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out, rest, payloads = argv[0], argv[1:], None
    if rest[:1] == ["--payloads"]:
        payloads, rest = rest[1], rest[2:]
        os.makedirs(payloads, exist_ok=True)
    manifests = rest or sorted(glob.glob(os.path.join(ROOT, "manifests", "*.yaml")))
    os.makedirs(out, exist_ok=True)
    for manifest in manifests:
        name = os.path.splitext(os.path.basename(manifest))[0]
        so = os.path.join(out, f"{name}.so")
        result = subprocess.run([sys.executable, "-m", "packager.cli", "build", manifest, "-o", so],
                                capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            print(f"make_seeds: skipping {name}: {result.stderr.strip()}", file=sys.stderr)
            continue
        section = section_of(so)
        with open(os.path.join(out, f"{name}.dpk.elf"), "wb") as f:
            f.write(minimal_elf(section))
        with open(os.path.join(out, f"{name}.raw.elf"), "wb") as f:
            f.write(minimal_elf(raw_payloads(section)))
        if name == "digits_mlp":
            sign_seed(so, os.path.join(out, f"{name}.signed.so"), f"{out}-key")
        if payloads and name == "lenet":
            for k, data in enumerate(module_payloads(section)):
                with open(os.path.join(payloads, f"{name}.payload{k}"), "wb") as f:
                    f.write(bytes([k]) + data)
        print(f"{name}: {os.path.getsize(so)} / {len(section) + 300} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
