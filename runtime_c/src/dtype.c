/* dtype.c: dtype names <-> DLDataType. */
#include <string.h>

#include "dtype.h"
#include "error.h"

static const struct {
  const char *name;
  DLDataType dtype;
} dtypes[] = {
    {"float32", {kDLFloat, 32, 1}}, {"float64", {kDLFloat, 64, 1}}, {"float16", {kDLFloat, 16, 1}},
    {"int8", {kDLInt, 8, 1}},       {"int16", {kDLInt, 16, 1}},     {"int32", {kDLInt, 32, 1}},
    {"int64", {kDLInt, 64, 1}},     {"uint8", {kDLUInt, 8, 1}},     {"uint16", {kDLUInt, 16, 1}},
    {"uint32", {kDLUInt, 32, 1}},   {"uint64", {kDLUInt, 64, 1}},   {"bool", {kDLBool, 8, 1}},
};

dpk_status_t dpk_dtype_parse(const char *name, const char *what, DLDataType *out_dtype) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
    if (strcmp(dtypes[i].name, name) == 0) {
      *out_dtype = dtypes[i].dtype;
      return DPK_OK;
    }
  }
  return dpk_fail(DPK_STATUS_INVALID_ARGUMENT,
                  "%s: unknown dtype '%s' (known: float32, float64, float16, int8, int16, int32, int64, "
                  "uint8, uint16, uint32, uint64, bool)",
                  what, name);
}

const char *dpk_dtype_name(DLDataType dtype) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].dtype.code == dtype.code && dtypes[i].dtype.bits == dtype.bits && dtype.lanes == 1)
      return dtypes[i].name;
  return "unknown";
}

size_t dpk_dtype_size(DLDataType dtype) { return (size_t)dtype.bits / 8 * (dtype.lanes ? dtype.lanes : 1); }
