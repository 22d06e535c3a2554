"""What dpk.h promises beyond the happy path: NULL handles and arguments,
versioned load options (struct_size and dpk_load_options_init), the
caller-buffer dpk_registered_kinds, and the state of outputs after a failed
dpk_model_run. The C calls are made through the loader's cffi `lib`, so NULLs
and odd struct sizes can be passed; tests/c/test_api.c covers what needs C
(exact-size buffers under valgrind, threads).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import loader
from loader._native import TensorRef, ffi, lib
from test_runtime_c import (K, N, api, build_model, edit_module, graph_payload, model, reference,  # noqa: F401
                            test_api, weights)

NULL = ffi.NULL


def status_and_message(status):
    return ffi.string(lib.dpk_status_name(status)).decode(), ffi.string(lib.dpk_last_error()).decode()


def invalid(status, message):
    assert status_and_message(status) == ("INVALID_ARGUMENT", message)


@pytest.fixture(scope="module")
def handle(model):
    out = ffi.new("dpk_model_t **")
    assert lib.dpk_model_load(model.encode(), NULL, out) == 0
    yield out[0]
    lib.dpk_model_free(out[0])


# ---- NULL handles and arguments ---------------------------------------------------------------------------


def test_infallible_accessors_give_zero_or_null_for_a_null_handle():
    assert lib.dpk_model_num_inputs(NULL) == 0 and lib.dpk_model_num_outputs(NULL) == 0
    assert lib.dpk_model_num_modules(NULL) == 0 and lib.dpk_model_num_threads(NULL) == 0
    assert lib.dpk_model_package(NULL) == NULL
    size = ffi.new("size_t *", 7)
    assert lib.dpk_package_manifest(NULL, size) == NULL and size[0] == 0
    assert lib.dpk_package_manifest(NULL, NULL) == NULL
    major, minor, section = ffi.new("uint16_t *", 9), ffi.new("uint16_t *", 9), ffi.new("uint64_t *", 9)
    lib.dpk_package_format(NULL, major, minor, section)
    assert (major[0], minor[0], section[0]) == (0, 0, 0)
    lib.dpk_package_format(NULL, NULL, NULL, NULL)
    lib.dpk_model_free(NULL)
    lib.dpk_package_free(NULL)
    lib.dpk_load_options_init(NULL)


def test_optional_out_params_of_infallible_accessors_may_be_null(handle):
    package = lib.dpk_model_package(handle)
    assert lib.dpk_package_manifest(package, NULL) != NULL
    section = ffi.new("uint64_t *")
    lib.dpk_package_format(package, NULL, NULL, section)
    assert section[0] > 4096


def test_fallible_calls_refuse_null_handles_naming_call_and_argument(handle):
    info = ffi.new("dpk_tensor_info_t *", {"ndim": 5})
    invalid(lib.dpk_model_input_info(NULL, 0, info), "dpk_model_input_info: model is NULL")
    assert info.ndim == 0 and info.name == NULL  # cleared on entry
    invalid(lib.dpk_model_output_info(NULL, 0, info), "dpk_model_output_info: model is NULL")
    invalid(lib.dpk_model_input_info(handle, 0, NULL), "dpk_model_input_info: out_info is NULL")
    invalid(lib.dpk_model_output_info(handle, 0, NULL), "dpk_model_output_info: out_info is NULL")
    name, kind = ffi.new("const char **", ffi.new("char[]", b"x")), ffi.new("const char **", ffi.new("char[]", b"y"))
    invalid(lib.dpk_model_module_info(NULL, 0, name, kind), "dpk_model_module_info: model is NULL")
    assert name[0] == NULL and kind[0] == NULL
    invalid(lib.dpk_model_module_info(handle, 0, NULL, kind), "dpk_model_module_info: out_name is NULL")
    invalid(lib.dpk_model_module_info(handle, 0, name, NULL), "dpk_model_module_info: out_kind is NULL")
    fn, resource = ffi.new("dpk_packed_fn *"), ffi.new("void **")
    invalid(lib.dpk_model_get_function(NULL, b"main", fn, resource), "dpk_model_get_function: model is NULL")
    invalid(lib.dpk_model_get_function(handle, NULL, fn, resource), "dpk_model_get_function: name is NULL")
    invalid(lib.dpk_model_get_function(handle, b"main", NULL, resource), "dpk_model_get_function: out_fn is NULL")
    assert resource[0] == NULL
    invalid(lib.dpk_model_get_function(handle, b"main", fn, NULL), "dpk_model_get_function: out_resource is NULL")
    assert fn[0] == NULL
    invalid(lib.dpk_package_verify(NULL), "dpk_package_verify: package is NULL")
    size = ffi.new("uint64_t *", 3)
    invalid(lib.dpk_package_signed_size(NULL, size), "dpk_package_signed_size: package is NULL")
    assert size[0] == 0
    invalid(lib.dpk_package_signed_size(lib.dpk_model_package(handle), NULL), "dpk_package_signed_size: out_size is NULL")


def test_open_and_load_refuse_null_paths_and_out_params(model, tmp_path):
    out_model, out_package = ffi.new("dpk_model_t **"), ffi.new("dpk_package_t **")
    key = ffi.new("dpk_public_key_t *")
    invalid(lib.dpk_model_load(NULL, NULL, out_model), "dpk_model_load: path is NULL")
    invalid(lib.dpk_model_load(model.encode(), NULL, NULL), "dpk_model_load: out_model is NULL")
    invalid(lib.dpk_model_load_signed(NULL, key, NULL, out_model), "dpk_model_load_signed: path is NULL")
    invalid(lib.dpk_model_load_signed(model.encode(), key, NULL, NULL), "dpk_model_load_signed: out_model is NULL")
    invalid(lib.dpk_package_open(NULL, out_package), "dpk_package_open: path is NULL")
    invalid(lib.dpk_package_open(model.encode(), NULL), "dpk_package_open: out_package is NULL")
    invalid(lib.dpk_package_open_signed(NULL, key, out_package), "dpk_package_open_signed: path is NULL")
    invalid(lib.dpk_package_open_signed(model.encode(), NULL, out_package), "dpk_package_open_signed: key is NULL")
    invalid(lib.dpk_package_open_signed(model.encode(), key, NULL), "dpk_package_open_signed: out_package is NULL")
    assert out_model[0] == NULL and out_package[0] == NULL
    invalid(lib.dpk_public_key_read(NULL, key), "dpk_public_key_read: path is NULL")
    invalid(lib.dpk_public_key_read(b"k.pub", NULL), "dpk_public_key_read: out_key is NULL")


def test_run_refuses_null_model_arrays_and_entries(handle):
    x, y = TensorRef(np.zeros((1, K), np.float32)), TensorRef(np.zeros((1, N), np.float32))
    inputs, outputs = ffi.new("DLTensor *[]", [x.struct]), ffi.new("DLTensor *[]", [y.struct])
    invalid(lib.dpk_model_run(NULL, inputs, 1, outputs, 1), "dpk_model_run: model is NULL")
    invalid(lib.dpk_model_run(handle, NULL, 1, outputs, 1), "dpk_model_run: inputs is NULL but num_inputs is 1")
    invalid(lib.dpk_model_run(handle, inputs, 1, NULL, 1), "dpk_model_run: outputs is NULL but num_outputs is 1")
    invalid(lib.dpk_model_run(handle, NULL, 0, outputs, 1), "the model takes 1 inputs (x) but 0 were given")
    invalid(lib.dpk_model_run(handle, ffi.new("DLTensor *[]", [NULL]), 1, outputs, 1), "input 'x' has no data")
    invalid(lib.dpk_model_run(handle, inputs, 1, ffi.new("DLTensor *[]", [NULL]), 1), "output 'y' has no data")
    assert lib.dpk_model_run(handle, inputs, 1, outputs, 1) == 0


# ---- outputs after a failed run -----------------------------------------------------------------------------


def run_into(handle, x, y):
    xr, yr = TensorRef(x), TensorRef(y)
    return lib.dpk_model_run(handle, ffi.new("DLTensor *[]", [xr.struct]), 1, ffi.new("DLTensor *[]", [yr.struct]), 1)


def test_outputs_are_untouched_when_the_arguments_are_refused(handle):
    y = np.full((1, N), 7.0, np.float32)
    invalid(run_into(handle, np.zeros((1, K + 1), np.float32), y),
            f"input 'x' has shape [1, {K + 1}] but the model expects float32[1, {K}]")
    invalid(run_into(handle, np.zeros((1, K), np.float64), y),
            f"input 'x' has dtype float64 but the model expects float32[1, {K}]")
    np.testing.assert_array_equal(y, np.full((1, N), 7.0, np.float32))


def test_outputs_are_zero_after_a_kernel_fails(tmp_path):
    """The failing model writes y (relu) and then fails (host_fail_2): the caller sees zeros, not that y."""
    path = build_model(tmp_path, name="fails", graph=graph_payload(fail=True),
                       edit=edit_module(0, functions=["host_dense_0", "host_relu_1", "host_fail_2"]))
    out = ffi.new("dpk_model_t **")
    assert lib.dpk_model_load(path.encode(), NULL, out) == 0
    try:
        x = np.ones((1, K), np.float32)
        assert np.any(reference(x, *weights()) != 0)  # what the partial run wrote is not zero
        y = np.full((1, N), 7.0, np.float32)
        status, message = status_and_message(run_into(out[0], x, y))
        assert status == "INTERNAL" and "the kernel refuses: code 42" in message
        np.testing.assert_array_equal(y, np.zeros((1, N), np.float32))
    finally:
        lib.dpk_model_free(out[0])
    with loader.load(path) as m, pytest.raises(loader.InternalError, match="the kernel refuses: code 42"):
        m.run(x=x)


# ---- load options ---------------------------------------------------------------------------------------------


def test_init_sets_the_size_and_the_defaults():
    options = ffi.new("dpk_load_options_t *", {"struct_size": 1, "verify_checksums": 5, "populate": 5,
                                               "num_threads": 5})
    lib.dpk_load_options_init(options)
    assert options.struct_size == ffi.sizeof("dpk_load_options_t")
    assert (options.verify_checksums, options.populate, options.num_threads) == (0, 0, 0)


def test_an_uninitialised_struct_is_refused_naming_its_size(model):
    out = ffi.new("dpk_model_t **")
    options = ffi.new("dpk_load_options_t *", {"num_threads": 2})  # struct_size 0: init was not called
    invalid(lib.dpk_model_load(model.encode(), options, out),
            "dpk_model_load: options->struct_size is 0 but must be from 20 to 4096 (fill the options with "
            "dpk_load_options_init)")
    options.struct_size = 1 << 32  # the first two ints of an options struct from before struct_size
    invalid(lib.dpk_model_load(model.encode(), options, out),
            "dpk_model_load: options->struct_size is 4294967296 but must be from 20 to 4096 (fill the options with "
            "dpk_load_options_init)")
    assert out[0] == NULL


def test_the_loader_fills_options_with_init(model):
    with loader.load(model, num_threads=3, verify=True, populate=True) as m:
        assert m.num_threads == 3


def test_options_of_shorter_and_longer_headers(test_api, model):
    """test_api.c: a struct ending at num_threads in a heap block of exactly that size, a longer one with zero or
    set unknown bytes, sizes 0, 19 and 4097, a NULL key with options."""
    api(test_api, "options", model)


# ---- registered kinds -------------------------------------------------------------------------------------------


def test_registered_kinds_from_the_loader():
    assert loader.registered_kinds() == ["dso", "graph", "json", "params"]


def test_registered_kinds_reports_the_count_a_short_buffer_needs():
    count = ffi.new("size_t *")
    names = ffi.new("const char *[]", 2)
    status, message = status_and_message(lib.dpk_registered_kinds(names, 2, count))
    assert (status, message) == ("OUT_OF_RANGE", "dpk_registered_kinds: 4 kinds are registered but the buffer holds 2")
    assert count[0] == 4 and names[0] == NULL
    with pytest.raises(loader.InvalidArgumentError, match="^dpk_registered_kinds: out_count is NULL$"):
        loader._native.check(lib.dpk_registered_kinds(names, 2, NULL))


def test_listing_kinds_while_other_threads_register(test_api):
    api(test_api, "kinds_race", "-")


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_options_and_kind_listing_are_memory_clean(test_api, model):
    for argv in (["options", model], ["kinds_race", "-"]):
        result = subprocess.run(["valgrind", "--quiet", "--error-exitcode=3", test_api, *argv],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Invalid" not in result.stderr, result.stderr
