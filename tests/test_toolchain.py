"""Compiler calls, target resolution and the object cache (packager/toolchain.py)."""

import os
import platform

import pytest

from packager import toolchain
from packager.ir import BuildError


def test_abi_header_is_found():
    assert os.path.isfile(os.path.join(toolchain.abi_include_dir(), "dpk_abi.h"))


def test_compiler_priority(monkeypatch):
    monkeypatch.setenv("CC", "gcc")
    assert toolchain.resolve_cc() == ["gcc"]
    assert toolchain.resolve_cc(None, "cc") == ["cc"]  # the manifest's target.cc beats $CC
    assert toolchain.resolve_cc("cc -m64", "gcc") == ["cc", "-m64"]  # --cc beats both; may carry arguments
    monkeypatch.delenv("CC")
    assert toolchain.resolve_cc() == ["cc"]
    with pytest.raises(BuildError, match="compiler 'nope-cc' not found on PATH"):
        toolchain.resolve_cc("nope-cc")


def test_version_and_native_target():
    assert toolchain.cc_version(["gcc"]).startswith("gcc ")
    triple, machine, extra = toolchain.resolve_target("native", ["cc"])
    assert machine == toolchain.MACHINES[triple.split("-")[0]] and extra == []
    assert toolchain.resolve_target(triple, ["cc"])[0] == triple


def test_compile_shared_errors_carry_command_and_output(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "bad.c"
    src.write_text("int f(void) { return undeclared_thing; }\n")
    out = tmp_path / "bad.so"
    with pytest.raises(BuildError) as info:
        toolchain.compile_shared([str(src)], [], str(out), cc="cc", cflags=["-O1"])
    message = str(info.value)
    assert message.startswith("compiling bad.c failed (exit 1): cc -c -fPIC -fvisibility=hidden -fno-trapping-math -O1")
    assert "undeclared_thing" in message
    assert sorted(os.listdir(tmp_path)) == ["bad.c"]  # no output, no temporaries


def test_object_cache_and_atomic_output(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "ok.c"
    src.write_text('#include "dpk_abi.h"\nDPK_EXPORT int answer(void) { return 42; }\nint hidden(void) { return 1; }\n')
    out = tmp_path / "ok.so"
    first = toolchain.compile_shared([str(src)], [], str(out), cc="cc")
    second = toolchain.compile_shared([str(src)], [], str(out), cc="cc")
    assert (first["compiled"], first["cached"]) == (1, 0) and (second["compiled"], second["cached"]) == (0, 1)
    assert len(os.listdir(tmp_path / "cache" / "obj")) == 1
    import ctypes
    lib = ctypes.CDLL(str(out))
    assert lib.answer() == 42
    with pytest.raises(AttributeError):
        lib.hidden  # -fvisibility=hidden
    assert toolchain.elf_machine(str(out)) == toolchain.MACHINES[platform.machine()]
    assert sorted(os.listdir(tmp_path)) == ["cache", "ok.c", "ok.so"]  # no temporaries left
