/* mutate.c: the mutation sweep of tests/test_mutation.py, in one process.
 *
 *   mutate MODEL.so WORKDIR SEED N
 *
 * Reads MODEL.so, loads it once (the baseline: verify passes, a run on a
 * fixed input completes), then changes one byte at a time and, for each
 * change, writes the file to WORKDIR (a new inode each time, so dlopen never
 * sees a stale mapping) and:
 *   - opens the package and verifies it: the change must be detected
 *     (dpk_package_open or dpk_package_verify fails);
 *   - loads it without verify and, if it loads, runs it on the fixed input:
 *     either a status comes back (refused) or the run completes.
 * Bytes changed: every byte of the .dpk section before the payload area
 * (header, manifest and the zero padding after it), each XOR 0xff; then N
 * payload-area bytes and N bytes inside module payloads (graph, json: not
 * weights), chosen by a xorshift generator seeded with SEED, each XOR a
 * random non-zero value.
 *
 * Prints one line per undetected change ("UNDETECTED offset ...") and a
 * summary: "mutations M undetected U open_refused O verify_refused V
 * load_refused L run_refused R run_completed C run_changed D
 * module_payload_loaded P". Exit 0 when every change was detected and no
 * changed module payload loaded (load checks their checksums), 1
 * otherwise, 2 on usage or setup errors. A crash is the process dying,
 * which the test sees. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "manifest.h"
#include "package.h"
#include "shape.h"

static uint64_t state;
static uint64_t next_random(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

static uint8_t *read_all(const char *path, size_t *out_size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *bytes = malloc(n > 0 ? (size_t)n : 1);
  if (bytes && fread(bytes, 1, (size_t)n, f) != (size_t)n) {
    free(bytes);
    bytes = NULL;
  }
  fclose(f);
  *out_size = (size_t)n;
  return bytes;
}

static int write_file(const char *path, const uint8_t *bytes, size_t size) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0755);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < size) {
    ssize_t w = write(fd, bytes + done, size - done);
    if (w <= 0) {
      close(fd);
      return -1;
    }
    done += (size_t)w;
  }
  close(fd);
  return rename(tmp, path); /* a new inode: never the file a previous dlopen mapped */
}

/* The fixed input and an output buffer for one run of a model. */
typedef struct {
  DLTensor *in, *out;
  size_t num_in, num_out;
  size_t out_bytes[16];
} io_t;

static DLTensor *make_tensors(const dpk_tensor_decl_t *decls, size_t n, size_t *bytes) {
  DLTensor *t = calloc(n ? n : 1, sizeof *t);
  for (size_t i = 0; t && i < n; i++) {
    uint64_t numel;
    dpk_shape_numel(decls[i].ndim, decls[i].shape, &numel);
    size_t size = (size_t)numel * dpk_dtype_size(decls[i].dtype);
    if (bytes) bytes[i] = size;
    uint8_t *data = calloc(size ? size : 1, 1);
    if (data && decls[i].dtype.code == kDLFloat && decls[i].dtype.bits == 32) /* 0..16, like pixels */
      for (size_t e = 0; e < size / 4; e++) ((float *)data)[e] = (float)(e % 17);
    t[i].data = data;
    t[i].device.device_type = kDLCPU;
    t[i].ndim = decls[i].ndim;
    t[i].dtype = decls[i].dtype;
    t[i].shape = calloc(decls[i].ndim ? (size_t)decls[i].ndim : 1, sizeof(int64_t)); /* outlives the package */
    if (t[i].shape) memcpy(t[i].shape, decls[i].shape, (size_t)decls[i].ndim * sizeof(int64_t));
  }
  return t;
}

