/* stress.c: long-running checks of libdpk through its public API only
 * (tests/test_sanitizers.py builds it plain, with ASan/UBSan and with TSan).
 *
 *   stress cycles MODEL N [AT ...]   N times: load, run once, free. After each
 *                                    cycle listed in AT prints "rss CYCLE KB"
 *                                    (VmRSS from /proc/self/status).
 *   stress threads MODEL T ITER      load once; T threads each run ITER times
 *                                    on their own input; every output equals
 *                                    the serial run of the same input.
 *
 * Inputs are made from the model's signature (float32: a pattern that depends
 * on the thread; other dtypes: zeros). Exit 0 when every call succeeded and
 * every output matched, 1 otherwise (printed), 2 on usage errors. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpk.h"

#define MAX_IO 16

typedef struct {
  size_t n_in, n_out;
  DLTensor in[MAX_IO], out[MAX_IO];
  size_t in_bytes[MAX_IO], out_bytes[MAX_IO];
} io_t;

static size_t numel(const dpk_tensor_info_t *t) {
  size_t n = 1;
  for (int32_t d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
  return n;
}

static int io_make(const dpk_model_t *m, int seed, io_t *io) {
  memset(io, 0, sizeof *io);
  io->n_in = dpk_model_num_inputs(m);
  io->n_out = dpk_model_num_outputs(m);
  if (io->n_in > MAX_IO || io->n_out > MAX_IO) return -1;
  for (int side = 0; side < 2; side++) {
    size_t n = side ? io->n_out : io->n_in;
    for (size_t i = 0; i < n; i++) {
      dpk_tensor_info_t info;
      if ((side ? dpk_model_output_info : dpk_model_input_info)(m, i, &info) != DPK_OK) return -1;
      size_t count = numel(&info), bytes = count * ((info.dtype.bits + 7u) / 8u);
      DLTensor *t = side ? &io->out[i] : &io->in[i];
      t->data = calloc(bytes ? bytes : 1, 1);
      if (!t->data) return -1;
      if (!side && info.dtype.code == kDLFloat && info.dtype.bits == 32)
        for (size_t e = 0; e < count; e++) ((float *)t->data)[e] = (float)((e * 7 + (size_t)seed * 3) % 17);
      t->device.device_type = kDLCPU;
      t->ndim = info.ndim;
      t->dtype = info.dtype;
      t->shape = (int64_t *)info.shape; /* borrowed from the model, which outlives io */
      (side ? io->out_bytes : io->in_bytes)[i] = bytes;
    }
  }
  return 0;
}

static void io_free(io_t *io) {
  for (size_t i = 0; i < io->n_in; i++) free(io->in[i].data);
  for (size_t i = 0; i < io->n_out; i++) free(io->out[i].data);
}

static dpk_status_t io_run(const dpk_model_t *m, io_t *io) {
  const DLTensor *in[MAX_IO];
  DLTensor *out[MAX_IO];
  for (size_t i = 0; i < io->n_in; i++) in[i] = &io->in[i];
  for (size_t i = 0; i < io->n_out; i++) out[i] = &io->out[i];
  return dpk_model_run(m, in, io->n_in, out, io->n_out);
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  return kb;
}

static int cycles(const char *path, long n, int argc, char **at) {
  for (long c = 1; c <= n; c++) {
    dpk_model_t *m;
    io_t io;
    if (dpk_model_load(path, NULL, &m) != DPK_OK) {
      printf("cycle %ld: load: %s\n", c, dpk_last_error());
      return 1;
    }
    if (io_make(m, (int)c, &io) || io_run(m, &io) != DPK_OK) {
      printf("cycle %ld: run: %s\n", c, dpk_last_error());
      return 1;
    }
    io_free(&io);
    dpk_model_free(m);
    for (int i = 0; i < argc; i++)
      if (atol(at[i]) == c) printf("rss %ld %ld\n", c, rss_kb());
  }
  return 0;
}

typedef struct {
  const dpk_model_t *model;
  int seed;
  long iterations, failures;
  io_t io;
  void *expected[MAX_IO];
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  for (long it = 0; it < w->iterations; it++) {
    for (size_t i = 0; i < w->io.n_out; i++) memset(w->io.out[i].data, 0xff, w->io.out_bytes[i]);
    if (io_run(w->model, &w->io) != DPK_OK) {
      w->failures++;
      continue;
    }
    for (size_t i = 0; i < w->io.n_out; i++)
      if (memcmp(w->io.out[i].data, w->expected[i], w->io.out_bytes[i]) != 0) w->failures++;
  }
  return NULL;
}

static int threads(const char *path, int n, long iterations) {
  dpk_model_t *m;
  if (dpk_model_load(path, NULL, &m) != DPK_OK) {
    printf("load: %s\n", dpk_last_error());
    return 1;
  }
  worker_t *w = calloc((size_t)n, sizeof *w);
  pthread_t *t = calloc((size_t)n, sizeof *t);
  int bad = 0;
  for (int i = 0; i < n; i++) { /* the serial outputs, one input per thread */
    w[i].model = m;
    w[i].seed = i;
    w[i].iterations = iterations;
    if (io_make(m, i, &w[i].io) || io_run(m, &w[i].io) != DPK_OK) {
      printf("serial run %d: %s\n", i, dpk_last_error());
      return 1;
    }
    for (size_t o = 0; o < w[i].io.n_out; o++) {
      w[i].expected[o] = malloc(w[i].io.out_bytes[o] ? w[i].io.out_bytes[o] : 1);
      memcpy(w[i].expected[o], w[i].io.out[o].data, w[i].io.out_bytes[o]);
    }
  }
  for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, worker, &w[i]);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < n; i++) {
    if (w[i].failures) {
      printf("thread %d: %ld of %ld runs failed or differed\n", i, w[i].failures, iterations);
      bad = 1;
    }
    for (size_t o = 0; o < w[i].io.n_out; o++) free(w[i].expected[o]);
    io_free(&w[i].io);
  }
  free(w);
  free(t);
  dpk_model_free(m);
  if (!bad) printf("threads %d x %ld runs: identical outputs\n", n, iterations);
  return bad;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "cycles") == 0) return cycles(argv[2], atol(argv[3]), argc - 4, argv + 4);
  if (argc == 5 && strcmp(argv[1], "threads") == 0) return threads(argv[2], atoi(argv[3]), atol(argv[4]));
  fprintf(stderr, "usage: stress cycles MODEL N [AT ...] | stress threads MODEL T ITER\n");
  return 2;
}
