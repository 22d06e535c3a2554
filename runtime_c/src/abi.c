/* abi.c: versions: the runtime's own (dpk_version) and the one rule for ABI
 * versions (dpk_abi.h, "Versions").
 *
 * A version is accepted if it has the runtime's major and a minor no newer
 * than the runtime's; 1.0 files spelled 1.0 as the plain number 1, which
 * DPK_ABI_MAJOR_OF / DPK_ABI_MINOR_OF read as 1.0. Every place that meets a
 * version from outside the runtime (a registered kind, a file's code, its
 * carried kind table and entries) asks dpk_abi_check, so the wording of the
 * refusal is the same everywhere; and a kind table's fields that a minor
 * appended are read only through the accessor that knows the minor. */
#include <stdio.h>

#include "abi.h"
#include "error.h"

const char *dpk_version(void) { return DPK_VERSION; }

char *dpk_abi_version_text(uint32_t version, char buffer[DPK_ABI_VERSION_TEXT]) {
  snprintf(buffer, DPK_ABI_VERSION_TEXT, "%u.%u", (unsigned)DPK_ABI_MAJOR_OF(version),
           (unsigned)DPK_ABI_MINOR_OF(version));
  return buffer;
}

bool dpk_abi_accepts(uint32_t version) {
  return DPK_ABI_MAJOR_OF(version) == DPK_ABI_VERSION_MAJOR && DPK_ABI_MINOR_OF(version) <= DPK_ABI_VERSION_MINOR;
}

/* The minor that appended each optional dpk_kind field the runtime reads. */
#define GET_TENSOR_SINCE 2

dpk_get_tensor_fn dpk_abi_kind_get_tensor(const dpk_kind *kind) {
  return DPK_ABI_MINOR_OF(kind->abi_version) >= GET_TENSOR_SINCE ? kind->get_tensor : NULL;
}

dpk_status_t dpk_abi_check(uint32_t version, const char *what) {
  if (dpk_abi_accepts(version)) return DPK_OK;
  char theirs[DPK_ABI_VERSION_TEXT], ours[DPK_ABI_VERSION_TEXT];
  return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "%s was built for ABI version %s but this runtime has ABI version %s", what,
                  dpk_abi_version_text(version, theirs), dpk_abi_version_text(DPK_ABI_VERSION, ours));
}
