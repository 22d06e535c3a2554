/* abi.h: the one rule for ABI versions (abi.c; dpk_abi.h, "Versions").
 * Not installed. */
#ifndef DPK_ABI_RULE_H
#define DPK_ABI_RULE_H

#include <stdbool.h>

#include "dpk.h"

/* Room for "65535.65535" and the NUL. */
#define DPK_ABI_VERSION_TEXT 16

/* "1.1" for a packed version (1 reads as "1.0") written into `buffer`;
 * returns buffer. */
char *dpk_abi_version_text(uint32_t version, char buffer[DPK_ABI_VERSION_TEXT]);
/* True if this runtime accepts `version`: its major, an older or equal minor. */
bool dpk_abi_accepts(uint32_t version);
/* DPK_OK, or UNIMPLEMENTED "<what> was built for ABI version 1.3 but this
 * runtime has ABI version 1.2" (the message set). */
dpk_status_t dpk_abi_check(uint32_t version, const char *what);

/* A kind's get_tensor (dpk_abi.h, since 1.2), or NULL if it has none: left
 * NULL, or absent because the table is of an older minor (its struct ends
 * before the field, which is then never read). `kind` has passed
 * dpk_abi_check. */
typedef int (*dpk_get_tensor_fn)(void *state, const char *name, const DLTensor **out_tensor);
dpk_get_tensor_fn dpk_abi_kind_get_tensor(const dpk_kind *kind);

#endif /* DPK_ABI_RULE_H */
