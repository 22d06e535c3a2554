"""Test helper: sanitizer builds of the C runtime and of the C test drivers.

    flags = sanitizer_flags("asan")            # None (with the reason) if the compiler cannot
    build = runtime_build("asan")              # runtime_c/build/san-asan: libdpk.a, dpk-run
    exe = c_program("tests/c/stress.c", out, "asan", internal=False)

Kinds: "asan" (AddressSanitizer + UndefinedBehaviorSanitizer, LeakSanitizer
with it, every report fatal), "tsan" (ThreadSanitizer), "plain" (-O2, none).
The compiler is $CC (default gcc); a kind is available when a small program
built with its flags runs.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")
CC = os.environ.get("CC", "gcc")
LIBS = ["-lzstd", "-lyaml", "-lxxhash", "-ldl", "-lpthread", "-lm"]

FLAGS = {
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
    "plain": ["-O2", "-g"],
}
# Environment for running what a kind built: every report fails the process.
ENV = {
    "asan": {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
             "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=23",
             "LSAN_OPTIONS": "exitcode=23"},
    "tsan": {"TSAN_OPTIONS": "halt_on_error=1:exitcode=23"},
    "plain": {},
}


@functools.lru_cache(maxsize=None)
def unavailable(kind: str) -> str | None:
    """None if `kind` works with $CC here, else why not (a skip reason)."""
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "probe.c"), os.path.join(d, "probe")
        with open(src, "w") as f:
            f.write("#include <stdlib.h>\nint main(void) { void *p = malloc(8); free(p); return 0; }\n")
        built = subprocess.run([CC, *FLAGS[kind], src, "-o", exe], capture_output=True, text=True)
        if built.returncode != 0:
            return f"{CC} cannot build with {' '.join(FLAGS[kind])}: {built.stderr.strip()[:300]}"
        ran = subprocess.run([exe], capture_output=True, text=True)
        if ran.returncode != 0:
            return f"a program built with {' '.join(FLAGS[kind])} does not run here: {ran.stderr.strip()[:300]}"
    return None


def env(kind: str) -> dict:
    return {**os.environ, **ENV[kind]}


def extra_libs() -> list[str]:
    """Libraries libdpk needs beyond LIBS, as its Makefile links them (e.g. -lsodium)."""
    out = subprocess.run(["make", "-s", "-C", RUNTIME, "-pn"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("LIBS :="):
            return [w for w in line.split(":=", 1)[1].split() if w not in LIBS]
    return []


@functools.lru_cache(maxsize=None)
def runtime_build(kind: str) -> str:
    """runtime_c built with `kind`'s flags into runtime_c/build/san-KIND; its path."""
    build = os.path.join(RUNTIME, "build", f"san-{kind}")
    flags = " ".join(FLAGS[kind])
    result = subprocess.run(["make", "-C", RUNTIME, "-j4", f"BUILD={build}", f"CC={CC}", f"CFLAGS={flags}",
                             f"LDFLAGS={flags}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"make ({kind}) failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return build


def c_program(source: str, out: str, kind: str, internal: bool = False, tools: tuple[str, ...] = ()) -> str:
    """Compile tests/c/SOURCE (with `tools`, sources of runtime_c/tools/ such as npy.c that
    libdpk does not hold) against the `kind` build of libdpk.a; the executable's path."""
    build = runtime_build(kind)
    includes = ["-I", os.path.join(RUNTIME, "include")] + (["-I", os.path.join(RUNTIME, "src")] if internal else [])
    includes += ["-I", os.path.join(RUNTIME, "tools")] if tools else []
    subprocess.run([CC, "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra",
                    "-Wno-format-truncation", *FLAGS[kind], *includes, os.path.join(ROOT, source),
                    *(os.path.join(RUNTIME, "tools", t) for t in tools),
                    os.path.join(build, "libdpk.a"), *LIBS, *extra_libs(), "-o", out], check=True)
    return out


def clean_report(result: subprocess.CompletedProcess) -> str:
    """The process output, asserting no sanitizer or leak report is in it."""
    text = result.stdout + result.stderr
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                   "SUMMARY: "):
        assert marker not in text, text[-6000:]
    return text
