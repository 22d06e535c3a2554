"""Ed25519 keys and signed model files (`dsopack keygen | sign`), with PyNaCl.

A signed file is the model file's ELF contents followed by one 128-byte
trailer (docs/format.md "Signatures"); the signature (Ed25519ph, RFC 8032)
covers every byte before the trailer and the trailer's first 64 bytes.
Checking is libdpk's (runtime_c/src/signature.c), through `loader`.

Key files are one line each: "dsopack-ed25519-secret <64 hex digits>" (the
32-byte seed, mode 0600) and "dsopack-ed25519-public <64 hex digits>".
"""

from __future__ import annotations

import os
import re
import struct
import tempfile

from nacl import bindings, encoding, hash as nacl_hash, signing

MAGIC = b"DSOPKSIG"
VERSION = 1
ALGORITHM_ED25519PH = 1
TRAILER_SIZE = 128
SIGNED_FIELDS = 64  # trailer bytes 0..63 are signed; 64..127 are the signature
# magic, version, algorithm, trailer size, signed length, key id, 32 reserved bytes
FIELDS = struct.Struct("<8sHHIQ8s32x")
SECRET_PREFIX = "dsopack-ed25519-secret "
PUBLIC_PREFIX = "dsopack-ed25519-public "
_KEY_LINE = re.compile(r"^(dsopack-ed25519-(?:secret|public)) ([0-9a-fA-F]{64})[ \r\n]*$")


class SigningError(Exception):
    """A key or file problem, said in one line."""


def key_id(public_key: bytes) -> bytes:
    """8 bytes naming a public key: the first 8 of BLAKE2b-256(key)."""
    return nacl_hash.blake2b(public_key, digest_size=32, encoder=encoding.RawEncoder)[:8]


def _write_private(path: str, text: str, mode: int) -> None:
    """Write `text` to `path` atomically, created with `mode` (never wider)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dsopack-key-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def keygen(path: str, force: bool = False) -> bytes:
    """Write a new secret key to `path` (mode 0600) and its public key to
    `path`.pub; returns the public key. Refuses to overwrite unless `force`."""
    public_path = path + ".pub"
    for existing in (path, public_path):
        if os.path.exists(existing) and not force:
            raise SigningError(f"'{existing}' exists; remove it or pass --force to replace the key")
    key = signing.SigningKey.generate()
    public = bytes(key.verify_key)
    _write_private(path, f"{SECRET_PREFIX}{bytes(key).hex()}\n", 0o600)
    _write_private(public_path, f"{PUBLIC_PREFIX}{public.hex()}\n", 0o644)
    return public


def read_secret_key(path: str) -> signing.SigningKey:
    """The signing key in a secret key file, or SigningError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        raise SigningError(f"secret key file '{path}' not found (make one with: dsopack keygen -o {path})") from None
    except OSError as e:
        raise SigningError(f"cannot read the secret key file '{path}': {e.strerror}") from None
    match = _KEY_LINE.match(raw.decode("ascii", "replace"))
    if match and match.group(1) == PUBLIC_PREFIX.strip():
        raise SigningError(f"'{path}' is a dsopack public key; signing needs the secret key (the file without .pub)")
    if not match:
        raise SigningError(f"'{path}' is not a dsopack secret key file: expected one line "
                           f"'{SECRET_PREFIX}<64 hex digits>'")
    return signing.SigningKey(bytes.fromhex(match.group(2)))


def _signed_size(path: str) -> int:
    """Where the ELF contents end, from libdpk; SigningError if not a dsopack file."""
    import loader

    if not os.path.isfile(path):
        raise SigningError(f"'{path}' not found")
    try:
        with loader.open_package(path) as package:
            return package.signed_size
    except loader.DpkError as e:
        raise SigningError(f"cannot sign '{path}': {e}") from None


def _fields(length: int, public_key: bytes) -> bytes:
    return FIELDS.pack(MAGIC, VERSION, ALGORITHM_ED25519PH, TRAILER_SIZE, length, key_id(public_key))


def sign(path: str, key_path: str, output: str | None = None) -> tuple[bytes, int]:
    """Sign the model file `path` (in place, or into `output`) with the key in
    `key_path`; an existing trailer is replaced. Returns (key id, bytes covered).
    Bytes after the ELF contents that are not a (possibly truncated) trailer
    are refused rather than dropped. Streams the file: memory stays small."""
    key = read_secret_key(key_path)
    public, secret = bindings.crypto_sign_seed_keypair(bytes(key))
    end = _signed_size(path)
    target = output or path
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), prefix=".dsopack-sign-")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            os.fchmod(dst.fileno(), os.fstat(src.fileno()).st_mode & 0o7777)
            state = bindings.crypto_sign_ed25519ph_state()
            left = end
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise SigningError(f"'{path}' changed while it was being signed")
                bindings.crypto_sign_ed25519ph_update(state, chunk)
                dst.write(chunk)
                left -= len(chunk)
            tail = src.read(TRAILER_SIZE + 1)
            if tail and not MAGIC.startswith(tail[:8]):
                size = end + len(tail) + len(src.read())
                raise SigningError(f"cannot sign '{path}': the {size - end} bytes after its ELF contents (offset "
                                   f"{end}) are not a dsopack signature trailer; refusing to drop them")
            fields = _fields(end, public)
            bindings.crypto_sign_ed25519ph_update(state, fields)
            dst.write(fields + bindings.crypto_sign_ed25519ph_final_create(state, secret))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return key_id(public), end
