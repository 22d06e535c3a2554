/* file.h: a model file mapped read-only, and where its `.dpk` section is
 * (file.c). Not installed. */
#ifndef DPK_FILE_H
#define DPK_FILE_H

#include <stdbool.h>

#include "dpk.h"

typedef struct dpk_file {
  const uint8_t *map;      /* the whole file, PROT_READ */
  size_t map_size;
  const uint8_t *section;  /* the `.dpk` section inside `map` */
  uint64_t section_size;
  uint16_t machine;        /* ELF e_machine */
  bool borrowed;           /* `map` is the caller's memory (dpk_file_from_memory): not unmapped */
} dpk_file_t;

/* Map `path` and find its `.dpk` section from the ELF section headers; every
 * offset and size is checked against the file size. NOT_FOUND (no file, no
 * section), DATA_LOSS (not ELF, bad headers), UNIMPLEMENTED (ELF32, big-endian).
 * Close with dpk_file_close (accepts a zeroed struct). */
dpk_status_t dpk_file_open(const char *path, dpk_file_t *out_file);
/* The same checks on `size` bytes the caller owns and keeps alive until
 * dpk_file_close (for fuzzing and tools; `source` names them in messages). */
dpk_status_t dpk_file_from_memory(const char *source, const uint8_t *bytes, size_t size, dpk_file_t *out_file);
void dpk_file_close(dpk_file_t *file);
/* "x86_64", "aarch64"..., or "ELF machine 243" written into `buffer`;
 * returns the name. */
const char *dpk_machine_name(uint16_t machine, char *buffer, size_t capacity);
/* The ELF machine this runtime was compiled for; 0 if unknown (no check). */
uint16_t dpk_host_machine(void);

#endif /* DPK_FILE_H */
