"""Which backends a build uses: the ones asked for, or the fastest the target has.

    names = check(["cblas", "host"], "--backends")    # validated: known, no repeats, not empty
    choice = choose(None, tc)                           # nothing asked: the fastest for the target
    choice.backends, choice.reason                      # ["xnnpack", "cblas", "host"], "the default for ...: XNNPACK found ..."

The rule (`dsopack build model.onnx` without a manifest, or `backends=None`):
FASTEST in order, each kept if the target can build it. Today that is xnnpack
(when the toolchain compiles and links `#include <xnnpack.h>` with -lXNNPACK for
the target triple; for aarch64, the arm64 XNNPACK `scripts/setup.sh --cross`
unpacks into /usr/local/lib/aarch64-linux-gnu, toolchain.target_dirs), then
cblas (`#include <cblas.h>` with -lopenblas: natively, or a cross target's
multiarch OpenBLAS), then host, which always builds. A
library backend left out is named with what is missing and how to install it
(its INSTALL_HINT, for a cross target with the target's packages), and the
build says it in one line of its progress output. A manifest's `backends`,
`build(backends=...)` or `--backends` is used as given (checked here), never
probed.

Why this order (benchmarks/extlib_micro.py, benchmarks/real_model_speed.py;
README, "The xnnpack backend"): XNNPACK's conv2d and dense run 1.0-1.4x
onnxruntime's time per layer where im2col + OpenBLAS runs 1.3-5.8x, and the
torchvision CNNs built with it run 0.35-0.69x the time of [cblas, host]
(ResNet-18 19.5 against 53.0 ms; ConvNeXt-tiny even) on the 2-core AVX-512 EPYC.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from packager import toolchain
from packager.ir import BuildError

FASTEST = ["xnnpack", "cblas", "host"]  # the default priority, before probing what the target has

PROBE_C = """\
#include <cblas.h>
float dsopack_probe(const float *x, const float *y) { return cblas_sdot(4, x, 1, y, 1); }
"""
PROBE_XNNPACK = """\
#include <xnnpack.h>
int dsopack_probe(void) { return (int)xnn_initialize(NULL); }
"""


@dataclass(frozen=True)
class Library:
    """What a library backend of FASTEST needs from the target: a C text that must compile and link."""

    label: str  # how messages name it
    needs: str  # the header and the link flag, for the reason
    probe: str
    module: str  # the backend's module: its LIBRARIES and INSTALL_HINT


LIBRARIES = {
    "xnnpack": Library("XNNPACK", "xnnpack.h, -lXNNPACK", PROBE_XNNPACK, "packager.backends.xnnpack"),
    "cblas": Library("OpenBLAS", "cblas.h, -lopenblas", PROBE_C, "packager.backends.cblas"),
}


@dataclass
class Choice:
    backends: list[str]
    reason: str  # one line: why these (for the progress output and --explain)
    default: bool  # chosen by the rule, not asked for
    left_out: str | None = None  # why a backend of FASTEST was left out, with the install hint


def check(names, where: str = "backends") -> list[str]:
    """`names` (a list, or "a,b,c") validated: not empty, no repeats, every name a known backend
    (partition.get_backend's error lists the known ones)."""
    from packager import partition

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = list(names)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise BuildError(f"{where}: expected backend names separated by commas (e.g. cblas,host), got "
                         f"{','.join(map(str, names)) or 'nothing'!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BuildError(f"{where}: lists {', '.join(dupes)} more than once")
    for name in names:
        partition.get_backend(name, where)
    return names


def choose(asked: list[str] | None, tc: toolchain.Toolchain, asked_by: str = "the manifest") -> Choice:
    """The backends a build uses: `asked` as given (by `asked_by`), else the fastest `tc` can build."""
    if asked is not None:
        return Choice(list(asked), f"as given by {asked_by}", default=False)
    kept, found, missing = [], [], []
    for name in FASTEST:
        lib = LIBRARIES.get(name)
        what = library_missing(name, tc) if lib else None
        if lib and what is not None:
            hint = toolchain.install_hint([importlib.import_module(lib.module).INSTALL_HINT], tc)
            missing.append((name, f"{lib.label} not found for {tc.triple} ({what}); {hint}"))
            continue
        kept.append(name)
        if lib:
            found.append(f"{lib.label} found ({lib.needs})")
    left_out = "; ".join(text for _, text in missing) or None
    reason = f"the default for {tc.triple}"
    if missing:
        reason += f" without {', '.join(name for name, _ in missing)}"
    reason += ": " + "; ".join(found + [text for _, text in missing]) if found or missing else ""
    return Choice(kept, reason, default=True, left_out=left_out)


def library_missing(backend: str, tc: toolchain.Toolchain) -> str | None:
    """None if `tc` compiles and links the probe of `backend`'s library (LIBRARIES), else what is missing
    ("header xnnpack.h", "library -lXNNPACK", or the compiler's first line)."""
    lib = LIBRARIES[backend]
    libraries = importlib.import_module(lib.module).LIBRARIES
    return _probe(lib.probe, tuple(tc.cc), tuple(tc.compile_flags), tuple(tc.link_flags), tuple(libraries))


def openblas_missing(tc: toolchain.Toolchain) -> str | None:
    """None if `tc` compiles and links a cblas call against -lopenblas, else what is missing
    ("header cblas.h", "library -lopenblas", or the compiler's first line)."""
    return library_missing("cblas", tc)


@functools.lru_cache(maxsize=None)
def _probe(probe: str, cc: tuple[str, ...], cflags: tuple[str, ...], ldflags: tuple[str, ...],
           libraries: tuple[str, ...]) -> str | None:
    return toolchain.link_probe(probe, list(cc), list(cflags), list(ldflags), list(libraries))
