"""Compiler and linker calls, target resolution and the object cache.

The compiler is chosen by, first to last: the `cc` argument (`--cc`), the
manifest's `target.cc`, the CC environment variable, then `cc`. It may carry
arguments ("ccache gcc", "zig cc"). Every call is an argv list; a failure
raises BuildError with the command and the compiler's output.

Cross targets (`--target aarch64-linux-gnu` or the manifest's target.triple,
another machine than this one): without --cc or target.cc the compiler is
`<triple>-gcc` ($CC only if it targets that triple); `configure` refuses
-march/-mcpu/-mtune=native (the build machine's CPU, not the board's) and adds
the target's own library directories (Debian multiarch /usr/include/<triple>,
/usr/lib/<triple>, where `apt-get install libopenblas-dev:arm64` puts them),
so a backend's `-lopenblas` links the target's OpenBLAS.

Objects are cached by a hash of (source text, compiler, its version, flags,
dpk_abi.h) in $DSOPACK_CACHE or ~/.cache/dsopack, so rebuilding an unchanged
model skips the compile. Assembly stubs (which `.incbin` the blob) are not
cached. The shared library is linked to a temporary file next to `output`
and moved in place with os.replace, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from packager.ir import BuildError

# -fno-trapping-math: no code of ours reads FP exception flags; it lets gcc vectorize a select such as leaky_relu's
# `v >= 0 ? v : a * v` (with trapping math the a * v may not run unconditionally: a scalar loop with a branch)
BASE_CFLAGS = ["-fPIC", "-fvisibility=hidden", "-fno-trapping-math"]
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
            "riscv64": "riscv64", "ppc64le": "ppc64", "powerpc64le": "ppc64", "s390x": "s390x"}
ELF_MACHINES = {62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64", 22: "s390x", 3: "i386", 40: "arm"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64", "ppc64": "ppc64el", "s390x": "s390x"}
NATIVE_CPU_FLAGS = ("-march=native", "-mcpu=native", "-mtune=native")
# Debian 12 packages whose library is not Multi-Arch: same: the target's cannot be installed next to this
# machine's (install_hint; scripts/setup.sh --cross unpacks the arm64 ones into /usr/local/lib/aarch64-linux-gnu)
NOT_MULTIARCH = ("libxnnpack-dev", "libpthreadpool-dev")


def resolve_cc(cc: str | None = None, manifest_cc: str | None = None, triple: str | None = None) -> list[str]:
    """The compiler command as argv: --cc, then the manifest's target.cc, then (for a
    cross `triple`) $CC if it targets that triple, else `<triple>-gcc`; then $CC, then cc."""
    text = cc or manifest_cc
    if not text and is_cross(triple):
        env = os.environ.get("CC")
        text = env if env and _targets(env, triple) else f"{triple}-gcc"
        if shutil.which(text) is None:
            raise BuildError(f"target {triple} needs a cross compiler: '{text}' is not on PATH; "
                             f"{cross_compiler_hint(triple)}, or name one with --cc or target.cc")
    text = text or os.environ.get("CC") or "cc"
    argv = shlex.split(text)
    if not argv:
        raise BuildError("the compiler command is empty")
    if shutil.which(argv[0]) is None:
        hint = f"; {cross_compiler_hint(triple)}" if is_cross(triple) else ""
        raise BuildError(f"compiler '{argv[0]}' not found on PATH (choose one with --cc, target.cc or CC){hint}")
    return argv


def host_machine() -> str:
    """This machine's ELF machine name (x86_64, aarch64...)."""
    return MACHINES.get(platform.machine(), platform.machine())


def is_cross(triple: str | None) -> bool:
    """Whether `triple` names another machine than this one ("native" and None do not)."""
    if triple in (None, "", "native"):
        return False
    return MACHINES.get(triple.split("-")[0], triple.split("-")[0]) != host_machine()


def multiarch(triple: str) -> str:
    """The Debian multiarch name of a triple: aarch64-unknown-linux-gnu -> aarch64-linux-gnu."""
    parts = triple.split("-")
    if parts[0] == "arm64":
        parts[0] = "aarch64"
    if len(parts) == 4:  # drop the vendor
        del parts[1]
    return "-".join(parts)


def cross_compiler_hint(triple: str) -> str:
    text = f"on Debian/Ubuntu: apt-get install gcc-{multiarch(triple)}"
    if multiarch(triple) == "aarch64-linux-gnu":
        text += " (bash scripts/setup.sh --cross installs it)"
    return text


