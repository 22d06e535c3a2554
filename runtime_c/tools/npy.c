/* npy.c: read and write NumPy .npy files (format versions 1, 2 and 3),
 * little-endian, C order, the dtypes of dtype.c. Every header field is
 * checked before use; the data size must match the header exactly. Writes
 * go to a temporary file that is renamed, so a failed write never leaves a
 * half-written output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "error.h"
#include "npy.h"
#include "shape.h"

static const struct {
  const char *descr; /* without the byte-order character */
  DLDataType dtype;
} descrs[] = {
    {"f4", {kDLFloat, 32, 1}}, {"f8", {kDLFloat, 64, 1}}, {"f2", {kDLFloat, 16, 1}}, {"i1", {kDLInt, 8, 1}},
    {"i2", {kDLInt, 16, 1}},   {"i4", {kDLInt, 32, 1}},   {"i8", {kDLInt, 64, 1}},   {"u1", {kDLUInt, 8, 1}},
    {"u2", {kDLUInt, 16, 1}},  {"u4", {kDLUInt, 32, 1}},  {"u8", {kDLUInt, 64, 1}},  {"b1", {kDLBool, 8, 1}},
};

/* ---- the header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (1, 64), } */

typedef struct {
  const char *p, *end, *path;
} cursor;

static void skip_space(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool take(cursor *c, char ch) {
  skip_space(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

/* A quoted string into `out` (at most `cap`-1 chars). */
static bool quoted(cursor *c, char *out, size_t cap) {
  skip_space(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
  char q = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != q) {
    if (n + 1 >= cap) return false;
    out[n++] = *c->p++;
  }
  if (c->p >= c->end) return false;
  c->p++;
  out[n] = '\0';
  return true;
}

static bool word(cursor *c, const char *w) {
  skip_space(c);
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return false;
  c->p += n;
  return true;
}

static bool parse_shape(cursor *c, dpk_npy_t *out) {
  if (!take(c, '(')) return false;
  out->ndim = 0;
  for (;;) {
    if (take(c, ')')) return true;
    skip_space(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9' || out->ndim >= DPK_NPY_MAX_DIMS) return false;
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      if (v > (INT64_MAX - 9) / 10) return false;
      v = v * 10 + (*c->p++ - '0');
    }
    if (c->p < c->end && *c->p == 'L') c->p++; /* Python 2 longs */
    out->shape[out->ndim++] = v;
    if (!take(c, ',')) return take(c, ')');
  }
}

static dpk_status_t parse_header(const char *path, const char *text, size_t size, dpk_npy_t *out) {
  cursor c = {text, text + size, path};
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  char descr[16] = "";
  if (!take(&c, '{')) goto bad;
  while (!take(&c, '}')) {
    char key[32];
    if (!quoted(&c, key, sizeof key) || !take(&c, ':')) goto bad;
    if (strcmp(key, "descr") == 0) {
      if (!quoted(&c, descr, sizeof descr)) goto bad;
      have_descr = true;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (word(&c, "True")) fortran = true;
      else if (!word(&c, "False")) goto bad;
      have_order = true;
    } else if (strcmp(key, "shape") == 0) {
      if (!parse_shape(&c, out)) goto bad;
      have_shape = true;
    } else {
      goto bad;
    }
    if (!take(&c, ',')) {
      if (!take(&c, '}')) goto bad;
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) goto bad;
  char order = descr[0];
  const char *kind = order == '<' || order == '>' || order == '|' || order == '=' ? descr + 1 : descr;
  for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++) {
    if (strcmp(descrs[i].descr, kind) != 0) continue;
    if (order == '>' && descrs[i].dtype.bits > 8)
      return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is big-endian (%s); only little-endian .npy is read", path, descr);
    out->dtype = descrs[i].dtype;
    if (fortran && out->ndim > 1)
      return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is in Fortran order; write it with np.ascontiguousarray", path);
    return DPK_OK;
  }
  return dpk_fail(DPK_STATUS_UNIMPLEMENTED,
                  "'%s' has dtype '%s' (known: float32, float64, float16, int8, int16, int32, int64, uint8, uint16, "
                  "uint32, uint64, bool)",
                  path, descr);
bad:
  return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' has a malformed .npy header: %.*s", path, (int)(size > 200 ? 200 : size),
                  text);
}

static dpk_status_t read_all(const char *path, uint8_t **out_bytes, size_t *out_size) {
  FILE *f = fopen(path, "rb");
  if (!f) return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot open '%s': %s", path, strerror(errno));
  uint8_t *bytes = NULL;
  size_t size = 0, cap = 0;
  for (;;) {
    if (size == cap) {
      size_t grown = cap ? cap * 2 : 1 << 16;
      uint8_t *bigger = realloc(bytes, grown);
      if (!bigger) {
        free(bytes);
        fclose(f);
        return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory reading '%s'", path);
      }
      bytes = bigger;
      cap = grown;
    }
    size_t got = fread(bytes + size, 1, cap - size, f);
    size += got;
    if (got == 0) break;
  }
  bool failed = ferror(f);
  fclose(f);
  if (failed) {
    free(bytes);
    return dpk_fail(DPK_STATUS_DATA_LOSS, "cannot read '%s'", path);
  }
  *out_bytes = bytes;
  *out_size = size;
  return DPK_OK;
}

dpk_status_t dpk_npy_read(const char *path, dpk_npy_t *out_npy) {
  memset(out_npy, 0, sizeof *out_npy);
  uint8_t *bytes = NULL;
  size_t size = 0;
  dpk_status_t status = read_all(path, &bytes, &size);
  if (status) return status;
  dpk_npy_t npy;
  memset(&npy, 0, sizeof npy);
  size_t header_len = 0, start = 0;
  if (size < 10 || memcmp(bytes, "\x93NUMPY", 6) != 0) {
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' is not a .npy file", path);
  } else if (bytes[6] == 1) {
    header_len = (size_t)bytes[8] | (size_t)bytes[9] << 8;
    start = 10;
  } else if ((bytes[6] == 2 || bytes[6] == 3) && size >= 12) {
    header_len = (size_t)bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 | (size_t)bytes[11] << 24;
    start = 12;
  } else {
    status = dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is .npy version %u.%u (this reader knows 1, 2 and 3)", path,
                      (unsigned)bytes[6], (unsigned)bytes[7]);
  }
  if (!status && header_len > size - start)
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the .npy header (%zu bytes) runs past the end of the file", path,
                      header_len);
  if (!status) status = parse_header(path, (const char *)bytes + start, header_len, &npy);
  uint64_t numel = 0;
  if (!status && !dpk_shape_numel(npy.ndim, npy.shape, &numel))
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the shape's element count overflows", path);
  size_t esize = dpk_dtype_size(npy.dtype), data_at = start + header_len;
  if (!status && (numel > SIZE_MAX / (esize ? esize : 1) || numel * esize != size - data_at))
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the header promises %llu bytes of data but the file holds %zu", path,
                      (unsigned long long)(numel * esize), size - data_at);
  if (!status) {
    npy.nbytes = (size_t)(numel * esize);
    if (posix_memalign(&npy.data, 64, npy.nbytes ? npy.nbytes : 64))
      status = dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory reading '%s'", path);
    else
      memcpy(npy.data, bytes + data_at, npy.nbytes);
  }
  free(bytes);
  if (!status) *out_npy = npy;
  return status;
}

