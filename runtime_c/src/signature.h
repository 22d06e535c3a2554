/* signature.h: the signed reader's internal entry (signature.c; the public
 * calls are the *_signed ones in dpk.h). Not installed. */
#ifndef DPK_SIGNATURE_H
#define DPK_SIGNATURE_H

#include "dpk.h"

/* Open `path` once, check its signature trailer against `key` on the
 * mapping, then build the package over that same mapping. With `out_fd`,
 * the open descriptor is handed to the caller (to dlopen the very file that
 * was checked; the caller closes it), else it is closed. Errors as
 * dpk_package_open_signed. */
dpk_status_t dpk_signed_open(const char *path, const dpk_public_key_t *key, dpk_package_t **out_package, int *out_fd);

#endif /* DPK_SIGNATURE_H */
