/* dpk-run: load a dsopack model with libdpk (no Python), run it on .npy
 * inputs, write the outputs as .npy, print them and the timings. A file with
 * dynamic dims takes inputs of any shape in range (--random: the largest)
 * and, when it has several plans, prints the one that ran.
 *
 *   dpk-run model.so x=x.npy [-o y.npy | -o outdir] [--verify] [--pubkey KEY.pub] [--threads N] [--repeat N] [--random] [--isa]
 *
 * Exit status 0 on success, 1 on any error (the message on stderr). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dtype.h"
#include "error.h"
#include "npy.h"
#include "shape.h"

static const char usage[] =
    "usage: dpk-run MODEL.so [NAME=FILE.npy ...] [-o OUT.npy | -o OUTDIR] [--verify] [--populate]\n"
    "               [--pubkey KEY.pub] [--threads N] [--repeat N] [--random] [--isa] [--help]\n"
    "\n"
    "Load a dsopack model, run it once (or N times) and print each output.\n"
    "  NAME=FILE.npy  the model input NAME (every input is needed, unless --random); a model\n"
    "                 with dynamic dims takes any shape in range, e.g. float32[1..64, 784]\n"
    "  -o PATH        write the outputs: a .npy file if the model has one output and PATH\n"
    "                 ends in .npy, else the directory PATH/NAME.npy (created if needed)\n"
    "  --verify       check every checksum of the file before loading\n"
    "  --populate     pre-fault the weights at load\n"
    "  --pubkey KEY.pub  require the file to be signed by this key (dsopack keygen/sign);\n"
    "                 checked before any code of the file runs\n"
    "  --threads N    threads a run may use (default: DPK_NUM_THREADS if set, else the CPUs\n"
    "                 this process may run on)\n"
    "  --repeat N     run N times and report the mean time (default 1)\n"
    "  --random       fill inputs not given with random values (seeded, reproducible), at\n"
    "                 the largest shapes\n"
    "  --isa          print which ISA variant of the file's code runs (baseline, avx2, avx512:\n"
    "                 the CPU's best, or DPK_ISA's), or that the file carries one\n";

typedef struct {
  dpk_tensor_info_t info;
  const char *path; /* input file, or NULL */
  dpk_npy_t npy;
  DLTensor tensor;
  int64_t shape[DPK_NPY_MAX_DIMS];
} slot_t;

static int fail(const char *fmt, const char *arg) {
  fprintf(stderr, "dpk-run: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  return 1;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double f16_to_double(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
  return h & 0x8000 ? -v : v;
}

static double element(const DLTensor *t, uint64_t i) {
  const uint8_t *p = (const uint8_t *)t->data + t->byte_offset;
  switch (t->dtype.code * 100 + t->dtype.bits) {
    case kDLFloat * 100 + 32: return ((const float *)p)[i];
    case kDLFloat * 100 + 64: return ((const double *)p)[i];
    case kDLFloat * 100 + 16: return f16_to_double(((const uint16_t *)p)[i]);
    case kDLInt * 100 + 8: return ((const int8_t *)p)[i];
    case kDLInt * 100 + 16: return ((const int16_t *)p)[i];
    case kDLInt * 100 + 32: return ((const int32_t *)p)[i];
    case kDLInt * 100 + 64: return (double)((const int64_t *)p)[i];
    case kDLUInt * 100 + 16: return ((const uint16_t *)p)[i];
    case kDLUInt * 100 + 32: return ((const uint32_t *)p)[i];
    case kDLUInt * 100 + 64: return (double)((const uint64_t *)p)[i];
    default: return p[i]; /* uint8, bool */
  }
}

/* Deterministic fill: floats in [-1, 1), ints in [-8, 8), unsigned ints in [0, 16), bool 0/1. */
static void fill_random(DLTensor *t, uint64_t numel, uint64_t *state) {
  uint8_t *p = t->data;
  for (uint64_t i = 0; i < numel; i++) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t r = (uint32_t)(*state >> 33);
    double u = r / 2147483648.0 * 2 - 1;
    switch (t->dtype.code * 100 + t->dtype.bits) {
      case kDLFloat * 100 + 32: ((float *)p)[i] = (float)u; break;
      case kDLFloat * 100 + 64: ((double *)p)[i] = u; break;
      case kDLFloat * 100 + 16: ((uint16_t *)p)[i] = (uint16_t)(0x3800 | (r & 0x3ff) | (r & 0x400 ? 0x8000 : 0)); break;
      case kDLInt * 100 + 8: ((int8_t *)p)[i] = (int8_t)(r % 16) - 8; break;
      case kDLInt * 100 + 16: ((int16_t *)p)[i] = (int16_t)(r % 16) - 8; break;
      case kDLInt * 100 + 32: ((int32_t *)p)[i] = (int32_t)(r % 16) - 8; break;
      case kDLInt * 100 + 64: ((int64_t *)p)[i] = (int64_t)(r % 16) - 8; break;
      case kDLBool * 100 + 8: p[i] = (uint8_t)(r & 1); break;
      case kDLUInt * 100 + 16: ((uint16_t *)p)[i] = (uint16_t)(r % 16); break;
      case kDLUInt * 100 + 32: ((uint32_t *)p)[i] = r % 16; break;
      case kDLUInt * 100 + 64: ((uint64_t *)p)[i] = r % 16; break;
      default: p[i] = (uint8_t)(r % 16); break;
    }
  }
}

