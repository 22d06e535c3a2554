"""Public keys for signed loads: `loader.load(path, pubkey=...)` and
`loader.open_package(path, pubkey=...)`. The check itself is libdpk's
(runtime_c/src/signature.c), done before any code of the file runs."""

from __future__ import annotations

import os

from loader import errors
from loader._native import check, ffi, lib

PUBLIC_KEY_BYTES = 32


def public_key(pubkey) -> "ffi.CData":
    """A `dpk_public_key_t *` from a key file path (KEY.pub, read by libdpk),
    or the 32 raw bytes of an Ed25519 public key (bytes, or a nacl VerifyKey)."""
    key = ffi.new("dpk_public_key_t *")
    if isinstance(pubkey, (str, os.PathLike)):
        check(lib.dpk_public_key_read(os.fsencode(pubkey), key))
        return key
    try:
        raw = bytes(pubkey)
    except TypeError:
        raise errors.InvalidArgumentError(
            f"pubkey must be a key file path or {PUBLIC_KEY_BYTES} raw bytes, not {type(pubkey).__name__}") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise errors.InvalidArgumentError(f"a raw public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    ffi.memmove(key.bytes, raw, PUBLIC_KEY_BYTES)
    return key
