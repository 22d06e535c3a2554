"""Build steps pyproject.toml cannot say: compile libdpk into the cffi extension
`loader._dpk`, and ship runtime_c/include/*.h with the packager (generated
kernels include dpk_abi.h)."""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithHeaders(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "packager", "include")
        os.makedirs(target, exist_ok=True)
        for header in glob.glob(os.path.join(ROOT, "runtime_c", "include", "*.h")):
            shutil.copy(header, target)


setup(cffi_modules=["loader/build_ffi.py:ffibuilder"], cmdclass={"build_py": BuildPyWithHeaders})
