/* app_registers_kind.c: an application that registers a module kind itself
 * (the `lut` kind of examples/dsopack_lut, compiled into the application)
 * and runs a model file that uses the kind without carrying it. Public API
 * only (dpk.h). tests/test_lut_example.py builds and runs it:
 *
 *   app_registers_kind MODEL   registration checks, then the model run on
 *                              x[i] = (i - 4) * 0.75; prints "name value" lines
 *
 * Exit status 0 when every registration check passed and the model ran. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpk.h"

extern const dpk_kind dpk_kind_lut; /* lut_kind.c */

static int failures;

static void expect(dpk_status_t got, dpk_status_t want, const char *fragment) {
  if (got == want && strstr(dpk_last_error(), fragment)) return;
  printf("FAILED: got %s '%s', wanted %s '...%s...'\n", dpk_status_name(got), dpk_last_error(), dpk_status_name(want),
         fragment);
  failures++;
}

/* Same functions, another ABI major: what a plugin built against another dpk_abi.h looks like. */
static const dpk_kind *other_abi(void) {
  static dpk_kind kind;
  kind = dpk_kind_lut;
  kind.name = "lut_v2";
  kind.abi_version = DPK_ABI_MAKE_VERSION(DPK_ABI_VERSION_MAJOR + 1, 0);
  return &kind;
}

static void register_kinds(void) {
  expect(dpk_register_kind(&dpk_kind_lut, 0), DPK_OK, "");
  expect(dpk_register_kind(&dpk_kind_lut, 0), DPK_STATUS_ALREADY_EXISTS, "kind 'lut' is already registered");
  expect(dpk_register_kind(&dpk_kind_lut, 1), DPK_OK, "");
  expect(dpk_register_kind(other_abi(), 0), DPK_STATUS_UNIMPLEMENTED,
         "kind 'lut_v2' was built for ABI version 2.0 but this runtime has ABI version 1.2");
  const char *names[8];
  size_t count = 0;
  expect(dpk_registered_kinds(names, 8, &count), DPK_OK, "");
  char text[256] = "";
  for (size_t i = 0; i < count && i < 8; i++) {
    if (i) strcat(text, ", ");
    strcat(text, names[i]);
  }
  if (strcmp(text, "dso, graph, json, lut, params") != 0) {
    printf("FAILED: registered kinds are '%s'\n", text);
    failures++;
  }
}

static int run(const char *path) {
  dpk_model_t *model;
  dpk_status_t status = dpk_model_load(path, NULL, &model);
  if (status) {
    printf("%s: %s\n", dpk_status_name(status), dpk_last_error());
    return 1;
  }
  size_t n_in = dpk_model_num_inputs(model), n_out = dpk_model_num_outputs(model);
  DLTensor tensors[8];
  float *buffers[8] = {0};
  dpk_tensor_info_t infos[8];
  int rc = n_in != 1 || n_in + n_out > 8;
  for (size_t i = 0; !rc && i < n_in + n_out; i++) {
    rc = (int)(i < n_in ? dpk_model_input_info(model, i, &infos[i]) : dpk_model_output_info(model, i - n_in, &infos[i]));
    size_t numel = 1;
    for (int32_t d = 0; d < infos[i].ndim; d++) numel *= (size_t)infos[i].shape[d];
    buffers[i] = calloc(numel, sizeof(float));
    for (size_t k = 0; i < n_in && k < numel; k++) buffers[i][k] = ((float)k - 4.0f) * 0.75f;
    tensors[i] = (DLTensor){buffers[i], {kDLCPU, 0}, infos[i].ndim, infos[i].dtype, (int64_t *)infos[i].shape, NULL, 0};
  }
  const DLTensor *in[1] = {&tensors[0]};
  DLTensor *out[8];
  for (size_t i = 0; i < n_out; i++) out[i] = &tensors[n_in + i];
  if (!rc && dpk_model_run(model, in, n_in, out, n_out) != DPK_OK) {
    printf("run failed: %s\n", dpk_last_error());
    rc = 1;
  }
  for (size_t i = n_in; !rc && i < n_in + n_out; i++) {
    size_t numel = 1;
    for (int32_t d = 0; d < infos[i].ndim; d++) numel *= (size_t)infos[i].shape[d];
    for (size_t k = 0; k < numel; k++) printf("%s %.9g\n", infos[i].name, (double)buffers[i][k]);
  }
  for (size_t i = 0; i < n_in + n_out; i++) free(buffers[i]);
  dpk_model_free(model);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: app_registers_kind MODEL\n");
    return 2;
  }
  register_kinds();
  int rc = run(argv[1]);
  return failures || rc ? 1 : 0;
}
