/* options.c: versioned option structs (dpk.h, "Growth").
 *
 * The caller's struct may be shorter than ours (built against an older
 * header: the fields it lacks take their defaults) or longer (a newer
 * header: the bytes we do not know must be zero, so an option we cannot
 * honour is refused rather than ignored). Only whole fields inside the
 * caller's struct_size are ever read. */
#include <string.h>

#include "error.h"
#include "options.h"

void dpk_load_options_init(dpk_load_options_t *options) {
  if (!options) return;
  memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
}

/* True if `field` lies wholly inside the caller's struct of `size` bytes. */
#define FITS(size, type, field) ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

dpk_status_t dpk_load_options_read(const char *api, const dpk_load_options_t *caller, dpk_load_options_t *out_options) {
  dpk_load_options_init(out_options);
  if (!caller) return DPK_OK;
  size_t size = caller->struct_size;
  if (size < DPK_LOAD_OPTIONS_MIN_SIZE || size > DPK_LOAD_OPTIONS_MAX_SIZE)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT,
                    "%s: options->struct_size is %zu but must be from %zu to %d (fill the options with "
                    "dpk_load_options_init)",
                    api, size, (size_t)DPK_LOAD_OPTIONS_MIN_SIZE, DPK_LOAD_OPTIONS_MAX_SIZE);
  const unsigned char *bytes = (const unsigned char *)caller;
  for (size_t at = sizeof *caller; at < size; at++)
    if (bytes[at])
      return dpk_fail(DPK_STATUS_UNIMPLEMENTED,
                      "%s: options->struct_size is %zu and byte %zu is set, but this runtime knows only the first "
                      "%zu bytes of dpk_load_options_t (the caller was built against a newer dpk.h)",
                      api, size, at, sizeof *caller);
  /* The first version's fields are inside DPK_LOAD_OPTIONS_MIN_SIZE; later
   * fields are read only if FITS(size, dpk_load_options_t, field). */
  out_options->verify_checksums = caller->verify_checksums;
  out_options->populate = caller->populate;
  out_options->num_threads = caller->num_threads;
  return DPK_OK;
}
