/* The time to pick a plan of a dynamic-shape file, from C (no Python), for benchmarks/dynamic_batch.py.
 *
 *   bench_select MODEL.so BATCH [N]
 *
 * Shapes every input as its largest shape with dim 0 = BATCH, then times N (default 1000000) calls of
 * dpk_model_select_plan, the check and the pick a run makes before any kernel. Prints one JSON line:
 * {"plan": "main_b8", "ns_per_pick": 21.3}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpk.h"

#define MAX_INPUTS 16

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_select MODEL.so BATCH [N]\n");
    return 2;
  }
  long batch = strtol(argv[2], NULL, 10), n = argc > 3 ? strtol(argv[3], NULL, 10) : 1000000;
  dpk_model_t *model;
  if (dpk_model_load(argv[1], NULL, &model)) {
    fprintf(stderr, "bench_select: %s\n", dpk_last_error());
    return 1;
  }
  size_t count = dpk_model_num_inputs(model);
  if (count > MAX_INPUTS) count = MAX_INPUTS;
  static int64_t shapes[MAX_INPUTS][8];
  static DLTensor tensors[MAX_INPUTS];
  const DLTensor *inputs[MAX_INPUTS];
  for (size_t i = 0; i < count; i++) {
    dpk_tensor_info_t info;
    dpk_model_input_info(model, i, &info);
    for (int d = 0; d < info.ndim && d < 8; d++) shapes[i][d] = info.shape[d];
    shapes[i][0] = batch;
    tensors[i].data = &shapes[i]; /* never read: a pick looks at shapes only */
    tensors[i].device.device_type = kDLCPU;
    tensors[i].ndim = info.ndim;
    tensors[i].dtype = info.dtype;
    tensors[i].shape = shapes[i];
    inputs[i] = &tensors[i];
  }
  size_t plan = 0, sum = 0;
  if (dpk_model_select_plan(model, inputs, count, &plan)) {
    fprintf(stderr, "bench_select: %s\n", dpk_last_error());
    return 1;
  }
  double start = now();
  for (long k = 0; k < n; k++) {
    dpk_model_select_plan(model, inputs, count, &plan);
    sum += plan;
  }
  double took = now() - start;
  const char *graph = "";
  const int64_t *sizes;
  dpk_model_plan_info(model, plan, &graph, &sizes);
  printf("{\"plan\": \"%s\", \"ns_per_pick\": %.1f, \"checksum\": %zu}\n", graph, took / (double)n * 1e9, sum);
  dpk_model_free(model);
  return 0;
}
