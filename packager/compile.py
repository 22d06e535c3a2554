"""Generated C, carried kinds and the blob -> the .so: the build's compile stage.

Everything goes to a temporary directory (removed afterwards): model.c (and model_2.c...
for a large model: lower.c_units), each carried
kind's C and kinds.c (carried_kinds.py), model.blob and blob.s, the assembly stub that
`.incbin`s it (blob.py); a blob of PLACE_FROM bytes or more is not linked but written into the
linked file, in a `.dpk` the stub reserves (elf_place.py). A toolchain with ISA variants (isa_variants.py: a default
x86-64 build) gets each unit once per variant (model.avx2.c...) and dispatch.c, the
unit that picks one at load. toolchain.compile_shared compiles, links and moves the
library into place atomically. `save_temps` keeps the sources and the blob, with a
stub that includes that copy. A failure to find a header or a library says how to
install it (the backends' install hints).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from packager import elf_place, isa_variants, lower, toolchain
from packager.blob import Blob, write_incbin_stub
from packager.carried_kinds import CarriedKinds
from packager.ir import BuildError

# Blobs from this size on are written into the linked file rather than linked (elf_place.py): past 2 GiB
# the link fails, and below it the assembler and the linker each copy the blob (about 1 s per 200 MB).
PLACE_FROM = 256 << 20


def compile_model(c_units: list[str], carried: CarriedKinds, blob: Blob, output: str, tc: toolchain.Toolchain, *,
                  libraries: list[str] = (), install_hints: list[str] = (), save_temps: str | None = None,
                  use_cache: bool = True, name: str = "model", functions: list[str] = (), once_units: int = 0,
                  once_functions: list[str] = (), place_from: int = PLACE_FROM) -> dict:
    """Write the shared library `output` of model `name`, whose units define the packed `functions`;
    the last `once_units` units (defining `once_functions`) are compiled once, not per ISA variant;
    a blob of `place_from` bytes or more is written into the linked file, not linked (elf_place.py);
    returns toolchain.compile_shared's counts ("compiled", "cached")."""
    work = tempfile.mkdtemp(prefix="dsopack-build-")
    try:
        blob_path = os.path.join(work, "model.blob")
        stub_path = os.path.join(work, "blob.s")
        varied = [f for f in functions if f not in set(once_functions)]
        sources = _write_units(work, c_units, tc.variants, name, varied, once_units)
        c_paths = [path for path, _ in sources] + carried.write_sources(work)
        sources += [(path, []) for path in c_paths[len(sources):]]
        placed = blob.size >= place_from
        ldflags, after_link = list(tc.link_flags), None
        if placed:
            elf_place.reserve_stub(stub_path, blob.size)
            script = os.path.join(work, "dpk.ld")
            with open(script, "w") as f:
                f.write(elf_place.LINKER_SCRIPT)
            ldflags.append(f"-Wl,-T,{script}")
            after_link = lambda path: elf_place.place(path, blob)  # noqa: E731
        else:
            blob.write(blob_path)
            write_incbin_stub(stub_path, blob_path)
        if save_temps:
            os.makedirs(save_temps, exist_ok=True)
            for path in c_paths:
                shutil.copy(path, save_temps)
            blob.write(os.path.join(save_temps, "model.blob"))
            write_incbin_stub(os.path.join(save_temps, "blob.s"), os.path.join(save_temps, "model.blob"))
        try:
            return toolchain.compile_shared(sources, [stub_path], output, cc=tc.cc, cflags=tc.compile_flags,
                                            ldflags=ldflags, libraries=list(dict.fromkeys(libraries)),
                                            use_cache=use_cache, after_link=after_link)
        except BuildError as e:
            missing = toolchain.missing_dependency(str(e))
            if missing and install_hints:
                raise BuildError(f"{missing} is missing: {toolchain.install_hint(list(install_hints), tc)}\n{e}") \
                    from None
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_units(work: str, c_units: list[str], variants: tuple, name: str, functions: list[str],
                 once_units: int = 0) -> list[tuple]:
    """Write the generated units into `work`: as they are, or once per ISA variant (the last `once_units`
    once, with the runtime's tables declared: the dispatch unit defines them) plus the dispatch unit, which
    exports `functions`. Returns [(path, flags the variant adds)]."""
    files = []
    for k, text in enumerate(c_units):
        stem = "model" if k == 0 else f"model_{k + 1}"
        if not variants or k >= len(c_units) - once_units:
            once = text.replace(lower.SYMBOLS, lower.SYMBOLS_EXTERN, 1) if variants else text
            files.append((f"{stem}.c", once, []))
            continue
        for v in variants:
            files.append((f"{stem}.{v.name}.c", isa_variants.variant_unit(text, functions, v), list(v.cflags)))
    if variants:
        files.append(("dispatch.c", isa_variants.dispatch_unit(name, functions, variants), []))
    out = []
    for file_name, text, flags in files:
        path = os.path.join(work, file_name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        out.append((path, flags))
    return out
