"""The compile stage alone (packager/compile.py): C text + blob -> a .so, temporaries, hints."""

import dataclasses
import os
import tempfile

import pytest

import section
from packager.blob import BlobWriter
from packager.carried_kinds import CarriedKinds
from packager.compile import compile_model
from packager.ir import BuildError
from packager.lower import C_HEADER, SYMBOLS
from packager.spec import Target
from packager.toolchain import configure

C_TEXT = C_HEADER.format(version="test", name="t", symbols=SYMBOLS) + "DPK_EXPORT int f(void) { return 0; }\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tc():
    """One variant of the code (the ISA variants are tested below)."""
    return dataclasses.replace(configure(Target(cflags=["-O1"])), variants=())


def blob():
    writer = BlobWriter()
    writer.add(b"payload bytes", "raw")
    return writer.finish({"format": "dsopack/1", "name": "t"})


def test_the_library_carries_the_blob_and_temporaries_go(tmp_path, tc, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the build's temporary directory goes
    b = blob()
    out = tmp_path / "t.so"
    stats = compile_model([C_TEXT], CarriedKinds(), b, str(out), tc)
    assert (stats["compiled"], stats["cached"]) == (1, 0)
    data, start = section.section(str(out))
    written = tmp_path / "b.blob"
    b.write(str(written))
    assert data[start:start + b.size] == written.read_bytes()
    assert os.listdir(temp) == []
    again = compile_model([C_TEXT], CarriedKinds(), b, str(tmp_path / "u.so"), tc)
    assert (again["compiled"], again["cached"]) == (0, 1)


def test_save_temps_keeps_sources_blob_and_a_stub_for_them(tmp_path, tc):
    keep = tmp_path / "keep"
    compile_model([C_TEXT], CarriedKinds(), blob(), str(tmp_path / "t.so"), tc, save_temps=str(keep))
    assert sorted(os.listdir(keep)) == ["blob.s", "model.blob", "model.c"]
    assert (keep / "model.c").read_text() == C_TEXT
    assert str(keep / "model.blob") in (keep / "blob.s").read_text()


def test_a_missing_library_says_how_to_install_it_and_writes_nothing(tmp_path, tc):
    out = tmp_path / "t.so"
    with pytest.raises(BuildError, match=r"library -ldpk_absent_lib is missing: apt-get install libabsent-dev\n"):
        compile_model([C_TEXT], CarriedKinds(), blob(), str(out), tc, libraries=["dpk_absent_lib"],
                      install_hints=["apt-get install libabsent-dev"])
    assert not out.exists()
    with pytest.raises(BuildError, match="linking t.so failed") as info:  # without a hint: the compiler's error
        compile_model([C_TEXT], CarriedKinds(), blob(), str(out), tc, libraries=["dpk_absent_lib"])
    assert "is missing" not in str(info.value) and not out.exists()


def test_a_compile_error_names_the_file(tmp_path, tc):
    with pytest.raises(BuildError, match=r"compiling model\.c failed"):
        compile_model([C_TEXT + "this is not C\n"], CarriedKinds(), blob(), str(tmp_path / "t.so"), tc)
    assert not (tmp_path / "t.so").exists()


def test_isa_variants_compile_each_unit_per_variant_and_a_dispatch_unit(tmp_path, isa_variants_on):
    """A default x86-64 toolchain compiles each unit once per variant (f renamed in each) and the dispatch unit
    that exports f; elsewhere (no variants) the unit as it is."""
    tc = configure(Target(cflags=["-O1"]))
    keep = tmp_path / "keep"
    stats = compile_model([C_TEXT], CarriedKinds(), blob(), str(tmp_path / "t.so"), tc, save_temps=str(keep),
                          functions=["f"])
    names = [v.name for v in tc.variants]
    want = [f"model.{n}.c" for n in names] + ["dispatch.c"] if names else ["model.c"]
    assert sorted(os.listdir(keep)) == sorted(["blob.s", "model.blob", *want])
    assert stats["compiled"] == len(want)
    for n in names:
        assert f"#define f f__dpk_{n}\n" in (keep / f"model.{n}.c").read_text()
