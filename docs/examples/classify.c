/* classify.c: a minimal C program that runs a dsopack model with libdpk.
 *
 *   classify MODEL.so INPUT
 *
 * INPUT is a float32 .npy file (C order) or a raw file of little-endian
 * float32 values; either way it must hold exactly as many values as the
 * model's one input. Prints "class N (score S)": the index and value of the
 * largest element of the model's one output. Exit status 0, or 1 with the
 * reason on stderr.
 *
 * Build it (docs/edge.md), for this machine or, with a cross compiler and the
 * aarch64 runtime, for a board:
 *   cc -Iruntime_c/include docs/examples/classify.c -Lruntime_c/build -ldpk -o classify
 *   aarch64-linux-gnu-gcc -Iruntime_c/include docs/examples/classify.c \
 *       -Lruntime_c/build/aarch64 -ldpk -o classify-aarch64
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpk.h"

/* Read all of `path`; NULL (and a message) on failure. */
static unsigned char *read_file(const char *path, size_t *out_size) {
  FILE *f = fopen(path, "rb");
  if (!f) return perror(path), NULL;
  unsigned char *data = NULL;
  size_t size = 0, capacity = 0, n;
  do {
    if (size == capacity) {
      unsigned char *bigger = realloc(data, capacity = capacity ? 2 * capacity : 65536);
      if (!bigger) break;
      data = bigger;
    }
    n = fread(data + size, 1, capacity - size, f);
    size += n;
  } while (n > 0);
  int failed = ferror(f) || (size < capacity && !feof(f));
  fclose(f);
  if (failed) {
    fprintf(stderr, "%s: read error\n", path);
    free(data);
    return NULL;
  }
  *out_size = size;
  return data;
}

/* Where the float32 values start in `data`: after the header of a .npy
 * file, else at 0 (a raw file). NULL with a message for a .npy that is not
 * little-endian float32 in C order. */
static const unsigned char *float_values(const char *path, const unsigned char *data, size_t *size) {
  if (*size < 10 || memcmp(data, "\x93NUMPY", 6) != 0) return data;
  size_t header = 10 + (size_t)data[8] + ((size_t)data[9] << 8); /* version 1: u16 length */
  if (data[6] >= 2) /* versions 2 and 3: u32 length */
    header = *size < 12 ? *size + 1 : 12 + (size_t)data[8] + ((size_t)data[9] << 8) + ((size_t)data[10] << 16) +
                                 ((size_t)data[11] << 24);
  if (header > *size) return fprintf(stderr, "%s: truncated .npy header\n", path), NULL;
  char text[256] = "";
  memcpy(text, data, header - 1 < sizeof text - 1 ? header - 1 : sizeof text - 1);
  for (size_t i = 0; i < sizeof text - 1; i++) text[i] = text[i] ? text[i] : ' ';
  if (!strstr(text, "'descr': '<f4'") || !strstr(text, "'fortran_order': False"))
    return fprintf(stderr, "%s: expected float32 ('<f4') in C order\n", path), NULL;
  *size -= header;
  return data + header;
}

/* Run `model` on `size` bytes of float32 `values`; print the argmax of its output. */
static int classify(const dpk_model_t *model, const char *path, const unsigned char *values, size_t size) {
  dpk_tensor_info_t in, out;
  if (dpk_model_num_inputs(model) != 1 || dpk_model_num_outputs(model) != 1) {
    fprintf(stderr, "expected a model with one input and one output\n");
    return 1;
  }
  dpk_model_input_info(model, 0, &in);
  dpk_model_output_info(model, 0, &out);
  if (in.dtype.code != kDLFloat || in.dtype.bits != 32 || out.dtype.code != kDLFloat || out.dtype.bits != 32) {
    fprintf(stderr, "expected a float32 input and output\n");
    return 1;
  }
  size_t in_count = 1, out_count = 1;
  for (int32_t d = 0; d < in.ndim; d++) in_count *= (size_t)in.shape[d];
  for (int32_t d = 0; d < out.ndim; d++) out_count *= (size_t)out.shape[d];
  if (size != in_count * sizeof(float)) {
    fprintf(stderr, "%s: %zu bytes of values, but input '%s' takes %zu float32 values\n", path, size, in.name,
            in_count);
    return 1;
  }
  float *input = malloc(size), *scores = malloc(out_count * sizeof(float));
  int status = 1;
  if (!input || !scores) {
    fprintf(stderr, "out of memory\n");
  } else {
    memcpy(input, values, size); /* aligned; little-endian, as on x86-64 and aarch64 Linux */
    DLTensor x = {input, {kDLCPU, 0}, in.ndim, in.dtype, (int64_t *)in.shape, NULL, 0};
    DLTensor y = {scores, {kDLCPU, 0}, out.ndim, out.dtype, (int64_t *)out.shape, NULL, 0};
    const DLTensor *inputs[] = {&x};
    DLTensor *outputs[] = {&y};
    if (dpk_model_run(model, inputs, 1, outputs, 1) != DPK_OK) {
      fprintf(stderr, "%s\n", dpk_last_error());
    } else {
      size_t best = 0;
      for (size_t i = 1; i < out_count; i++)
        if (scores[i] > scores[best]) best = i;
      printf("class %zu (score %g)\n", best, (double)scores[best]);
      status = 0;
    }
  }
  free(input);
  free(scores);
  return status;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.so INPUT(.npy | raw float32)\n", argv[0]);
    return 1;
  }
  dpk_model_t *model;
  if (dpk_model_load(argv[1], NULL, &model) != DPK_OK) {
    fprintf(stderr, "%s\n", dpk_last_error());
    return 1;
  }
  size_t size = 0;
  unsigned char *file = read_file(argv[2], &size);
  const unsigned char *values = file ? float_values(argv[2], file, &size) : NULL;
  int status = values ? classify(model, argv[2], values, size) : 1;
  free(file);
  dpk_model_free(model);
  return status;
}
