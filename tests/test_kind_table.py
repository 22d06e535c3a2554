"""Kinds carried by a model file: the manifest's `kinds.carried`, the exported
`__dpk_kinds` table and what the runtime checks, before and after dlopen.

Models are made by hand with the helpers of test_runtime_c.py (a C file with
the `scale` kind, a params and a graph payload, linked with the `.incbin` stub).
"""

from __future__ import annotations

import numpy as np
import pytest

import loader
from test_runtime_c import (KERNELS, K, api, assert_matches, build_model, load_error, reference,  # noqa: F401
                            scaled_model, test_api, weights)

REGISTERED = "dso, graph, json, params"

MARKER_KERNELS = r"""
#include <stdio.h>
/* runs at dlopen: proves whether any code of the file ran */
__attribute__((constructor)) static void touch_marker(void) {
  FILE *f = fopen(MARKER_PATH, "w");
  if (f) { fputs("ran\n", f); fclose(f); }
}
"""


def table(entries: str, count: str = "1", abi: str = "DPK_ABI_VERSION", array: str = "kinds") -> str:
    """C for an exported __dpk_kinds with the given entry list and fields."""
    return (f"static const dpk_kind *const kinds[] = {{{entries}}};\n"
            f"DPK_EXPORT const dpk_kind_table __dpk_kinds = {{{abi}, {count}, {array}}};\n")


def kind(name='"scale"', load="scale_load", get="scale_get", free="scale_free", abi="DPK_ABI_VERSION") -> str:
    return f"{{{name}, {abi}, {load}, {get}, {free}}}"


def with_kinds(*defs: str) -> str:
    """Static kind definitions k0, k1... and a table listing them."""
    lines = [f"static const dpk_kind k{i} = {d};" for i, d in enumerate(defs)]
    return "\n" + "\n".join(lines) + "\n" + table(", ".join(f"&k{i}" for i in range(len(defs))), str(len(defs)))


def test_a_carried_kind_runs_through_the_python_loader(tmp_path):
    path = scaled_model(tmp_path)
    x = np.random.default_rng(3).standard_normal((1, K)).astype(np.float32)
    with loader.load(path) as model:
        assert [m.kind for m in model.modules] == ["dso", "params", "scale", "graph"]
        assert model.manifest["kinds"] == {"carried": ["scale"]}
        y = model.run(x=x)["y"]
    assert_matches(y, reference(x, *weights()), 2.5)


def test_an_unknown_kind_fails_before_any_code_of_the_file_runs(test_api, tmp_path):
    marker = tmp_path / "marker"
    kernels = f'#define MARKER_PATH "{marker}"\n' + MARKER_KERNELS
    def unknown(manifest):
        manifest["modules"].append({"name": "ext0", "kind": "lut"})
    path = build_model(tmp_path, name="u", kernels=KERNELS + kernels, edit=unknown)
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': module 'ext0' has kind 'lut', which is not registered (registered: {REGISTERED})")
    with pytest.raises(loader.NotFoundError, match="has kind 'lut', which is not registered"):
        loader.load(path)
    assert not marker.exists()
    # the same file without the unknown module loads, and its constructor runs: the marker can appear
    ok = build_model(tmp_path, name="k", kernels=KERNELS + kernels)
    assert api(test_api, "load", ok) == "OK\n"
    assert marker.read_text() == "ran\n"


def test_a_table_the_manifest_does_not_declare_is_not_used(test_api, tmp_path):
    path = scaled_model(tmp_path, carried=None)
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': module 'ext0' has kind 'scale', which is not registered (registered: {REGISTERED})")


def test_the_unknown_kind_message_lists_the_carried_kinds(test_api, tmp_path):
    path = scaled_model(tmp_path, edit=lambda m: m["modules"].append({"name": "ext9", "kind": "gelu"}))
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': module 'ext9' has kind 'gelu', which is not registered (registered: {REGISTERED}; "
        "carried by the file: scale)")


