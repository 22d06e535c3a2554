/* blob.c: the `.dpk` section's header and payload descriptors.
 *
 * The header is validated in the order docs/format.md gives, each field
 * before it is used; a payload descriptor is checked against the payload
 * area before any byte of it is read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "blob.h"
#include "error.h"
#include "yamltree.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

#define U(x) ((unsigned long long)(x))
#define ZSTD_MAX_EXPANSION 32768 /* ZSTD_BLOCKSIZE_MAX (128 KiB) / 4 bytes of an RLE block */

uint64_t dpk_checksum(const void *bytes, size_t size) { return XXH3_64bits(bytes, size); }

dpk_status_t dpk_blob_read_header(const uint8_t *s, uint64_t size, const char *source,
                                  dpk_blob_header_t *out_header) {
  memset(out_header, 0, sizeof *out_header);
  if (size < DPK_BLOB_HEADER_SIZE)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "'%s': the .dpk section has %llu bytes, less than its 64-byte header",
                    source, U(size));
  if (memcmp(s, "DSOPACK\0", 8) != 0)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the .dpk section does not start with the magic \"DSOPACK\"", source);
  dpk_blob_header_t h;
  h.major = rd16(s + 8);
  h.minor = rd16(s + 10);
  h.flags = rd32(s + 12);
  h.manifest_offset = rd64(s + 16);
  h.manifest_size = rd64(s + 24);
  h.payload_offset = rd64(s + 32);
  h.payload_size = rd64(s + 40);
  h.manifest_checksum = rd64(s + 48);
  h.header_checksum = rd64(s + 56);
  if (h.major > DPK_FORMAT_MAJOR || h.major == 0)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is format %u.%u but this runtime reads format %d.x", source,
                    (unsigned)h.major, (unsigned)h.minor, DPK_FORMAT_MAJOR);
  uint64_t sum = dpk_checksum(s, 56);
  if (sum != h.header_checksum)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': header checksum mismatch (stored %016llx, computed %016llx)", source,
                    U(h.header_checksum), U(sum));
  if (h.manifest_offset < DPK_BLOB_HEADER_SIZE || h.manifest_offset > size ||
      h.manifest_size > size - h.manifest_offset)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE,
                    "'%s': the manifest (offset %llu, %llu bytes) is outside the .dpk section (%llu bytes)", source,
                    U(h.manifest_offset), U(h.manifest_size), U(size));
  if (h.payload_offset % 4096 != 0)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the payload area offset %llu is not a multiple of 4096", source,
                    U(h.payload_offset));
  if (h.payload_offset < h.manifest_offset + h.manifest_size || h.payload_offset > size ||
      h.payload_size > size - h.payload_offset)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE,
                    "'%s': the payload area (offset %llu, %llu bytes) ends at %llu but the .dpk section has %llu "
                    "bytes (truncated?)",
                    source, U(h.payload_offset), U(h.payload_size), U(h.payload_offset + h.payload_size), U(size));
  sum = dpk_checksum(s + h.manifest_offset, (size_t)h.manifest_size);
  if (sum != h.manifest_checksum)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': manifest checksum mismatch (stored %016llx, computed %016llx)", source,
                    U(h.manifest_checksum), U(sum));
  *out_header = h;
  return DPK_OK;
}

static bool parse_hex64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | (uint64_t)d;
  }
  if (s[16] != '\0') return false;
  *out = v;
  return true;
}

