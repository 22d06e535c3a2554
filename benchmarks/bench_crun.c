/* Time dpk_model_run from C (no Python), for benchmarks/compare.py.
 *
 *   bench_crun MODEL.so INPUT.bin WARMUP_S MEASURE_S MAX_N
 *
 * INPUT.bin holds the first input's bytes (the same array the Python runs get).
 * Prints one JSON line: load seconds, then the median and p90 of single-run times
 * (each run timed alone with CLOCK_MONOTONIC) after WARMUP_S seconds of runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpk.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int tensor(const dpk_tensor_info_t *info, DLTensor *t) {
  size_t n = (size_t)(info->dtype.bits / 8) * info->dtype.lanes;
  for (int d = 0; d < info->ndim; d++) n *= (size_t)info->shape[d];
  memset(t, 0, sizeof *t);
  t->data = calloc(n ? n : 1, 1);
  t->device.device_type = kDLCPU;
  t->ndim = info->ndim;
  t->dtype = info->dtype;
  t->shape = (int64_t *)info->shape;
  return t->data ? 0 : -1;
}

static size_t nbytes(const DLTensor *t) {
  size_t n = (size_t)(t->dtype.bits / 8) * t->dtype.lanes;
  for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
  return n;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: bench_crun MODEL.so INPUT.bin WARMUP_S MEASURE_S MAX_N\n");
    return 2;
  }
  double warm_s = atof(argv[3]), measure_s = atof(argv[4]);
  long max_n = atol(argv[5]);
  dpk_model_t *model;
  double t0 = now();
  if (dpk_model_load(argv[1], NULL, &model) != DPK_OK) {
    fprintf(stderr, "bench_crun: %s\n", dpk_last_error());
    return 1;
  }
  double load_s = now() - t0;
  size_t ni = dpk_model_num_inputs(model), no = dpk_model_num_outputs(model);
  DLTensor *ins = calloc(ni + 1, sizeof *ins), *outs = calloc(no + 1, sizeof *outs);
  const DLTensor **in_ptrs = calloc(ni + 1, sizeof *in_ptrs);
  DLTensor **out_ptrs = calloc(no + 1, sizeof *out_ptrs);
  double *times = malloc(sizeof(double) * (size_t)(max_n > 0 ? max_n : 1));
  if (!ins || !outs || !in_ptrs || !out_ptrs || !times) return 1;
  for (size_t i = 0; i < ni; i++) {
    dpk_tensor_info_t info;
    dpk_model_input_info(model, i, &info);
    if (tensor(&info, &ins[i])) return 1;
    in_ptrs[i] = &ins[i];
  }
  for (size_t i = 0; i < no; i++) {
    dpk_tensor_info_t info;
    dpk_model_output_info(model, i, &info);
    if (tensor(&info, &outs[i])) return 1;
    out_ptrs[i] = &outs[i];
  }
  FILE *f = fopen(argv[2], "rb");
  if (!f || ni < 1 || fread(ins[0].data, 1, nbytes(&ins[0]), f) != nbytes(&ins[0])) {
    fprintf(stderr, "bench_crun: cannot read %s (%zu bytes expected)\n", argv[2], ni ? nbytes(&ins[0]) : 0);
    return 1;
  }
  fclose(f);
  long warm = 0;
  double start = now();
  while (warm < 3 || (now() - start < warm_s && warm < max_n)) {
    if (dpk_model_run(model, in_ptrs, ni, out_ptrs, no) != DPK_OK) {
      fprintf(stderr, "bench_crun: %s\n", dpk_last_error());
      return 1;
    }
    warm++;
  }
  long n = 0;
  start = now();
  while (n < max_n && (n < 5 || now() - start < measure_s)) {
    double a = now();
    dpk_model_run(model, in_ptrs, ni, out_ptrs, no);
    times[n++] = now() - a;
  }
  qsort(times, (size_t)n, sizeof *times, cmp);
  printf("{\"load\": %.9f, \"median\": %.9e, \"p90\": %.9e, \"n\": %ld, \"warmup\": %ld}\n", load_s, times[n / 2],
         times[(size_t)((double)(n - 1) * 0.9 + 0.5)], n, warm);
  dpk_model_free(model);
  return 0;
}