def test_a_declared_kind_the_file_does_not_export(test_api, tmp_path):
    path = scaled_model(tmp_path, table="", name="none")
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': the manifest declares carried kind 'scale' but the file does not export __dpk_kinds")
    path = scaled_model(tmp_path, carried=("scale", "lut"), name="lut")
    assert load_error(test_api, path) == (
        f"NOT_FOUND: '{path}': the manifest declares carried kind 'lut' but __dpk_kinds does not provide it "
        "(it provides: scale)")


@pytest.mark.parametrize("tail, expected", [
    (table("&scale_kind", abi="9"),
     "UNIMPLEMENTED: '{}': __dpk_kinds was built for ABI version 9.0 but this runtime has ABI version 1.2"),
    (table("&scale_kind", count="65"), "FAILED_PRECONDITION: '{}': __dpk_kinds has 65 entries (at most 64)"),
    (table("&scale_kind", array="0"), "FAILED_PRECONDITION: '{}': __dpk_kinds has 1 entries but no array"),
    (table("&scale_kind, 0", count="2"), "FAILED_PRECONDITION: '{}': __dpk_kinds entry 1 is NULL"),
    (with_kinds(kind(name="0")), "FAILED_PRECONDITION: '{}': __dpk_kinds entry 0 has no name"),
    (with_kinds(kind(name='""')), "FAILED_PRECONDITION: '{}': __dpk_kinds entry 0 has no name"),
    (with_kinds(kind(load="0")),
     "FAILED_PRECONDITION: '{}': __dpk_kinds entry 0 (kind 'scale') has no load function"),
    (with_kinds(kind(get="0")),
     "FAILED_PRECONDITION: '{}': __dpk_kinds entry 0 (kind 'scale') has no get_function function"),
    (with_kinds(kind(free="0")),
     "FAILED_PRECONDITION: '{}': __dpk_kinds entry 0 (kind 'scale') has no free function"),
    (with_kinds(kind(name='"other"'), kind(abi="3")),
     "UNIMPLEMENTED: '{}': kind 'scale' was built for ABI version 3.0 but this runtime has ABI version 1.2"),
    (with_kinds(kind(), kind(name='"other"'), kind()),
     "FAILED_PRECONDITION: '{}': __dpk_kinds lists kind 'scale' twice (entries 0 and 2)"),
])
def test_a_malformed_table_is_refused_at_load(test_api, tmp_path, tail, expected):
    path = scaled_model(tmp_path, table=tail)
    assert load_error(test_api, path) == expected.format(path)


@pytest.mark.parametrize("kinds, expected", [
    ([], "field 'kinds' must be a mapping {carried: [names]}"),
    ({"carried": "scale"}, "field 'kinds.carried' must be a sequence of names"),
    ({"carried": ["scale", "scale"]}, "field 'kinds.carried' names 'scale' twice"),
    ({"carried": [""]}, "field 'kinds.carried' has an empty name"),
    ({"carried": [f"k{i}" for i in range(65)]}, "field 'kinds.carried' names 65 kinds (at most 64)"),
])
def test_kinds_field_errors(test_api, tmp_path, kinds, expected):
    path = build_model(tmp_path, edit=lambda m: m.update(kinds=kinds))
    assert load_error(test_api, path) == f"FAILED_PRECONDITION: manifest of '{path}': {expected}"


def test_a_carried_kind_wins_over_a_registered_one_for_its_file(test_api, tmp_path):
    """A file may carry its own `json`: its modules use it (the built-in would refuse the payload)."""
    path = scaled_model(tmp_path, table=with_kinds(kind(name='"json"')), carried=("json",), kind="json")
    x = np.random.default_rng(4).standard_normal((1, K)).astype(np.float32)
    with loader.load(path) as model:
        assert_matches(model.run(x=x)["y"], reference(x, *weights()), 2.5)
    # and another model's json modules still get the built-in kind
    assert "json" in REGISTERED
