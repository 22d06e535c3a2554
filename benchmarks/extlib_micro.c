/* XNNPACK and oneDNN on one conv2d or dense shape, one thread: the kernel alone, in each library's best case
 * (XNNPACK: NHWC input/output, weights packed at create; oneDNN: src/dst/weights in the layouts it picks,
 * reordered once outside the timing). benchmarks/extlib_micro.py builds and drives this, and times the same
 * shapes through dsopack's cblas backend and onnxruntime.
 *
 *   cc -O2 extlib_micro.c -lXNNPACK -ldnnl -o extlib_micro
 *   OMP_NUM_THREADS=1 ./extlib_micro conv N C H W OC KH KW stride dilation pad groups reps
 *   OMP_NUM_THREADS=1 ./extlib_micro dense M K N reps
 * prints "xnnpack <ms> onednn <ms>" (median of reps runs, after one warm-up). */
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xnnpack.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float *filled(size_t n) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return p;
}

#define CHECK(x)                                                  \
  do {                                                            \
    if ((x) != 0) {                                               \
      fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #x); \
      exit(1);                                                    \
    }                                                             \
  } while (0)

typedef void (*run_fn)(void *);

static double median_ms(run_fn f, void *ctx, int reps) {
  double t[64];
  f(ctx);
  if (reps > 64) reps = 64;
  for (int r = 0; r < reps; ++r) {
    double t0 = now_ms();
    f(ctx);
    t[r] = now_ms() - t0;
  }
  qsort(t, reps, sizeof t[0], cmp);
  return t[reps / 2];
}

static void run_xnn(void *op) { CHECK(xnn_run_operator((xnn_operator_t)op, NULL)); }

typedef struct {
  dnnl_primitive_t prim;
  dnnl_stream_t stream;
  int nargs;
  dnnl_exec_arg_t args[4];
} dnnl_call;

static void run_dnnl(void *p) {
  dnnl_call *c = p;
  CHECK(dnnl_primitive_execute(c->prim, c->stream, c->nargs, c->args));
  CHECK(dnnl_stream_wait(c->stream));
}

static dnnl_memory_t dnnl_mem(dnnl_primitive_desc_t pd, dnnl_query_t what, dnnl_engine_t eng) {
  dnnl_memory_t m;
  CHECK(dnnl_memory_create(&m, dnnl_primitive_desc_query_md(pd, what, 0), eng, DNNL_MEMORY_ALLOCATE));
  void *h;
  CHECK(dnnl_memory_get_data_handle(m, &h));
  size_t n = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, what, 0));
  memset(h, 0, n);
  for (size_t i = 0; i < n / 4; ++i) ((float *)h)[i] = (float)(i % 7) * 0.1f;
  return m;
}

static double dnnl_time(dnnl_primitive_desc_t pd, dnnl_engine_t eng, int reps) {
  dnnl_call c;
  CHECK(dnnl_primitive_create(&c.prim, pd));
  CHECK(dnnl_stream_create(&c.stream, eng, dnnl_stream_default_flags));
  c.nargs = 4;
  c.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, dnnl_mem(pd, dnnl_query_src_md, eng)};
  c.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, dnnl_mem(pd, dnnl_query_weights_md, eng)};
  c.args[2] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, NULL};
  CHECK(dnnl_memory_create(&c.args[2].memory, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1), eng,
                           DNNL_MEMORY_ALLOCATE));
  c.args[3] = (dnnl_exec_arg_t){DNNL_ARG_DST, dnnl_mem(pd, dnnl_query_dst_md, eng)};
  return median_ms(run_dnnl, &c, reps);
}

