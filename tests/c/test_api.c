/* test_api.c: libdpk's public API driven from C (tests/test_runtime_c.py
 * compiles it against build/libdpk.a and runs it).
 *
 *   test_api load PATH [verify]   print "OK" or "STATUS: message" of dpk_model_load
 *   test_api open PATH            the same for dpk_package_open, then dpk_package_verify
 *   test_api api PATH             accessors, functions, run errors, kinds, npy (model of test_runtime_c.py)
 *   test_api threads PATH N       N threads run concurrently; every output equals the serial one
 *   test_api kinds_race -         listing registered kinds while two threads register more
 *   test_api options PATH         dpk_load_options_t from callers of shorter and longer headers, bad sizes
 *
 * Exit status 0 when every check passed; failures are printed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "npy.h"
#include "registry.h"

static int failures;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, dpk_last_error()); \
      failures++;                                                                    \
    }                                                                                \
  } while (0)

#define CHECK_STATUS(expr, status, fragment)                                                        \
  do {                                                                                               \
    dpk_status_t got_ = (expr);                                                                      \
    if (got_ != (status) || !strstr(dpk_last_error(), (fragment))) {                                 \
      printf("FAILED %s:%d: %s gave %s '%s', wanted %s '...%s...'\n", __FILE__, __LINE__, #expr,    \
             dpk_status_name(got_), dpk_last_error(), dpk_status_name(status), (fragment));          \
      failures++;                                                                                    \
    }                                                                                                \
  } while (0)

static void report(dpk_status_t status) {
  if (status) printf("%s: %s\n", dpk_status_name(status), dpk_last_error());
  else printf("OK\n");
}

/* ---- tensors ---------------------------------------------------------------- */

typedef struct {
  DLTensor t;
  int64_t shape[8];
  float data[64];
} tensor_t;

static void make_tensor(tensor_t *x, int32_t ndim, const int64_t *shape) {
  memset(x, 0, sizeof *x);
  x->t.data = x->data;
  x->t.device.device_type = kDLCPU;
  x->t.ndim = ndim;
  x->t.dtype.code = kDLFloat;
  x->t.dtype.bits = 32;
  x->t.dtype.lanes = 1;
  memcpy(x->shape, shape, (size_t)ndim * sizeof *shape);
  x->t.shape = x->shape;
}

static dpk_status_t run1(const dpk_model_t *m, tensor_t *x, tensor_t *y) {
  const DLTensor *in[1] = {&x->t};
  DLTensor *out[1] = {&y->t};
  return dpk_model_run(m, in, 1, out, 1);
}

/* ---- a custom kind: function "twice" doubles a float32 tensor into another --- */

static int twice(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code, void *resource) {
  (void)codes, (void)ret, (void)ret_code, (void)resource;
  if (nargs != 2) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "twice takes 2 tensors");
  const DLTensor *x = args[0].v_tensor;
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++) n *= x->shape[i];
  for (int64_t i = 0; i < n; i++) ((float *)args[1].v_tensor->data)[i] = 2 * ((const float *)x->data)[i];
  return 0;
}
static int custom_load(const dpk_kind_load_args *args, void **out_state) {
  (void)args;
  *out_state = NULL;
  return 0;
}
static int custom_get(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  (void)state;
  *out_resource = NULL;
  if (strcmp(name, "twice") != 0) return DPK_STATUS_NOT_FOUND;
  *out_fn = twice;
  return 0;
}
static void custom_free(void *state) { (void)state; }
static const dpk_kind custom = {"custom", DPK_ABI_VERSION, custom_load, custom_get, custom_free, NULL};
static const dpk_kind custom2 = {"custom", DPK_ABI_VERSION, custom_load, custom_get, custom_free, NULL};
/* ABI versions (dpk_abi.h, "Versions"): 1 is how 1.0 spelled itself */
static const dpk_kind legacy = {"legacy", 1, custom_load, custom_get, custom_free, NULL};
static const dpk_kind old_minor = {"old_minor", DPK_ABI_MAKE_VERSION(DPK_ABI_VERSION_MAJOR, DPK_ABI_VERSION_MINOR - 1),
                                   custom_load, custom_get, custom_free, NULL};