def _targets(cc: str, triple: str) -> bool:
    argv = shlex.split(cc)
    if not argv or shutil.which(argv[0]) is None:
        return False
    try:
        return _same_target(triple, _dumpmachine(tuple(argv)))
    except BuildError:
        return False


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise BuildError(f"{what} failed: cannot run {shlex.join(argv)}: {e.strerror or e}") from None
    if proc.returncode != 0:
        output = proc.stdout.strip() or "(no output)"
        raise BuildError(f"{what} failed (exit {proc.returncode}): {shlex.join(argv)}\n{output}")
    return proc.stdout


@functools.lru_cache(maxsize=None)
def _cc_version(cc: tuple[str, ...]) -> str:
    return _run([*cc, "--version"], "asking the compiler its version").strip()


def cc_version(cc: list[str]) -> str:
    """A short version string for the manifest's producer.cc, e.g. "gcc 12.2.0"."""
    text = _cc_version(tuple(cc))
    first = text.splitlines()[0] if text else ""
    match = re.search(r"clang version (\S+)", text)
    if match:
        return f"clang {match.group(1)}"
    numbers = re.findall(r"\b\d+\.\d+(?:\.\d+)?\b", first)
    if "Free Software Foundation" in text or "gcc" in first.lower():
        name = "gcc"
    else:
        name = os.path.basename(cc[-1])
    return f"{name} {numbers[-1]}" if numbers else first


@functools.lru_cache(maxsize=None)
def _dumpmachine(cc: tuple[str, ...]) -> str:
    return _run([*cc, "-dumpmachine"], "asking the compiler its target").strip()


def resolve_target(triple: str, cc: list[str]) -> tuple[str, str, list[str]]:
    """(triple, ELF machine name, extra flags) for a manifest triple ("native" = what cc targets)."""
    native = _dumpmachine(tuple(cc))
    extra: list[str] = []
    if triple in ("native", "", None):
        triple = native
    elif _same_target(triple, native):
        pass
    elif "clang" in _cc_version(tuple(cc)).lower():
        extra = [f"--target={triple}"]
    else:
        raise BuildError(f"target triple '{triple}' needs a cross compiler: '{shlex.join(cc)}' targets {native} "
                         f"(set target.cc in the manifest, --cc or CC, e.g. {triple}-gcc)")
    arch = triple.split("-")[0]
    machine = MACHINES.get(arch)
    if machine is None:
        raise BuildError(f"target triple '{triple}': unknown machine '{arch}' (known: {', '.join(sorted(MACHINES))})")
    return triple, machine, extra


def _same_target(a: str, b: str) -> bool:
    def norm(t: str) -> tuple[str, str]:
        parts = t.split("-")
        return MACHINES.get(parts[0], parts[0]), parts[-1] if len(parts) > 1 else ""
    return norm(a) == norm(b)


@dataclass
class Toolchain:
    """What a build compiles with, resolved from the manifest's target and --cc/--target."""

    cc: list[str]
    cc_name: str  # "gcc 12.2.0", for producer.cc
    triple: str
    machine: str  # ELF machine name, for target.machine
    cross: bool  # another machine than this one
    cflags: list[str]  # recorded as producer.cflags
    ldflags: list[str]
    include_dirs: list[str] = field(default_factory=list)  # the cross target's libraries
    library_dirs: list[str] = field(default_factory=list)
    variants: tuple = ()  # isa_variants.Variant: the generated C compiled once per variant; () for one

    @property
    def compile_flags(self) -> list[str]:
        return [*self.cflags, *(f"-I{d}" for d in self.include_dirs)]

    @property
    def link_flags(self) -> list[str]:
        return [*(f"-L{d}" for d in self.library_dirs), *self.ldflags]


def configure(target, cc: str | None = None, triple: str | None = None, march: str | None = None) -> Toolchain:
    """Resolve a manifest `target` (triple, cflags, cc, ldflags); `cc` (--cc), `triple`
    (--target) and `march` (--march: replaces any -march in target.cflags) override it.
    A cross target refuses -march/-mcpu/-mtune=native and gets the target's library
    directories (`target_dirs`)."""
    argv = resolve_cc(cc, target.cc, triple or target.triple)
    triple, machine, extra = resolve_target(triple or target.triple, argv)
    cross = machine != host_machine()
    cflags = [*extra, *target.cflags]
    if march is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", march):
            raise BuildError(f"--march '{march}' is not a CPU name (e.g. native, x86-64-v3, armv8.2-a)")
        cflags = [f for f in cflags if not f.startswith("-march=")] + [f"-march={march}"]
    native = [f for f in cflags if f in NATIVE_CPU_FLAGS]
    if cross and native:
        raise BuildError(f"target {triple}: {native[0]} means this build machine's CPU ({host_machine()}), not "
                         f"the {machine} board's; name the board's CPU (e.g. -mcpu=cortex-a72) or leave it out")
    from packager import isa_variants  # not at the top: it reads lower's C, whose version() reads this module

    includes, libs = target_dirs(triple) if cross else ([], [])
    return Toolchain(argv, cc_version(argv), triple, machine, cross, cflags, list(target.ldflags), includes, libs,
                     isa_variants.for_target(machine, cflags, triple))


