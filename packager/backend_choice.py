"""Which backends a build uses: the ones asked for, or the fastest the target has.

    names = check(["cblas", "host"], "--backends")    # validated: known, no repeats, not empty
    choice = choose(None, tc)                           # nothing asked: the fastest for the target
    choice.backends, choice.reason                      # ["cblas", "host"], "the default for ...: OpenBLAS found"

The rule (`dsopack build model.onnx` without a manifest, or `backends=None`):
FASTEST in order, each kept if the target can build it. Today that is cblas
(when the toolchain compiles and links `#include <cblas.h>` with `-lopenblas`
for the target triple: natively, or a cross target's multiarch OpenBLAS), then
host, which always builds. When cblas is left out, the reason names what is
missing and how to install it (cblas.INSTALL_HINT, for a cross target with the
target's packages), and the build says it in one line of its progress output.
A manifest's `backends`, `build(backends=...)` or `--backends` is used as
given (checked here), never probed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from packager import toolchain
from packager.ir import BuildError

FASTEST = ["cblas", "host"]  # the default priority, before probing what the target has

PROBE_C = """\
#include <cblas.h>
float dsopack_probe(const float *x, const float *y) { return cblas_sdot(4, x, 1, y, 1); }
"""


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
    missing = openblas_missing(tc)
    if missing is None:
        return Choice(list(FASTEST), f"the default for {tc.triple}: OpenBLAS found (cblas.h, -lopenblas)",
                      default=True)
    from packager.backends import cblas

    hint = toolchain.install_hint([cblas.INSTALL_HINT], tc)
    left_out = f"OpenBLAS not found for {tc.triple} ({missing}); {hint}"
    return Choice([b for b in FASTEST if b != "cblas"], f"the default for {tc.triple} without cblas: {left_out}",
                  default=True, left_out=left_out)


def openblas_missing(tc: toolchain.Toolchain) -> str | None:
    """None if `tc` compiles and links a cblas call against -lopenblas, else what is missing
    ("header cblas.h", "library -lopenblas", or the compiler's first line)."""
    from packager.backends import cblas

    return _probe(tuple(tc.cc), tuple(tc.compile_flags), tuple(tc.link_flags), tuple(cblas.LIBRARIES))


@functools.lru_cache(maxsize=None)
def _probe(cc: tuple[str, ...], cflags: tuple[str, ...], ldflags: tuple[str, ...],
           libraries: tuple[str, ...]) -> str | None:
    return toolchain.link_probe(PROBE_C, list(cc), list(cflags), list(ldflags), list(libraries))
