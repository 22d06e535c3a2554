/* sign_load.c: the signed-load C API (tests/test_signing.py compiles it
 * against build/libdpk.a and runs it).
 *
 *   sign_load load PATH KEY.pub   dpk_model_load_signed, then one run on zeros
 *   sign_load open PATH KEY.pub   dpk_package_open_signed
 *   sign_load null PATH           dpk_model_load_signed with a NULL key
 *
 * Prints "OK" or "STATUS: message"; exit 0 unless the program is misused. */
#include <stdio.h>
#include <string.h>

#include "dpk.h"

static int report(dpk_status_t status) {
  if (status) printf("%s: %s\n", dpk_status_name(status), dpk_last_error());
  else printf("OK\n");
  return 0;
}

static dpk_status_t run_zeros(const dpk_model_t *model) {
  static float x[64], y[64];
  int64_t xs[2] = {1, 4}, ys[2] = {1, 3};
  DLTensor in = {x, {kDLCPU, 0}, 2, {kDLFloat, 32, 1}, xs, NULL, 0};
  DLTensor out = {y, {kDLCPU, 0}, 2, {kDLFloat, 32, 1}, ys, NULL, 0};
  const DLTensor *ins[1] = {&in};
  DLTensor *outs[1] = {&out};
  return dpk_model_run(model, ins, 1, outs, 1);
}

int main(int argc, char **argv) {
  if (argc < 3) return fprintf(stderr, "usage: sign_load load|open|null PATH [KEY.pub]\n"), 2;
  const char *cmd = argv[1], *path = argv[2];
  if (strcmp(cmd, "null") == 0) {
    dpk_model_t *model = (dpk_model_t *)1;
    dpk_status_t status = dpk_model_load_signed(path, NULL, NULL, &model);
    if (model) return printf("FAILED: out_model not cleared\n"), 1;
    return report(status);
  }
  if (argc < 4) return fprintf(stderr, "usage: sign_load %s PATH KEY.pub\n", cmd), 2;
  dpk_public_key_t key;
  dpk_status_t status = dpk_public_key_read(argv[3], &key);
  if (status) return report(status);
  if (strcmp(cmd, "open") == 0) {
    dpk_package_t *package;
    status = dpk_package_open_signed(path, &key, &package);
    dpk_package_free(status ? NULL : package);
    return report(status);
  }
  dpk_model_t *model;
  status = dpk_model_load_signed(path, &key, NULL, &model);
  if (!status) {
    status = run_zeros(model);
    dpk_model_free(model);
  }
  return report(status);
}
