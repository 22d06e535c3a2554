"""A kind's tensors (dpk_abi.h, dpk_kind.get_tensor, since ABI 1.2): a module
finds a tensor through its imports by asking each imported module's kind, so
any kind, not only `params`, can hold the weights another module reads. The
slot is optional (NULL: no tensors) and the runtime never reads it from a
table of an older minor, which a 1.0 or 1.1 build lays out shorter: the slot
would lie past its end.

The models are test_runtime_c.py's, with the `params` module replaced by a
module of the carried kind `wtable`, whose payload is fc.weight then fc.bias.
"""

from __future__ import annotations

import numpy as np
import pytest

import loader
from test_runtime_c import KERNELS, K, N, assert_matches, build_model, reference, weights

WTABLE_KIND = rf"""
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* kind `wtable`: tensors fc.weight [{N}, {K}] and fc.bias [{N}], float32, from the payload; no functions */
typedef struct {{ DLTensor t[2]; int64_t wshape[2], bshape[1]; }} wtable_state;
static int wt_load(const dpk_kind_load_args *args, void **out_state) {{
  if (args->payload_size != ({N} * {K} + {N}) * sizeof(float)) {{
    args->services->set_error("module '%s': a wtable holds {N}x{K} + {N} floats", args->module_name);
    return 8;
  }}
  wtable_state *s = calloc(1, sizeof *s);
  if (!s) return 6;
  s->wshape[0] = {N}; s->wshape[1] = {K}; s->bshape[0] = {N};
  DLTensor w = {{(void *)args->payload, {{kDLCPU, 0}}, 2, {{kDLFloat, 32, 1}}, s->wshape, NULL, 0}};
  DLTensor b = {{(void *)(args->payload + {N} * {K} * sizeof(float)), {{kDLCPU, 0}}, 1, {{kDLFloat, 32, 1}}, s->bshape, NULL, 0}};
  s->t[0] = w;
  s->t[1] = b;
  *out_state = s;
  return 0;
}}
static int wt_get(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {{
  (void)state; (void)name; *out_fn = NULL; *out_resource = NULL;
  return 2;
}}
static void wt_free(void *state) {{ free(state); }}
static int wt_tensor(void *state, const char *name, const DLTensor **out_tensor) {{
  wtable_state *s = state;
  if (strcmp(name, "fc.weight") == 0) {{ *out_tensor = &s->t[0]; return 0; }}
  if (strcmp(name, "fc.bias") == 0) {{ *out_tensor = &s->t[1]; return 0; }}
  return 2;
}}
static int wt_tensor_empty(void *state, const char *name, const DLTensor **out_tensor) {{
  (void)state; (void)name; (void)out_tensor;
  return 0;
}}
static int wt_tensor_fails(void *state, const char *name, const DLTensor **out_tensor) {{
  (void)state; (void)out_tensor;
  __dpk_api->set_error("wtable: tensor '%s' is damaged", name);
  return 7;
}}
"""


def table(entry: str) -> str:
    return (f"static const dpk_kind *const kinds[] = {{{entry}}};\n"
            "DPK_EXPORT const dpk_kind_table __dpk_kinds = {DPK_ABI_VERSION, 1, kinds};\n")


# A 1.1 build's dpk_kind (five fields), followed in memory by a function pointer exactly where a 1.2
# runtime would find get_tensor if it read past the end of the 1.1 struct.
OLD_LAYOUT = """
typedef struct {
  const char *name;
  uint32_t abi_version;
  int (*load)(const dpk_kind_load_args *args, void **out_state);
  int (*get_function)(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource);
  void (*free)(void *state);
} kind_1_1;
static const struct { kind_1_1 kind; int (*after)(void *, const char *, const DLTensor **); } old = {
  {"wtable", DPK_ABI_MAKE_VERSION(1, 1), wt_load, wt_get, wt_free}, wt_tensor};
typedef char after_is_where_get_tensor_would_be[
  offsetof(dpk_kind, get_tensor) == sizeof(kind_1_1) && sizeof(kind_1_1) == offsetof(__typeof__(old), after) ? 1 : -1];
""" + table("(const dpk_kind *)&old.kind")


def wtable_model(directory, name: str, kind_c: str) -> str:
    w, b = weights()

    def add(writer, manifest):
        manifest["modules"][1] = {"name": "weights", "kind": "wtable",
                                  "payload": writer.add(np.concatenate([w.ravel(), b]).astype(np.float32))}
        manifest["kinds"] = {"carried": ["wtable"]}
    return build_model(directory, name=name, add=add, kernels=KERNELS + WTABLE_KIND + kind_c)


def x_and_expected():
    x = np.random.default_rng(11).standard_normal((1, K)).astype(np.float32)
    return x, reference(x, *weights())


def test_a_kind_that_holds_tensors_serves_the_modules_that_import_it(tmp_path):
    kind = 'static const dpk_kind wtable = {"wtable", DPK_ABI_VERSION, wt_load, wt_get, wt_free, wt_tensor};\n'
    path = wtable_model(tmp_path, "held", kind + table("&wtable"))
    x, expected = x_and_expected()
    with loader.load(path) as model:
        assert [m.kind for m in model.modules] == ["dso", "wtable", "graph"]
        assert_matches(model.run(x=x)["y"], expected)


@pytest.mark.parametrize("kind_c", [
    pytest.param('static const dpk_kind wtable = {"wtable", DPK_ABI_VERSION, wt_load, wt_get, wt_free, NULL};\n'
                 + table("&wtable"), id="1.2-without-get_tensor"),
    pytest.param(OLD_LAYOUT, id="1.1-table-not-read-past-its-end"),
])
def test_a_kind_without_the_slot_holds_no_tensors(tmp_path, kind_c):
    path = wtable_model(tmp_path, "none", kind_c)
    with pytest.raises(loader.NotFoundError) as info:
        loader.load(path)
    assert str(info.value) == (f"'{path}': cannot load module 'main' (kind graph): module 'main' needs tensor "
                               "'fc.weight', which none of its imports holds")


def test_an_error_of_get_tensor_fails_the_load_with_the_kind_message(tmp_path):
    kind = 'static const dpk_kind wtable = {"wtable", DPK_ABI_VERSION, wt_load, wt_get, wt_free, wt_tensor_fails};\n'
    path = wtable_model(tmp_path, "fails", kind + table("&wtable"))
    with pytest.raises(loader.InternalError) as info:
        loader.load(path)
    assert str(info.value) == f"'{path}': cannot load module 'main' (kind graph): wtable: tensor 'fc.weight' is damaged"


def test_a_get_tensor_that_finds_nothing_but_says_found_fails_the_load(tmp_path):
    kind = 'static const dpk_kind wtable = {"wtable", DPK_ABI_VERSION, wt_load, wt_get, wt_free, wt_tensor_empty};\n'
    path = wtable_model(tmp_path, "empty", kind + table("&wtable"))
    with pytest.raises(loader.InternalError) as info:
        loader.load(path)
    assert str(info.value) == (f"'{path}': cannot load module 'main' (kind graph): module 'main' needs tensor "
                               "'fc.weight': an import's kind found it but returned no tensor")
