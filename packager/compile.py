"""Generated C, carried kinds and the blob -> the .so: the build's compile stage.

Everything goes to a temporary directory (removed afterwards): model.c (and model_2.c...
for a large model: lower.c_units), each carried
kind's C and kinds.c (carried_kinds.py), model.blob and blob.s, the assembly stub that
`.incbin`s it (blob.py). toolchain.compile_shared compiles, links and moves the
library into place atomically. `save_temps` keeps the sources and the blob, with a
stub that includes that copy. A failure to find a header or a library says how to
install it (the backends' install hints).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from packager import toolchain
from packager.blob import Blob, write_incbin_stub
from packager.carried_kinds import CarriedKinds
from packager.ir import BuildError


def compile_model(c_units: list[str], carried: CarriedKinds, blob: Blob, output: str, tc: toolchain.Toolchain, *,
                  libraries: list[str] = (), install_hints: list[str] = (), save_temps: str | None = None,
                  use_cache: bool = True) -> dict:
    """Write the shared library `output`; returns toolchain.compile_shared's counts ("compiled", "cached")."""
    work = tempfile.mkdtemp(prefix="dsopack-build-")
    try:
        blob_path = os.path.join(work, "model.blob")
        stub_path = os.path.join(work, "blob.s")
        c_paths = []
        for k, text in enumerate(c_units):
            c_paths.append(os.path.join(work, "model.c" if k == 0 else f"model_{k + 1}.c"))
            with open(c_paths[-1], "w", encoding="utf-8") as f:
                f.write(text)
        c_paths += carried.write_sources(work)
        blob.write(blob_path)
        write_incbin_stub(stub_path, blob_path)
        if save_temps:
            os.makedirs(save_temps, exist_ok=True)
            for path in (*c_paths, blob_path):
                shutil.copy(path, save_temps)
            write_incbin_stub(os.path.join(save_temps, "blob.s"), os.path.join(save_temps, "model.blob"))
        try:
            return toolchain.compile_shared(c_paths, [stub_path], output, cc=tc.cc, cflags=tc.compile_flags,
                                            ldflags=tc.link_flags, libraries=list(dict.fromkeys(libraries)),
                                            use_cache=use_cache)
        except BuildError as e:
            missing = toolchain.missing_dependency(str(e))
            if missing and install_hints:
                raise BuildError(f"{missing} is missing: {toolchain.install_hint(list(install_hints), tc)}\n{e}") \
                    from None
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