void dpk_npy_free(dpk_npy_t *npy) {
  if (!npy) return;
  free(npy->data);
  npy->data = NULL;
}

dpk_status_t dpk_npy_write(const char *path, const DLTensor *t) {
  const char *descr = NULL;
  for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
    if (descrs[i].dtype.code == t->dtype.code && descrs[i].dtype.bits == t->dtype.bits) descr = descrs[i].descr;
  if (!descr || t->dtype.lanes != 1)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "cannot write '%s': dtype %s has no .npy form here", path,
                    dpk_dtype_name(t->dtype));
  uint64_t numel;
  if (t->ndim < 0 || !dpk_shape_numel(t->ndim, t->shape, &numel))
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "cannot write '%s': bad shape", path);
  char header[4096];
  int n = snprintf(header, sizeof header, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                   t->dtype.bits == 8 ? '|' : '<', descr);
  for (int32_t i = 0; i < t->ndim && n > 0 && (size_t)n < sizeof header; i++)
    n += snprintf(header + n, sizeof header - (size_t)n, "%lld%s", (long long)t->shape[i],
                  t->ndim == 1 ? "," : i + 1 < t->ndim ? ", " : "");
  if (n > 0 && (size_t)n < sizeof header) n += snprintf(header + n, sizeof header - (size_t)n, "), }");
  if (n < 0 || (size_t)n + 64 >= sizeof header)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "cannot write '%s': the shape has too many dims", path);
  size_t total = ((size_t)n + 10 + 1 + 63) / 64 * 64; /* magic+len, text, '\n', aligned to 64 */
  size_t text = total - 10;
  memset(header + n, ' ', text - 1 - (size_t)n);
  header[text - 1] = '\n';
  uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(text & 0xff), (uint8_t)(text >> 8)};
  size_t nbytes = (size_t)numel * dpk_dtype_size(t->dtype);
  char *tmp = malloc(strlen(path) + 32);
  if (!tmp) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory writing '%s'", path);
  sprintf(tmp, "%s.tmp%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    dpk_status_t status = dpk_fail(DPK_STATUS_NOT_FOUND, "cannot write '%s': %s", path, strerror(errno));
    free(tmp);
    return status;
  }
  bool ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, text, f) == text &&
            (nbytes == 0 || fwrite((const uint8_t *)t->data + t->byte_offset, 1, nbytes, f) == nbytes);
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    int e = errno;
    remove(tmp);
    free(tmp);
    return dpk_fail(DPK_STATUS_INTERNAL, "cannot write '%s': %s", path, strerror(e));
  }
  free(tmp);
  return DPK_OK;
}
