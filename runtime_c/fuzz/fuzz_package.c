/* fuzz_package.c: libFuzzer harness over everything libdpk reads from a model
 * file before dlopen, plus the graph and json payload parsers.
 *
 *   make -C runtime_c fuzz                      build/fuzz/fuzz_package
 *   build/fuzz/fuzz_package -max_total_time=60 CORPUS_DIR fuzz/seeds
 *
 * One input is a whole model file (the ELF with its .dpk section). It is read
 * twice, through dpk_package_open_memory (the reader of dpk_package_open
 * without the mmap):
 *   1. as given: ELF and section headers, blob header, checksums;
 *   2. resealed: the manifest and header checksums recomputed, so mutations
 *      of the header fields and of the manifest text get past the checksums
 *      into the manifest parser and the payload descriptors.
 * When a package opens, dpk_package_verify runs (every payload checksum, the
 * zero gaps), then the modules are rebuilt in import order as
 * dpk_model_load does it, minus dlopen: each payload is decoded (zstd) and
 * given to its kind's load -- params, graph (the plan: tensors, storage,
 * arena bounds, call arguments, function and tensor lookups through the
 * imports) and json (the whole region check) -- and every function the
 * manifest lists is looked up. The file's own code is never loaded: a `dso`
 * module is a stand-in kind whose functions are a stub that is never called,
 * and a manifest with carried kinds stops before its modules (their code is
 * in the file). No kernel runs.
 *
 * A file with a signature trailer ("DSOPKSIG") is also opened through the
 * signed reader (dpk_package_open_signed, from a memfd).
 *
 * Payload checksums are not checked on the module path (dpk_model_load
 * checks module payloads; here the fuzzer should reach the parsers).
 *
 * Built with -DDPK_FUZZ_PAYLOAD it is fuzz_payload: the graph and json
 * payload parsers fed directly (see the end of this file). */
#define _GNU_SOURCE /* memfd_create, memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blob.h"
#include "file.h"
#include "kinds.h"
#include "manifest.h"
#include "model.h"
#include "module.h"
#include "package.h"
#include "registry.h"

static int stub(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code, void *resource) {
  (void)args, (void)codes, (void)nargs, (void)ret, (void)ret_code, (void)resource;
  abort(); /* the harness never runs a kernel */
}

static int stub_load(const dpk_kind_load_args *args, void **out_state) {
  (void)args;
  *out_state = NULL;
  return 0;
}

/* dlsym would find any name the manifest lists; so does this. */
static int stub_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  (void)state, (void)name;
  *out_fn = stub;
  *out_resource = NULL;
  return 0;
}

static void stub_free(void *state) { (void)state; }

static const dpk_kind stub_dso = {"dso", DPK_ABI_VERSION, stub_load, stub_get_function, stub_free, NULL};

/* Depth-first post-order over imports, as model.c; false on a cycle. */
static bool visit(const dpk_package_t *pkg, size_t i, unsigned char *mark, size_t *order, size_t *n) {
  if (mark[i] == 2) return true;
  if (mark[i] == 1) return false;
  mark[i] = 1;
  for (size_t k = 0; k < pkg->modules[i].num_imports; k++)
    if (!visit(pkg, pkg->modules[i].imports[k], mark, order, n)) return false;
  mark[i] = 2;
  order[(*n)++] = i;
  return true;
}

/* Rebuild every module as dpk_model_load does after dlopen; free them.
 * Module `override` (if < num_modules) gets `bytes` as its decoded payload,
 * and the modules after it in import order are not loaded. */
