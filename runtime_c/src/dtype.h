/* dtype.h: dtype names <-> DLDataType (dtype.c). Not installed. */
#ifndef DPK_DTYPE_H
#define DPK_DTYPE_H

#include "dpk.h"

/* "float32" -> {kDLFloat, 32, 1}. INVALID_ARGUMENT naming `what` if unknown. */
dpk_status_t dpk_dtype_parse(const char *name, const char *what, DLDataType *out_dtype);
/* "float32", or "unknown". Static. */
const char *dpk_dtype_name(DLDataType dtype);
/* Bytes per element: bits / 8, times lanes (lanes 0 counts as 1). */
size_t dpk_dtype_size(DLDataType dtype);

#endif /* DPK_DTYPE_H */
