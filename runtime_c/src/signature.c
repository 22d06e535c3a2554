/* signature.c: signed model files (docs/format.md "Signatures").
 *
 * A signed file is the ELF contents followed by one 128-byte trailer:
 * Ed25519ph (RFC 8032, libsodium's crypto_sign_init/update/final_*) over
 * every byte before the trailer, then the trailer's first 64 bytes. The ELF
 * loader and the .dpk reader never look past the ELF contents, so an
 * unsigned reader sees the same file.
 *
 * dpk_signed_open opens the file ONCE, maps it, checks the signature on
 * that mapping, builds the package over the same mapping and hands back the
 * descriptor, which model.c dlopens as /proc/self/fd/N: the bytes checked,
 * parsed and loaded are one inode, whatever happens to the path meanwhile. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "file.h"
#include "package.h"
#include "signature.h"

#define U(x) ((unsigned long long)(x))
#define TRAILER_SIZE 128
#define SIGNED_FIELDS 64 /* trailer bytes 0..63 are signed too */
static const uint8_t trailer_magic[8] = {'D', 'S', 'O', 'P', 'K', 'S', 'I', 'G'};
static const char public_prefix[] = "dsopack-ed25519-public ";
static const char secret_prefix[] = "dsopack-ed25519-secret ";

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* `offset + size` of a table or a section, if it lies within `size_limit`. */
static bool extend(uint64_t offset, uint64_t size, uint64_t limit, uint64_t *end) {
  if (offset > limit || size > limit - offset) return false;
  if (offset + size > *end) *end = offset + size;
  return true;
}

/* Where the ELF contents end: the furthest byte any header, program header,
 * section header or section (other than NOBITS) covers. `map` is an ELF64
 * little-endian file that dpk_file_* already accepted. */
static dpk_status_t elf_end(const char *path, const uint8_t *map, size_t size, uint64_t *out_end) {
  uint64_t end = 64, phoff = rd64(map + 0x20), shoff = rd64(map + 0x28);
  uint64_t phentsize = rd16(map + 0x36), phnum = rd16(map + 0x38), shentsize = rd16(map + 0x3a), shnum = rd16(map + 0x3c);
  if (shoff && shnum == 0 && shoff <= size && size - shoff >= 64) shnum = rd64(map + shoff + 32);
  bool ok = (phnum == 0 || (phentsize >= 56 && phnum <= size / phentsize && extend(phoff, phnum * phentsize, size, &end))) &&
            (shoff == 0 || (shentsize >= 64 && shnum <= size / shentsize && extend(shoff, shnum * shentsize, size, &end)));
  for (uint64_t i = 0; ok && i < phnum; i++) {
    const uint8_t *ph = map + phoff + i * phentsize;
    ok = extend(rd64(ph + 8), rd64(ph + 32), size, &end); /* p_offset, p_filesz */
  }
  for (uint64_t i = 0; ok && shoff && i < shnum; i++) {
    const uint8_t *sh = map + shoff + i * shentsize;
    uint32_t type = rd32(sh + 4);
    if (type != 0 /* SHT_NULL */ && type != 8 /* SHT_NOBITS */) ok = extend(rd64(sh + 24), rd64(sh + 32), size, &end);
  }
  if (!ok)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': an ELF header, segment or section reaches past the end of the file "
                    "(%zu bytes), so its signature cannot be located", path, size);
  *out_end = end;
  return DPK_OK;
}

static void key_id(const uint8_t key[DPK_PUBLIC_KEY_BYTES], uint8_t out[8]) {
  uint8_t hash[32];
  crypto_generichash(hash, sizeof hash, key, DPK_PUBLIC_KEY_BYTES, NULL, 0);
  memcpy(out, hash, 8);
}

static const char *hex8(const uint8_t id[8], char out[17]) { return sodium_bin2hex(out, 17, id, 8); }

