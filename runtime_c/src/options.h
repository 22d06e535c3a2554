/* options.h: versioned option structs (options.c; dpk.h, "Growth").
 * Not installed. */
#ifndef DPK_OPTIONS_H
#define DPK_OPTIONS_H

#include "dpk.h"

/* The caller's options (NULL: the defaults) as a full struct of this
 * runtime's size in *out_options; `api` names the public call in the
 * message. INVALID_ARGUMENT for a struct_size outside
 * [DPK_LOAD_OPTIONS_MIN_SIZE, DPK_LOAD_OPTIONS_MAX_SIZE], UNIMPLEMENTED for
 * a non-zero byte past the fields this runtime knows. */
dpk_status_t dpk_load_options_read(const char *api, const dpk_load_options_t *caller, dpk_load_options_t *out_options);

#endif /* DPK_OPTIONS_H */