def target_dirs(triple: str) -> tuple[list[str], list[str]]:
    """(include dirs, library dirs) of a cross target's own libraries: Debian/Ubuntu
    multiarch /usr/include/<triple> and /usr/lib/<triple>, then /usr/local/lib/<triple>
    (where `scripts/setup.sh --cross` unpacks the arm64 XNNPACK without dpkg: Debian 12's
    libxnnpack0 and libpthreadpool0 are not Multi-Arch: same, so dpkg cannot install them
    next to the amd64 ones), those that exist. Debian's cross gcc searches all three
    already (its ld's SEARCH_DIR); other compilers (clang --target, vendor toolchains) may
    not, and the "searched:" of a missing library's hint names them. /usr/lib comes first:
    a library dpkg installed wins over an unpacked copy. Anything else: -I/-L/--sysroot in
    target.cflags/ldflags."""
    name = multiarch(triple)
    found = [d for d in (f"/usr/include/{name}", f"/usr/lib/{name}", f"/usr/local/lib/{name}") if os.path.isdir(d)]
    return [d for d in found if "/include/" in d], [d for d in found if "/lib/" in d]


def install_hint(hints: list[str], tc: Toolchain) -> str:
    """The backends' install hints, for a cross target also naming the target's packages
    ("apt-get install libopenblas-dev" -> "... apt-get install libopenblas-dev:arm64")."""
    text = " ".join(hints)
    if not tc.cross:
        return text
    arch = DEBIAN_ARCH.get(tc.machine, tc.machine)
    where = ", ".join([*tc.include_dirs, *tc.library_dirs]) or "the compiler's default paths"
    text += f"; for target {tc.triple} they must be the {tc.machine} build (searched: {where})"
    match = re.search(r"apt-get install((?: [a-z0-9][a-z0-9.+-]*)+)", text)
    if not match:
        return text
    names = match.group(1).split()
    packages = " ".join(f"{p}:{arch}" for p in names)
    if any(p in NOT_MULTIARCH for p in names):
        host = DEBIAN_ARCH.get(host_machine(), host_machine())
        text += (f": on Debian 12, apt-get install {packages} would remove the {host} ones (not Multi-Arch: same); "
                 f"unpack the {arch} packages without dpkg into /usr/local/lib/{multiarch(tc.triple)} instead "
                 f"(docs/edge.md" + ("; bash scripts/setup.sh --cross does it)" if tc.machine == "aarch64" else ")"))
    else:
        text += (f": on Debian/Ubuntu: dpkg --add-architecture {arch} && apt-get update && "
                 f"apt-get install {packages}")
        if tc.machine == "aarch64":
            text += " (bash scripts/setup.sh --cross installs the arm64 packages dsopack uses)"
    return text