static const dpk_kind new_minor = {"new_minor", DPK_ABI_MAKE_VERSION(DPK_ABI_VERSION_MAJOR, DPK_ABI_VERSION_MINOR + 1),
                                   custom_load, custom_get, custom_free, NULL};
static const dpk_kind next_major = {"next_major", DPK_ABI_MAKE_VERSION(DPK_ABI_VERSION_MAJOR + 1, 0), custom_load,
                                    custom_get, custom_free, NULL};
static const dpk_kind legacy_two = {"legacy_two", 2, custom_load, custom_get, custom_free, NULL};
static const dpk_kind zero = {"zero", 0, custom_load, custom_get, custom_free, NULL};

/* The registered names as one string, through a caller buffer. */
static const char *kind_list(char *text, size_t capacity) {
  const char *names[16];
  size_t count = 99;
  text[0] = '\0';
  CHECK_STATUS(dpk_registered_kinds(names, 16, &count), DPK_OK, "");
  for (size_t i = 0, used = 0; i < count && i < 16; i++)
    used += (size_t)snprintf(text + used, capacity - used, "%s%s", i ? ", " : "", names[i]);
  return text;
}

static void check_kinds(void) {
  char text[512];
  CHECK(strcmp(kind_list(text, sizeof text), "dso, graph, json, params") == 0);

  /* dpk_registered_kinds: a query, an exact buffer, a short one, bad arguments */
  size_t count = 99;
  CHECK_STATUS(dpk_registered_kinds(NULL, 0, &count), DPK_OK, "");
  CHECK(count == 4);
  const char *names[5] = {"a", "b", "c", "d", "sentinel"};
  CHECK_STATUS(dpk_registered_kinds(names, 4, &count), DPK_OK, "");
  CHECK(count == 4 && strcmp(names[0], "dso") == 0 && strcmp(names[3], "params") == 0);
  CHECK(strcmp(names[4], "sentinel") == 0);
  const char *small[3] = {"x", "y", "z"};
  count = 99;
  CHECK_STATUS(dpk_registered_kinds(small, 3, &count), DPK_STATUS_OUT_OF_RANGE,
               "dpk_registered_kinds: 4 kinds are registered but the buffer holds 3");
  CHECK(count == 4 && strcmp(small[0], "x") == 0 && strcmp(small[2], "z") == 0); /* untouched */
  count = 99;
  CHECK_STATUS(dpk_registered_kinds(NULL, 3, &count), DPK_STATUS_INVALID_ARGUMENT,
               "dpk_registered_kinds: names is NULL but capacity is 3");
  CHECK(count == 0);
  CHECK_STATUS(dpk_registered_kinds(names, 4, NULL), DPK_STATUS_INVALID_ARGUMENT,
               "dpk_registered_kinds: out_count is NULL");

  CHECK_STATUS(dpk_register_kind(&custom, 0), DPK_OK, "");
  CHECK_STATUS(dpk_register_kind(&custom2, 0), DPK_STATUS_ALREADY_EXISTS, "kind 'custom' is already registered");
  CHECK_STATUS(dpk_register_kind(&custom2, 1), DPK_OK, "");
  CHECK(dpk_registry_find("custom") == &custom2);

  /* versions: an older or equal minor of the major is accepted, anything else refused naming both */
  CHECK_STATUS(dpk_register_kind(&legacy, 0), DPK_OK, "");
  CHECK_STATUS(dpk_register_kind(&old_minor, 0), DPK_OK, "");
  CHECK_STATUS(dpk_register_kind(&new_minor, 0), DPK_STATUS_UNIMPLEMENTED,
               "kind 'new_minor' was built for ABI version 1.3 but this runtime has ABI version 1.2");
  CHECK_STATUS(dpk_register_kind(&next_major, 0), DPK_STATUS_UNIMPLEMENTED,
               "kind 'next_major' was built for ABI version 2.0 but this runtime has ABI version 1.2");
  CHECK_STATUS(dpk_register_kind(&legacy_two, 0), DPK_STATUS_UNIMPLEMENTED,
               "kind 'legacy_two' was built for ABI version 2.0 but this runtime has ABI version 1.2");
  CHECK_STATUS(dpk_register_kind(&zero, 0), DPK_STATUS_UNIMPLEMENTED,
               "kind 'zero' was built for ABI version 0.0 but this runtime has ABI version 1.2");
  CHECK(dpk_registry_find("new_minor") == NULL && dpk_registry_find("next_major") == NULL);
  CHECK(strcmp(kind_list(text, sizeof text), "custom, dso, graph, json, legacy, old_minor, params") == 0);
  CHECK(DPK_ABI_VERSION == 0x10002u && DPK_ABI_MAJOR_OF(1) == 1 && DPK_ABI_MINOR_OF(1) == 0);
  CHECK(DPK_ABI_MAJOR_OF(0x10000u) == 1 && DPK_ABI_MINOR_OF(0x10000u) == 0 && DPK_ABI_MINOR_OF(0x20003u) == 3);
}

