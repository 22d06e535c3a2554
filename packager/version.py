"""dsopack's version, carried by the generated C's header and the manifest's producer."""

from __future__ import annotations

import os
import re

from packager import toolchain


def version() -> str:
    """The installed distribution's version, else (a source tree that was not installed) DPK_VERSION of
    dpk.h, where setup.py reads it too: the one place it is written."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("dsopack")
    except Exception:
        with open(os.path.join(toolchain.abi_include_dir(), "dpk.h")) as f:
            return re.search(r'^#define DPK_VERSION "([^"]+)"', f.read(), flags=re.M).group(1)