/* A zeroed, 64-aligned buffer of s->info's dtype and shape `shape` (s->info.ndim entries). */
static int allocate(slot_t *s, const int64_t *shape) {
  uint64_t numel;
  dpk_shape_numel(s->info.ndim, shape, &numel);
  size_t nbytes = (size_t)numel * dpk_dtype_size(s->info.dtype);
  if (posix_memalign(&s->npy.data, 64, nbytes ? nbytes : 64)) return -1;
  memset(s->npy.data, 0, nbytes ? nbytes : 64);
  s->npy.nbytes = nbytes;
  s->npy.dtype = s->info.dtype;
  s->npy.ndim = s->info.ndim;
  for (int32_t d = 0; d < s->info.ndim; d++) s->npy.shape[d] = shape[d];
  return 0;
}

/* "float32[1..64, 784]": input `index`'s dtype and the range of each axis (dpk_model_input_dims). */
static const char *input_range(const dpk_model_t *model, const slot_t *s, size_t index, char *buffer, size_t capacity) {
  const char *const *dims = NULL;
  int64_t low[DPK_NPY_MAX_DIMS], min, max;
  const char *name, *exact;
  dpk_model_input_dims(model, index, &dims);
  for (int32_t a = 0; a < s->info.ndim && a < DPK_NPY_MAX_DIMS; a++) {
    low[a] = s->info.shape[a];
    for (size_t k = 0; dims && dims[a] && k < dpk_model_num_dims(model); k++)
      if (!dpk_model_dim_info(model, k, &name, &min, &max, &exact) && strcmp(name, dims[a]) == 0) low[a] = min;
  }
  char shape[256];
  snprintf(buffer, capacity, "%s%s", dpk_dtype_name(s->info.dtype),
           dpk_shape_range_str(s->info.ndim, low, s->info.shape, shape, sizeof shape));
  return buffer;
}

/* "plan g_b8 (batch=8)": the plan a run on `ins` uses, for a file with several. */
static void print_plan(const dpk_model_t *model, const DLTensor *const *ins, size_t ni) {
  size_t plan;
  const char *graph, *name, *exact;
  const int64_t *sizes;
  int64_t min, max;
  if (dpk_model_num_plans(model) < 2 || dpk_model_select_plan(model, ins, ni, &plan) ||
      dpk_model_plan_info(model, plan, &graph, &sizes))
    return;
  bool chunked = false; /* a plan smaller than the input: the first of the run's chunks */
  printf("plan %s (", graph);
  for (size_t k = 0; k < dpk_model_num_dims(model); k++) {
    if (dpk_model_dim_info(model, k, &name, &min, &max, &exact)) continue;
    printf("%s%s=%lld", k ? ", " : "", name, (long long)sizes[k]);
    for (size_t i = 0; i < ni; i++) {
      const char *const *dims;
      if (dpk_model_input_dims(model, i, &dims)) continue;
      for (int32_t a = 0; a < ins[i]->ndim; a++) chunked |= dims[a] && !strcmp(dims[a], name) && ins[i]->shape[a] > sizes[k];
    }
  }
  printf(chunked ? "), then the rest of the rows in chunks of other plans\n" : ")\n");
}

static void as_tensor(slot_t *s) {
  memcpy(s->shape, s->npy.shape, sizeof s->shape);
  s->tensor.data = s->npy.data;
  s->tensor.device.device_type = kDLCPU;
  s->tensor.ndim = s->npy.ndim;
  s->tensor.dtype = s->npy.dtype;
  s->tensor.shape = s->shape;
}

static void print_output(const slot_t *s) {
  char shape[256];
  uint64_t numel;
  dpk_shape_numel(s->tensor.ndim, s->tensor.shape, &numel);
  printf("%s: %s%s =", s->info.name, dpk_dtype_name(s->tensor.dtype),
         dpk_shape_str(s->tensor.ndim, s->tensor.shape, shape, sizeof shape));
  for (uint64_t i = 0; i < numel && i < 8; i++) printf(" %.6g", element(&s->tensor, i));
  printf("%s\n", numel > 8 ? " ..." : "");
}