/* ---- kinds: listing while other threads register ----------------------------------------- */

#define RACE_KINDS 96
static char race_names[RACE_KINDS][16];
static dpk_kind race_kinds[RACE_KINDS];

static void *race_register(void *arg) {
  int first = *(const int *)arg;
  for (int i = first; i < RACE_KINDS; i += 2) CHECK(dpk_register_kind(&race_kinds[i], 0) == DPK_OK);
  return NULL;
}

typedef struct {
  int snapshots, bad;
} race_reader_t;

/* Every snapshot is sorted, holds the built-ins, and only grows. */
static void *race_read(void *arg) {
  race_reader_t *r = arg;
  const char *names[RACE_KINDS + 8];
  size_t last = 0;
  for (int it = 0; it < 4000; it++) {
    size_t count = 0;
    dpk_status_t status = dpk_registered_kinds(names, RACE_KINDS + 8, &count);
    if (status || count < 4 || count < last || count > RACE_KINDS + 4) r->bad++;
    for (size_t i = 1; !status && i < count; i++)
      if (strcmp(names[i - 1], names[i]) >= 0) r->bad++;
    last = count;
    /* a buffer that is too small by one: OUT_OF_RANGE with the count, never a partial copy */
    size_t need = 0;
    if (dpk_registered_kinds(names, count - 1, &need) != DPK_STATUS_OUT_OF_RANGE || need < count) r->bad++;
    r->snapshots++;
  }
  return NULL;
}

static void check_kinds_race(void) {
  for (int i = 0; i < RACE_KINDS; i++) {
    snprintf(race_names[i], sizeof race_names[i], "race%02d", i);
    race_kinds[i] = (dpk_kind){race_names[i], DPK_ABI_VERSION, custom_load, custom_get, custom_free, NULL};
  }
  pthread_t writers[2], readers[4];
  int firsts[2] = {0, 1};
  race_reader_t results[4] = {{0, 0}};
  for (int i = 0; i < 4; i++) pthread_create(&readers[i], NULL, race_read, &results[i]);
  for (int i = 0; i < 2; i++) pthread_create(&writers[i], NULL, race_register, &firsts[i]);
  for (int i = 0; i < 2; i++) pthread_join(writers[i], NULL);
  for (int i = 0; i < 4; i++) pthread_join(readers[i], NULL);
  for (int i = 0; i < 4; i++) CHECK(results[i].bad == 0 && results[i].snapshots == 4000);
  size_t count = 0;
  CHECK_STATUS(dpk_registered_kinds(NULL, 0, &count), DPK_OK, "");
  CHECK(count == RACE_KINDS + 4);
}

/* ---- load options: callers of other header versions ------------------------------------- */

static void expect_load(const char *path, const dpk_load_options_t *options, dpk_status_t status, const char *fragment) {
  dpk_model_t *m = (dpk_model_t *)&m; /* not NULL: the load must clear it */
  CHECK_STATUS(dpk_model_load(path, options, &m), status, fragment);
  CHECK((status == DPK_OK) == (m != NULL));
  if (m && options && options->num_threads) CHECK(dpk_model_num_threads(m) == options->num_threads); /* it was read */
  dpk_model_free(m);
}

