"""The Python plugin API: backends found through the `dsopack.backends` entry
point group (packager/plugins.py), what a backend's lower() may return
(packager/lower_check.py), and kinds whose C a payload carries into the file
(packager/carried_kinds.py).

Entry points come from a hand-made distribution (a .dist-info directory with
entry_points.txt) on sys.path; misbehaving backends are registered in
partition.BACKENDS for one test each.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import loader
from packager import partition
from packager.backends.base import Backend, CSource, KindSource, Payload
from packager.backends.json import JsonBackend
from packager.build import build
from packager.ir import BuildError

def good_c(function: str) -> str:
    """C that defines `function` in the packed convention (it does nothing)."""
    return (f"DPK_EXPORT int {function}(const dpk_value *args, const int *type_codes, int nargs, dpk_value *ret,\n"
            "    int *ret_type_code, void *resource) {\n"
            "  (void)args; (void)type_codes; (void)nargs; (void)ret; (void)ret_type_code; (void)resource;\n"
            "  return 0;\n}\n")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


def spec(backends):
    return {"name": "p", "backends": backends, "model": {"graph": {
        "inputs": {"x": {"shape": [2, 3], "dtype": "float32"}},
        "nodes": [{"op": "relu", "inputs": ["x"], "output": "a"},
                  {"op": "tanh", "inputs": ["a"], "output": "y"}],
        "outputs": ["y"]}}}


# ---- entry points -----------------------------------------------------------------------------------


def fake_distribution(root, entry_points: dict[str, str], module: str = "", name="fakeplug"):
    """A distribution `name` in directory `root`: <name>.py and its .dist-info."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dsopack.backends]\n{lines}")
    (root / f"{name}.py").write_text(textwrap.dedent(module))


PLUGIN = """
from packager.backends.base import Backend
from packager.backends.json import JsonBackend

class Jsonish(JsonBackend):   # the json backend under another name
    name = "jsonish"

class Misnamed(JsonBackend):
    name = "something_else"

class NoLower(Backend):
    name = "nolower"
    def supports(self, node, graph):
        return None

class NotABackend:
    name = "plain"
    def supports(self, node, graph):
        return None
    def lower(self, region, graph):
        return None

class Broken:
    def __init__(self):
        raise RuntimeError("no licence server")
"""


