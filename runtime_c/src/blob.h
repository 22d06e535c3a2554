/* blob.h: the `.dpk` section's header and payload descriptors (blob.c;
 * the layout is at the top of dpk.h and in docs/format.md). Not installed. */
#ifndef DPK_BLOB_H
#define DPK_BLOB_H

#include "dpk.h"
#include "yamltree.h"

/* Header fields, decoded. */
typedef struct dpk_blob_header {
  uint16_t major, minor;
  uint32_t flags;
  uint64_t manifest_offset, manifest_size;
  uint64_t payload_offset, payload_size;
  uint64_t manifest_checksum, header_checksum;
} dpk_blob_header_t;

#define DPK_BLOB_HEADER_SIZE 64

/* Validate the header of the `size` bytes at `section` in the order of
 * docs/format.md, up to and including the manifest checksum. `source` names
 * the file in messages. */
dpk_status_t dpk_blob_read_header(const uint8_t *section, uint64_t size, const char *source,
                                  dpk_blob_header_t *out_header);

typedef enum { DPK_CODEC_RAW = 0, DPK_CODEC_ZSTD = 1 } dpk_codec_t;

/* A payload descriptor, bounds-checked. `data` points at the stored bytes
 * in the mapping. */
typedef struct dpk_payload {
  uint64_t offset, size, raw_size; /* raw_size == size for raw */
  dpk_codec_t codec;
  uint64_t checksum;
  const uint8_t *data;
} dpk_payload_t;

/* Parse the descriptor mapping `node`. Messages name `owner` ("module 'ext0'")
 * and the field, under `prefix` if not NULL ("module 'ext0' field
 * 'payload.size'"; without prefix "module 'w' tensor 'b' field 'size'").
 * `area` is the payload area (`area_size` bytes). FAILED_PRECONDITION (field
 * type), OUT_OF_RANGE (past the area), UNIMPLEMENTED (unknown codec). */
dpk_status_t dpk_payload_parse(dpk_yaml_t *yaml, yaml_node_t *node, const char *owner, const char *prefix,
                               const uint8_t *area, uint64_t area_size, dpk_payload_t *out_payload);
/* The decoded bytes: for raw, `data` itself (*out_owned = NULL); for zstd, a
 * heap buffer of raw_size bytes that the caller frees (*out_owned). */
dpk_status_t dpk_payload_decode(const dpk_payload_t *payload, const char *what, const uint8_t **out_data,
                                void **out_owned);
/* DATA_LOSS naming `what` if the stored bytes do not hash to the checksum. */
dpk_status_t dpk_payload_verify(const dpk_payload_t *payload, const char *what);
/* XXH3-64 with seed 0. */
uint64_t dpk_checksum(const void *bytes, size_t size);

#endif /* DPK_BLOB_H */