/* outdir/NAME.npy, with '/' in NAME replaced. */
static int write_output(const slot_t *s, const char *out, int single_file) {
  if (single_file) return dpk_npy_write(out, &s->tensor) ? -1 : 0;
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s.npy", out, s->info.name);
  if (n < 0 || (size_t)n >= sizeof path) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "output path too long"), -1;
  for (char *c = path + strlen(out) + 1; *c; c++)
    if (*c == '/') *c = '_';
  if (dpk_npy_write(path, &s->tensor)) return -1;
  printf("wrote %s\n", path);
  return 0;
}

typedef struct {
  const char *model, *out, *pubkey;
  int verify, populate, random, isa;
  long repeat, threads;
  const char **assigns;
  int num_assigns;
} args_t;

static int parse_args(int argc, char **argv, args_t *a) {
  a->repeat = 1;
  a->assigns = calloc((size_t)argc, sizeof *a->assigns);
  if (!a->assigns) return fail("%s", "out of memory");
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage, stdout);
      exit(0);
    } else if (strcmp(arg, "--verify") == 0) {
      a->verify = 1;
    } else if (strcmp(arg, "--populate") == 0) {
      a->populate = 1;
    } else if (strcmp(arg, "--random") == 0) {
      a->random = 1;
    } else if (strcmp(arg, "--isa") == 0) {
      a->isa = 1;
    } else if (strcmp(arg, "-o") == 0 || strcmp(arg, "--repeat") == 0 || strcmp(arg, "--pubkey") == 0 ||
               strcmp(arg, "--threads") == 0) {
      if (i + 1 >= argc) return fail("%s needs a value (see --help)", arg);
      if (strcmp(arg, "--pubkey") == 0) {
        a->pubkey = argv[++i];
      } else if (arg[1] == 'o') {
        a->out = argv[++i];
      } else if (strcmp(arg, "--threads") == 0) {
        char *end;
        errno = 0;
        a->threads = strtol(argv[++i], &end, 10);
        if (errno || end == argv[i] || *end || a->threads < 1 || a->threads > 1024)
          return fail("--threads needs an integer from 1 to 1024, not '%s'", argv[i]);
      } else {
        char *end;
        errno = 0;
        a->repeat = strtol(argv[++i], &end, 10);
        if (errno || *end || a->repeat < 1) return fail("--repeat needs a positive integer, not '%s'", argv[i]);
      }
    } else if (arg[0] == '-') {
      return fail("unknown option '%s' (see --help)", arg);
    } else if (!a->model) {
      a->model = arg;
    } else if (strchr(arg, '=') && arg[0] != '=') {
      a->assigns[a->num_assigns++] = arg;
    } else {
      return fail("'%s' is not NAME=FILE.npy (see --help)", arg);
    }
  }
  if (!a->model) {
    fputs(usage, stderr);
    return 1;
  }
  return 0;
}

/* Match NAME=FILE arguments to the model's inputs. */
static int bind_inputs(const args_t *a, const dpk_model_t *model, slot_t *in, size_t ni) {
  for (int k = 0; k < a->num_assigns; k++) {
    const char *eq = strchr(a->assigns[k], '=');
    size_t len = (size_t)(eq - a->assigns[k]);
    size_t i = 0;
    while (i < ni && !(strlen(in[i].info.name) == len && strncmp(in[i].info.name, a->assigns[k], len) == 0)) i++;
    if (i == ni) {
      char names[1024] = "";
      for (size_t j = 0, used = 0; j < ni && used < sizeof names; j++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", j ? ", " : "", in[j].info.name);
      fprintf(stderr, "dpk-run: the model has no input '%.*s' (inputs: %s)\n", (int)len, a->assigns[k], names);
      return 1;
    }
    if (in[i].path) return fail("input '%s' is given twice", in[i].info.name);
    in[i].path = eq + 1;
  }
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < ni; i++) {
    char shape[256];
    if (in[i].path) {
      if (dpk_npy_read(in[i].path, &in[i].npy)) return fail("%s", dpk_last_error());
    } else if (a->random) { /* the largest shapes (the last plan's) */
      if (allocate(&in[i], in[i].info.shape)) return fail("%s", "out of memory");
    } else {
      fprintf(stderr, "dpk-run: missing input '%s' (%s): give %s=FILE.npy, or --random\n", in[i].info.name,
              input_range(model, &in[i], i, shape, sizeof shape), in[i].info.name);
      return 1;
    }
    as_tensor(&in[i]);
    if (!in[i].path) {
      uint64_t numel;
      dpk_shape_numel(in[i].tensor.ndim, in[i].tensor.shape, &numel);
      fill_random(&in[i].tensor, numel, &seed);
    }
  }
  return 0;
}