static void check_options(const char *path) {
  dpk_load_options_t options;
  memset(&options, 0xAB, sizeof options);
  dpk_load_options_init(&options);
  CHECK(options.struct_size == sizeof options && options.verify_checksums == 0 && options.populate == 0 &&
        options.num_threads == 0);
  dpk_load_options_init(NULL); /* does nothing */
  options.num_threads = 3;
  expect_load(path, &options, DPK_OK, "");
  expect_load(path, NULL, DPK_OK, "");

  /* a caller whose header ends at num_threads, in a buffer of exactly that size (valgrind sees any read past it) */
  dpk_load_options_t *shorter = malloc(DPK_LOAD_OPTIONS_MIN_SIZE);
  memcpy(shorter, &options, DPK_LOAD_OPTIONS_MIN_SIZE);
  shorter->struct_size = DPK_LOAD_OPTIONS_MIN_SIZE;
  expect_load(path, shorter, DPK_OK, "");
  free(shorter);

  /* a caller built against a newer header: unknown bytes that are zero are fine, a set one is refused */
  struct {
    dpk_load_options_t known;
    uint64_t later_field;
  } newer;
  memset(&newer, 0, sizeof newer);
  dpk_load_options_init(&newer.known);
  newer.known.struct_size = sizeof newer;
  expect_load(path, &newer.known, DPK_OK, "");
  newer.later_field = 1;
  char message[256];
  snprintf(message, sizeof message,
           "dpk_model_load: options->struct_size is %zu and byte %zu is set, but this runtime knows only the first %zu "
           "bytes of dpk_load_options_t (the caller was built against a newer dpk.h)",
           sizeof newer, sizeof newer.known, sizeof newer.known);
  expect_load(path, &newer.known, DPK_STATUS_UNIMPLEMENTED, message);

  /* too small (not initialised) and absurd sizes */
  snprintf(message, sizeof message, "dpk_model_load: options->struct_size is 0 but must be from %zu to 4096 (fill the "
           "options with dpk_load_options_init)", (size_t)DPK_LOAD_OPTIONS_MIN_SIZE);
  options.struct_size = 0;
  expect_load(path, &options, DPK_STATUS_INVALID_ARGUMENT, message);
  options.struct_size = DPK_LOAD_OPTIONS_MIN_SIZE - 1;
  expect_load(path, &options, DPK_STATUS_INVALID_ARGUMENT, "options->struct_size is 19 but must be from 20 to 4096");
  options.struct_size = 4097;
  expect_load(path, &options, DPK_STATUS_INVALID_ARGUMENT, "options->struct_size is 4097 but must be from 20 to 4096");
  dpk_model_t *m = (dpk_model_t *)&m;
  CHECK_STATUS(dpk_model_load_signed(path, NULL, &options, &m), DPK_STATUS_INVALID_ARGUMENT, "key is NULL");
  CHECK(m == NULL);
}

/* ---- npy ----------------------------------------------------------------------- */

static void check_npy(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/t.npy", dir);
  int64_t shape[3] = {2, 3, 1};
  int16_t data[6] = {1, -2, 3, -4, 5, -6};
  DLTensor t = {data, {kDLCPU, 0}, 3, {kDLInt, 16, 1}, shape, NULL, 0};
  CHECK_STATUS(dpk_npy_write(path, &t), DPK_OK, "");
  dpk_npy_t npy;
  CHECK_STATUS(dpk_npy_read(path, &npy), DPK_OK, "");
  CHECK(npy.ndim == 3 && npy.shape[0] == 2 && npy.shape[1] == 3 && npy.shape[2] == 1);
  CHECK(npy.dtype.code == kDLInt && npy.dtype.bits == 16 && npy.nbytes == sizeof data);
  CHECK(npy.data && memcmp(npy.data, data, sizeof data) == 0);
  dpk_npy_free(&npy);
  snprintf(path, sizeof path, "%s/no/such/dir/t.npy", dir);
  CHECK_STATUS(dpk_npy_write(path, &t), DPK_STATUS_NOT_FOUND, "cannot write");
}