static void load_modules(dpk_package_t *pkg, size_t override, const uint8_t *bytes, size_t size) {
  dpk_model_t m;
  memset(&m, 0, sizeof m);
  m.package = pkg;
  size_t count = pkg->num_modules;
  m.modules = calloc(count, sizeof *m.modules);
  m.order = calloc(count, sizeof *m.order);
  unsigned char *mark = calloc(count, 1);
  size_t n = 0, loaded = 0;
  bool ok = m.modules && m.order && mark && pkg->num_carried == 0 && dpk_model_check_kinds(&m) == DPK_OK;
  for (size_t i = 0; ok && i < count; i++) ok = visit(pkg, i, mark, m.order, &n);
  for (size_t i = 0; ok && i < count; i++) {
    const dpk_kind *kind = dpk_registry_find(pkg->modules[i].kind);
    m.modules[i].kind = kind == &dpk_kind_dso ? &stub_dso : kind;
    m.modules[i].ctx.model = &m;
    m.modules[i].ctx.module = i;
  }
  for (; ok && loaded < count; loaded++) {
    size_t i = m.order[loaded];
    dpk_module_rt_t *rt = &m.modules[i];
    const dpk_module_decl_t *decl = &pkg->modules[i];
    const uint8_t *payload = NULL;
    size_t payload_size = decl->has_payload ? (size_t)decl->payload.raw_size : 0;
    if (i == override) {
      payload = bytes;
      payload_size = size;
    } else if (decl->has_payload && dpk_payload_decode(&decl->payload, "payload", &payload, &rt->decoded)) {
      break;
    }
    dpk_kind_load_args args = {decl->name, payload, payload_size, decl->functions, &rt->ctx, &dpk_services};
    if (rt->kind->load(&args, &rt->state)) break;
    rt->loaded = true;
    for (size_t f = 0; f < decl->num_functions; f++) {
      dpk_packed_fn fn;
      void *resource;
      rt->kind->get_function(rt->state, decl->functions[f], &fn, &resource);
    }
    if (i == override) { /* the modules after it would load as in every other run */
      loaded++;
      break;
    }
  }
  if (ok && loaded == count) {
    dpk_packed_fn fn;
    void *resource;
    const dpk_module_rt_t *entry = &m.modules[pkg->entry];
    entry->kind->get_function(entry->state, "main", &fn, &resource);
  }
  for (size_t k = loaded; k-- > 0;) {
    dpk_module_rt_t *rt = &m.modules[m.order[k]];
    if (rt->loaded) rt->kind->free(rt->state);
  }
  for (size_t i = 0; m.modules && i < count; i++) free(m.modules[i].decoded);
  free(m.modules);
  free(m.order);
  free(mark);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef DPK_FUZZ_PAYLOAD
static void read_package(const uint8_t *bytes, size_t size) {
  dpk_package_t *pkg;
  if (dpk_package_open_memory("fuzz.so", bytes, size, &pkg) != DPK_OK) return;
  size_t manifest_size;
  const char *manifest = dpk_package_manifest(pkg, &manifest_size);
  (void)manifest;
  uint16_t major, minor;
  uint64_t section_size;
  dpk_package_format(pkg, &major, &minor, &section_size);
  dpk_package_verify(pkg);
  load_modules(pkg, (size_t)-1, NULL, 0);
  dpk_package_free(pkg);
}

/* A file carrying a signature trailer also goes through the signed reader
 * (signature.c: where the ELF contents end, the trailer's fields), from a
 * memfd since that reader takes a path. The key is DPK_FUZZ_PUBKEY's (a
 * KEY.pub; make_seeds.py signs a seed with it), else all zeros. */
static void read_signed(const uint8_t *bytes, size_t size) {
  static dpk_public_key_t key;
  static int key_read;
  if (!key_read) {
    const char *path = getenv("DPK_FUZZ_PUBKEY");
    if (path && dpk_public_key_read(path, &key) != DPK_OK) memset(&key, 0, sizeof key);
    key_read = 1;
  }
  if (size < 8 || !memmem(bytes, size, "DSOPKSIG", 8)) return;
  int fd = memfd_create("fuzz.so", MFD_CLOEXEC);
  if (fd < 0) return;
  size_t done = 0;
  while (done < size) {
    ssize_t w = write(fd, bytes + done, size - done);
    if (w <= 0) break;
    done += (size_t)w;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  dpk_package_t *pkg;
  if (done == size && dpk_package_open_signed(path, &key, &pkg) == DPK_OK) dpk_package_free(pkg);
  close(fd);
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Recompute the manifest and header checksums of the .dpk section in
 * `bytes` (writable); false if there is no section to reseal. */
static bool reseal(uint8_t *bytes, size_t size) {
  dpk_file_t file;
  if (dpk_file_from_memory("fuzz.so", bytes, size, &file) != DPK_OK) return false;
  uint8_t *s = bytes + (file.section - bytes);
  uint64_t n = file.section_size;
  dpk_file_close(&file);
  if (n < DPK_BLOB_HEADER_SIZE || memcmp(s, "DSOPACK\0", 8) != 0) return false;
  uint64_t offset = get64(s + 16), length = get64(s + 24);
  if (offset <= n && length <= n - offset) put64(s + 48, dpk_checksum(s + offset, (size_t)length));
  put64(s + 56, dpk_checksum(s, 56));
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  read_package(data, size);
  read_signed(data, size);
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  if (reseal(copy, size)) read_package(copy, size);
  free(copy);
  return 0;
}
#else
/* fuzz_payload: the graph and json parsers on payload bytes directly.
 * DPK_FUZZ_CONTEXT names a model file (make_seeds.py: lenet.raw.elf) that
 * gives the signature, weights and functions; an input is one selector byte
 * then the bytes that replace the decoded payload of the context's module
 * with a payload number (selector % count): its graph or one of its json
 * modules. The modules it imports load as they are in the context. */
static uint8_t *context_bytes;
static dpk_package_t *context;
static size_t payload_modules[64], num_payload_modules;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *path = getenv("DPK_FUZZ_CONTEXT");
  FILE *f = path ? fopen(path, "rb") : NULL;
  if (!f) {
    fprintf(stderr, "fuzz_payload: set DPK_FUZZ_CONTEXT to a model file (make_seeds.py writes lenet.raw.elf)\n");
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  context_bytes = malloc(n > 0 ? (size_t)n : 1);
  if (!context_bytes || fread(context_bytes, 1, (size_t)n, f) != (size_t)n ||
      dpk_package_open_memory(path, context_bytes, (size_t)n, &context) != DPK_OK) {
    fprintf(stderr, "fuzz_payload: cannot read %s: %s\n", path, dpk_last_error());
    exit(2);
  }
  fclose(f);
  for (size_t i = 0; i < context->num_modules && num_payload_modules < 64; i++)
    if (context->modules[i].has_payload) payload_modules[num_payload_modules++] = i;
  if (!num_payload_modules) {
    fprintf(stderr, "fuzz_payload: %s has no module with a payload\n", path);
    exit(2);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  load_modules(context, payload_modules[data[0] % num_payload_modules], data + 1, size - 1);
  return 0;
}
#endif