/* Each output at the shape the inputs give it (a file with dims: dpk_model_output_shape). */
static int allocate_outputs(const dpk_model_t *model, const DLTensor *const *ins, size_t ni, slot_t *out, size_t no) {
  int64_t shape[DPK_NPY_MAX_DIMS];
  for (size_t i = 0; i < no; i++) {
    if (out[i].info.ndim > DPK_NPY_MAX_DIMS) return fail("output '%s' has more dims than a .npy file", out[i].info.name);
    if (dpk_model_output_shape(model, ins, ni, i, shape)) return fail("%s", dpk_last_error());
    if (allocate(&out[i], shape)) return fail("%s", "out of memory");
    as_tensor(&out[i]);
  }
  return 0;
}

static int run(const args_t *a, dpk_model_t *model, slot_t *in, size_t ni, slot_t *out, size_t no) {
  if (bind_inputs(a, model, in, ni)) return 1;
  const DLTensor **ins = calloc(ni + 1, sizeof *ins);
  DLTensor **outs = calloc(no + 1, sizeof *outs);
  if (!ins || !outs) {
    free(ins);
    free(outs);
    return fail("%s", "out of memory");
  }
  for (size_t i = 0; i < ni; i++) ins[i] = &in[i].tensor;
  for (size_t i = 0; i < no; i++) outs[i] = &out[i].tensor;
  if (allocate_outputs(model, ins, ni, out, no)) {
    free(ins);
    free(outs);
    return 1;
  }
  double first = 0, total = 0;
  dpk_status_t status = DPK_OK;
  for (long r = 0; r < a->repeat && !status; r++) {
    double t0 = now();
    status = dpk_model_run(model, ins, ni, outs, no);
    double dt = now() - t0;
    if (r == 0) first = dt;
    total += dt;
  }
  if (!status) print_plan(model, ins, ni);
  free(ins);
  free(outs);
  if (status) return fail("%s", dpk_last_error());
  int single = a->out && no == 1 && strlen(a->out) > 4 && strcmp(a->out + strlen(a->out) - 4, ".npy") == 0;
  if (a->out && !single && mkdir(a->out, 0777) != 0 && errno != EEXIST)
    return fail("cannot create the output directory '%s'", a->out);
  for (size_t i = 0; i < no; i++) {
    print_output(&out[i]);
    if (a->out && write_output(&out[i], a->out, single)) return fail("%s", dpk_last_error());
  }
  if (single) printf("wrote %s\n", a->out);
  printf("run: %.3f ms", first * 1e3);
  if (a->repeat > 1) printf(" (first), %.3f ms mean over %ld runs", total / (double)a->repeat * 1e3, a->repeat);
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  args_t a;
  memset(&a, 0, sizeof a);
  int rc = parse_args(argc, argv, &a);
  if (rc) {
    free(a.assigns);
    return rc;
  }
  dpk_load_options_t options;
  dpk_load_options_init(&options);
  options.verify_checksums = a.verify;
  options.populate = a.populate;
  options.num_threads = (int)a.threads;
  dpk_public_key_t key;
  dpk_model_t *model;
  double t0 = now();
  if ((a.pubkey && dpk_public_key_read(a.pubkey, &key)) ||
      (a.pubkey ? dpk_model_load_signed(a.model, &key, &options, &model) : dpk_model_load(a.model, &options, &model))) {
    free(a.assigns);
    return fail("%s", dpk_last_error());
  }
  printf("load: %.3f ms%s%s\n", (now() - t0) * 1e3, a.verify ? " (with checksums)" : "",
         a.pubkey ? " (signature checked)" : "");
  if (a.isa) {
    const char *isa = dpk_model_isa(model);
    printf("isa: %s\n", isa ? isa : "one variant (the file's -march; DPK_ISA does not apply)");
  }
  size_t ni = dpk_model_num_inputs(model), no = dpk_model_num_outputs(model);
  slot_t *in = calloc(ni + 1, sizeof *in), *out = calloc(no + 1, sizeof *out);
  if (!in || !out) {
    rc = fail("%s", "out of memory");
  } else {
    for (size_t i = 0; i < ni; i++) dpk_model_input_info(model, i, &in[i].info);
    for (size_t i = 0; i < no; i++) dpk_model_output_info(model, i, &out[i].info);
    rc = run(&a, model, in, ni, out, no);
  }
  for (size_t i = 0; in && i < ni; i++) dpk_npy_free(&in[i].npy);
  for (size_t i = 0; out && i < no; i++) dpk_npy_free(&out[i].npy);
  free(in);
  free(out);
  free(a.assigns);
  dpk_model_free(model);
  return rc;
}