/* 0 completed, 1 refused; *changed if the outputs differ from `baseline`. */
static int run_once(const dpk_model_t *m, const io_t *io, uint8_t **baseline, int *changed) {
  const DLTensor *in[16];
  DLTensor *out[16];
  for (size_t i = 0; i < io->num_in; i++) in[i] = &io->in[i];
  for (size_t i = 0; i < io->num_out; i++) {
    out[i] = &io->out[i];
    memset(out[i]->data, 0, io->out_bytes[i]);
  }
  if (dpk_model_run(m, in, io->num_in, out, io->num_out) != DPK_OK) return 1;
  *changed = 0;
  for (size_t i = 0; baseline && i < io->num_out; i++) {
    if (!baseline[i]) {
      baseline[i] = malloc(io->out_bytes[i] ? io->out_bytes[i] : 1);
      memcpy(baseline[i], io->out[i].data, io->out_bytes[i]);
    } else if (memcmp(baseline[i], io->out[i].data, io->out_bytes[i]) != 0) {
      *changed = 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: mutate MODEL.so WORKDIR SEED N\n");
    return 2;
  }
  size_t size;
  uint8_t *original = read_all(argv[1], &size);
  state = strtoull(argv[3], NULL, 10) | 1;
  long n = atol(argv[4]);
  if (!original) return fprintf(stderr, "cannot read %s\n", argv[1]), 2;

  /* baseline */
  dpk_package_t *pkg;
  dpk_model_t *model;
  if (dpk_package_open(argv[1], &pkg) || dpk_package_verify(pkg) || dpk_model_load(argv[1], NULL, &model))
    return fprintf(stderr, "baseline: %s\n", dpk_last_error()), 2;
  io_t io = {0};
  io.num_in = pkg->num_inputs;
  io.num_out = pkg->num_outputs;
  if (io.num_in > 16 || io.num_out > 16) return fprintf(stderr, "too many inputs or outputs\n"), 2;
  io.in = make_tensors(pkg->inputs, io.num_in, NULL);
  io.out = make_tensors(pkg->outputs, io.num_out, io.out_bytes);
  uint8_t *baseline[16] = {0};
  int changed = 0;
  if (run_once(model, &io, baseline, &changed)) return fprintf(stderr, "baseline run: %s\n", dpk_last_error()), 2;
  dpk_model_free(model);
  size_t section = (size_t)(pkg->file.section - pkg->file.map);
  uint64_t area = section + pkg->header.payload_offset, area_size = pkg->header.payload_size;
  /* module payload spans (not weights), in file offsets */
  uint64_t spans[64][2];
  size_t num_spans = 0, span_bytes = 0;
  for (size_t i = 0; i < pkg->num_modules && num_spans < 64; i++) {
    const dpk_module_decl_t *d = &pkg->modules[i];
    if (!d->has_payload || d->payload.size == 0) continue;
    spans[num_spans][0] = area + d->payload.offset;
    spans[num_spans][1] = d->payload.size;
    span_bytes += d->payload.size;
    num_spans++;
  }
  dpk_package_free(pkg);

  size_t before_area = (size_t)(area - section);
  size_t total = before_area + (size_t)n + (span_bytes ? (size_t)n : 0);
  char path[4096];
  int stats[8] = {0}; /* undetected, open, verify, load, run refused, run completed, changed, module payload loaded */
  uint8_t *bytes = malloc(size);
  for (size_t k = 0; k < total; k++) {
    size_t offset;
    uint8_t mask;
    if (k < before_area) {
      offset = section + k;
      mask = 0xff;
    } else if (k < before_area + (size_t)n) {
      offset = (size_t)(area + next_random() % (area_size ? area_size : 1));
      mask = (uint8_t)(next_random() % 255 + 1);
    } else {
      uint64_t pick = next_random() % span_bytes;
      size_t s = 0;
      while (pick >= spans[s][1]) pick -= spans[s++][1];
      offset = (size_t)(spans[s][0] + pick);
      mask = (uint8_t)(next_random() % 255 + 1);
    }
    memcpy(bytes, original, size);
    bytes[offset] ^= mask;
    snprintf(path, sizeof path, "%s/mutant.so", argv[2]);
    if (write_file(path, bytes, size)) return fprintf(stderr, "cannot write %s\n", path), 2;

    if (dpk_package_open(path, &pkg) != DPK_OK) {
      stats[1]++;
    } else {
      if (dpk_package_verify(pkg) != DPK_OK) {
        stats[2]++;
      } else {
        stats[0]++;
        printf("UNDETECTED offset %zu (section + %zu) xor 0x%02x\n", offset, offset - section, mask);
      }
      dpk_package_free(pkg);
    }
    if (dpk_model_load(path, NULL, &model) != DPK_OK) {
      stats[3]++;
      continue;
    }
    if (k >= before_area + (size_t)n) {
      stats[7]++;
      printf("LOADED a changed module payload: offset %zu xor 0x%02x\n", offset, mask);
    }
    if (run_once(model, &io, baseline, &changed)) {
      stats[4]++;
    } else {
      stats[5]++;
      stats[6] += changed;
    }
    dpk_model_free(model);
  }
  unlink(path);
  printf("mutations %zu undetected %d open_refused %d verify_refused %d load_refused %d run_refused %d "
         "run_completed %d run_changed %d module_payload_loaded %d\n",
         total, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], stats[6], stats[7]);
  for (size_t i = 0; i < io.num_in; i++) {
    free(io.in[i].data);
    free(io.in[i].shape);
  }
  for (size_t i = 0; i < io.num_out; i++) {
    free(io.out[i].data);
    free(io.out[i].shape);
    free(baseline[i]);
  }
  free(io.in);
  free(io.out);
  free(bytes);
  free(original);
  return stats[0] || stats[7] ? 1 : 0;
}