def abi_include_dir() -> str:
    """Where dpk_abi.h is: packager/include when installed, else <repo>/runtime_c/include."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "include"),
                      os.path.join(os.path.dirname(here), "runtime_c", "include")):
        if os.path.isfile(os.path.join(candidate, "dpk_abi.h")):
            return candidate
    raise BuildError(f"dpk_abi.h not found (looked in {here}/include and the source tree's runtime_c/include); "
                     f"reinstall dsopack")


def cache_dir() -> str:
    return os.environ.get("DSOPACK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dsopack")


def _object_key(source_text: str, cc: list[str], flags: list[str], include_dir: str) -> str:
    h = hashlib.sha256()
    with open(os.path.join(include_dir, "dpk_abi.h"), "rb") as f:
        abi = f.read()
    for part in (source_text.encode(), "\0".join(cc).encode(), _cc_version(tuple(cc)).encode(),
                 "\0".join(flags).encode(), abi):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


def compile_object(source: str, cc: list[str], flags: list[str], workdir: str, use_cache: bool = True) -> tuple[str, bool]:
    """Compile one C file to an object; return (object path, whether it came from the cache)."""
    include_dir = abi_include_dir()
    argv_flags = [*BASE_CFLAGS, *flags, f"-I{include_dir}"]
    with open(source, encoding="utf-8") as f:
        text = f.read()
    cached = None
    if use_cache:
        key = _object_key(text, cc, [*BASE_CFLAGS, *flags], include_dir)
        cached = os.path.join(cache_dir(), "obj", f"{key}.o")
        if os.path.isfile(cached):
            return cached, True
    obj = os.path.join(workdir, os.path.splitext(os.path.basename(source))[0] + ".o")
    _run([*cc, "-c", *argv_flags, source, "-o", obj], f"compiling {os.path.basename(source)}")
    if cached is not None:
        try:  # a cache we cannot write is not an error
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached), suffix=".o.tmp")
            os.close(fd)
            shutil.copyfile(obj, tmp)
            os.replace(tmp, cached)
        except OSError:
            pass
    return obj, False


def compile_shared(c_sources: list, asm_sources: list[str], output: str, *, cc: list[str] | str | None = None,
                   cflags: list[str] = ("-O3",), ldflags: list[str] = (), libraries: list[str] = (),
                   use_cache: bool = True, after_link=None) -> dict:
    """Compile and link one shared library, written atomically to `output`. A C source is a path, or
    (path, flags added to `cflags` for it alone): an ISA variant's unit (isa_variants). `after_link(path)`
    finishes the linked file before it takes `output`'s place (elf_place.place).

    Returns {"cc": argv, "cached": number of objects from the cache, "compiled": number compiled}."""
    cc = resolve_cc(cc) if cc is None or isinstance(cc, str) else list(cc)
    cflags, ldflags = list(cflags), list(ldflags)
    libs = [f"-l{lib}" for lib in dict.fromkeys([*libraries, "m"])]
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise BuildError(f"cannot write {output}: directory {out_dir} does not exist")
    stats = {"cc": cc, "cached": 0, "compiled": 0}
    with tempfile.TemporaryDirectory(prefix="dsopack-cc-") as work:
        # the compiler runs in its own processes: threads are enough to keep every core busy
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            sources = [(s, []) if isinstance(s, str) else s for s in c_sources]
            compiled = list(pool.map(lambda s: compile_object(s[0], cc, [*cflags, *s[1]], work, use_cache), sources))
        objects = []
        for obj, hit in compiled:
            stats["cached" if hit else "compiled"] += 1
            objects.append(obj)
        for source in asm_sources:
            obj = os.path.join(work, os.path.splitext(os.path.basename(source))[0] + ".stub.o")
            _run([*cc, "-c", *BASE_CFLAGS, *[f for f in cflags if f.startswith(("-m", "--target"))], source,
                  "-o", obj], f"assembling {os.path.basename(source)}")
            objects.append(obj)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{os.path.basename(output)}.", suffix=".tmp")
        os.close(fd)
        try:
            _run([*cc, "-shared", *BASE_CFLAGS, *cflags, *objects, "-o", tmp, *ldflags, *libs],
                 f"linking {os.path.basename(output)}")
            if after_link:
                after_link(tmp)
            os.chmod(tmp, 0o755 & ~_umask())
            os.replace(tmp, output)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    return stats


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def missing_dependency(compiler_output: str) -> str | None:
    """What a failed compile or link could not find, from its output: "header cblas.h",
    "library -lopenblas", or None when the failure is something else."""
    match = re.search(r"fatal error: ([^\s:]+): No such file or directory", compiler_output)
    if match:
        return f"header {match.group(1)}"
    match = re.search(r"cannot find -l(\S+?)(?::|\s|$)", compiler_output)
    if match:
        return f"library -l{match.group(1)}"
    return None


def link_probe(c_text: str, cc: list[str], cflags: list[str], ldflags: list[str], libraries: list[str]) -> str | None:
    """None if `c_text` compiles and links into a shared object with `libraries`, else what is
    missing ("header cblas.h", "library -lopenblas"; else the failure's first line)."""
    with tempfile.TemporaryDirectory(prefix="dsopack-probe-") as work:
        source = os.path.join(work, "probe.c")
        with open(source, "w", encoding="utf-8") as f:
            f.write(c_text)
        try:
            _run([*cc, "-shared", *BASE_CFLAGS, *cflags, source, "-o", os.path.join(work, "probe.so"), *ldflags,
                  *(f"-l{lib}" for lib in libraries)], "probing the toolchain")
        except BuildError as e:
            return missing_dependency(str(e)) or str(e).splitlines()[0]
    return None


def elf_machine(path: str) -> str | None:
    """The ELF e_machine of a file as a machine name (None if not ELF)."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    number = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(number, f"e_machine {number}")
