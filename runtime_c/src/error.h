/* error.h: the calling thread's last-error message (error.c). Not installed.
 *
 * A failure site records its message and returns its status in one step:
 *     return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "payload '%s' ends at %llu ...", ...);
 * Messages are per thread and hold at most 1024 bytes. */
#ifndef DPK_ERROR_H
#define DPK_ERROR_H

#include "dpk.h"

/* Record the calling thread's message (printf format) and return `status`. */
dpk_status_t dpk_fail(dpk_status_t status, const char *fmt, ...);
/* Prefix the current message: "<prefix>: <old message>"; returns `status`. */
dpk_status_t dpk_fail_context(dpk_status_t status, const char *fmt, ...);
/* Record the message without a status: the set_error of the tables handed
 * to a model file's code (dpk_backend_api, dpk_kind_services). */
void dpk_set_error(const char *fmt, ...);
/* Forget the calling thread's message (dpk_last_error() then gives ""). */
void dpk_clear_error(void);

/* A kind's or packed function's non-zero return as a status: a known status
 * code as is, anything else INTERNAL. */
static inline dpk_status_t dpk_status_from_rc(int rc) {
  return rc > 0 && rc <= DPK_STATUS_UNAUTHENTICATED ? (dpk_status_t)rc : DPK_STATUS_INTERNAL;
}

#endif /* DPK_ERROR_H */