/* ---- api -------------------------------------------------------------------------- */

static void check_api(const char *path, const char *dir) {
  dpk_model_t *m = NULL;
  CHECK_STATUS(dpk_model_load(path, NULL, &m), DPK_OK, "");
  if (!m) return;
  CHECK(dpk_model_num_inputs(m) == 1 && dpk_model_num_outputs(m) == 1);
  dpk_tensor_info_t info;
  CHECK_STATUS(dpk_model_input_info(m, 0, &info), DPK_OK, "");
  CHECK(strcmp(info.name, "x") == 0 && info.ndim == 2 && info.shape[0] == 1 && info.shape[1] == 4);
  CHECK(info.dtype.code == kDLFloat && info.dtype.bits == 32);
  CHECK_STATUS(dpk_model_output_info(m, 1, &info), DPK_STATUS_OUT_OF_RANGE, "output index 1 is out of range");
  CHECK(info.name == NULL);
  CHECK(dpk_model_num_modules(m) == 3);
  const char *name, *kind;
  CHECK_STATUS(dpk_model_module_info(m, 1, &name, &kind), DPK_OK, "");
  CHECK(strcmp(name, "weights") == 0 && strcmp(kind, "params") == 0);
  CHECK_STATUS(dpk_model_module_info(m, 3, &name, &kind), DPK_STATUS_OUT_OF_RANGE, "module index 3");
  size_t size;
  const char *manifest = dpk_package_manifest(dpk_model_package(m), &size);
  CHECK(size > 20 && strncmp(manifest, "format: dsopack/1", 17) == 0);
  uint16_t major, minor;
  uint64_t section;
  dpk_package_format(dpk_model_package(m), &major, &minor, &section);
  CHECK(major == 1 && minor == 0 && section > 4096);

  /* functions: found through the entry's imports; called directly */
  dpk_packed_fn fn;
  void *resource;
  CHECK_STATUS(dpk_model_get_function(m, "host_relu_1", &fn, &resource), DPK_OK, "");
  int64_t shape[2] = {1, 4}, oshape[2] = {1, 3};
  tensor_t x, y;
  make_tensor(&x, 2, shape);
  make_tensor(&y, 2, shape);
  for (int i = 0; i < 4; i++) x.data[i] = (float)(i - 2);
  dpk_value args[2] = {{.v_tensor = &x.t}, {.v_tensor = &y.t}};
  int codes[2] = {DPK_TYPE_TENSOR, DPK_TYPE_TENSOR};
  dpk_value ret;
  int ret_code;
  CHECK(fn && fn(args, codes, 2, &ret, &ret_code, resource) == 0);
  CHECK(y.data[0] == 0 && y.data[1] == 0 && y.data[2] == 0 && y.data[3] == 1);
  CHECK_STATUS(dpk_model_get_function(m, "free", &fn, &resource), DPK_STATUS_NOT_FOUND,
               "no function 'free' in module 'main' or its imports");
  CHECK(fn == NULL);
  CHECK_STATUS(dpk_model_get_function(m, "main", &fn, &resource), DPK_OK, "");
  CHECK(fn && fn(args, codes, 1, &ret, &ret_code, resource) == DPK_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(dpk_last_error(), "function 'main' takes 2 tensors (1 inputs, 1 outputs) but was given 1 arguments"));

  /* run errors */
  make_tensor(&y, 2, oshape);
  CHECK_STATUS(run1(m, &x, &y), DPK_OK, "");
  const DLTensor *in[2] = {&x.t, &x.t};
  DLTensor *out[1] = {&y.t};
  CHECK_STATUS(dpk_model_run(m, in, 2, out, 1), DPK_STATUS_INVALID_ARGUMENT,
               "the model takes 1 inputs (x) but 2 were given");
  CHECK_STATUS(run1(m, &x, &x), DPK_STATUS_INVALID_ARGUMENT,
               "output 'y' has shape [1, 4] but the model expects float32[1, 3]");
  x.t.dtype.bits = 64;
  CHECK_STATUS(run1(m, &x, &y), DPK_STATUS_INVALID_ARGUMENT, "input 'x' has dtype float64 but the model expects float32[1, 4]");
  x.t.dtype.bits = 32;
  int64_t strides[2] = {8, 2};
  x.t.strides = strides;
  CHECK_STATUS(run1(m, &x, &y), DPK_STATUS_INVALID_ARGUMENT, "input 'x' is not compact row-major");
  x.t.strides = NULL;
  x.t.data = NULL;
  CHECK_STATUS(run1(m, &x, &y), DPK_STATUS_INVALID_ARGUMENT, "input 'x' has no data");
  dpk_model_free(m);
  dpk_model_free(NULL);
  dpk_package_free(NULL);

  check_kinds();
  check_npy(dir);
}