/* The trailer after `end` in the `size` bytes at `map`, checked against `key`. */
static dpk_status_t check_trailer(const char *path, const uint8_t *map, size_t size, uint64_t end,
                                  const dpk_public_key_t *key) {
  uint64_t tail = size - end;
  const uint8_t *t = map + end;
  if (tail == 0)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s' is not signed (nothing follows its ELF contents), and a signature "
                    "by the given key is required", path);
  if (memcmp(t, trailer_magic, tail < 8 ? tail : 8) != 0)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': the %llu bytes after its ELF contents (at offset %llu) are not a "
                    "dsopack signature trailer", path, U(tail), U(end));
  if (tail < TRAILER_SIZE)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': the signature trailer at offset %llu is truncated: %llu of %d bytes",
                    path, U(end), U(tail), TRAILER_SIZE);
  if (tail > TRAILER_SIZE)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': the signature trailer at offset %llu is followed by %llu more "
                    "byte%s", path, U(end), U(tail - TRAILER_SIZE), tail - TRAILER_SIZE == 1 ? "" : "s");
  uint16_t version = rd16(t + 8), algorithm = rd16(t + 10);
  if (version != DPK_SIGNATURE_VERSION)
    return dpk_fail(version > DPK_SIGNATURE_VERSION ? DPK_STATUS_UNIMPLEMENTED : DPK_STATUS_UNAUTHENTICATED,
                    "'%s': signature trailer version %u; this runtime reads version %d", path, (unsigned)version,
                    DPK_SIGNATURE_VERSION);
  if (algorithm != 1)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s': signature algorithm %u; this runtime knows 1 (Ed25519ph)", path,
                    (unsigned)algorithm);
  if (rd32(t + 12) != TRAILER_SIZE || rd64(t + 16) != end)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': the signature trailer claims %u bytes signing the first %llu, but "
                    "it is %d bytes at offset %llu", path, (unsigned)rd32(t + 12), U(rd64(t + 16)), TRAILER_SIZE, U(end));
  for (int i = 32; i < SIGNED_FIELDS; i++)
    if (t[i]) return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': byte %d of the signature trailer is reserved but not zero", path, i);
  uint8_t want[8];
  char a[17], b[17];
  key_id(key->bytes, want);
  if (memcmp(t + 24, want, 8) != 0)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s' is signed by key %s, not by the given key %s", path, hex8(t + 24, a),
                    hex8(want, b));
  crypto_sign_state state;
  crypto_sign_init(&state);
  crypto_sign_update(&state, map, end);
  crypto_sign_update(&state, t, SIGNED_FIELDS);
  if (crypto_sign_final_verify(&state, t + SIGNED_FIELDS, key->bytes) != 0)
    return dpk_fail(DPK_STATUS_UNAUTHENTICATED, "'%s': the signature by key %s does not match the file's bytes (changed "
                    "after signing, or a forged trailer)", path, hex8(want, a));
  return DPK_OK;
}

dpk_status_t dpk_signed_open(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package, int *out_fd) {
  if (!out_package) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_open_signed: out_package is NULL");
  *out_package = NULL;
  if (out_fd) *out_fd = -1;
  if (!path || !key)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_open_signed: %s is NULL", !path ? "path" : "key");
  if (sodium_init() < 0) return dpk_fail(DPK_STATUS_INTERNAL, "libsodium failed to initialize");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  void *map = MAP_FAILED;
  size_t size = 0;
  uint64_t end = 0;
  dpk_file_t probe;
  dpk_status_t status = DPK_OK;
  if (fstat(fd, &st) != 0) status = dpk_fail(DPK_STATUS_NOT_FOUND, "cannot stat '%s': %s", path, strerror(errno));
  else if (!S_ISREG(st.st_mode) || st.st_size < 64) status = dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' is not an ELF file", path);
  else if ((map = mmap(NULL, size = (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED)
    status = dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "cannot map '%s': %s", path, strerror(errno));
  if (!status) status = dpk_file_from_memory(path, map, size, &probe); /* ELF64 LE with a .dpk section */
  if (!status) status = elf_end(path, map, size, &end);
  if (!status) status = check_trailer(path, map, size, end, key);
  /* Only now is any of the file parsed beyond its ELF headers. */
  if (!status) status = dpk_package_open_memory(path, map, size, out_package);
  if (status) {
    if (map != MAP_FAILED) munmap(map, size);
    close(fd);
    return status;
  }
  (*out_package)->file.borrowed = false; /* the package owns the mapping: dpk_file_close unmaps it */
  if (out_fd) *out_fd = fd;
  else close(fd);
  return DPK_OK;
}

dpk_status_t dpk_package_open_signed(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package) {
  return dpk_signed_open(path, key, out_package, NULL);
}

dpk_status_t dpk_package_signed_size(const dpk_package_t *package, uint64_t *out_size) {
  if (!out_size) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_signed_size: out_size is NULL");
  *out_size = 0;
  if (!package) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_package_signed_size: package is NULL");
  return elf_end(package->path, package->file.map, package->file.map_size, out_size);
}

dpk_status_t dpk_public_key_read(const char *path, dpk_public_key_t *out_key) {
  if (!out_key) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_public_key_read: out_key is NULL");
  memset(out_key, 0, sizeof *out_key);
  if (!path) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_public_key_read: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot open the public key file '%s': %s", path, strerror(errno));
  char text[160];
  size_t n = fread(text, 1, sizeof text - 1, f);
  bool more = fgetc(f) != EOF; /* a key file is one short line: longer is malformed */
  fclose(f);
  text[n] = '\0';
  size_t p = sizeof public_prefix - 1, used = n;
  while (used > 0 && (text[used - 1] == '\n' || text[used - 1] == '\r' || text[used - 1] == ' ')) used--;
  if (n >= sizeof secret_prefix - 1 && memcmp(text, secret_prefix, sizeof secret_prefix - 1) == 0)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "'%s' is a dsopack secret key; give its public key (the .pub file)", path);
  uint8_t key[DPK_PUBLIC_KEY_BYTES];
  size_t got = 0;
  const char *hex_end = NULL;
  if (more || used != p + 2 * DPK_PUBLIC_KEY_BYTES || memcmp(text, public_prefix, p) != 0 ||
      sodium_hex2bin(key, sizeof key, text + p, 2 * DPK_PUBLIC_KEY_BYTES, NULL, &got, &hex_end) != 0 ||
      got != DPK_PUBLIC_KEY_BYTES)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "'%s' is not a dsopack public key file: expected one line "
                    "'dsopack-ed25519-public <64 hex digits>'", path);
  memcpy(out_key->bytes, key, sizeof key);
  return DPK_OK;
}