static void conv(int argc, char **argv) {
  if (argc != 14) {
    fprintf(stderr, "conv N C H W OC KH KW stride dilation pad groups reps\n");
    exit(2);
  }
  long N = atol(argv[2]), C = atol(argv[3]), H = atol(argv[4]), W = atol(argv[5]), OC = atol(argv[6]);
  long KH = atol(argv[7]), KW = atol(argv[8]), S = atol(argv[9]), D = atol(argv[10]), P = atol(argv[11]);
  long G = atol(argv[12]);
  int reps = atoi(argv[13]);
  long OH = (H + 2 * P - D * (KH - 1) - 1) / S + 1, OW = (W + 2 * P - D * (KW - 1) - 1) / S + 1;
  float *x = filled(N * C * H * W), *w = filled(OC * C / G * KH * KW), *b = filled(OC), *y = filled(N * OC * OH * OW);
  xnn_operator_t op;
  uint32_t flags = G > 1 && G == C && G == OC ? XNN_FLAG_DEPTHWISE_CONVOLUTION : 0;
  CHECK(xnn_create_convolution2d_nhwc_f32(P, P, P, P, KH, KW, S, S, D, D, G, C / G, OC / G, C, OC, w, b, 0.0f,
                                          1e30f, flags, &op));
  CHECK(xnn_setup_convolution2d_nhwc_f32(op, N, H, W, x, y, NULL));
  double xnn_ms = median_ms(run_xnn, op, reps);

  dnnl_engine_t eng;
  CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
  dnnl_memory_desc_t src, wei, bias, dst;
  dnnl_dims_t sd = {N, C, H, W}, dd = {N, OC, OH, OW}, bd = {OC};
  dnnl_dims_t wd = {G, OC / G, C / G, KH, KW}, wd1 = {OC, C, KH, KW};
  CHECK(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_format_tag_any));
  CHECK(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_format_tag_any));
  CHECK(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x));
  if (G > 1)
    CHECK(dnnl_memory_desc_init_by_tag(&wei, 5, wd, dnnl_f32, dnnl_format_tag_any));
  else
    CHECK(dnnl_memory_desc_init_by_tag(&wei, 4, wd1, dnnl_f32, dnnl_format_tag_any));
  dnnl_dims_t strides = {S, S}, dil = {D - 1, D - 1}, pad = {P, P};
  dnnl_convolution_desc_t desc;
  CHECK(dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &src, &wei,
                                                   &bias, &dst, strides, dil, pad, pad));
  dnnl_primitive_desc_t pd;
  CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
  double dnnl_ms = dnnl_time(pd, eng, reps);
  printf("xnnpack %.4f onednn %.4f\n", xnn_ms, dnnl_ms);
  (void)x;
}

static void dense(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "dense M K N reps\n");
    exit(2);
  }
  long M = atol(argv[2]), K = atol(argv[3]), N = atol(argv[4]);
  int reps = atoi(argv[5]);
  float *x = filled(M * K), *w = filled(N * K), *b = filled(N), *y = filled(M * N);
  xnn_operator_t op;
  CHECK(xnn_create_fully_connected_nc_f32(K, N, K, N, w, b, -1e30f, 1e30f, 0, &op));
  CHECK(xnn_setup_fully_connected_nc_f32(op, M, x, y, NULL));
  double xnn_ms = median_ms(run_xnn, op, reps);

  dnnl_engine_t eng;
  CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
  dnnl_memory_desc_t src, wei, bias, dst;
  dnnl_dims_t sd = {M, K}, wd = {K, N}, bd = {1, N}, dd = {M, N};
  CHECK(dnnl_memory_desc_init_by_tag(&src, 2, sd, dnnl_f32, dnnl_ab));
  CHECK(dnnl_memory_desc_init_by_tag(&wei, 2, wd, dnnl_f32, dnnl_format_tag_any));
  CHECK(dnnl_memory_desc_init_by_tag(&bias, 2, bd, dnnl_f32, dnnl_ab));
  CHECK(dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_f32, dnnl_ab));
  dnnl_matmul_desc_t desc;
  CHECK(dnnl_matmul_desc_init(&desc, &src, &wei, &bias, &dst));
  dnnl_primitive_desc_t pd;
  CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
  double dnnl_ms = dnnl_time(pd, eng, reps);
  printf("xnnpack %.4f onednn %.4f\n", xnn_ms, dnnl_ms);
}

int main(int argc, char **argv) {
  CHECK(xnn_initialize(NULL));
  if (argc > 1 && !strcmp(argv[1], "conv")) conv(argc, argv);
  else if (argc > 1 && !strcmp(argv[1], "dense")) dense(argc, argv);
  else {
    fprintf(stderr, "usage: extlib_micro conv|dense ...\n");
    return 2;
  }
  return 0;
}