@pytest.fixture
def plugged(tmp_path, monkeypatch):
    fake_distribution(tmp_path, {"jsonish": "fakeplug:Jsonish", "misnamed": "fakeplug:Misnamed",
                                 "nolower": "fakeplug:NoLower", "plain": "fakeplug:NotABackend", "broken": "fakeplug:Broken",
                                 "missing": "fakeplug:Nowhere", "host": "fakeplug:Jsonish"}, PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fakeplug", None)


def test_an_entry_point_backend_is_usable_by_name(plugged, tmp_path):
    report = build(spec(["jsonish"]), tmp_path / "m.so", quiet=True)
    assert [(m["name"], m["kind"]) for m in report.manifest["modules"]] == [
        ("ext0", "json"), ("main", "graph")]  # no compiled code, so no dso module
    assert "kinds" not in report.manifest  # json is built in: nothing carried
    x = np.array([[-1, 0.5, 2], [3, -4, 0]], np.float32)
    with loader.load(tmp_path / "m.so") as model:
        np.testing.assert_allclose(model.run(x=x)["y"], np.tanh(np.maximum(x, 0)), rtol=1e-6)


def test_unknown_backend_lists_the_plugins_too(plugged):
    with pytest.raises(BuildError, match=r"backends: unknown backend 'nope' \(known: broken, cblas, host, json, "
                                         r"jsonish, misnamed, missing, nolower, plain, xnnpack\)"):
        partition.get_backend("nope")


def test_a_builtin_name_is_not_taken_by_a_plugin(plugged):
    assert type(partition.get_backend("host")).__name__ == "HostBackend"


@pytest.mark.parametrize("name, message", [
    ("misnamed", "backend 'misnamed' (entry point misnamed = fakeplug:Misnamed) calls itself 'something_else'; "
                 "its `name` attribute must be 'misnamed'"),
    ("nolower", "backend 'nolower' (entry point nolower = fakeplug:NoLower) does not implement lower()"),
    ("plain", "backend 'plain' (entry point plain = fakeplug:NotABackend) is a NotABackend, not a subclass of "
              "packager.backends.base.Backend"),
    ("broken", "backends: backend 'broken' (entry point broken = fakeplug:Broken) failed to start: RuntimeError: "
               "no licence server"),
    ("missing", "backends: backend 'missing' is not available in this installation (entry point missing = "
                "fakeplug:Nowhere: AttributeError: "),
])
def test_a_faulty_entry_point_is_a_clear_error(plugged, name, message):
    with pytest.raises(BuildError) as e:
        partition.get_backend(name)
    assert str(e.value).startswith(message)


# ---- what lower() returns ---------------------------------------------------------------------------------


def returning(value_fn, base=JsonBackend):
    class Bad(base):
        name = "bad"

        def lower(self, region, graph):
            return value_fn(region, super().lower(region, graph))
    return Bad


def payload(**changes):
    def make(region, good):
        for key, value in changes.items():
            setattr(good, key, value)
        return good
    return make


KIND_C = '#include "dpk_abi.h"\nconst dpk_kind dpk_kind_tiny = {"tiny", DPK_ABI_VERSION, 0, 0, 0};\n'
WHERE = "backend 'bad' region 'ext0' (nodes relu_0, tanh_1): lower() returned "


@pytest.mark.parametrize("make, message", [
    (lambda r, g: {"kind": "json"}, "dict, expected CSource or Payload"),
    (lambda r, g: None, "NoneType, expected CSource or Payload"),
    (payload(data="text"), "a Payload whose data is str, not bytes"),
    (payload(data=np.zeros(4, np.uint8)), "a Payload whose data is ndarray, not bytes"),
    (payload(function=""), "a Payload without a function name"),
    (payload(function=None), "a Payload without a function name"),
    (payload(function="ext 0"), "a Payload function name 'ext 0', which is not a C identifier"),
    (payload(kind=""), "a Payload whose kind is '' (a name such as 'json' is expected)"),
    (payload(codec="lz4"), "a Payload with codec 'lz4' (known: raw, zstd)"),
    (payload(workspace_bytes=-64), "a Payload whose workspace_bytes is -64"),
    (payload(kind_source="int x;"), "a Payload whose kind_source is str, not KindSource"),
    (payload(kind="tiny", kind_source=KindSource("lut", KIND_C)),
     "a Payload of kind 'tiny' whose kind_source implements kind 'lut'"),
    (payload(kind="tiny", kind_source=KindSource("tiny", "static const int x = 1;\n")),
     "a Payload whose kind_source for 'tiny' does not define `const dpk_kind dpk_kind_tiny = {...}`"),
    (payload(kind="tiny", kind_source=KindSource("tiny", KIND_C, symbol="my kind")),
     "a Payload whose kind_source symbol 'my kind' is not a C identifier"),
    (lambda r, g: CSource(source=good_c("other_fn"), functions=["ext0"]),
     "a CSource that does not define function 'ext0'"),
    (lambda r, g: CSource(source="int ext0;\n", functions=["ext0"]), "a CSource that does not define function 'ext0'"),
    (lambda r, g: CSource(source=good_c("ext0"), functions=[]),
     "a CSource without functions (a non-empty list of names)"),
    (lambda r, g: CSource(source=b"int ext0(void) {}", functions=["ext0"]),
     "a CSource whose source is bytes, not str"),
    (lambda r, g: CSource(source=good_c("ext0"), functions=["ext0", "ext0"]),
     "a CSource listing a function twice (ext0, ext0)"),
    (lambda r, g: CSource(source=good_c("ext0"), functions=["ext0"], weights={"w": np.zeros(2, np.float32)}),
     "a CSource re-laying out 'w', which is not one of the region's weights"),
    (lambda r, g: CSource(source=good_c("ext0"), functions=["ext0"], weights=[]),
     "a CSource whose weights is list, not a dict"),
])
def test_malformed_lower_output_names_the_backend_and_region(monkeypatch, tmp_path, make, message):
    monkeypatch.setitem(partition.BACKENDS, "bad", returning(make))
    out = tmp_path / "m.so"
    with pytest.raises(BuildError) as e:
        build(spec(["bad", "host"]), out, quiet=True)
    assert str(e.value) == WHERE + message
    assert not out.exists()


def test_a_lower_exception_names_the_backend_and_region(monkeypatch, tmp_path):
    def boom(region, good):
        raise KeyError("tanh")
    monkeypatch.setitem(partition.BACKENDS, "bad", returning(boom))
    with pytest.raises(BuildError, match=r"^backend 'bad' failed on region 'ext0' \(nodes relu_0, tanh_1\): "
                                         r"KeyError: 'tanh'"):
        build(spec(["bad"]), tmp_path / "m.so", quiet=True)


def test_a_csource_backend_with_good_output_builds(monkeypatch, tmp_path):
    """A Backend returning a CSource whose functions its source defines builds."""
    class Noop(Backend):
        name = "noop"

        def supports(self, node, graph):
            return None

        def lower(self, region, graph):
            return CSource(source=good_c(region.name), functions=[region.name])
    monkeypatch.setitem(partition.BACKENDS, "noop", Noop)
    report = build(spec(["noop"]), tmp_path / "m.so", quiet=True)
    assert report.functions == ["noop_relu_0", "noop_tanh_1"]


def test_two_backends_shipping_different_c_for_one_kind(monkeypatch, tmp_path):
    other = KIND_C.replace("0, 0, 0", "0, 0, 0 /* another build */")
    calls = iter([KIND_C, other])

    def ship(region, good):
        return Payload(kind="tiny", data=b"x", function=region.name, kind_source=KindSource("tiny", next(calls)))

    class Split(returning(ship)):
        payload = False  # one region per node, so two payloads
    monkeypatch.setitem(partition.BACKENDS, "bad", Split)
    with pytest.raises(BuildError, match="backend 'bad' region 'bad_tanh_1' ships C for kind 'tiny' that differs "
                                         "from what backend 'bad' shipped for it"):
        build(spec(["bad"]), tmp_path / "m.so", quiet=True)
