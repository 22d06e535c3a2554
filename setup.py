"""Build steps pyproject.toml cannot say: compile libdpk into the cffi extension
`loader._dpk`, ship runtime_c/include/*.h with the packager (generated
kernels include dpk_abi.h), and take the version from DPK_VERSION in
runtime_c/include/dpk.h, the one place it is written."""

import glob
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def runtime_version() -> str:
    """DPK_VERSION of runtime_c/include/dpk.h (pyproject.toml lists `version` as dynamic)."""
    with open(os.path.join(ROOT, "runtime_c", "include", "dpk.h")) as f:
        match = re.search(r'^#define DPK_VERSION "([^"]+)"', f.read(), flags=re.M)
    if not match:
        raise RuntimeError("runtime_c/include/dpk.h does not define DPK_VERSION")
    return match.group(1)


class BuildPyWithHeaders(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "packager", "include")
        os.makedirs(target, exist_ok=True)
        for header in glob.glob(os.path.join(ROOT, "runtime_c", "include", "*.h")):
            shutil.copy(header, target)


setup(version=runtime_version(), cffi_modules=["loader/build_ffi.py:ffibuilder"], cmdclass={"build_py": BuildPyWithHeaders})
