/* file.c: map a model file and find its `.dpk` section.
 *
 * The file is mapped read-only, whole; the ELF64 header and section headers
 * are read from the mapping with every offset and size checked against the
 * file size before use. No code in the file runs. Integers are read as
 * little-endian (the only byte order accepted). */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "file.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Fields of an Elf64_Shdr at `p` (64 bytes). */
typedef struct {
  uint32_t name, type;
  uint64_t offset, size, link;
} shdr_t;

static shdr_t read_shdr(const uint8_t *p) {
  shdr_t s = {rd32(p), rd32(p + 4), rd64(p + 24), rd64(p + 32), rd32(p + 40)};
  return s;
}

static const struct {
  uint16_t machine;
  const char *name;
} machines[] = {
    {EM_X86_64, "x86_64"}, {EM_AARCH64, "aarch64"}, {EM_386, "i386"},    {EM_ARM, "arm"},
    {EM_RISCV, "riscv64"}, {EM_PPC64, "ppc64"},     {EM_S390, "s390x"}, {258 /* EM_LOONGARCH */, "loongarch64"},
};

const char *dpk_machine_name(uint16_t machine, char *buffer, size_t capacity) {
  for (size_t i = 0; i < sizeof machines / sizeof machines[0]; i++)
    if (machines[i].machine == machine) return machines[i].name;
  snprintf(buffer, capacity, "ELF machine %u", (unsigned)machine);
  return buffer;
}

uint16_t dpk_host_machine(void) {
#if defined(__x86_64__)
  return EM_X86_64;
#elif defined(__aarch64__)
  return EM_AARCH64;
#elif defined(__riscv) && __riscv_xlen == 64
  return EM_RISCV;
#elif defined(__powerpc64__)
  return EM_PPC64;
#elif defined(__s390x__)
  return EM_S390;
#else
  return 0;
#endif
}

/* The section headers: where they are and how many, all checked. */
static dpk_status_t find_section(const char *path, const uint8_t *map, size_t size, dpk_file_t *out) {
  uint64_t shoff = rd64(map + 0x28);
  uint16_t shentsize = rd16(map + 0x3a);
  uint64_t shnum = rd16(map + 0x3c);
  uint32_t shstrndx = rd16(map + 0x3e);
  const char *none = "'%s' has no .dpk section: not a dsopack model";
  if (shoff == 0) return dpk_fail(DPK_STATUS_NOT_FOUND, none, path);
  if (shentsize < 64)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' has section headers of %u bytes (ELF64 needs 64)", path,
                    (unsigned)shentsize);
  if (shoff > size || size - shoff < 64)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': section headers at %llu are past the end of the file (%zu bytes)",
                    path, (unsigned long long)shoff, size);
  shdr_t first = read_shdr(map + shoff);
  if (shnum == 0) shnum = first.size;                       /* more than 0xff00 sections */
  if (shstrndx == SHN_XINDEX) shstrndx = (uint32_t)first.link;
  if (shnum > (size - shoff) / shentsize)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': %llu section headers at %llu do not fit in the file (%zu bytes)",
                    path, (unsigned long long)shnum, (unsigned long long)shoff, size);
  if (shstrndx >= shnum)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': section name table index %u is not below the section count %llu",
                    path, (unsigned)shstrndx, (unsigned long long)shnum);
  shdr_t names = read_shdr(map + shoff + (uint64_t)shstrndx * shentsize);
  if (names.offset > size || names.size > size - names.offset)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the section name table is past the end of the file", path);
  for (uint64_t i = 0; i < shnum; i++) {
    shdr_t s = read_shdr(map + shoff + i * shentsize);
    if (s.name >= names.size || names.size - s.name < sizeof ".dpk") continue;
    if (memcmp(map + names.offset + s.name, ".dpk", sizeof ".dpk") != 0) continue;
    if (s.type == SHT_NOBITS)
      return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s': the .dpk section has no bytes in the file", path);
    if (s.offset > size || s.size > size - s.offset)
      return dpk_fail(DPK_STATUS_OUT_OF_RANGE,
                      "'%s': the .dpk section (offset %llu, %llu bytes) ends past the end of the file (%zu bytes)",
                      path, (unsigned long long)s.offset, (unsigned long long)s.size, size);
    out->section = map + s.offset;
    out->section_size = s.size;
    return DPK_OK;
  }
  return dpk_fail(DPK_STATUS_NOT_FOUND, none, path);
}

static dpk_status_t check_elf(const char *path, const uint8_t *map, size_t size, dpk_file_t *out) {
  if (size < 64 || memcmp(map, ELFMAG, SELFMAG) != 0)
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' is not an ELF file", path);
  if (map[EI_CLASS] != ELFCLASS64)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is a 32-bit ELF file; this runtime reads ELF64 only", path);
  if (map[EI_DATA] != ELFDATA2LSB)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "'%s' is a big-endian ELF file; this runtime reads little-endian only",
                    path);
  out->machine = rd16(map + 0x12);
  return find_section(path, map, size, out);
}

dpk_status_t dpk_file_open(const char *path, dpk_file_t *out_file) {
  memset(out_file, 0, sizeof *out_file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return dpk_fail(DPK_STATUS_NOT_FOUND, "cannot stat '%s': %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' is not an ELF file (not a regular file)", path);
  }
  if (st.st_size < 64) {
    close(fd);
    return dpk_fail(DPK_STATUS_DATA_LOSS, "'%s' is not an ELF file", path);
  }
  size_t size = (size_t)st.st_size;
  void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd); /* the mapping keeps the file */
  if (map == MAP_FAILED) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "cannot map '%s': %s", path, strerror(e));
  dpk_file_t file = {map, size, NULL, 0, 0, false};
  dpk_status_t status = check_elf(path, map, size, &file);
  if (status) {
    munmap(map, size);
    return status;
  }
  *out_file = file;
  return DPK_OK;
}

dpk_status_t dpk_file_from_memory(const char *source, const uint8_t *bytes, size_t size, dpk_file_t *out_file) {
  memset(out_file, 0, sizeof *out_file);
  dpk_file_t file = {bytes, size, NULL, 0, 0, true};
  dpk_status_t status = check_elf(source, bytes, size, &file);
  if (status) return status;
  *out_file = file;
  return DPK_OK;
}

void dpk_file_close(dpk_file_t *file) {
  if (file && file->map && !file->borrowed) munmap((void *)file->map, file->map_size);
  if (file) memset(file, 0, sizeof *file);
}