dpk_status_t dpk_payload_parse(dpk_yaml_t *yaml, yaml_node_t *node, const char *owner, const char *prefix,
                               const uint8_t *area, uint64_t area_size, dpk_payload_t *out_payload) {
  memset(out_payload, 0, sizeof *out_payload);
  char whole[256], field[320];
  if (prefix)
    snprintf(whole, sizeof whole, "%s field '%s'", owner, prefix);
  else
    snprintf(whole, sizeof whole, "%s", owner);
#define FIELD(name) \
  (prefix ? snprintf(field, sizeof field, "%s field '%s.%s'", owner, prefix, name) \
          : snprintf(field, sizeof field, "%s field '%s'", owner, name), field)
  if (!dpk_yaml_is_map(node))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a mapping {offset, size, codec, checksum}", whole);
  dpk_payload_t p = {0, 0, 0, DPK_CODEC_RAW, 0, NULL};
  dpk_status_t status;
  if ((status = dpk_yaml_uint(dpk_yaml_get(yaml, node, "offset"), FIELD("offset"), &p.offset))) return status;
  if ((status = dpk_yaml_uint(dpk_yaml_get(yaml, node, "size"), FIELD("size"), &p.size))) return status;
  const char *codec = "raw";
  yaml_node_t *codec_node = dpk_yaml_get(yaml, node, "codec");
  if (codec_node && (status = dpk_yaml_str(codec_node, FIELD("codec"), &codec))) return status;
  if (strcmp(codec, "zstd") == 0) {
    p.codec = DPK_CODEC_ZSTD;
    yaml_node_t *raw_size = dpk_yaml_get(yaml, node, "raw_size");
    if (!raw_size) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is required for codec zstd", FIELD("raw_size"));
    if ((status = dpk_yaml_uint(raw_size, FIELD("raw_size"), &p.raw_size))) return status;
  } else if (strcmp(codec, "raw") == 0) {
    p.raw_size = p.size;
  } else {
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "%s: codec '%s' is not supported (known: raw, zstd)", whole, codec);
  }
  const char *hex;
  if ((status = dpk_yaml_str(dpk_yaml_get(yaml, node, "checksum"), FIELD("checksum"), &hex))) return status;
  if (!parse_hex64(hex, &p.checksum))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be 16 lowercase hex digits, not '%s'", field, hex);
  if (p.offset % 64 != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s %llu is not a multiple of 64", FIELD("offset"), U(p.offset));
#undef FIELD
  if (p.offset > area_size || p.size > area_size - p.offset)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "%s ends at %llu but the payload area has %llu bytes", whole,
                    U(p.offset + p.size), U(area_size));
  p.data = area + p.offset;
  *out_payload = p;
  return DPK_OK;
}

dpk_status_t dpk_payload_decode(const dpk_payload_t *p, const char *what, const uint8_t **out_data,
                                void **out_owned) {
  *out_data = NULL;
  *out_owned = NULL;
  if (p->codec == DPK_CODEC_RAW) {
    *out_data = p->data;
    return DPK_OK;
  }
  unsigned long long n = ZSTD_getFrameContentSize(p->data, (size_t)p->size);
  if (n == ZSTD_CONTENTSIZE_ERROR)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "%s is not a zstd frame", what);
  if (n == ZSTD_CONTENTSIZE_UNKNOWN)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "%s: the zstd frame does not record its size", what);
  if (n != p->raw_size)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "%s: the zstd frame holds %llu bytes but raw_size is %llu", what, n,
                    U(p->raw_size));
  /* A zstd block yields at most 128 KiB and takes at least 4 bytes (an RLE
   * block), so no frame expands more than 32768 times: a larger claim is
   * corrupt, and is refused before it is allocated. */
  if (p->raw_size / ZSTD_MAX_EXPANSION > p->size)
    return dpk_fail(DPK_STATUS_DATA_LOSS,
                    "%s: the zstd frame claims %llu bytes, more than its %llu stored bytes can hold (at most %d times)",
                    what, U(p->raw_size), U(p->size), ZSTD_MAX_EXPANSION);
  if (p->raw_size > SIZE_MAX - 1)
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "%s: raw_size %llu is too large", what, U(p->raw_size));
  void *buffer = malloc(p->raw_size ? (size_t)p->raw_size : 1);
  if (!buffer)
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "%s: cannot allocate %llu bytes to decode it", what,
                    U(p->raw_size));
  size_t got = ZSTD_decompress(buffer, (size_t)p->raw_size, p->data, (size_t)p->size);
  if (ZSTD_isError(got) || got != p->raw_size) {
    free(buffer);
    return dpk_fail(DPK_STATUS_DATA_LOSS, "%s: zstd decoding failed: %s", what,
                    ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short frame");
  }
  *out_data = buffer;
  *out_owned = buffer;
  return DPK_OK;
}

dpk_status_t dpk_payload_verify(const dpk_payload_t *p, const char *what) {
  uint64_t sum = dpk_checksum(p->data, (size_t)p->size);
  if (sum != p->checksum)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "%s: checksum mismatch (manifest says %016llx, the bytes hash to %016llx)",
                    what, U(p->checksum), U(sum));
  return DPK_OK;
}