/* ---- threads ------------------------------------------------------------------------ */

typedef struct {
  const dpk_model_t *model;
  int index, iterations, mismatches;
  float expected[3];
} worker_t;

static void input_for(int index, int iteration, tensor_t *x) {
  int64_t shape[2] = {1, 4};
  make_tensor(x, 2, shape);
  for (int i = 0; i < 4; i++) x->data[i] = (float)sin(index * 7 + i * 3 + (iteration % 5));
}

static void *worker(void *arg) {
  worker_t *w = arg;
  int64_t oshape[2] = {1, 3};
  for (int it = 0; it < w->iterations; it++) {
    tensor_t x, y;
    input_for(w->index, it, &x);
    make_tensor(&y, 2, oshape);
    if (run1(w->model, &x, &y) != DPK_OK || (it % 5 == 0 && memcmp(y.data, w->expected, sizeof w->expected) != 0))
      w->mismatches++;
  }
  return NULL;
}

static void check_threads(const char *path, int n) {
  dpk_model_t *m;
  CHECK_STATUS(dpk_model_load(path, NULL, &m), DPK_OK, "");
  if (failures) return;
  worker_t workers[64];
  pthread_t threads[64];
  int64_t oshape[2] = {1, 3};
  if (n > 64) n = 64;
  for (int i = 0; i < n; i++) {
    tensor_t x, y;
    input_for(i, 0, &x);
    make_tensor(&y, 2, oshape);
    CHECK_STATUS(run1(m, &x, &y), DPK_OK, "");
    workers[i] = (worker_t){m, i, 2000, 0, {y.data[0], y.data[1], y.data[2]}};
  }
  for (int i = 0; i < n; i++) pthread_create(&threads[i], NULL, worker, &workers[i]);
  for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
  for (int i = 0; i < n; i++) CHECK(workers[i].mismatches == 0);
  dpk_model_free(m);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_api load|open|api|threads PATH [...]\n");
    return 2;
  }
  const char *cmd = argv[1], *path = argv[2];
  if (strcmp(cmd, "load") == 0) {
    dpk_load_options_t options;
    dpk_load_options_init(&options);
    options.verify_checksums = argc > 3 && strcmp(argv[3], "verify") == 0;
    options.populate = 1;
    dpk_model_t *m;
    dpk_status_t status = dpk_model_load(path, &options, &m);
    CHECK((status == DPK_OK) == (m != NULL));
    report(status);
    dpk_model_free(m);
  } else if (strcmp(cmd, "open") == 0) {
    dpk_package_t *p;
    dpk_status_t status = dpk_package_open(path, &p);
    CHECK((status == DPK_OK) == (p != NULL));
    report(status);
    if (p) report(dpk_package_verify(p));
    dpk_package_free(p);
  } else if (strcmp(cmd, "api") == 0) {
    check_api(path, argc > 3 ? argv[3] : ".");
  } else if (strcmp(cmd, "kinds_race") == 0) {
    check_kinds_race();
  } else if (strcmp(cmd, "options") == 0) {
    check_options(path);
  } else if (strcmp(cmd, "threads") == 0) {
    check_threads(path, argc > 3 ? atoi(argv[3]) : 8);
  } else {
    fprintf(stderr, "unknown command '%s'\n", cmd);
    return 2;
  }
  return failures ? 1 : 0;
}
